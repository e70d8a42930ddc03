import Foundation
import NIOCore

/// One measured server in one scenario.
public struct ServerRun: Sendable {
    public var scenario: String
    public var size: String
    public var server: ServerProcess.Kind
    public var cpuPercent: Double = 0
    /// CPU % of one core per unit (stream or player); nil when the scenario has no units.
    public var cpuPerUnit: Double?
    public var peakResidentBytes: UInt64 = 0
    /// The generator kept up and nothing failed.
    public var valid = true
    /// The generator, reading this server's RTMP players, was busier than `readerLimit`. Its reads
    /// then come later and each takes more bytes, and a server that writes per message pays fewer
    /// wake-ups: the server's CPU is a lower bound of what prompt readers would cost it. (Measured:
    /// nginx-rtmp at M = 500 fell from 43 % to 24 % of a core when perf slowed the generator.)
    public var readerBusy = false
    public var notes: [String] = []
    /// Whether the run counts, and why not or with what proviso.
    public var validity: String {
        !valid ? "NO: " + notes.joined(separator: "; ")
            : readerBusy ? "yes, a lower bound: " + notes.joined(separator: "; ") : "yes"
    }
    /// Scenario-specific numbers (lag, req/s, ms to first playlist …), by name.
    public var figures: [String: Double] = [:]
}

extension ServerRun {
    /// One server's repeated runs of a row as one: CPU and figures averaged, the peak RSS the
    /// highest, valid only if every run was.
    public static func mean(_ runs: [ServerRun]) -> ServerRun {
        precondition(!runs.isEmpty, "a mean of no runs")
        var mean = runs[0]
        let count = Double(runs.count)
        mean.cpuPercent = runs.map(\.cpuPercent).reduce(0, +) / count
        let perUnit = runs.compactMap(\.cpuPerUnit)
        mean.cpuPerUnit = perUnit.count == runs.count ? perUnit.reduce(0, +) / count : nil
        mean.peakResidentBytes = runs.map(\.peakResidentBytes).max() ?? 0
        mean.valid = runs.allSatisfy(\.valid)
        mean.readerBusy = runs.contains(where: \.readerBusy)
        mean.notes = runs.flatMap(\.notes)
        mean.figures = mean.figures.keys.reduce(into: [:]) { figures, name in
            let values = runs.compactMap { $0.figures[name] }
            if values.count == runs.count { figures[name] = values.reduce(0, +) / count }
        }
        return mean
    }
}

/// Runs the scenarios against Estuary and nginx-rtmp, one after the other, on the same machine.
public struct BenchRunner: Sendable {
    public struct Settings: Sendable {
        public var estuaryBinary: String
        public var warmup: Duration = .seconds(5)
        public var measure: Duration = .seconds(20)
        /// The core servers are pinned to (the generator runs on the others).
        public var serverCPU: Int? = 0
        public var generatorCPU: Int? = 1
        /// Fan-out players read once per this interval instead of as data arrives (zero).
        public var playerReadInterval: Duration = .zero
        /// Appended to every Estuary command line (e.g. to compare settings).
        public var estuaryArguments: [String] = []
        public init(estuaryBinary: String) { self.estuaryBinary = estuaryBinary }
    }

    public let settings: Settings
    public init(settings: Settings) { self.settings = settings }

