import App
import Foundation
import Testing

extension EndToEnd {
    /// What a node does when Redis is missing, dies, stalls or refuses: media never waits for it.
    @Suite("Redis faults")
    struct RedisFaults {
        typealias Registry = EndToEnd.RedisRegistry

        static func defaultTiming(_ configuration: inout EstuaryConfiguration) {
            let defaults = EstuaryConfiguration()
            configuration.redisHeartbeat = defaults.redisHeartbeat
            configuration.redisTTL = defaults.redisTTL
            configuration.redisTimeout = defaults.redisTimeout
        }

        static func health(_ server: TestServer) async throws -> [String: Any] {
            try Registry.json(try await server.get("/health").body)
        }

        /// The stream hash, the lease and the node record of `channel` on `node`, all present.
        static func asserted(_ redis: RedisServer, channel: String, node: String) async throws -> Bool {
            guard try await redis.cli("GET", "estuary:lease:\(channel)") == node else { return false }
            guard try await redis.hash("estuary:stream:\(channel)")["node"] == node else { return false }
            return try await redis.cli("EXISTS", "estuary:node:\(node)") == "1"
        }

        @Test("Redis down at start: the node starts, publishes and serves HLS, says degraded; Redis up → everything asserted within 5 s")
        func downAtStart() async throws {
            let port = try Relay.Nginx.freePort()
            // The default heartbeat (5 s) and TTL (15 s): the re-assertion must not wait for a heartbeat.
            let server = try await Registry.node("node-a", url: "redis://127.0.0.1:\(port)/0") { Self.defaultTiming(&$0) }
            try await Registry.waitUntil("the log to say Redis is unavailable") { server.logs.contains("redis unavailable, retrying") }
            #expect(server.logs.all.contains { $0.contains("redis unavailable, retrying") && $0.contains("Connection refused") })
            let health = try await Self.health(server)
            #expect(health["status"] as? String == "degraded")
            #expect(health["registry"] as? String == "redis")
            #expect((health["registryError"] as? String)?.contains("Connection refused") == true, "\(health)")

            let publisher = try publish("av-long.flv", to: server.rtmpURL("solo"))
            _ = try await server.waitForPlaylist("solo") { $0.segments.count >= 2 }
            #expect(server.logs.contains("publishing anyway"))

            let redis = try await RedisServer.start(port: port)
            let back = ContinuousClock.now
            try await Registry.waitUntil("stream, lease and node record in the new Redis", timeout: .seconds(5)) {
                try await Self.asserted(redis, channel: "solo", node: "node-a")
            }
            print("Redis up after a start without it: stream, lease and node record asserted in \(ContinuousClock.now - back)")
            try await Registry.waitUntil("/health to be ok again") { try await Self.health(server)["status"] as? String == "ok" }
            #expect(server.logs.contains("redis connected"))
            publisher.kill()
            _ = try await publisher.wait()
            try await server.stop()
            try await redis.stop()
        }

        @Test("Redis killed mid-stream and restarted empty: ingest and HLS never stop; everything re-asserted within 5 s")
        func killedAndRestarted() async throws {
            let redis = try await RedisServer.start()
            let server = try await Registry.node("node-a", redis) { Self.defaultTiming(&$0) }
            let publisher = try publish("av-long.flv", to: server.rtmpURL("steady"))
            let before = try await server.waitForPlaylist("steady") { !$0.segments.isEmpty }
            try await Registry.waitUntil("the stream in Redis") { try await Self.asserted(redis, channel: "steady", node: "node-a") }

            try await redis.kill()
            let killed = ContinuousClock.now
            try await Registry.waitUntil("the node to notice") { server.logs.contains("redis unavailable, retrying") }
            // Ingest goes on: two more segments while Redis is away.
            let during = try await server.waitForPlaylist("steady") { $0.mediaSequence + $0.segments.count >= before.mediaSequence + before.segments.count + 2 }
            #expect(publisher.isRunning)
            print("Redis down for \(ContinuousClock.now - killed): the playlist ended at segment \(before.mediaSequence + before.segments.count - 1) before the kill, at \(during.mediaSequence + during.segments.count - 1) meanwhile")

            let restarted = try await redis.restart()
            let back = ContinuousClock.now
            try await Registry.waitUntil("stream, lease and node record re-asserted", timeout: .seconds(5)) {
                try await Self.asserted(restarted, channel: "steady", node: "node-a")
            }
            print("Redis restarted empty: stream, lease and node record re-asserted in \(ContinuousClock.now - back)")
            #expect(try await restarted.cli("ZRANGE", "estuary:live", "0", "-1") == "steady")
            let after = try await server.waitForPlaylist("steady") { $0.mediaSequence + $0.segments.count > during.mediaSequence + during.segments.count }
            #expect(!after.segments.contains { $0.discontinuity }, "ingest never broke:\n\(after.text)")
            #expect(publisher.isRunning)
            publisher.kill()
            _ = try await publisher.wait()
            try await server.stop()
            try await restarted.stop()
        }

