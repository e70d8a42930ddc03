import Foundation
import Synchronization
import Testing

@testable import StreamHub

/// A registry whose lease another node holds for some channels; Redis "down" for others.
private final class LeasedElsewhere: Registry {
    let taken: Set<String>
    let down: Set<String>
    let started = Mutex<[String]>([])

    init(taken: Set<String>, down: Set<String> = []) {
        self.taken = taken
        self.down = down
    }

    struct Unreachable: Error {}

    func streamStarted(_ stream: ActiveStream) async throws {
        if taken.contains(stream.channel) { throw RegistryError.channelTaken(channel: stream.channel, node: "node-b") }
        if down.contains(stream.channel) { throw Unreachable() }
        started.withLock { $0.append(stream.channel) }
    }

    func streamEnded(channel: String) async throws {}
    func activeStreams() async throws -> [ActiveStream] { [] }
    func activeStream(channel: String) async throws -> ActiveStream? { nil }
    func nodes() async throws -> [NodeRecord] { [] }
    func hlsSessionSeen(channel: String, session: String) {}
    var health: RegistryHealth { RegistryHealth(kind: "test") }
}

@Suite("StreamHub and the registry's lease")
struct RegistryClaimTests {
    @Test("a channel leased by another node is refused before anyone hears of it; a registry failure lets the publish go on")
    func claim() async throws {
        let registry = LeasedElsewhere(taken: ["taken"], down: ["offline"])
        let hub = StreamHub(registry: registry)
        let observed = Mutex<[String]>([])
        hub.observe { stream in observed.withLock { $0.append(stream.channel) } }
        await #expect(throws: StreamHub.HubError.liveElsewhere(channel: "taken", node: "node-b")) {
            try await hub.startPublishing(channel: "taken", app: "live")
        }
        #expect(hub.stream(channel: "taken") == nil)
        #expect(observed.withLock { $0 }.isEmpty, "no packager started for a refused publish")
        // Refused once, the channel is not stuck in the claim.
        await #expect(throws: StreamHub.HubError.liveElsewhere(channel: "taken", node: "node-b")) {
            try await hub.startPublishing(channel: "taken", app: "live")
        }
        let offline = try await hub.startPublishing(channel: "offline", app: "live")
        #expect(hub.stream(channel: "offline") != nil)
        let mine = try await hub.startPublishing(channel: "mine", app: "live")
        #expect(observed.withLock { $0 } == ["offline", "mine"])
        #expect(registry.started.withLock { $0 } == ["mine"])
        await offline.finish()
        await mine.finish()
    }

    @Test("HLS sessions are bucketed in 10 s slices; the keys carry the prefix")
    func keys() {
        let keys = RedisKeys(prefix: "east:")
        #expect(keys.stream("show") == "east:stream:show")
        #expect(keys.lease("show") == "east:lease:show")
        #expect(keys.node("a") == "east:node:a")
        #expect(keys.live == "east:live" && keys.events == "east:events")
        #expect(RedisKeys.slice(of: Date(timeIntervalSince1970: 1_000_019)) == 100_001)
        #expect(keys.hlsSessions("show", slice: 100_001) == "east:hls:show:100001")
    }

    @Test("a stream hash round-trips; a hash with too many fields or a missing key is refused")
    func hash() throws {
        var stream = ActiveStream(channel: "show", app: "live", nodeID: "node-a", startedAt: Date(timeIntervalSince1970: 1_700_000_000.5))
        stream.videoCodec = "h264"
        stream.width = 1280
        stream.fps = 29.97
        stream.rtmpViewers = 2
        stream.hlsViewers = 5
        let fields = stream.hashFields
        let reply = RedisReply.array(fields.map { .bulk(Array($0.utf8)) })
        let decoded = try #require(try RedisHash(reply).flatMap(ActiveStream.init(hash:)))
        #expect(decoded.channel == "show" && decoded.nodeID == "node-a" && decoded.videoCodec == "h264")
        #expect(decoded.width == 1280 && decoded.height == nil && decoded.fps == 29.97 && decoded.audioCodec == nil)
        #expect(decoded.viewers == 7)
        #expect(decoded.startedAt == stream.startedAt)
        #expect(try RedisHash(.array([])) == nil)
        #expect(throws: RedisError.self) { try RedisHash(.array(Array(repeating: .bulk([0x61]), count: 130))) }
        #expect(throws: RedisError.reply("WRONGTYPE")) { try RedisHash(.error("WRONGTYPE")) }
    }
}
