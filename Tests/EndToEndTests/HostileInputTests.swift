import App
import Foundation
import NIOCore
import Testing

extension EndToEnd {
    @Suite("Hostile input")
    struct HostileInput {
        /// Each corpus file, and what the server must say when it ends that connection.
        static let corpus: [(file: String, reason: String)] = [
            ("truncated-handshake.bin", "handshake not completed within"),
            ("bad-version.bin", "unsupported RTMP version 6"),
            ("garbage-after-handshake.bin", "message length 14980478 exceeds limit"),
            ("chunk-size-zero.bin", "invalid chunk size 0"),
            ("chunk-size-huge.bin", "invalid chunk size 2147483648"),
            ("chunk-size-2g.bin", "invalid chunk size 2147483647"),
            ("message-16mib.bin", "message length 16777214 exceeds limit"),
            // The spec-following parse misreads the body after the lie; what it ends on is a malformed command.
            ("extended-timestamp-lie.bin", "malformed command"),
            ("csid-flood.bin", "more than 64 chunk streams"),
            ("amf-depth-bomb.bin", "AMF0 nesting deeper than 32"),
            ("publish-before-connect.bin", "createStream before connect"),
            ("media-before-publish.bin", "video message before publish"),
        ]

        @Test("each hostile connection ends with a logged reason while a healthy publish keeps producing segments")
        func corpusDuringPublish() async throws {
            let server = try await TestServer {
                $0.handshakeTimeout = 1
                $0.idleTimeout = 2
                $0.publishGrace = 1
            }
            let healthy = try publish("av-long.flv", to: server.rtmpURL("healthy"))
            let first = try await server.waitForPlaylist("healthy") { !$0.segments.isEmpty }
            let memoryBefore = try residentMemoryBytes()

            for (file, reason) in Self.corpus {
                let bytes = [UInt8](try Data(contentsOf: fixturesDirectory.appendingPathComponent("hostile/\(file)")))
                let closingBefore = server.logs.all.filter { $0.contains("closing connection") }.count
                let closedByServer = try await RawClient.sendAndAwaitClose(bytes, port: server.rtmpPort, timeout: .seconds(10))
                #expect(closedByServer, "\(file): the server did not end the connection")
                let closing = server.logs.all.filter { $0.contains("closing connection") }
                #expect(closing.count == closingBefore + 1, "\(file): expected one logged close")
                if let line = closing.last {
                    #expect(line.contains(reason), "\(file): logged '\(line)', expected '\(reason)'")
                    #expect(!line.contains("channel=healthy"), "\(file): the healthy publisher was closed")
                }
            }
            let memoryAfter = try residentMemoryBytes()
            #expect(memoryAfter - memoryBefore < 64 << 20, "memory grew by \(memoryAfter - memoryBefore) bytes")

            // The healthy publisher went on undisturbed to its end.
            let result = try await healthy.wait()
            #expect(result.status == 0, "healthy publisher: \(result.stderr)")
            let playlist = try await server.waitForPlaylist("healthy") { $0.ended }
            #expect(playlist.segments.count == 6)
            let lastNumber = try #require(playlist.segments.last.flatMap { Int($0.uri.dropLast(3)) })
            #expect(lastNumber - first.mediaSequence == 9, "20 s of 2 s segments, none lost")
            try await server.stop()
        }
    }
}
