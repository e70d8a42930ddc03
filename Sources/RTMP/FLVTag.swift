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
        switch self {
        case .avcSequenceHeader(let record):
            buffer.writeBytes([0x17, 0x00, 0, 0, 0])
            buffer.writeBytes(record.bytes)
        case .avcNALUnits(let isKeyframe, let compositionTime, let data):
            let cts = UInt32(bitPattern: compositionTime) & 0xFF_FFFF
            buffer.writeBytes([isKeyframe ? 0x17 : 0x27, 0x01, UInt8(cts >> 16), UInt8(truncatingIfNeeded: cts >> 8),
                               UInt8(truncatingIfNeeded: cts)])
            buffer.writeBytes(data)
        case .avcEndOfSequence:
            buffer.writeBytes([0x17, 0x02, 0, 0, 0])
        case .videoInfo:
            buffer.writeBytes([0x57, 0x00])
        case .aacSequenceHeader(let config):
            buffer.writeBytes([0xAF, 0x00])
            buffer.writeBytes(config.bytes)
        case .aacRaw(let data):
            buffer.writeBytes([0xAF, 0x01])
            buffer.writeBytes(data)
        }
    }
}
