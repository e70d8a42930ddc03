public import MediaCore
public import NIOCore

/// An RTMP audio/video message body (the FLV tag body), classified.
public enum FLVTag: Sendable, Equatable {
    case avcSequenceHeader(AVCDecoderConfigurationRecord)
    case avcNALUnits(isKeyframe: Bool, compositionTime: Int32, data: [UInt8])
    case avcEndOfSequence
    case aacSequenceHeader(AudioSpecificConfig)
    case aacRaw([UInt8])
    /// Video frame type 5: an info/command frame, carrying no picture.
    case videoInfo
}

public enum FLVTagError: Error, Equatable, Sendable, CustomStringConvertible {
    case empty(MediaKind)
    case truncated(String)
    case unsupportedVideoCodec(id: UInt8)
    /// Enhanced RTMP (FourCC) video; `fourCC` as four ASCII characters.
    case enhancedVideo(fourCC: String)
    case unsupportedAudioFormat(id: UInt8)
    /// HLS carries AAC in ADTS, whose header holds object types 1–4 only (HE-AAC must be signalled implicitly).
    case unsupportedAACObjectType(Int)
    case invalidConfiguration(CodecConfigurationError)

    public var description: String {
        switch self {
        case .empty(let kind): "empty \(kind) message"
        case .truncated(let what): "truncated \(what)"
        case .unsupportedVideoCodec(let id): "unsupported video codec id \(id) (\(Self.videoCodecNames[id] ?? "unknown")); H.264 only"
        case .enhancedVideo(let fourCC): "Enhanced RTMP video '\(fourCC)' is not supported yet; H.264 only"
        case .unsupportedAudioFormat(let id): "unsupported audio format id \(id) (\(Self.audioFormatNames[id] ?? "unknown")); AAC only"
        case .unsupportedAACObjectType(let type):
            "unsupported AAC object type \(type); AAC-LC (2), or HE-AAC signalled implicitly, only"
        case .invalidConfiguration(let error): "invalid codec configuration: \(error)"
        }
    }

    static let videoCodecNames: [UInt8: String] = [2: "Sorenson H.263", 3: "Screen video", 4: "VP6", 5: "VP6 alpha",
                                                   6: "Screen video 2", 7: "AVC", 12: "HEVC (legacy id)"]
    static let audioFormatNames: [UInt8: String] = [0: "PCM", 1: "ADPCM", 2: "MP3", 3: "PCM LE", 4: "Nellymoser 16k",
                                                    5: "Nellymoser 8k", 6: "Nellymoser", 7: "G.711 A-law",
                                                    8: "G.711 mu-law", 10: "AAC", 11: "Speex", 14: "MP3 8k"]
}

extension FLVTag {
    /// Parses a video message body (E-RTMP's extended header is the seam for HEVC/AV1).
    public static func video(_ body: ByteBuffer) throws(FLVTagError) -> FLVTag {
        var body = body
        guard let first = body.readInteger(as: UInt8.self) else { throw .empty(.video) }
        if first & 0x80 != 0 {
            let fourCC = body.readBytes(length: 4).map { String(decoding: $0, as: UTF8.self) } ?? "?"
            throw .enhancedVideo(fourCC: fourCC)
        }
        let frameType = first >> 4
        let codecID = first & 0x0F
        guard codecID == 7 else { throw .unsupportedVideoCodec(id: codecID) }
        if frameType == 5 { return .videoInfo }
        guard let packetType = body.readInteger(as: UInt8.self),
              let cts = body.readBytes(length: 3)
        else { throw .truncated("AVC video tag header") }
        // 24-bit signed composition time.
        let compositionTime = Int32(bitPattern: UInt32(cts[0]) << 24 | UInt32(cts[1]) << 16 | UInt32(cts[2]) << 8) >> 8
        let rest = body.readBytes(length: body.readableBytes) ?? []
        switch packetType {
        case 0:
            do {
                return .avcSequenceHeader(try AVCDecoderConfigurationRecord(bytes: rest))
            } catch {
                throw .invalidConfiguration(error)
            }
        case 1:
            return .avcNALUnits(isKeyframe: frameType == 1, compositionTime: compositionTime, data: rest)
        case 2:
            return .avcEndOfSequence
        default:
            throw .truncated("AVC packet type \(packetType)")
        }
    }

    /// Parses an audio message body.
    public static func audio(_ body: ByteBuffer) throws(FLVTagError) -> FLVTag {
        var body = body
        guard let first = body.readInteger(as: UInt8.self) else { throw .empty(.audio) }
        let format = first >> 4
        guard format == 10 else { throw .unsupportedAudioFormat(id: format) }
        guard let packetType = body.readInteger(as: UInt8.self) else { throw .truncated("AAC audio tag header") }
        let rest = body.readBytes(length: body.readableBytes) ?? []
        if packetType == 0 {
            let config: AudioSpecificConfig
            do {
                config = try AudioSpecificConfig(bytes: rest)
            } catch {
                throw .invalidConfiguration(error)
            }
            guard (1...4).contains(config.audioObjectType) else { throw .unsupportedAACObjectType(config.audioObjectType) }
            return .aacSequenceHeader(config)
        }
        return .aacRaw(rest)
    }
}

