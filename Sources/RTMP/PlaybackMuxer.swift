public import MediaCore
import NIOCore

/// Turns a live stream (codec setup, metadata, packets) into the RTMP messages
/// one player receives, on that player's own clock.
///
/// Each player's time starts near zero at its first packet and never goes
/// back, across a republish too (the next stream continues where the last
/// ended). Audio and video can be switched off (`receiveAudio`/`receiveVideo`)
/// and the whole flow paused. Video (re)starts on a keyframe; at the start, after a
/// republish and after a pause, audio waits for that keyframe so both begin together,
/// while switching video back on leaves audio flowing.
public struct PlaybackMuxer: Sendable {
    public static let dataChunkStream: ChunkStreamID = 5
    public static let audioChunkStream: ChunkStreamID = 6
    public static let videoChunkStream: ChunkStreamID = 7

    public let messageStreamID: MessageStreamID
    private var description: StreamDescription?
    /// Publisher time that maps to `timelineStart` on the player's clock.
    private var origin: Int64?
    private var timelineStart: Int64 = 0
    /// Per track: each track's time must not go back (across tracks they interleave freely).
    private var lastTimestamps: [MediaKind: Int64] = [:]
    private var lastTimestamp: Int64 { lastTimestamps.values.max() ?? 0 }
    /// The next video packet sent must be a keyframe.
    private var needsKeyframe = true
    /// Media is flowing to the player; until then (at the start, after a republish or a pause)
    /// audio waits for the first video keyframe.
    private var flowing = false
    public var receivesAudio = true
    public var receivesVideo = true {
        didSet { if receivesVideo, !oldValue { needsKeyframe = true } }
    }
    public var isPaused = false {
        didSet {
            if !isPaused, oldValue {
                needsKeyframe = true
                flowing = false
            }
        }
    }

    public init(messageStreamID: MessageStreamID) {
        self.messageStreamID = messageStreamID
    }

    /// A new publish of the channel begins: its time continues after the last one.
    public mutating func streamRestarted() {
        origin = nil
        timelineStart = lastTimestamp + 1
        lastTimestamps = lastTimestamps.mapValues { _ in timelineStart }
        needsKeyframe = true
        flowing = false
        description = nil
    }

    /// Sequence headers for the tracks that are new or changed.
    public mutating func description(_ newDescription: StreamDescription) -> [RTMPMessage] {
        defer { description = newDescription }
        var messages: [RTMPMessage] = []
        if let video = newDescription.video, video != description?.video {
            messages.append(media(.video, FLVTag.avcSequenceHeader(video.avcC), at: lastTimestamp).message)
        }
        if let audio = newDescription.audio, audio != description?.audio {
            messages.append(media(.audio, FLVTag.aacSequenceHeader(audio.config), at: lastTimestamp).message)
        }
        return messages
    }

    public func metadata(_ metadata: StreamMetadata) -> RTMPMessage {
        let properties = metadata.properties.map { property -> AMF0Property in
            switch property.value {
            case .number(let number): AMF0Property(property.key, .number(number))
            case .boolean(let flag): AMF0Property(property.key, .boolean(flag))
            case .string(let text): AMF0Property(property.key, .string(text))
            }
        }
        var payload = ByteBuffer()
        AMF0Encoder.encode([.string("onMetaData"), .ecmaArray(properties)], into: &payload)
        return RTMPMessage(type: .dataAMF0, messageStreamID: messageStreamID, timestamp: 0,
                           chunkStreamID: Self.dataChunkStream, payload: payload)
    }

    /// The message for `packet`, or nil when this player does not get it.
    public mutating func packet(_ packet: MediaPacket) -> FLVTagMessage? {
        guard !isPaused else { return nil }
        switch packet.kind {
        case .video:
            guard receivesVideo else { return nil }
            if needsKeyframe {
                guard packet.isKeyframe else { return nil }
                needsKeyframe = false
            }
        case .audio:
            guard receivesAudio else { return nil }
            // With video, audio starts with the first keyframe so both begin together.
            if !flowing, description?.video != nil, receivesVideo { return nil }
        }
        flowing = true
        if origin == nil { origin = packet.dts }
        let time = max(timelineStart + packet.dts - (origin ?? packet.dts), lastTimestamps[packet.kind] ?? 0)
        lastTimestamps[packet.kind] = time
        let tag: FLVTag = switch packet.kind {
        case .video: .avcNALUnits(isKeyframe: packet.isKeyframe, compositionTime: Int32(clamping: packet.compositionTime),
                                  data: packet.data)
        case .audio: .aacRaw(packet.data)
        }
        return media(packet.kind, tag, at: time)
    }

    private func media(_ kind: MediaKind, _ tag: FLVTag, at time: Int64) -> FLVTagMessage {
        FLVTagMessage(kind: kind, messageStreamID: messageStreamID, timestamp: UInt32(truncatingIfNeeded: time),
                      chunkStreamID: kind == .video ? Self.videoChunkStream : Self.audioChunkStream, tag: tag)
    }
}
