import Foundation
import MediaCore

/// Key names (the README's key layout).
struct RedisKeys: Sendable {
    let prefix: String

    /// Sorted set of live channels, score = start time in ms.
    var live: String { prefix + "live" }
    /// Sorted set of node ids, score = start time in ms.
    var nodes: String { prefix + "nodes" }
    /// The pub/sub channel of JSON events.
    var events: String { prefix + "events" }
    /// Hash of a live stream (TTL).
    func stream(_ channel: String) -> String { prefix + "stream:" + channel }
    /// Single-publisher lease: the publishing node's id (TTL).
    func lease(_ channel: String) -> String { prefix + "lease:" + channel }
    /// Hash of a node (TTL).
    func node(_ id: String) -> String { prefix + "node:" + id }
    /// HyperLogLog of the HLS sessions of a channel in one 10-second slice.
    func hlsSessions(_ channel: String, slice: Int) -> String { prefix + "hls:" + channel + ":" + String(slice) }

    /// Sessions are counted in 10 s slices; the last six make the sliding minute.
    static let sliceSeconds = 10
    static let slicesPerMinute = 6
    static func slice(of date: Date) -> Int { Int(date.timeIntervalSince1970) / sliceSeconds }
}

/// Lua scripts, so that compare-and-act on a lease is atomic.
enum RedisScripts {
    /// Renews the lease if it is ours, takes it again if it lapsed (Redis restarted empty);
    /// returns 1, or the id of the node that holds it.
    static let renew = """
        local owner = redis.call('GET', KEYS[1])
        if owner == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
        if owner == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
        return owner
        """
    /// Deletes the lease only if it is ours.
    static let release = """
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """
    /// Drops members of a listing whose hash expired (their node died).
    static let prune = """
        local removed = 0
        for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, 9999)) do
          if redis.call('EXISTS', ARGV[1] .. member) == 0 then
            redis.call('ZREM', KEYS[1], member)
            removed = removed + 1
          end
        end
        return removed
        """
}

/// A hash as HGETALL returns it; nil when the key does not exist.
struct RedisHash {
    var fields: [String: String] = [:]

    init?(_ reply: RedisReply) throws(RedisError) {
        guard let elements = reply.array else {
            if case .error(let message) = reply { throw .reply(message) }
            return nil
        }
        guard !elements.isEmpty else { return nil }
        guard elements.count <= 128, elements.count.isMultiple(of: 2) else {
            throw .replyTooLarge("a registry hash of \(elements.count) elements")
        }
        for index in stride(from: 0, to: elements.count, by: 2) {
            guard let name = elements[index].string, let value = elements[index + 1].string else { continue }
            fields[name] = value
        }
    }

    subscript(_ name: String) -> String? { fields[name] }
    func int(_ name: String) -> Int? { fields[name].flatMap { Int($0) } }
    func double(_ name: String) -> Double? { fields[name].flatMap { Double($0) } }
    func date(_ name: String) -> Date? { int(name).map { Date(timeIntervalSince1970: Double($0) / 1000) } }
}

extension Date {
    var milliseconds: String { String(Int64(timeIntervalSince1970 * 1000)) }
}

extension ActiveStream {
    /// HSET field/value pairs; absent values are written empty so an old value cannot linger.
    var hashFields: [String] {
        func text(_ value: (some CustomStringConvertible)?) -> String { value.map { "\($0)" } ?? "" }
        return [
            "channel", channel, "node", nodeID, "app", app, "started_at", startedAt.milliseconds,
            "video_codec", text(videoCodec), "video_profile", text(videoProfile), "video_level", text(videoLevel),
            "width", text(width), "height", text(height), "fps", text(fps),
            "audio_codec", text(audioCodec), "audio_sample_rate", text(audioSampleRate), "audio_channels", text(audioChannels),
            "bitrate_in", text(bitrateIn), "bitrate_out", text(bitrateOut),
            "viewers", "\(viewers)", "viewers_rtmp", "\(rtmpViewers)", "viewers_hls", "\(hlsViewers)",
            "updated_at", (updatedAt ?? startedAt).milliseconds,
        ]
    }

