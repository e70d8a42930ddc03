import Foundation
import Testing

/// The `estuary` executable SwiftPM built next to this test bundle (`swift build --build-tests` builds both).
func estuaryBinary() throws -> String {
    let testBinary = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
    let path = URL(fileURLWithPath: testBinary).deletingLastPathComponent().appendingPathComponent("estuary").path
    try #require(FileManager.default.isExecutableFile(atPath: path), "no estuary binary at \(path): run swift build --build-tests")
    return path
}

/// A real `estuary serve` process on free loopback ports, its log going to a file so the test can
/// read the ports it chose while it runs.
final class ServerProcess: Sendable {
    let process: ChildProcess
    let logFile: URL
    let rtmpPort: Int
    let httpPort: Int

    init(_ arguments: [String]) async throws {
        logFile = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-log-\(UUID().uuidString)")
        // `env NAME=VALUE sh -c 'exec …'`: exec keeps the pid, so signals reach estuary itself, not a shell.
        process = try ChildProcess("ESTUARY_TEST_LOG=\(logFile.path)", [
            "sh", "-c", #"exec "$0" "$@" 2>"$ESTUARY_TEST_LOG""#, try estuaryBinary(), "serve",
            "--bind", "127.0.0.1", "--rtmp-port", "0", "--http-port", "0",
        ] + arguments)
        var ports: (Int, Int)?
        let file = logFile
        try await EndToEnd.Relay.waitUntil("estuary to log its listening ports", timeout: .seconds(20)) {
            let log = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
            if let rtmp = Self.port(in: log, scheme: "rtmp"), let http = Self.port(in: log, scheme: "http") {
                ports = (rtmp, http)
                return true
            }
            return false
        }
        (rtmpPort, httpPort) = try #require(ports)
    }

    /// The port of the first `<scheme>://127.0.0.1:<port>` in a "listening" log line.
    static func port(in log: String, scheme: String) -> Int? {
        for line in log.split(separator: "\n") where line.contains("listening") {
            guard let range = line.range(of: "\(scheme)://127.0.0.1:") else { continue }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
        return nil
    }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    deinit { try? FileManager.default.removeItem(at: logFile) }
}

extension EndToEnd {
    @Suite("The estuary binary: help, signals")
    struct Binary {
        /// The flags the issue names, which `estuary --help` must point out.
        static let commonFlags = ["--rtmp-port", "--http-port", "--bind", "--data-dir", "--hls-segment-duration",
                                  "--hls-window", "--hls-path", "--stream-key", "--log-level"]

        @Test("estuary --help names the common flags and their variables and points to estuary serve --help, which has them all")
        func help() async throws {
            let binary = try estuaryBinary()
            let root = try await ChildProcess.run(binary, ["--help"])
            #expect(root.status == 0, "\(root.stderr)")
            for flag in Self.commonFlags {
                #expect(root.stdout.contains(flag), "estuary --help does not mention \(flag):\n\(root.stdout)")
            }
            #expect(root.stdout.contains("estuary serve --help"))
            #expect(root.stdout.contains("ESTUARY_RTMP_PORT"))

            let serve = try await ChildProcess.run(binary, ["serve", "--help"])
            #expect(serve.status == 0, "\(serve.stderr)")
            for flag in Self.commonFlags + ["--stream-keys-file", "--publish-grace"] {
                #expect(serve.stdout.contains(flag), "estuary serve --help does not list \(flag)")
            }
            for variable in ["ESTUARY_RTMP_PORT", "ESTUARY_HTTP_PORT", "ESTUARY_BIND", "ESTUARY_DATA_DIR",
                             "ESTUARY_HLS_SEGMENT_DURATION", "ESTUARY_HLS_WINDOW", "ESTUARY_HLS_PATH",
                             "ESTUARY_STREAM_KEY", "ESTUARY_LOG_LEVEL"] {
                #expect(serve.stdout.contains(variable), "estuary serve --help does not name \(variable)")
            }
        }

        @Test("an invalid value stops the binary at start with the reason and a usage exit code")
        func invalidValue() async throws {
            let binary = try estuaryBinary()
            let flag = try await ChildProcess.run(binary, ["serve", "--rtmp-port", "70000"])
            #expect(flag.status == 64, "\(flag.stderr)")
            #expect(flag.stderr.contains("ports must be 0…65535"), "\(flag.stderr)")
            let variable = try await ChildProcess("ESTUARY_HLS_WINDOW=six", [binary, "serve"]).wait()
            #expect(variable.status == 64, "\(variable.stderr)")
            #expect(variable.stderr.contains("--hls-window (ESTUARY_HLS_WINDOW) 'six' is not a whole number"), "\(variable.stderr)")
        }

        @Test("SIGTERM and SIGINT during a publish: exit 0, the on-disk playlist ends with ENDLIST", arguments: [SIGTERM, SIGINT])
        func signal(_ signal: Int32) async throws {
            let root = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-signal-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: root) }
            let hls = root.appendingPathComponent("hls")
            // A long grace: only the shutdown itself can end the playlist within this test.
            let server = try await ServerProcess(["--data-dir", root.appendingPathComponent("data").path,
                                                  "--hls-path", hls.path, "--publish-grace", "60"])
            #expect(server.log.contains("RTMP listening"), "the log names the chosen RTMP port")
            let publisher = try publish("av-long.flv", to: "rtmp://127.0.0.1:\(server.rtmpPort)/live/sig")
            let playlistFile = hls.appendingPathComponent("sig/index.m3u8")
            try await Relay.waitUntil("a segment in the on-disk playlist") {
                guard let text = try? String(contentsOf: playlistFile, encoding: .utf8) else { return false }
                return try !Playlist(text).segments.isEmpty
            }

            server.process.kill(signal)
            let result = try await server.process.wait()
            #expect(result.status == 0, "estuary exited \(result.status) on signal \(signal); log:\n\(server.log)")
            let text = try String(contentsOf: playlistFile, encoding: .utf8)
            #expect(text.hasSuffix("#EXT-X-ENDLIST\n"), "\(text)")
            let playlist = try Playlist(text)
            #expect(playlist.ended && !playlist.segments.isEmpty)
            for segment in playlist.segments {
                #expect(FileManager.default.fileExists(atPath: hls.appendingPathComponent("sig/\(segment.uri)").path))
            }
            #expect(server.log.contains("stopped"), "\(server.log)")
            let publisherResult = try await publisher.wait()
            #expect(publisherResult.status != 0, "the publisher's connection was closed by the shutdown")
        }
    }
}
