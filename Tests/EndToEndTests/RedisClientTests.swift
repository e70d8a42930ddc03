import Foundation
import Logging
import StreamHub
import Testing

extension EndToEnd {
    /// The hiredis client against a real redis-server: pipelining, replies kept apart, limits, timeouts, reconnects.
    @Suite("Redis client")
    struct RedisClientTests {
        static func client(_ redis: RedisServer, configure: (inout RedisClient.Configuration) -> Void = { _ in }) throws -> RedisClient {
            var configuration = RedisClient.Configuration(endpoint: try RedisEndpoint(url: redis.url))
            configuration.timeout = .milliseconds(300)
            configuration.backoffMaximum = .milliseconds(400)
            configure(&configuration)
            return RedisClient(configuration: configuration, logger: Logger(label: "redis-client-test"))
        }

        @Test("concurrent callers each get their own replies; an error reply fails only its own command")
        func pipelining() async throws {
            let redis = try await RedisServer.start()
            let client = try Self.client(redis)
            let replies = await client.pipeline([["SET", "a", "1"], ["HSET", "a"], ["INCR", "a"], ["GET", "missing"]])
            #expect(replies[0] == .success(.status("OK")))
            guard case .success(.error(let message)) = replies[1] else { Issue.record("\(replies[1])"); return }
            #expect(message.contains("wrong number of arguments"))
            #expect(replies[2] == .success(.integer(2)))
            #expect(replies[3] == .success(.null))
            await #expect(throws: RedisError.self) { try await client.command(["HSET", "a"]) }

            // 200 tasks, 5 commands each: every reply lands with its caller.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<200 {
                    group.addTask {
                        let key = "counter-\(task)"
                        let replies = await client.pipeline([["DEL", key]] + Array(repeating: ["INCRBY", key, "\(task)"], count: 3) + [["GET", key]])
                        #expect(replies[4] == .success(.bulk(Array("\(task * 3)".utf8))))
                    }
                }
                try await group.waitForAll()
            }
            await client.shutdown()
            #expect(await client.pipeline([["PING"]])[0] == .failure(.stopped))
            try await redis.stop()
        }

        @Test("a reply over the limits is refused, and the connection goes on")
        func limits() async throws {
            let redis = try await RedisServer.start()
            let client = try Self.client(redis) { $0.limits.maxElements = 10; $0.limits.maxBytes = 1000 }
            _ = try await client.command(["ZADD", "z"] + (0..<20).flatMap { ["\($0)", "m\($0)"] })
            await #expect(throws: RedisError.replyTooLarge("over 10 elements")) { try await client.command(["ZRANGE", "z", "0", "-1"]) }
            _ = try await client.command(["SET", "big", String(repeating: "x", count: 2000)])
            await #expect(throws: RedisError.replyTooLarge("over 1000 bytes")) { try await client.command(["GET", "big"]) }
            #expect(try await client.command(["ZCARD", "z"]) == .integer(20))
            await client.shutdown()
            try await redis.stop()
        }

        @Test("a stalled Redis fails the command within the timeout; the client reconnects once Redis answers")
        func timeoutAndReconnect() async throws {
            let redis = try await RedisServer.start()
            let client = try Self.client(redis)
            #expect(try await client.command(["PING"]) == .status("PONG"))
            redis.pause()
            let sent = ContinuousClock.now
            await #expect(throws: RedisError.connectionLost("no reply within the timeout")) { try await client.command(["PING"]) }
            #expect(ContinuousClock.now - sent < .seconds(1), "the 300 ms timeout, not forever")
            // While away, callers are answered at once rather than queued.
            let refused = ContinuousClock.now
            await #expect(throws: RedisError.self) { try await client.command(["PING"]) }
            #expect(ContinuousClock.now - refused < .milliseconds(400))
            redis.resume()
            try await Relay.waitUntil("the client to reconnect", timeout: .seconds(5)) { client.state == .connected }
            #expect(try await client.command(["PING"]) == .status("PONG"))
            await client.shutdown()
            try await redis.stop()
        }

        @Test("no Redis at all: commands fail at once with the reason")
        func nothingListening() async throws {
            let port = try Relay.Nginx.freePort()
            var configuration = RedisClient.Configuration(endpoint: RedisEndpoint(host: "127.0.0.1", port: port))
            configuration.timeout = .milliseconds(300)
            let client = RedisClient(configuration: configuration, logger: Logger(label: "redis-client-test"))
            let reply = await client.pipeline([["PING"]])[0]
            guard case .failure(.unavailable(let why)) = reply else { Issue.record("\(reply)"); return }
            #expect(why.contains("Connection refused"), "\(why)")
            await client.shutdown()
        }
    }
}