    init?(hash: RedisHash) {
        guard let channel = hash["channel"], let node = hash["node"], let startedAt = hash.date("started_at") else { return nil }
        self.init(channel: channel, app: hash["app"] ?? "", nodeID: node, startedAt: startedAt)
        func nonEmpty(_ name: String) -> String? { hash[name].flatMap { $0.isEmpty ? nil : $0 } }
        videoCodec = nonEmpty("video_codec")
        videoProfile = hash.int("video_profile")
        videoLevel = hash.int("video_level")
        width = hash.int("width")
        height = hash.int("height")
        fps = hash.double("fps")
        audioCodec = nonEmpty("audio_codec")
        audioSampleRate = hash.int("audio_sample_rate")
        audioChannels = hash.int("audio_channels")
        bitrateIn = hash.int("bitrate_in")
        bitrateOut = hash.int("bitrate_out")
        rtmpViewers = hash.int("viewers_rtmp") ?? 0
        hlsViewers = hash.int("viewers_hls") ?? 0
        updatedAt = hash.date("updated_at")
    }

    /// Takes codecs and picture size from the live stream (metadata fills what the codec setup lacks).
    mutating func sample(_ live: LiveStream) {
        if let video = live.description?.video {
            videoCodec = video.codec.rawValue
            videoProfile = Int(video.avcC.profileIndication)
            videoLevel = Int(video.avcC.levelIndication)
        }
        if let audio = live.description?.audio {
            audioCodec = audio.codec.rawValue
            audioSampleRate = audio.config.samplingFrequency
            audioChannels = audio.config.channelConfiguration
        }
        if let metadata = live.metadata {
            func number(_ key: String) -> Double? {
                if case .number(let value)? = metadata[key] { return value }
                return nil
            }
            width = number("width").map { Int($0) } ?? width
            height = number("height").map { Int($0) } ?? height
            fps = (number("framerate") ?? number("fps")).map { ($0 * 100).rounded() / 100 } ?? fps
        }
    }
}

extension NodeRecord {
    var hashFields: [String] {
        ["id", id, "http", httpURL, "rtmp", rtmpAddress, "version", version, "streams", "\(streams)",
         "viewers", "\(viewers)", "cpu", "\(cpu)", "started_at", startedAt.milliseconds,
         "updated_at", (updatedAt ?? startedAt).milliseconds]
    }

    init?(hash: RedisHash) {
        guard let id = hash["id"], let startedAt = hash.date("started_at") else { return nil }
        self.init(id: id, httpURL: hash["http"] ?? "", rtmpAddress: hash["rtmp"] ?? "", version: hash["version"] ?? "",
                  startedAt: startedAt)
        streams = hash.int("streams") ?? 0
        viewers = hash.int("viewers") ?? 0
        cpu = hash.double("cpu") ?? 0
        updatedAt = hash.date("updated_at")
    }
}

/// A message on `<prefix>events` (the README's event schema). Never carries a stream key:
/// the registry only ever sees channel names.
struct RegistryEvent: Encodable {
    var type: String
    var channel: String
    var app: String?
    var node: String
    var timestamp: Date
    var startedAt: Date?
    var endedAt: Date?
    var durationSeconds: Double?
    var stream: ActiveStream?
    var viewers: Int?
    var rtmpViewers: Int?
    var hlsViewers: Int?

    static func started(_ stream: ActiveStream) -> Self {
        Self(type: "stream.started", channel: stream.channel, app: stream.app, node: stream.nodeID,
             timestamp: Date(), startedAt: stream.startedAt)
    }

    static func ended(_ stream: ActiveStream, at date: Date) -> Self {
        Self(type: "stream.ended", channel: stream.channel, app: stream.app, node: stream.nodeID, timestamp: date,
             startedAt: stream.startedAt, endedAt: date,
             durationSeconds: (date.timeIntervalSince(stream.startedAt) * 10).rounded() / 10)
    }

    static func updated(_ stream: ActiveStream) -> Self {
        Self(type: "stream.updated", channel: stream.channel, app: stream.app, node: stream.nodeID,
             timestamp: stream.updatedAt ?? Date(), startedAt: stream.startedAt, stream: stream)
    }

    static func viewerCount(_ stream: ActiveStream, at date: Date) -> Self {
        Self(type: "viewer.count", channel: stream.channel, node: stream.nodeID, timestamp: date,
             viewers: stream.viewers, rtmpViewers: stream.rtmpViewers, hlsViewers: stream.hlsViewers)
    }

    var json: String {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