    /// N publishers of `source` on each server in `kinds`, all of them at once: every server gets
    /// its own N publishers and is sampled over the same seconds, so a machine that runs faster or
    /// slower from minute to minute (a shared VM does) moves both, not the ratio. With `hls`,
    /// nginx-rtmp writes HLS to tmpfs and Estuary packages it in memory (or on tmpfs too, with
    /// `hlsOnDisk`).
    public func ingest(_ kinds: [ServerProcess.Kind], publishers: Int, source: FLVSource, hls: Bool,
                       hlsOnDisk: Bool = false, label: String) async throws -> [ServerRun] {
        var servers: [ServerProcess] = []
        defer { for server in servers { server.stop() } }
        for kind in kinds {
            let server = try ServerProcess(kind, options: .init(hls: hls, hlsOnDisk: hlsOnDisk, cpu: settings.serverCPU),
                                           estuaryBinary: settings.estuaryBinary,
                                           estuaryArguments: (hls ? [] : ["--hls", "off"]) + settings.estuaryArguments)
            servers.append(server)
            try await server.waitUntilReady()
        }
        let loads = servers.map { _ in RTMPLoad() }
        var measurements = servers.map { server in
            var measurement = ServerRun(scenario: label, size: "N=\(publishers)", server: server.kind)
            measurement.figures["streams"] = Double(publishers)
            measurement.figures["bitrate"] = source.bitrate
            measurement.figures["idle_rss"] = Double(ProcessStats.sample(root: server.pid)?.residentBytes ?? 0)
            return measurement
        }
        // Interleaved, so neither server's publishers start (and warm up) before the other's.
        for index in 0..<publishers {
            for (server, load) in zip(servers, loads) {
                try await load.publish(source, to: RTMPTarget(port: server.rtmpPort, streamName: "bench\(index)"))
            }
        }
        try await waitFor("\(publishers) publishing on each server") {
            loads.allSatisfy { $0.statistics.snapshot.publishing == publishers }
        }
        let window = try await measure(servers) { for load in loads { load.statistics.startMeasuring() } }
        for load in loads { await load.stop() }
        for index in measurements.indices {
            let snapshot = loads[index].statistics.snapshot
            finish(&measurements[index], window, index, units: publishers, errors: snapshot.errors,
                   lateness: snapshot.maxPublisherLateness)
            measurements[index].figures["lateness_ms"] = Double(snapshot.maxPublisherLateness)
        }
        return measurements
    }

    /// One publisher of `source` and M RTMP players of it.
    public func fanOut(_ kind: ServerProcess.Kind, players: Int, source: FLVSource) async throws -> ServerRun {
        let server = try ServerProcess(kind, options: .init(cpu: settings.serverCPU),
                                       estuaryBinary: settings.estuaryBinary, estuaryArguments: ["--hls", "off"] + settings.estuaryArguments)
        defer { server.stop() }
        try await server.waitUntilReady()
        let load = RTMPLoad(playerReadInterval: .milliseconds(Int64(settings.playerReadInterval.milliseconds)))
        var measurement = ServerRun(scenario: "fan-out", size: "M=\(players)", server: kind)
        try await load.publish(source, to: RTMPTarget(port: server.rtmpPort, streamName: "show"))
        try await waitFor("the publisher") { load.statistics.snapshot.publishing == 1 }
        for _ in 0..<players { try await load.play(RTMPTarget(port: server.rtmpPort, streamName: "show")) }
        try await waitFor("\(players) playing") { load.statistics.snapshot.playing == players }
        let window = try await measure([server]) { load.statistics.startMeasuring() }
        await load.stop()
        let snapshot = load.statistics.snapshot
        finish(&measurement, window, 0, units: players, errors: snapshot.errors, lateness: snapshot.maxPublisherLateness,
               reads: .boundedIfBusy)
        let lags = snapshot.lags.sorted()
        if !lags.isEmpty {
            measurement.figures["lag_p50_ms"] = Double(lags[lags.count / 2])
            measurement.figures["lag_p99_ms"] = Double(lags[min(lags.count - 1, lags.count * 99 / 100)])
        } else {
            measurement.valid = false
            measurement.notes.append("players received nothing")
        }
        measurement.figures["stalls"] = Double(snapshot.stalls)
        // What each player received, against the publisher's bitrate: dropped frames show here.
        measurement.figures["player_kbps"] = Double(snapshot.mediaBytes) * 8 / 1000 / Double(players) / (settings.measure.milliseconds / 1000)
        measurement.figures["source_kbps"] = source.bitrate / 1000
        return measurement
    }

