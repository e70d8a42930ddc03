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
        var video: Video?
        var audio: Audio?
        var bytes: Int
        var videoPackets: Int
        var audioPackets: Int
        /// Consumers of the stream: the packager, players, relays, recorders.
        var subscribers: Int
    }

    let hub: StreamHub
    /// More sections of a channel's status (relays, recordings), by name.
    let sections: [String: @Sendable (String) -> any Encodable & Sendable]

    static func summary(_ stream: LiveStream) -> Stream {
        let description = stream.description
        let statistics = stream.statistics
        return Stream(
            channel: stream.channel, app: stream.app, startedAt: stream.startedAt,
            video: description?.video.map {
                Video(codec: $0.codec.rawValue, profile: Int($0.avcC.profileIndication), level: Int($0.avcC.levelIndication))
            },
            audio: description?.audio.map {
                Audio(codec: $0.codec.rawValue, sampleRate: $0.config.samplingFrequency, channels: $0.config.channelConfiguration)
            },
            bytes: statistics.bytes, videoPackets: statistics.videoPackets, audioPackets: statistics.audioPackets,
            subscribers: statistics.subscribers)
    }

    func add(to group: RouterGroup<AppRequestContext>) {
        group.get("/streams") { _, _ -> Response in
            let streams = hub.liveChannels.sorted().compactMap { hub.stream(channel: $0) }.map(Self.summary)
            return try Self.json(["streams": streams])
        }
        group.get("/streams/{channel}") { _, context -> Response in
            let channel = try context.parameters.require("channel")
            guard StaticKeyAuthorizer.isValidChannelName(channel) else {
                throw HTTPError(.badRequest, message: "'\(channel.prefix(80))' is not a channel name")
            }
            let stream = hub.stream(channel: channel).map(Self.summary)
            var body: [String: any Encodable] = ["channel": channel, "live": stream != nil]
            if let stream { body["stream"] = stream }
            for (name, section) in sections { body[name] = section(channel) }
            return try Self.json(AnyEncodableObject(body))
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
