import App
import Foundation
import Testing

extension EndToEnd {
    @Suite("Publisher lifecycle: idle timeout, refused codecs, log context")
    struct PublisherLifecycle {
        /// Log lines of one connection: those carrying its `conn=<id>` field.
        static func lines(of connection: String, in logs: [String]) -> [String] {
            logs.filter { $0.split(separator: " ").contains { $0 == "conn=\(connection)" } }
        }

        /// The connection id of the (first) publisher that went live on `channel`.
        static func publisherConnection(_ channel: String, in logs: [String]) throws -> String {
            let line = try #require(logs.first { $0.hasPrefix("info publishing ") && $0.contains("channel=\(channel)") },
                                    "no 'publishing' line for \(channel)")
            let field = try #require(line.split(separator: " ").first { $0.hasPrefix("conn=") }, "no conn in '\(line)'")
            return String(field.dropFirst(5))
        }

        @Test("a publisher that goes silent is closed after the idle timeout with the reason logged; another publish carries on")
        func idlePublisher() async throws {
            let server = try await TestServer {
                $0.idleTimeout = 2
                $0.publishGrace = 0.5
            }
            let steady = try publish("av-long.flv", to: server.rtmpURL("steady"))
            let silent = try publish("av-long.flv", to: server.rtmpURL("silent"))
            _ = try await server.waitForPlaylist("silent") { !$0.segments.isEmpty }
            // Stopped, not killed: the TCP connection stays open and sends nothing.
            silent.kill(SIGSTOP)
            try await Relay.waitUntil("the silent publisher to be closed", timeout: .seconds(15)) {
                server.logs.all.contains { $0.contains("closing connection") && $0.contains("channel=silent") }
            }
            let closing = server.logs.all.filter { $0.contains("closing connection") }
            #expect(closing.count == 1, "only the silent publisher is closed: \(closing)")
            #expect(closing.first?.contains("reason=no data for") == true, "\(closing)")
            // Its playlist ends after the grace; the other channel keeps producing segments.
            let ended = try await server.waitForPlaylist("silent") { $0.ended }
            #expect(!ended.segments.isEmpty)
            let steadyNow = try await server.waitForPlaylist("steady") { !$0.segments.isEmpty }
            let lastNow = try #require(steadyNow.segments.last?.uri)
            let later = try await server.waitForPlaylist("steady") { $0.segments.last?.uri != lastNow }
            #expect(!later.ended)
            #expect(steady.isRunning)

            silent.kill(SIGCONT)
            let silentResult = try await silent.wait()
            #expect(silentResult.status != 0, "ffmpeg's connection was closed under it")
            steady.kill(SIGTERM)
            _ = try await steady.wait()
            #expect(!server.logs.all.contains { $0.contains("closing connection") && $0.contains("channel=steady") })
            try await server.stop()
        }

        @Test("a codec FLV carries but we do not (Sorenson H.263) is refused at its first frame with a clear log line; another channel is unaffected")
        func unsupportedVideoCodec() async throws {
            let server = try await TestServer { $0.publishGrace = 0.5 }
            let fine = try publish("av-640x360.flv", to: server.rtmpURL("fine"))
            _ = try await server.waitForPlaylist("fine") { !$0.segments.isEmpty }
            // Re-encoded to Sorenson Spark (FLV codec id 2); the audio stays AAC.
            let refused = try await ChildProcess.run("ffmpeg", [
                "-hide_banner", "-loglevel", "error", "-re", "-i", fixturePath("av-640x360.flv"),
                "-c:v", "flv", "-c:a", "copy", "-f", "flv", server.rtmpURL("sorenson"),
            ])
            #expect(refused.status != 0, "ffmpeg went on publishing: \(refused.stderr)")
            let closing = server.logs.all.filter { $0.contains("closing connection") }
            #expect(closing.count == 1, "\(closing)")
            let line = try #require(closing.first)
            #expect(line.contains("unsupported video codec id 2 (Sorenson H.263); H.264 only"), "\(line)")
            #expect(line.contains("channel=sorenson"), "\(line)")
            #expect(refused.stderr.contains("Connection reset by peer") || refused.stderr.contains("Broken pipe"), "\(refused.stderr)")
            // The AAC sequence header and first frames came before the first video frame, so the channel
            // was live for those (a few tens of ms of audio): its playlist ends after the grace.
            let leftover = try await server.waitForPlaylist("sorenson") { $0.ended }
            #expect(leftover.totalDuration < 0.5, "\(leftover.text)")
            #expect(try await fine.wait().status == 0)
            let playlist = try await server.waitForPlaylist("fine") { $0.ended }
            #expect(abs(playlist.totalDuration - 6.0) < 0.2, "total \(playlist.totalDuration)")
            try await server.stop()
        }

        @Test("a publish's log lines carry its connection id and channel; HLS disk errors name the channel")
        func logContext() async throws {
            // A regular file where the HLS directory should be: every disk write fails, and is logged.
            let blocker = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-blocker-\(UUID().uuidString)")
            try Data("not a directory".utf8).write(to: blocker)
            defer { try? FileManager.default.removeItem(at: blocker) }
            let server = try await TestServer {
                $0.hlsPath = blocker.path
                $0.publishGrace = 0.5
            }
            let result = try await publish("av-640x360.flv", to: server.rtmpURL("logged"), extra: ["-t", "3"]).wait()
            #expect(result.status == 0, "ffmpeg: \(result.stderr)")
            _ = try await server.waitForPlaylist("logged") { $0.ended }
            let logs = server.logs.all

            let connection = try Self.publisherConnection("logged", in: logs)
            let own = Self.lines(of: connection, in: logs)
            let start = try #require(own.firstIndex { $0.hasPrefix("info publishing ") })
            #expect(own[..<start].contains { $0.contains("publish requested") })
            let afterPublishing = own[start...]
            for expected in ["stream codecs", "publisher stopped"] {
                #expect(afterPublishing.contains { $0.contains(expected) }, "no '\(expected)' line on conn=\(connection)")
            }
            for line in afterPublishing {
                #expect(line.contains("channel=logged"), "line of the publish without its channel: \(line)")
            }

            // The packager's lines (segments, disk failures, the end) name the channel too.
            let diskFailures = logs.filter { $0.contains("HLS directory write failed") }
            #expect(!diskFailures.isEmpty, "writing under a regular file must fail")
            for line in diskFailures + logs.filter({ $0.hasPrefix("debug segment ") || $0.contains("playlist ended") }) {
                #expect(line.contains("channel=logged"), "packager line without its channel: \(line)")
            }
            #expect(logs.contains { $0.contains("playlist ended") })
            try await server.stop()
        }
    }
}