    /// HLS: time from publish to the first playable playlist, the newest segment's age, and `wrk`
    /// fetching a live segment and the playlist.
    public func hls(_ kind: ServerProcess.Kind, source: FLVSource, wrkSeconds: Int, connections: Int) async throws -> ServerRun {
        let server = try await hlsServer(kind)
        defer { server.stop() }
        var measurement = ServerRun(scenario: "hls", size: "1 stream", server: kind)
        let load = RTMPLoad()
        let playlistURL = "http://127.0.0.1:\(server.httpPort)/live/edge/index.m3u8"
        let (started, first) = try await publishUntilPlayable(source, stream: "edge", load: load, server: server)
        measurement.figures["first_playlist_ms"] = (ContinuousClock.now - started).milliseconds
        // Edge age: when a segment appears, wall clock minus the media time its end stands for.
        var ages: [Double] = []
        var mediaEnd = first.segments.reduce(0) { $0 + $1.duration }
        var newest = first.mediaSequence + first.segments.count - 1
        let until = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < until {
            try await Task.sleep(for: .milliseconds(50))
            guard let (status, body) = await HTTPFetch.get(playlistURL), status == 200, let view = PlaylistView(body) else { continue }
            for (offset, segment) in view.segments.enumerated() where view.mediaSequence + offset > newest {
                mediaEnd += segment.duration
                newest = view.mediaSequence + offset
                ages.append((ContinuousClock.now - started).milliseconds - mediaEnd * 1000)
            }
        }
        if !ages.isEmpty { measurement.figures["edge_age_ms"] = ages.sorted()[ages.count / 2] }
        // Serving: a live segment and the playlist, as fast as wrk can ask.
        let latest = await HTTPFetch.get(playlistURL).flatMap { PlaylistView($0.body) }
        guard let segment = latest?.segments.first?.uri else { throw BenchError.tool("\(kind.rawValue): empty playlist") }
        let segmentURL = "http://127.0.0.1:\(server.httpPort)/live/edge/\(segment)"
        let monitor = ProcessMonitor(root: server.pid)
        monitor.tick()
        let segmentRun = try await WrkResult.run(url: segmentURL, seconds: wrkSeconds, connections: connections, cpu: settings.generatorCPU)
        let playlistRun = try await WrkResult.run(url: playlistURL, seconds: wrkSeconds, connections: connections, cpu: settings.generatorCPU)
        monitor.tick()
        await load.stop()
        measurement.figures["segment_rps"] = segmentRun.requestsPerSecond
        measurement.figures["segment_p99_ms"] = segmentRun.p99Milliseconds
        measurement.figures["playlist_rps"] = playlistRun.requestsPerSecond
        measurement.figures["playlist_p99_ms"] = playlistRun.p99Milliseconds
        if segmentRun.errors + playlistRun.errors > 0 {
            measurement.notes.append("wrk errors: \(segmentRun.errors + playlistRun.errors)")
            measurement.valid = false
        }
        if let summary = monitor.summary {
            measurement.cpuPercent = summary.cpuPercent
            measurement.peakResidentBytes = summary.peakResidentBytes
        }
        return measurement
    }

    /// One publisher of `source` and K HLS viewers of it, polling as players do: server CPU per
    /// viewer, and how long after a segment's media ended a viewer had it.
    public func hlsViewers(_ kind: ServerProcess.Kind, viewers: Int, source: FLVSource) async throws -> ServerRun {
        let server = try await hlsServer(kind)
        defer { server.stop() }
        var measurement = ServerRun(scenario: "hls viewers", size: "K=\(viewers)", server: kind)
        let publisher = RTMPLoad()
        // Seconds into the stream, its first playlist still starts with its first segment.
        let (started, first) = try await publishUntilPlayable(source, stream: "show", load: publisher, server: server)
        let load = HLSViewerLoad(origin: started, firstSequence: first.mediaSequence)
        for _ in 0..<viewers { try await load.watch(port: server.httpPort, playlistPath: "/live/show/index.m3u8") }
        try await waitFor("\(viewers) viewers") { load.statistics.snapshot.watching == viewers }
        // At least two 2 s segments' worth, so even a smoke run sees new segments.
        let window = try await measure([server], atLeast: .seconds(5)) {
            publisher.statistics.startMeasuring()
            load.startMeasuring()
        }
        await load.stop()
        await publisher.stop()
        let snapshot = load.statistics.snapshot
        finish(&measurement, window, 0, units: viewers, errors: snapshot.errors + publisher.statistics.snapshot.errors,
               lateness: publisher.statistics.snapshot.maxPublisherLateness, reads: .invalidIfBusy)
        let delays = snapshot.delays.sorted()
        if delays.isEmpty {
            measurement.valid = false
            measurement.notes.append("viewers fetched no segment")
        } else {
            measurement.figures["delay_p50_ms"] = Double(delays[delays.count / 2])
            measurement.figures["delay_p99_ms"] = Double(delays[min(delays.count - 1, delays.count * 99 / 100)])
        }
        measurement.figures["segments"] = Double(snapshot.segments)
        measurement.figures["missed"] = Double(snapshot.missed)
        if snapshot.missed > 0 {
            measurement.valid = false
            measurement.notes.append("viewers missed \(snapshot.missed) segments")
        }
        return measurement
    }

    // MARK: Helpers

