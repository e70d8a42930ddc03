import App
import ArgumentParser
import NginxCompat
import Testing

@testable import estuary

/// The notify hooks as `estuary serve` reads them: flags, `ESTUARY_*` variables, defaults.
@Suite("Configuration: notify hooks")
struct NotifyConfigurationTests {
    static func resolve(_ flags: [String], _ environment: [String: String] = [:]) throws -> EstuaryConfiguration {
        try Serve.parse(flags).configuration(environment: environment)
    }

    @Test("defaults: no hooks, POST, 10 s to answer, on_update every 30 s, not strict")
    func defaults() throws {
        let notify = try Self.resolve([]).notify
        #expect(notify.isEmpty)
        #expect(notify.method == .post)
        #expect(notify.timeout == .seconds(10))
        #expect(notify.updateTimeout == .seconds(30))
        #expect(!notify.updateStrict)
    }

    @Test("a URL for every application, APP=URL for one; flags win over the environment")
    func perApplication() throws {
        let notify = try Self.resolve(
            ["--on-publish", "http://auth.local/publish?x=1", "--on-publish", "vip=https://vip.local/publish",
             "--on-update", "live=http://h/update", "--notify-method", "GET", "--notify-timeout", "2.5",
             "--notify-update-timeout", "5", "--notify-update-strict", "on"],
            ["ESTUARY_ON_PUBLISH": "http://env.local/ignored", "ESTUARY_ON_DONE": "live=http://h/done,http://h/all-done",
             "ESTUARY_ON_CONNECT": "http://h/connect", "ESTUARY_ON_PLAY": "http://h/play",
             "ESTUARY_ON_RECORD_DONE": "http://h/rec"]).notify
        #expect(notify.onPublish.url(app: "live") == "http://auth.local/publish?x=1")
        #expect(notify.onPublish.url(app: "vip") == "https://vip.local/publish")
        #expect(notify.onUpdate.url(app: "live") == "http://h/update")
        #expect(notify.onUpdate.url(app: "other") == nil)
        #expect(notify.onDone == NotifyURL("http://h/all-done", byApp: ["live": "http://h/done"]))
        #expect(notify.onConnect.url(app: "x") == "http://h/connect")
        #expect(notify.onPlay.url(app: "x") == "http://h/play")
        #expect(notify.onRecordDone.url(app: "x") == "http://h/rec")
        #expect(notify.method == .get)
        #expect(notify.timeout == .milliseconds(2500))
        #expect(notify.updateTimeout == .seconds(5))
        #expect(notify.updateStrict)
        #expect(notify.observesSessions)
    }

    @Test("bad values name the setting", arguments: [
        (["--on-publish", "ftp://h/x"], "--on-publish"),
        (["--on-play-done", "live=not-a-url"], "--on-play-done"),
        (["--on-disconnect", "a/b=http://h/x"], "--on-disconnect"),
        (["--notify-method", "put"], "notify method"),
        (["--notify-timeout", "0"], "notify timeout"),
        (["--notify-update-timeout=-1"], "notify update timeout"),
        (["--notify-update-strict", "maybe"], "notify update strict"),
    ])
    func invalid(flags: [String], mention: String) {
        #expect {
            try Self.resolve(flags)
        } throws: { error in
            "\(error)".contains(mention)
        }
    }
}
