import App
import ArgumentParser

await Estuary.main()