/// Turns a publisher's audio/video messages into `MediaPacket`s and the
/// stream's codec description, on a 64-bit timeline per track.
public struct MediaDemuxer: Sendable {
    public enum Output: Sendable, Equatable {
        case description(StreamDescription)
        case packet(MediaPacket)
    }

    public private(set) var description = StreamDescription()
    private var videoClock = TimestampUnwrapper()
    private var audioClock = TimestampUnwrapper()

    public init() {}

    /// Returns what the message produced: nothing, a (changed) stream description, or a packet.
    public mutating func video(timestamp: UInt32, body: ByteBuffer) throws(FLVTagError) -> Output? {
        switch try FLVTag.video(body) {
        case .avcSequenceHeader(let record):
            let track = StreamDescription.VideoTrack(avcC: record)
            guard description.video != track else { return nil }
            description.video = track
            return .description(description)
        case .avcNALUnits(let isKeyframe, let compositionTime, let data):
            // NAL units before a sequence header cannot be decoded by anyone.
            guard description.video != nil, !data.isEmpty else { return nil }
            let dts = videoClock.unwrap(timestamp)
            // Kept as sent, negative too (FLV's composition time is signed 24-bit): RTMP players and
            // FLV recordings carry it on unchanged; a muxer whose format needs PTS ≥ DTS (MPEG-TS)
            // places such a frame itself.
            return .packet(MediaPacket(kind: .video, dts: dts, pts: dts + Int64(compositionTime),
                                       isKeyframe: isKeyframe, data: data))
        case .avcEndOfSequence, .videoInfo, .aacSequenceHeader, .aacRaw:
            return nil
        }
    }

    public mutating func audio(timestamp: UInt32, body: ByteBuffer) throws(FLVTagError) -> Output? {
        switch try FLVTag.audio(body) {
        case .aacSequenceHeader(let config):
            let track = StreamDescription.AudioTrack(config: config)
            guard description.audio != track else { return nil }
            description.audio = track
            return .description(description)
        case .aacRaw(let data):
            guard description.audio != nil, !data.isEmpty else { return nil }
            let dts = audioClock.unwrap(timestamp)
            return .packet(MediaPacket(kind: .audio, dts: dts, pts: dts, isKeyframe: true, data: data))
        case .avcSequenceHeader, .avcNALUnits, .avcEndOfSequence, .videoInfo:
            return nil
        }
    }
}

extension FLVTag {
    /// The message body for this tag (what a player or relay receives).
    public func encode(into buffer: inout ByteBuffer) {
        let head = head
        buffer.reserveCapacity(buffer.writerIndex + head.count + body.count)
        head.write(0..<head.count, into: &buffer)
        buffer.writeBytes(body)
    }

    /// The tag's codec header: frame type and codec id, packet type, composition time.
    public struct Head: Sendable, Equatable {
        private var packed: UInt64
        public let count: Int

        // Two initializers, not a variadic one: that would allocate an array per media message.
        init(_ first: UInt8, _ second: UInt8) {
            packed = UInt64(first) << 56 | UInt64(second) << 48
            count = 2
        }

        init(_ first: UInt8, _ second: UInt8, _ third: UInt8, _ fourth: UInt8, _ fifth: UInt8) {
            packed = UInt64(first) << 56 | UInt64(second) << 48 | UInt64(third) << 40 | UInt64(fourth) << 32
                | UInt64(fifth) << 24
            count = 5
        }

        subscript(index: Int) -> UInt8 { UInt8(truncatingIfNeeded: packed >> (56 - 8 * UInt64(index))) }

        func write(_ range: Range<Int>, into buffer: inout ByteBuffer) {
            for index in range { buffer.writeInteger(self[index]) }
        }
    }

    /// The bytes before the tag's data; `head` then `body` is the message payload.
    public var head: Head {
        switch self {
        case .avcSequenceHeader: Head(0x17, 0x00, 0, 0, 0)
        case .avcNALUnits(let isKeyframe, let compositionTime, _):
            Head(isKeyframe ? 0x17 : 0x27, 0x01, UInt8(truncatingIfNeeded: compositionTime >> 16),
                 UInt8(truncatingIfNeeded: compositionTime >> 8), UInt8(truncatingIfNeeded: compositionTime))
        case .avcEndOfSequence: Head(0x17, 0x02, 0, 0, 0)
        case .videoInfo: Head(0x57, 0x00)
        case .aacSequenceHeader: Head(0xAF, 0x00)
        case .aacRaw: Head(0xAF, 0x01)
        }
    }

    /// The tag's data after its head (NAL units, a decoder configuration, an AAC frame).
    public var body: [UInt8] {
        switch self {
        case .avcSequenceHeader(let record): record.bytes
        case .avcNALUnits(_, _, let data), .aacRaw(let data): data
        case .aacSequenceHeader(let config): config.bytes
        case .avcEndOfSequence, .videoInfo: []
        }
    }
}