        @Test("a node killed with SIGKILL: its stream, lease and record vanish within the TTL; the channel is publishable on another node")
        func nodeKilled() async throws {
            let redis = try await RedisServer.start()
            let data = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-node-a-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: data) }
            let a = try await ServerProcess(["--data-dir", data.path, "--redis-url", redis.url, "--node-id", "node-a",
                                             "--redis-heartbeat", "0.5", "--redis-ttl", "3"])
            let b = try await Registry.node("node-b", redis)
            let publisher = try publish("av-long.flv", to: "rtmp://127.0.0.1:\(a.rtmpPort)/live/doomed")
            try await Registry.waitUntil("the stream in Redis") { try await Self.asserted(redis, channel: "doomed", node: "node-a") }
            let refused = try await publish("video-only.flv", to: b.rtmpURL("doomed")).wait()
            #expect(refused.status != 0, "node-a holds the lease")

            a.process.kill(SIGKILL)
            _ = try await a.process.wait()
            let killed = ContinuousClock.now
            try await Registry.waitUntil("node-a's stream, lease and record to expire", timeout: .seconds(4)) {
                try await redis.cli("EXISTS", "estuary:stream:doomed", "estuary:lease:doomed", "estuary:node:node-a") == "0"
            }
            print("node-a SIGKILLed: its keys expired after \(ContinuousClock.now - killed) (TTL 3 s)")
            try await Registry.waitUntil("node-b's heartbeat to prune the listings") {
                let live = try await redis.cli("ZRANGE", "estuary:live", "0", "-1")
                let nodes = try await redis.cli("ZRANGE", "estuary:nodes", "0", "-1")
                return live.isEmpty && nodes == "node-b"
            }
            _ = try await publisher.wait()
            let again = try publish("av-long.flv", to: b.rtmpURL("doomed"))
            _ = try await b.waitForPlaylist("doomed") { !$0.segments.isEmpty }
            #expect(try await redis.cli("GET", "estuary:lease:doomed") == "node-b")
            again.kill()
            _ = try await again.wait()
            try await b.stop()
            try await redis.stop()
        }

        @Test("Redis stalled (SIGSTOP): segments keep their pace, a new publish goes through, the node says degraded, then recovers")
        func stalled() async throws {
            let redis = try await RedisServer.start()
            let server = try await Registry.node("node-a", redis)
            let publisher = try publish("av-long.flv", to: server.rtmpURL("paced"))
            let before = try await server.waitForPlaylist("paced") { !$0.segments.isEmpty }
            try await Registry.waitUntil("the stream in Redis") { try await Self.asserted(redis, channel: "paced", node: "node-a") }

            redis.pause()
            let paused = ContinuousClock.now
            // 2 s segments in real time: three more within 7.5 s, as without Redis at all.
            let during = try await server.waitForPlaylist("paced", timeout: .milliseconds(7500)) {
                $0.mediaSequence + $0.segments.count >= before.mediaSequence + before.segments.count + 3
            }
            #expect(ContinuousClock.now - paused < .milliseconds(7500))
            let started = ContinuousClock.now
            let second = try publish("av-long.flv", to: server.rtmpURL("newcomer"))
            _ = try await server.waitForPlaylist("newcomer") { !$0.segments.isEmpty }
            print("Redis paused: 3 segments in \(ContinuousClock.now - paused - (ContinuousClock.now - started)); a new publish made its first segment in \(ContinuousClock.now - started)")
            try await Registry.waitUntil("/health to say degraded") { try await Self.health(server)["status"] as? String == "degraded" }
            #expect(server.logs.all.contains { $0.contains("redis unavailable, retrying") && $0.contains("no reply within the timeout") })
            #expect(!during.segments.contains { $0.discontinuity })

            redis.resume()
            let resumed = ContinuousClock.now
            try await Registry.waitUntil("both streams asserted", timeout: .seconds(5)) {
                let paced = try await Self.asserted(redis, channel: "paced", node: "node-a")
                let newcomer = try await Self.asserted(redis, channel: "newcomer", node: "node-a")
                return paced && newcomer
            }
            print("Redis resumed: both streams asserted in \(ContinuousClock.now - resumed)")
            try await Registry.waitUntil("/health ok") { try await Self.health(server)["status"] as? String == "ok" }
            for process in [publisher, second] { process.kill() }
            for process in [publisher, second] { _ = try await process.wait() }
            try await server.stop()
            try await redis.stop()
        }

        @Test("Redis refusing: a wrong password and OOM are logged with Redis's words, retried, shown in /health; nothing crashes")
        func refusals() async throws {
            let redis = try await RedisServer.start(password: "the-right-password")
            let wrong = try await Registry.node("node-w", url: "redis://:not-the-password@127.0.0.1:\(redis.port)/0")
            try await Registry.waitUntil("the refusal in the log") { wrong.logs.contains("redis refused the password") }
            #expect(wrong.logs.all.contains { $0.contains("WRONGPASS") }, "\(wrong.logs.all.filter { $0.contains("redis") })")
            #expect((try await Self.health(wrong)["registryError"] as? String)?.contains("refused the password") == true)
            let connections: @Sendable () async throws -> String = {
                try await redis.cli("INFO", "stats").components(separatedBy: .newlines)
                    .first { $0.hasPrefix("total_connections_received:") } ?? ""
            }
            let first = try await connections()
            try await Registry.waitUntil("node-w to retry") { try await connections() != first }
            let publisher = try publish("av-long.flv", to: wrong.rtmpURL("anyway"))
            _ = try await wrong.waitForPlaylist("anyway") { !$0.segments.isEmpty }
            publisher.kill()
            _ = try await publisher.wait()
            try await wrong.stop()

            let server = try await Registry.node("node-a", redis)
            let streaming = try publish("av-long.flv", to: server.rtmpURL("full"))
            try await Registry.waitUntil("the stream in Redis") { try await Self.asserted(redis, channel: "full", node: "node-a") }
            #expect(try await redis.cli("CONFIG", "SET", "maxmemory", "1") == "OK")
            try await Registry.waitUntil("the OOM in the log") {
                server.logs.all.contains { $0.contains("registry writes failing") && $0.contains("OOM") }
            }
            #expect((try await Self.health(server)["registryError"] as? String)?.contains("OOM") == true)
            let during = try await server.waitForPlaylist("full") { $0.segments.count >= 2 }
            #expect(!during.segments.isEmpty && streaming.isRunning)
            #expect(try await redis.cli("CONFIG", "SET", "maxmemory", "0") == "OK")
            try await Registry.waitUntil("writes to succeed again") { server.logs.contains("registry writes succeed again") }
            try await Registry.waitUntil("/health ok") { try await Self.health(server)["status"] as? String == "ok" }
            streaming.kill()
            _ = try await streaming.wait()
            try await server.stop()
            try await redis.stop()
        }
    }
}
