import Foundation

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
    public var notes: [String] = []
    /// Scenario-specific numbers (lag, req/s, ms to first playlist …), by name.
    public var figures: [String: Double] = [:]
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
        /// Appended to every Estuary command line (e.g. to compare settings).
        public var estuaryArguments: [String] = []
        public init(estuaryBinary: String) { self.estuaryBinary = estuaryBinary }
    }

    public let settings: Settings
    public init(settings: Settings) { self.settings = settings }

    /// N publishers of `source`; with `hls`, nginx-rtmp writes HLS to tmpfs and Estuary packages
    /// it in memory (or on tmpfs too, with `hlsOnDisk`).
    public func ingest(_ kind: ServerProcess.Kind, publishers: Int, source: FLVSource, hls: Bool,
                       hlsOnDisk: Bool = false, label: String) async throws -> ServerRun {
        let server = try ServerProcess(kind, options: .init(hls: hls, hlsOnDisk: hlsOnDisk, cpu: settings.serverCPU),
                                       estuaryBinary: settings.estuaryBinary,
                                       estuaryArguments: (hls ? [] : ["--hls", "off"]) + settings.estuaryArguments)
        defer { server.stop() }
        try await server.waitUntilReady()
        let load = RTMPLoad()
        var measurement = ServerRun(scenario: label, size: "N=\(publishers)", server: kind)
        measurement.figures["streams"] = Double(publishers)
        measurement.figures["bitrate"] = source.bitrate
        measurement.figures["idle_rss"] = Double(ProcessStats.sample(root: server.pid)?.residentBytes ?? 0)
        for index in 0..<publishers {
            try await load.publish(source, to: RTMPTarget(port: server.rtmpPort, streamName: "bench\(index)"))
        }
        try await waitFor("\(publishers) publishing") { load.statistics.snapshot.publishing == publishers }
        let monitor = try await measure(server, load: load)
        await load.stop()
        let snapshot = load.statistics.snapshot
        finish(&measurement, monitor: monitor, units: publishers, snapshot: snapshot)
        measurement.figures["lateness_ms"] = Double(snapshot.maxPublisherLateness)
        return measurement
    }

    /// One publisher of `source` and M RTMP players of it.
    public func fanOut(_ kind: ServerProcess.Kind, players: Int, source: FLVSource) async throws -> ServerRun {
        let server = try ServerProcess(kind, options: .init(cpu: settings.serverCPU),
                                       estuaryBinary: settings.estuaryBinary, estuaryArguments: ["--hls", "off"] + settings.estuaryArguments)
        defer { server.stop() }
        try await server.waitUntilReady()
        let load = RTMPLoad()
        var measurement = ServerRun(scenario: "fan-out", size: "M=\(players)", server: kind)
        try await load.publish(source, to: RTMPTarget(port: server.rtmpPort, streamName: "show"))
        try await waitFor("the publisher") { load.statistics.snapshot.publishing == 1 }
        for _ in 0..<players { try await load.play(RTMPTarget(port: server.rtmpPort, streamName: "show")) }
        try await waitFor("\(players) playing") { load.statistics.snapshot.playing == players }
        let monitor = try await measure(server, load: load)
        await load.stop()
        let snapshot = load.statistics.snapshot
        finish(&measurement, monitor: monitor, units: players, snapshot: snapshot)
        let lags = snapshot.lags.sorted()
        if !lags.isEmpty {
            measurement.figures["lag_p50_ms"] = Double(lags[lags.count / 2])
            measurement.figures["lag_p99_ms"] = Double(lags[min(lags.count - 1, lags.count * 99 / 100)])
        } else {
            measurement.valid = false
            measurement.notes.append("players received nothing")
        }
        measurement.figures["stalls"] = Double(snapshot.stalls)
        return measurement
    }

    /// HLS: time from publish to the first playable playlist, the newest segment's age, and `wrk`
    /// fetching a live segment and the playlist.
    public func hls(_ kind: ServerProcess.Kind, source: FLVSource, wrkSeconds: Int, connections: Int) async throws -> ServerRun {
        let server = try ServerProcess(kind, options: .init(hls: true, cpu: settings.serverCPU),
                                       estuaryBinary: settings.estuaryBinary, estuaryArguments: settings.estuaryArguments)
        defer { server.stop() }
        try await server.waitUntilReady()
        var measurement = ServerRun(scenario: "hls", size: "1 stream", server: kind)
        let load = RTMPLoad()
        let playlistURL = "http://127.0.0.1:\(server.httpPort)/live/edge/index.m3u8"
        let started = ContinuousClock.now
        try await load.publish(source, to: RTMPTarget(port: server.rtmpPort, streamName: "edge"))
        // First playable playlist: a 200 with at least one segment.
        var first: PlaylistView?
        while first == nil {
            guard ContinuousClock.now - started < .seconds(30) else { throw BenchError.tool("\(kind.rawValue): no playlist in 30 s") }
            if let (status, body) = await HTTPFetch.get(playlistURL), status == 200, let view = PlaylistView(body),
               !view.segments.isEmpty {
                first = view
            } else {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        measurement.figures["first_playlist_ms"] = (ContinuousClock.now - started).milliseconds
        // Edge age: when a segment appears, wall clock minus the media time its end stands for.
        var ages: [Double] = []
        var mediaEnd = first!.segments.reduce(0) { $0 + $1.duration }
        var newest = first!.mediaSequence + first!.segments.count - 1
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

    // MARK: Helpers

    private func measure(_ server: ServerProcess, load: RTMPLoad) async throws -> ProcessMonitor {
        try await Task.sleep(for: settings.warmup)
        load.statistics.startMeasuring()
        let monitor = ProcessMonitor(root: server.pid)
        monitor.tick()
        let end = ContinuousClock.now + settings.measure
        while ContinuousClock.now < end {
            try await Task.sleep(for: .seconds(1))
            monitor.tick()
        }
        return monitor
    }

    private func finish(_ measurement: inout ServerRun, monitor: ProcessMonitor, units: Int, snapshot: LoadStatistics.Snapshot) {
        if let summary = monitor.summary {
            measurement.cpuPercent = summary.cpuPercent
            measurement.cpuPerUnit = summary.cpuPercent / Double(max(units, 1))
            measurement.peakResidentBytes = summary.peakResidentBytes
        } else {
            measurement.valid = false
            measurement.notes.append("the server could not be sampled")
        }
        if snapshot.maxPublisherLateness > 500 {
            measurement.valid = false
            measurement.notes.append("generator fell \(snapshot.maxPublisherLateness) ms behind real time")
        }
        if !snapshot.errors.isEmpty {
            measurement.valid = false
            measurement.notes.append("\(snapshot.errors.count) errors, first: \(snapshot.errors[0])")
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
