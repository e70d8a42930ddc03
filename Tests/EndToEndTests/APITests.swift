import App
import Foundation
import Testing

extension EndToEnd {
    @Suite("Streams API")
    struct StreamsAPI {
        static func json(_ body: Data) throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
        }

        @Test("GET /api/v1/streams and /streams/{channel} describe what is live; errors are JSON")
        func streams() async throws {
            let server = try await TestServer()
            let publisher = try publish("av-long.flv", to: server.rtmpURL("api"))
            _ = try await server.waitForPlaylist("api") { !$0.segments.isEmpty }

            let list = try await server.get("/api/v1/streams")
            #expect(list.status == 200)
            #expect(list.headers["content-type"] == "application/json")
            let streams = try #require(try Self.json(list.body)["streams"] as? [[String: Any]])
            #expect(streams.count == 1)
            let stream = try #require(streams.first)
            #expect(stream["channel"] as? String == "api")
            #expect(stream["app"] as? String == "live")
            #expect((stream["video"] as? [String: Any])?["codec"] as? String == "h264")
            #expect((stream["audio"] as? [String: Any])?["sampleRate"] as? Int == 48000)
            #expect((stream["bytes"] as? Int ?? 0) > 0)
            #expect((stream["subscribers"] as? Int ?? 0) >= 1, "the HLS packager is subscribed")

            let one = try Self.json(try await server.get("/api/v1/streams/api").body)
            #expect(one["live"] as? Bool == true)
            #expect((one["stream"] as? [String: Any])?["channel"] as? String == "api")
            #expect((one["recordings"] as? [Any])?.isEmpty == true, "recording is off: \(one)")
            #expect((one["relays"] as? [Any])?.isEmpty == true, "no relays configured: \(one)")
            let offline = try await server.get("/api/v1/streams/nobody")
            #expect(offline.status == 200)
            #expect(try Self.json(offline.body)["live"] as? Bool == false)

            let bad = try await server.get("/api/v1/streams/..%2F..%2Fetc")
            #expect(bad.status == 400 || bad.status == 404)
            let missing = try await server.get("/api/v1/nothing-here")
            #expect(missing.status == 404)

            publisher.kill()
            _ = try await publisher.wait()
            try await server.stop()
        }

        @Test("with --api-token the API needs the bearer token; the reason comes back as JSON")
        func token() async throws {
            let token = "an-api-token-of-32-characters-xx"
            let server = try await TestServer { $0.apiToken = token }
            let anonymous = try await server.get("/api/v1/streams")
            #expect(anonymous.status == 401)
            #expect(anonymous.headers["www-authenticate"] == "Bearer")
            let error = try #require(try Self.json(anonymous.body)["error"] as? [String: Any])
            #expect(error["code"] as? String == "unauthorized")
            #expect(error["message"] as? String == "a valid API token is required")
            #expect(try await server.get("/api/v1/streams", headers: ["Authorization": "Bearer wrong"]).status == 401)
            #expect(try await server.get("/api/v1/streams", headers: ["Authorization": token]).status == 401)
            let allowed = try await server.get("/api/v1/streams", headers: ["Authorization": "Bearer \(token)"])
            #expect(allowed.status == 200)
            #expect(try Self.json(allowed.body)["streams"] as? [Any] != nil)
            // HLS and health stay public.
            #expect(try await server.get("/health").status == 200)
            try await server.stop()
        }
    }
}
