import Foundation
import Hummingbird
import MediaCore
import NIOCore
import StreamHub

/// `GET /api/v1/streams` and `GET /api/v1/streams/{channel}`: what is live here, with codecs,
/// counters and — from the relay and recording services — each target's state.
struct StreamsAPI: Sendable {
    struct Video: Codable, Equatable {
        var codec: String
        var profile: Int
        var level: Int
    }

    struct Audio: Codable, Equatable {
        var codec: String
        var sampleRate: Int
        var channels: Int
    }

    struct Stream: Codable, Equatable {
        var channel: String
        var app: String
        var startedAt: Date
        /// The node that publishes it.
        var node: String
        var video: Video?
        var audio: Audio?
        // Counters of this node's streams only (another node's come from the registry below).
        var bytes: Int?
        var videoPackets: Int?
        var audioPackets: Int?
        /// Consumers of the stream: the packager, players, relays, recorders.
        var subscribers: Int?
        // From the registry: what the publishing node last reported.
        var width: Int?
        var height: Int?
        var fps: Double?
        var bitrateIn: Int?
        var viewers: Int?
        var rtmpViewers: Int?
        var hlsViewers: Int?
    }

    let hub: StreamHub
    let nodeID: String
    /// More sections of a channel's status (relays, recordings), by name.
    let sections: [String: @Sendable (String) -> any Encodable & Sendable]

    func summary(_ stream: LiveStream, registered: ActiveStream?) -> Stream {
        let description = stream.description
        let statistics = stream.statistics
        var summary = Stream(
            channel: stream.channel, app: stream.app, startedAt: stream.startedAt, node: nodeID,
            video: description?.video.map {
                Video(codec: $0.codec.rawValue, profile: Int($0.avcC.profileIndication), level: Int($0.avcC.levelIndication))
            },
            audio: description?.audio.map {
                Audio(codec: $0.codec.rawValue, sampleRate: $0.config.samplingFrequency, channels: $0.config.channelConfiguration)
            },
            bytes: statistics.bytes, videoPackets: statistics.videoPackets, audioPackets: statistics.audioPackets,
            subscribers: statistics.subscribers)
        if let registered { summary.add(registered) }
        summary.rtmpViewers = hub.viewerCount(channel: stream.channel)
        summary.viewers = summary.rtmpViewers! + (summary.hlsViewers ?? 0)
        return summary
    }

    /// A stream of another node, as the registry has it.
    static func remoteSummary(_ stream: ActiveStream) -> Stream {
        var summary = Stream(
            channel: stream.channel, app: stream.app, startedAt: stream.startedAt, node: stream.nodeID,
            video: stream.videoCodec.map { Video(codec: $0, profile: stream.videoProfile ?? 0, level: stream.videoLevel ?? 0) },
            audio: stream.audioCodec.map { Audio(codec: $0, sampleRate: stream.audioSampleRate ?? 0, channels: stream.audioChannels ?? 0) })
        summary.add(stream)
        return summary
    }

    /// Every live stream: this node's as it sees them, the others' from the registry. With the
    /// registry unreachable, this node's alone and the reason.
    func streams() async -> (streams: [Stream], degraded: String?) {
        var registered: [String: ActiveStream] = [:]
        var degraded: String?
        do {
            for stream in try await hub.registry.activeStreams() { registered[stream.channel] = stream }
        } catch {
            degraded = "\(error)"
        }
        var streams = hub.liveChannels.compactMap { hub.stream(channel: $0) }.map { live in
            summary(live, registered: registered.removeValue(forKey: live.channel))
        }
        streams += registered.values.filter { $0.nodeID != nodeID }.map(Self.remoteSummary)
        return (streams.sorted { $0.channel < $1.channel }, degraded)
    }

    func add(to group: RouterGroup<AppRequestContext>) {
        group.get("/streams") { _, _ -> Response in
            let (list, degraded) = await streams()
            var body: [String: any Encodable] = ["streams": list]
            if let degraded { body["registryError"] = degraded }
            return try Self.json(AnyEncodableObject(body))
        }
        group.get("/streams/{channel}") { _, context -> Response in
            let channel = try context.parameters.require("channel")
            guard StaticKeyAuthorizer.isValidChannelName(channel) else {
                throw HTTPError(.badRequest, message: "'\(channel.prefix(80))' is not a channel name")
            }
            var stream: Stream?
            if let live = hub.stream(channel: channel) {
                stream = summary(live, registered: try? await hub.registry.activeStream(channel: channel))
            } else if let registered = try? await hub.registry.activeStream(channel: channel), registered.nodeID != nodeID {
                stream = Self.remoteSummary(registered)
            }
            var body: [String: any Encodable] = ["channel": channel, "live": stream != nil]
            if let stream { body["stream"] = stream }
            for (name, section) in sections { body[name] = section(channel) }
            return try Self.json(AnyEncodableObject(body))
        }
    }

    /// `GET /api/v1/nodes`: the nodes in the registry (with the in-memory registry, this one).
    static func addNodeRoutes(to group: RouterGroup<AppRequestContext>, registry: any Registry,
                              thisNode: @escaping @Sendable () async throws -> NodeRecord) {
        group.get("/nodes") { _, _ -> Response in
            if registry is MemoryRegistry { return try json(["nodes": [try await thisNode()]]) }
            do {
                return try json(["nodes": try await registry.nodes()])
            } catch {
                throw HTTPError(.serviceUnavailable, message: "registry unavailable: \(error)")
            }
        }
    }

    static func json(_ value: some Encodable) throws -> Response {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return Response(status: .ok, headers: [.contentType: "application/json"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }
}

extension StreamsAPI.Stream {
    mutating func add(_ registered: ActiveStream) {
        width = registered.width
        height = registered.height
        fps = registered.fps
        bitrateIn = registered.bitrateIn
        rtmpViewers = registered.rtmpViewers
        hlsViewers = registered.hlsViewers
        viewers = registered.viewers
    }
}

/// An object of differently typed members, for the channel status document.
struct AnyEncodableObject: Encodable {
    let members: [String: any Encodable]
    init(_ members: [String: any Encodable]) { self.members = members }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for (name, value) in members { try container.encode(value, forKey: Key(stringValue: name)) }
    }
}
