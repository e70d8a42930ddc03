import App
import Foundation
import Testing

extension EndToEnd {
    @Suite("Stream keys")
    struct StreamKeys {
        @Test("a configured key publishes to its channel; a wrong key is denied; keys never reach the log")
        func keys() async throws {
            let server = try await TestServer { $0.streamKeys = ["s3cret-key-1": "main"] }
            let denied = try await publish("video-only.flv", to: server.rtmpURL("wrong-key-77")).wait()
            #expect(denied.status != 0)
            #expect(denied.stderr.contains("unknown stream key"), "ffmpeg said: \(denied.stderr)")
            #expect(server.logs.contains("NetStream.Publish.Denied"))

            let allowed = try publish("video-only.flv", to: server.rtmpURL("s3cret-key-1"))
            _ = try await server.waitForPlaylist("main") { !$0.segments.isEmpty }
            #expect(try await server.get("/live/s3cret-key-1/index.m3u8").status == 404)
            #expect(try await allowed.wait().status == 0)

            for line in server.logs.all {
                #expect(!line.contains("s3cret-key-1") && !line.contains("wrong-key-77"), "key in log: \(line)")
            }
            try await server.stop()
        }

        @Test("a second publisher on a live channel gets NetStream.Publish.BadName; the first is undisturbed")
        func duplicate() async throws {
            let server = try await TestServer()
            let first = try publish("av-640x360.flv", to: server.rtmpURL("dup"))
            _ = try await server.waitForPlaylist("dup") { !$0.segments.isEmpty }
            let second = try await publish("video-only.flv", to: server.rtmpURL("dup")).wait()
            #expect(second.status != 0)
            #expect(server.logs.contains("NetStream.Publish.BadName"))
            #expect(try await first.wait().status == 0)
            try await server.stop()
        }
    }
}
