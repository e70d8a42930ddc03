import ArgumentParser
import BenchKit
import Foundation

@main
struct EstuaryBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "estuary-bench",
        abstract: "Load Estuary and nginx-rtmp the same way, in the same run, and compare them.",
        discussion: """
            Servers run pinned to --server-cpu, the generator (this process and wrk) on the rest. \
            Only the wire and /proc are read: never a server's internals.
            """)

    @Option(help: "The estuary binary to test (a release build for real numbers).")
    var estuary = ".build/release/estuary"
    @Option(help: "Directory with 600k.flv, 2500k.flv and 3000k.flv (bench/make-fixtures.sh makes them).")
    var fixtures = "bench/.cache"
    @Flag(help: "A few seconds, tiny sizes, the repository's own fixture: checks the tool still works.")
    var smoke = false
    @Option(parsing: .upToNextOption, help: "Publisher counts for ingest only (600 kbps).")
    var ingest: [Int] = [50, 100, 200]
    @Option(help: "Publishers for ingest only at 3 Mbps.")
    var ingestHigh = 30
    @Option(parsing: .upToNextOption, help: "Publisher counts for ingest + HLS (600 kbps).")
    var ingestHLS: [Int] = [30, 100]
    @Option(parsing: .upToNextOption, help: "Player counts for fan-out (one 2.5 Mbps publisher).")
    var players: [Int] = [100, 300, 500]
    @Option(parsing: .upToNextOption, help: "HLS viewer counts (one 2.5 Mbps publisher, viewers polling as players do).")
    var viewers: [Int] = [300]
    @Option(help: "Milliseconds between a fan-out player's socket reads (0: as data arrives, like a real player).")
    var playerReadInterval = 0
    @Option(help: "Seconds of warm-up discarded before each measurement.")
    var warmup = 5
    @Option(help: "Seconds measured per row.")
    var measure = 20
    @Option(help: "Core the servers are pinned to.")
    var serverCPU = 0
    @Option(help: "Extra arguments for every Estuary server, space-separated (e.g. \"--rtmp-merged-read 100\").")
    var estuaryArgs = ""
    @Option(help: "Where to write the Markdown report (also printed).")
    var out: String?
    @Option(parsing: .upToNextOption,
            help: "Scenarios to run: ingest, ingest-3m, ingest-hls, ingest-hls-tmpfs, fan-out, hls, hls-viewers (default: all).")
    var only: [Scenario] = Scenario.allCases

    enum Scenario: String, CaseIterable, ExpressibleByArgument {
        case ingest, ingest3M = "ingest-3m", ingestHLS = "ingest-hls", ingestHLSOnTmpfs = "ingest-hls-tmpfs"
        case fanOut = "fan-out", hls, hlsViewers = "hls-viewers"
    }

    func run() async throws {
        var settings = BenchRunner.Settings(estuaryBinary: estuary)
        settings.serverCPU = serverCPU
        settings.playerReadInterval = .milliseconds(playerReadInterval)
        settings.estuaryArguments = estuaryArgs.split(separator: " ").map(String.init)
        settings.generatorCPU = serverCPU == 0 ? 1 : 0
        settings.warmup = .seconds(smoke ? 1 : warmup)
        settings.measure = .seconds(smoke ? 2 : measure)
        let runner = BenchRunner(settings: settings)
        let low: FLVSource, mid: FLVSource, high: FLVSource
        if smoke {
            let fixture = try FLVSource(path: "fixtures/av-640x360.flv")
            (low, mid, high) = (fixture, fixture, fixture)
        } else {
            low = try FLVSource(path: "\(fixtures)/600k.flv")
            mid = try FLVSource(path: "\(fixtures)/2500k.flv")
            high = try FLVSource(path: "\(fixtures)/3000k.flv")
        }
        var results: [ServerRun] = []
        func report(_ measurement: ServerRun) {
            print("  \(measurement.scenario) \(measurement.size) \(measurement.server.rawValue): "
                  + "CPU \(String(format: "%.1f", measurement.cpuPercent))%"
                  + (measurement.valid && !measurement.readerBusy ? "" : "; valid: \(measurement.validity)"))
            results.append(measurement)
        }
        /// One server after the other, twice, in the order A B B A, each server's two runs averaged:
        /// a machine whose speed drifts over the four runs moves both averages alike.
        func both(_ body: (ServerProcess.Kind) async throws -> ServerRun) async throws {
            let order = ServerProcess.Kind.allCases
            var runs: [ServerProcess.Kind: [ServerRun]] = [:]
            for kind in smoke ? order : order + order.reversed() { runs[kind, default: []].append(try await body(kind)) }
            for kind in order { report(.mean(runs[kind] ?? [])) }
        }
        /// Both servers under the same load at the same time (ingest rows).
        func sideBySide(_ body: ([ServerProcess.Kind]) async throws -> [ServerRun]) async throws {
            for measurement in try await body(ServerProcess.Kind.allCases) { report(measurement) }
        }
        if smoke {
            try await sideBySide { try await runner.ingest($0, publishers: 2, source: low, hls: true, label: "ingest+hls") }
            try await both { try await runner.fanOut($0, players: 3, source: mid) }
            try await both { try await runner.hlsViewers($0, viewers: 3, source: mid) }
        } else {
            let only = Set(only)
            for n in ingest where only.contains(.ingest) {
                try await sideBySide { try await runner.ingest($0, publishers: n, source: low, hls: false, label: "ingest 600k") }
            }
            if only.contains(.ingest3M) {
                try await sideBySide { try await runner.ingest($0, publishers: ingestHigh, source: high, hls: false, label: "ingest 3M") }
            }
            for n in ingestHLS where only.contains(.ingestHLS) {
                try await sideBySide { try await runner.ingest($0, publishers: n, source: low, hls: true, label: "ingest+hls") }
            }
            // Like for like: Estuary also writing its HLS to tmpfs, as nginx-rtmp does.
            for n in ingestHLS where only.contains(.ingestHLSOnTmpfs) {
                try await sideBySide { kinds in
                    try await runner.ingest(kinds, publishers: n, source: low, hls: true, hlsOnDisk: true, label: "ingest+hls on tmpfs")
                }
            }
            for m in players where only.contains(.fanOut) { try await both { try await runner.fanOut($0, players: m, source: mid) } }
            for k in viewers where only.contains(.hlsViewers) {
                try await both { try await runner.hlsViewers($0, viewers: k, source: mid) }
            }
            if only.contains(.hls) { try await both { try await runner.hls($0, source: mid, wrkSeconds: 10, connections: 50) } }
        }
        let invocation = (["estuary-bench"] + CommandLine.arguments.dropFirst()).joined(separator: " ")
        let report = Report.markdown(results, machine: Self.machine(), date: Self.today(), notes: [
            "Reproduce: `make bench` on a clean checkout (Debian/Ubuntu; it installs nginx, libnginx-mod-rtmp, wrk "
                + "and ffmpeg, builds release and makes the fixtures). This run: `\(invocation)`.",
            "Ingest rows load both servers at the same time, side by side on one core; fan-out and hls rows run "
                + "Estuary, nginx-rtmp, nginx-rtmp, Estuary and average each server's two runs. "
                + "Warm-up \(warmup) s, measured \(measure) s per run; CPU is utime+stime of all the server's processes.",
            "Generator validity: publishers must not fall more than 500 ms behind real time. A generator above "
                + "\(Int(BenchRunner.readerLimit)) % of its core while reading makes HLS viewer rows invalid. For RTMP "
                + "players it makes the server's CPU a lower bound: late reads take more bytes each, and a server "
                + "that writes per message pays fewer wake-ups. A lower nginx-rtmp figure can only raise the ratio, "
                + "so a PASS still stands (marked as an upper bound); otherwise the row is invalid.",
        ])
        print(report)
        if let out {
            try FileManager.default.createDirectory(atPath: (out as NSString).deletingLastPathComponent,
                                                    withIntermediateDirectories: true)
            try report.write(toFile: out, atomically: true, encoding: .utf8)
        }
        if results.contains(where: { !$0.valid }) { throw ExitCode(2) }
    }

    static func machine() -> String {
        let cpus = ProcessInfo.processInfo.activeProcessorCount
        let model = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        let kernel = (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown kernel"
        return "Machine: \(cpus) CPUs (nproc), \(model), Linux \(kernel)."
    }

    static func today() -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd"
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date())
    }
}
