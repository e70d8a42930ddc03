import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Plain HTTP GETs for the playlist probes: a blocking `URLSession`-free fetch is enough on loopback.
enum HTTPFetch {
    /// Status and body of `url`, or nil when nothing answered.
    static func get(_ url: String, timeout: TimeInterval = 5) async -> (status: Int, body: String)? {
        guard let url = URL(string: url) else { return nil }
        var request = URLRequest(url: url, cachePolicy: .reloadIgnoringLocalAndRemoteCacheData, timeoutInterval: timeout)
        request.httpMethod = "GET"
        guard let (data, response) = try? await URLSession.shared.data(for: request),
              let http = response as? HTTPURLResponse else { return nil }
        return (http.statusCode, String(decoding: data, as: UTF8.self))
    }
}

/// `#EXTINF` durations and URIs of a media playlist, in order, with its media sequence and target duration.
struct PlaylistView: Equatable {
    var mediaSequence = 0
    var targetDuration: Double?
    var segments: [(uri: String, duration: Double)] = []

    init?(_ text: String) {
        guard text.hasPrefix("#EXTM3U") else { return nil }
        var duration: Double?
        for line in text.split(separator: "\n") {
            if line.hasPrefix("#EXT-X-MEDIA-SEQUENCE:") {
                mediaSequence = Int(line.dropFirst(22)) ?? 0
            } else if line.hasPrefix("#EXT-X-TARGETDURATION:") {
                targetDuration = Double(line.dropFirst(22))
            } else if line.hasPrefix("#EXTINF:") {
                duration = Double(line.dropFirst(8).split(separator: ",").first ?? "")
            } else if !line.hasPrefix("#"), let value = duration {
                segments.append((String(line), value))
                duration = nil
            }
        }
    }

    static func == (a: PlaylistView, b: PlaylistView) -> Bool {
        a.mediaSequence == b.mediaSequence && a.segments.map(\.uri) == b.segments.map(\.uri)
    }
}

/// `wrk` against one URL: requests per second and the 99th-percentile latency.
public struct WrkResult: Sendable, Equatable {
    public var requestsPerSecond: Double
    public var p99Milliseconds: Double
    public var errors: Int

    /// Reads wrk's `--latency` report.
    static func parse(_ output: String) -> WrkResult? {
        var result = WrkResult(requestsPerSecond: 0, p99Milliseconds: 0, errors: 0)
        var sawRate = false
        for raw in output.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("Requests/sec:") {
                guard let value = Double(line.dropFirst(13).trimmingCharacters(in: .whitespaces)) else { return nil }
                result.requestsPerSecond = value
                sawRate = true
            } else if line.hasPrefix("99%") {
                result.p99Milliseconds = milliseconds(String(line.dropFirst(3).trimmingCharacters(in: .whitespaces))) ?? 0
            } else if line.hasPrefix("Non-2xx or 3xx responses:") {
                result.errors += Int(line.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "") ?? 0
            } else if line.hasPrefix("Socket errors:") {
                for part in line.dropFirst(14).split(separator: ",") {
                    result.errors += Int(part.split(separator: " ").last ?? "") ?? 0
                }
            }
        }
        return sawRate ? result : nil
    }

    /// wrk prints `812.00us`, `1.23ms`, `2.01s`.
    static func milliseconds(_ text: String) -> Double? {
        for (suffix, scale) in [("us", 0.001), ("ms", 1.0), ("s", 1000.0)] where text.hasSuffix(suffix) {
            return Double(text.dropLast(suffix.count)).map { $0 * scale }
        }
        return nil
    }

    static func run(url: String, seconds: Int, connections: Int, cpu: Int?) async throws -> WrkResult {
        var command = ["/usr/bin/wrk", "-t1", "-c\(connections)", "-d\(seconds)s", "--latency", url]
        if let cpu, FileManager.default.isExecutableFile(atPath: "/usr/bin/taskset") {
            command = ["/usr/bin/taskset", "-c", "\(cpu)"] + command
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/wrk") else {
            throw BenchError.tool("wrk is not installed (Debian package wrk)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let output = try await Task.detached { try pipe.fileHandleForReading.readToEnd() ?? Data() }.value
        process.waitUntilExit()
        guard let result = parse(String(decoding: output, as: UTF8.self)) else {
            throw BenchError.tool("cannot read wrk's report: \(String(decoding: output, as: UTF8.self).prefix(300))")
        }
        return result
    }
}
