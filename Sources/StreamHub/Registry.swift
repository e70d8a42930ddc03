public import struct Foundation.Date
import Synchronization

/// A stream that is live somewhere in the deployment.
public struct ActiveStream: Sendable, Equatable, Codable {
    public var channel: String
    public var app: String
    public var nodeID: String
    public var startedAt: Date

    public init(channel: String, app: String, nodeID: String, startedAt: Date) {
        self.channel = channel
        self.app = app
        self.nodeID = nodeID
        self.startedAt = startedAt
    }
}

/// Where the deployment records which streams are live: in process (one node)
/// or in Redis (several nodes share it).
public protocol Registry: Sendable {
    func streamStarted(_ stream: ActiveStream) async throws
    func streamEnded(channel: String) async throws
    func activeStreams() async throws -> [ActiveStream]
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
}
