public import struct Foundation.Date
import Synchronization

/// A stream that is live somewhere in the deployment, as the registry knows it.
public struct ActiveStream: Sendable, Equatable, Codable {
    public var channel: String
    public var app: String
    public var nodeID: String
    public var startedAt: Date
    // What the heartbeat adds (nil until the publisher sent its codec setup or metadata).
    public var videoCodec: String?
    public var videoProfile: Int?
    public var videoLevel: Int?
    public var width: Int?
    public var height: Int?
    public var fps: Double?
    public var audioCodec: String?
    public var audioSampleRate: Int?
    public var audioChannels: Int?
    /// Bits per second received from the publisher, over the last heartbeat.
    public var bitrateIn: Int?
    /// Bits per second sent to the RTMP players of the publishing node (HLS bytes are not counted).
    public var bitrateOut: Int?
    /// RTMP players of the publishing node, exactly.
    public var rtmpViewers: Int = 0
    /// Distinct HLS sessions over the last minute, on every node (HyperLogLog estimate).
    public var hlsViewers: Int = 0
    public var updatedAt: Date?

    public var viewers: Int { rtmpViewers + hlsViewers }

    public init(channel: String, app: String, nodeID: String, startedAt: Date) {
        self.channel = channel
        self.app = app
        self.nodeID = nodeID
        self.startedAt = startedAt
    }
}

/// A node of the deployment, as it last reported itself.
public struct NodeRecord: Sendable, Equatable, Codable {
    public var id: String
    /// Where the node serves HTTP (HLS, API), e.g. `http://10.0.0.5:8080`.
    public var httpURL: String
    /// Where the node takes RTMP, `host:port`.
    public var rtmpAddress: String
    public var version: String
    public var streams: Int = 0
    public var viewers: Int = 0
    /// CPU used by the process since the last heartbeat, in percent of one core.
    public var cpu: Double = 0
    public var startedAt: Date
    public var updatedAt: Date?

    public init(id: String, httpURL: String, rtmpAddress: String, version: String, startedAt: Date = Date()) {
        self.id = id
        self.httpURL = httpURL
        self.rtmpAddress = rtmpAddress
        self.version = version
        self.startedAt = startedAt
    }
}

public enum RegistryError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Another node holds the channel's single-publisher lease.
    case channelTaken(channel: String, node: String)

    public var description: String {
        switch self {
        case .channelTaken(let channel, let node): "channel \(channel) is already being published on node \(node)"
        }
    }
}

/// Whether the registry can do its job; `degraded` carries the reason (Redis down, refused password …).
public struct RegistryHealth: Sendable, Equatable {
    public var kind: String
    public var degraded: String?

    public init(kind: String, degraded: String? = nil) {
        self.kind = kind
        self.degraded = degraded
    }
}

/// Where the deployment records which streams are live: in process (one node)
/// or in Redis (several nodes share it).
public protocol Registry: Sendable {
    /// Records a publish starting on this node and claims the channel: throws
    /// `RegistryError.channelTaken` when another node publishes it. A registry that cannot
    /// decide (Redis down) lets the publish go on and catches up later.
    func streamStarted(_ stream: ActiveStream) async throws
    func streamEnded(channel: String) async throws
    /// Live streams of every node, by channel.
    func activeStreams() async throws -> [ActiveStream]
    func activeStream(channel: String) async throws -> ActiveStream?
    /// The nodes that reported within the TTL.
    func nodes() async throws -> [NodeRecord]
    /// Counts a distinct HLS session of `channel` (a playlist request). Never waits.
    func hlsSessionSeen(channel: String, session: String)
    var health: RegistryHealth { get }
}

/// The single-node registry: live streams in this process's memory.
public final class MemoryRegistry: Registry {
    private let streams = Mutex<[String: ActiveStream]>([:])

    public init() {}

    public func streamStarted(_ stream: ActiveStream) async throws {
        streams.withLock { $0[stream.channel] = stream }
    }

    public func streamEnded(channel: String) async throws {
        _ = streams.withLock { $0.removeValue(forKey: channel) }
    }

    public func activeStreams() async throws -> [ActiveStream] {
        streams.withLock { $0.values.sorted { $0.channel < $1.channel } }
    }

    public func activeStream(channel: String) async throws -> ActiveStream? {
        streams.withLock { $0[channel] }
    }

    /// One node knows no others.
    public func nodes() async throws -> [NodeRecord] { [] }

    public func hlsSessionSeen(channel: String, session: String) {}

    public var health: RegistryHealth { RegistryHealth(kind: "memory") }
}
