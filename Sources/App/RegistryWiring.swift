import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import StreamHub
import Synchronization

/// The version a node reports in its registry record.
let estuaryVersion = "0.5.0-dev"

/// The registry the configuration asks for: Redis with `--redis-url`, else in memory.
struct RegistrySetup {
    let registry: any Registry
    let redis: RedisRegistry?
    let nodeID: String

    init(_ configuration: EstuaryConfiguration, logger: Logger) throws {
        nodeID = configuration.nodeID ?? Self.defaultNodeID()
        guard let url = configuration.redisURL else {
            registry = MemoryRegistry()
            redis = nil
            return
        }
        var client = RedisClient.Configuration(endpoint: try RedisEndpoint(url: url))
        client.timeout = .milliseconds(Int64(configuration.redisTimeout * 1000))
        client.queueTimeout = client.timeout * 2
        var settings = RedisRegistry.Configuration(client: client, nodeID: nodeID)
        settings.prefix = configuration.redisPrefix
        settings.version = estuaryVersion
        settings.heartbeat = .milliseconds(Int64(configuration.redisHeartbeat * 1000))
        settings.ttl = .milliseconds(Int64(configuration.redisTTL * 1000))
        let redis = RedisRegistry(configuration: settings, logger: logger)
        logger.info("registry in redis", metadata: ["redis": "\(client.endpoint)", "node": "\(nodeID)",
                                                    "prefix": "\(settings.prefix)"])
        self.redis = redis
        registry = redis
    }

    /// `<hostname>-<6 hex>`: unique per start, so two processes never share a lease by accident.
    static func defaultNodeID() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "node"
        let safe = host.filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }.prefix(48)
        return "\(safe.isEmpty ? "node" : String(safe))-\(String(UInt32.random(in: 0...0xFF_FFFF), radix: 16))"
    }

    /// The URL other nodes send players to.
    static func publicURL(_ configuration: EstuaryConfiguration, httpPort: Int) -> String {
        if let url = configuration.publicURL { return url.hasSuffix("/") ? String(url.dropLast()) : url }
        let host = ["0.0.0.0", "::", ""].contains(configuration.bind) ? ProcessInfo.processInfo.hostName : configuration.bind
        return "http://\(host.contains(":") ? "[\(host)]" : host):\(httpPort)"
    }
}

/// Runs the Redis registry's heartbeat while the server runs; at shutdown (after the publishers
/// ended, so their leases are released) withdraws the node record.
struct RegistryService: Service {
    let registry: RedisRegistry
    let announce: @Sendable () async throws -> (http: String, rtmp: String)

    func run() async throws {
        let registry = registry
        let announce = announce
        let announcer = Task {
            if let addresses = try? await announce() {
                registry.announce(httpURL: addresses.http, rtmpAddress: addresses.rtmp)
            }
        }
        await withGracefulShutdownHandler {
            await registry.run()
        } onGracefulShutdown: {
            registry.stopHeartbeat()
        }
        announcer.cancel()
        await registry.shutdown()
    }
}

/// Which node serves a channel that is not live here, looked up in the registry and kept for a
/// second (a player asks every couple of seconds; Redis is asked at most once a second per channel).
final class RemoteChannelResolver: Sendable {
    private let registry: RedisRegistry
    private let hub: StreamHub
    private let cache = Mutex<[String: (url: String?, until: ContinuousClock.Instant)]>([:])

    init(registry: RedisRegistry, hub: StreamHub) {
        self.registry = registry
        self.hub = hub
    }

    /// The base URL of the node that publishes `channel`, when that is not this node.
    func nodeURL(channel: String) async -> String? {
        guard hub.stream(channel: channel) == nil else { return nil }
        let now = ContinuousClock.now
        if let cached = cache.withLock({ $0[channel] }), cached.until > now { return cached.url }
        // Redis away: serve what this node has (or 404), as a single node would.
        let url = try? await registry.nodeURL(publishing: channel)
        cache.withLock { cache in
            if cache.count > 10_000 { cache.removeAll() }
            cache[channel] = (url, now + .seconds(1))
        }
        return url
    }
}

/// An HLS session: one player at one address (players send no session id of their own).
func hlsSession(_ address: SocketAddress?, _ userAgent: String?) -> String {
    "\(address?.ipAddress ?? "?") \(userAgent ?? "")"
}

/// `GET /health`: 200 while the node serves; `degraded` (with the reason) when the registry is.
func healthResponse(hub: StreamHub) -> Response {
    let health = hub.registry.health
    var body: [String: any Encodable] = ["status": health.degraded == nil ? "ok" : "degraded",
                                         "live": hub.liveChannels.count, "registry": health.kind]
    if let reason = health.degraded { body["registryError"] = reason }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let data = (try? encoder.encode(AnyEncodableObject(body))) ?? Data("{}".utf8)
    return Response(status: .ok, headers: [.contentType: "application/json"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
}
