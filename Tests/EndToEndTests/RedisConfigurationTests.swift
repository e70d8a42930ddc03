import App
import Foundation
import StreamHub
import Testing

@Suite("Configuration: the Redis registry")
struct RedisConfigurationTests {
    @Test("defaults: registry in memory, prefix estuary:, heartbeat 5 s, TTL 15 s")
    func defaults() throws {
        let configuration = try ConfigurationTests.resolve([])
        #expect(configuration.redisURL == nil)
        #expect(configuration.redisPrefix == "estuary:")
        #expect(configuration.redisHeartbeat == 5 && configuration.redisTTL == 15 && configuration.redisTimeout == 1)
        #expect(configuration.nodeID == nil && configuration.publicURL == nil)
    }

    @Test("flags win over ESTUARY_REDIS_* and ESTUARY_NODE_ID; the URL is a secret in the description")
    func flagsAndEnvironment() throws {
        let environment = ["ESTUARY_REDIS_URL": "redis://:env-secret@10.0.0.1:6380/2", "ESTUARY_REDIS_PREFIX": "east:",
                           "ESTUARY_NODE_ID": "edge-1", "ESTUARY_REDIS_TTL": "30", "ESTUARY_PUBLIC_URL": "https://edge-1.example.com"]
        let fromEnvironment = try ConfigurationTests.resolve([], environment)
        #expect(fromEnvironment.redisURL == "redis://:env-secret@10.0.0.1:6380/2")
        #expect(fromEnvironment.redisPrefix == "east:" && fromEnvironment.nodeID == "edge-1" && fromEnvironment.redisTTL == 30)
        #expect(fromEnvironment.publicURL == "https://edge-1.example.com")
        #expect(!fromEnvironment.description.contains("env-secret"))
        let fromFlags = try ConfigurationTests.resolve(["--redis-url", "redis://127.0.0.1:7000", "--node-id", "edge-2",
                                                        "--redis-heartbeat", "2", "--redis-ttl", "6"], environment)
        #expect(fromFlags.redisURL == "redis://127.0.0.1:7000" && fromFlags.nodeID == "edge-2")
        #expect(fromFlags.redisHeartbeat == 2 && fromFlags.redisTTL == 6)
    }

    @Test("bad values stop the start with the reason", arguments: [
        (["--redis-url", "rediss://host:6380"], "TLS"),
        (["--redis-url", "http://host"], "redis://"),
        (["--redis-url", "redis://host:6379/x"], "database"),
        (["--redis-heartbeat", "5", "--redis-ttl", "6"], "twice the heartbeat"),
        (["--node-id", "a b"], "node id"),
        (["--public-url", "ftp://host"], "public URL"),
    ])
    func invalid(flags: [String], reason: String) throws {
        let error = #expect(throws: (any Error).self) { try ConfigurationTests.resolve(flags) }
        #expect("\(error.map { "\($0)" } ?? "")".contains(reason), "\(String(describing: error))")
    }

    @Test("redis:// URLs: host, port, database, password alone or with a user; the description hides the password")
    func endpoints() throws {
        #expect(try RedisEndpoint(url: "redis://cache") == RedisEndpoint(host: "cache"))
        #expect(try RedisEndpoint(url: "redis://:p%40ss@10.1.2.3:6380/3")
            == RedisEndpoint(host: "10.1.2.3", port: 6380, database: 3, password: "p@ss"))
        #expect(try RedisEndpoint(url: "redis://estuary:pw@h/1") == RedisEndpoint(host: "h", database: 1, username: "estuary", password: "pw"))
        #expect(try RedisEndpoint(url: "redis://secret@h") == RedisEndpoint(host: "h", password: "secret"))
        #expect("\(try RedisEndpoint(url: "redis://:pw@h:1/2"))" == "redis://:***@h:1/2")
        #expect(throws: RedisError.self) { try RedisEndpoint(url: "redis://h:99999") }
    }
}