    /// A server of `kind` with HLS on, ready for load; the caller stops it.
    private func hlsServer(_ kind: ServerProcess.Kind) async throws -> ServerProcess {
        let server = try ServerProcess(kind, options: .init(hls: true, cpu: settings.serverCPU),
                                       estuaryBinary: settings.estuaryBinary, estuaryArguments: settings.estuaryArguments)
        do {
            try await server.waitUntilReady()
        } catch {
            server.stop()
            throw error
        }
        return server
    }

    /// Publishes `source` as `stream` and polls until its playlist is playable (a 200 with at least
    /// one segment); returns when the publish began and that first playlist.
    private func publishUntilPlayable(_ source: FLVSource, stream: String, load: RTMPLoad,
                                      server: ServerProcess) async throws -> (ContinuousClock.Instant, PlaylistView) {
        let url = "http://127.0.0.1:\(server.httpPort)/live/\(stream)/index.m3u8"
        let started = ContinuousClock.now
        try await load.publish(source, to: RTMPTarget(port: server.rtmpPort, streamName: stream))
        while true {
            guard ContinuousClock.now - started < .seconds(30) else {
                throw BenchError.tool("\(server.kind.rawValue): no playlist in 30 s")
            }
            if let (status, body) = await HTTPFetch.get(url), status == 200, let view = PlaylistView(body), !view.segments.isEmpty {
                return (started, view)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// The measured seconds: each server's samples, and the generator's own CPU over them.
    struct Window {
        var monitors: [ProcessMonitor]
        /// Percent of one core this process (publishers, players, viewers) used.
        var generatorPercent: Double
    }

    /// Warm-up, then samples every server each second over the same measured window.
    private func measure(_ servers: [ServerProcess], atLeast minimum: Duration = .zero,
                         starting: () -> Void) async throws -> Window {
        try await Task.sleep(for: settings.warmup)
        starting()
        let monitors = servers.map { ProcessMonitor(root: $0.pid) }
        for monitor in monitors { monitor.tick() }
        let began = (ContinuousClock.now, GeneratorCPU.seconds())
        let end = ContinuousClock.now + max(settings.measure, minimum)
        while ContinuousClock.now < end {
            try await Task.sleep(for: .seconds(1))
            for monitor in monitors { monitor.tick() }
        }
        let wall = (ContinuousClock.now - began.0).milliseconds / 1000
        return Window(monitors: monitors, generatorPercent: 100 * (GeneratorCPU.seconds() - began.1) / max(wall, 0.001))
    }

    /// A reading generator this busy may be what limits the run (its reads batch up and the
    /// server's writes with them), so the row would measure the generator, not the server.
    /// Publishers are judged by their lateness instead: it says directly whether they kept time.
    public static let readerLimit = 90.0

    /// What a generator busier than `readerLimit` means for a row where it reads.
    enum BusyReader {
        /// Only RTMP players are known to make the server cheaper when they fall behind (see
        /// `ServerRun.readerBusy`); the report then takes the ratio as an upper bound.
        case boundedIfBusy
        /// HLS viewers: which way a late reader moves the server's cost is not known; the row is invalid.
        case invalidIfBusy
    }

    private func finish(_ measurement: inout ServerRun, _ window: Window, _ index: Int, units: Int, errors: [String],
                        lateness: Int64 = 0, reads: BusyReader? = nil) {
        if let summary = window.monitors[index].summary {
            measurement.cpuPercent = summary.cpuPercent
            measurement.cpuPerUnit = summary.cpuPercent / Double(max(units, 1))
            measurement.peakResidentBytes = summary.peakResidentBytes
        } else {
            measurement.valid = false
            measurement.notes.append("the server could not be sampled")
        }
        measurement.figures["generator_cpu"] = window.generatorPercent
        if let reads, window.generatorPercent > Self.readerLimit {
            measurement.notes.append("the generator used \(Int(window.generatorPercent))% of its core")
            switch reads {
            case .boundedIfBusy: measurement.readerBusy = true
            case .invalidIfBusy: measurement.valid = false
            }
        }
        if lateness > 500 {
            measurement.valid = false
            measurement.notes.append("generator fell \(lateness) ms behind real time")
        }
        if !errors.isEmpty {
            measurement.valid = false
            measurement.notes.append("\(errors.count) errors, first: \(errors[0])")
        }
    }

    private func waitFor(_ what: String, timeout: Duration = .seconds(30), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            guard ContinuousClock.now < deadline else { throw BenchError.tool("timed out waiting for \(what)") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

extension Duration {
    var milliseconds: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15 }
}
