/// What a packet carries.
public enum MediaKind: Sendable, Hashable {
    case video
    case audio
}

/// Video codecs a stream can carry. HEVC/AV1 arrive with Enhanced RTMP.
public enum VideoCodec: String, Sendable, Hashable {
    case h264
}

/// Audio codecs a stream can carry.
public enum AudioCodec: String, Sendable, Hashable {
    case aac
}

/// One access unit of compressed media with its stream-relative times.
///
/// Times are milliseconds (RTMP's clock) on a 64-bit timeline that never wraps;
/// `pts = dts + compositionTime`. Video payloads are length-prefixed NAL units
/// (AVCC layout, the length size given by the stream's avcC); audio payloads
/// are raw AAC frames without ADTS headers.
public struct MediaPacket: Sendable, Equatable {
    public var kind: MediaKind
    public var dts: Int64
    public var pts: Int64
    public var isKeyframe: Bool
    public var data: [UInt8]

    public init(kind: MediaKind, dts: Int64, pts: Int64, isKeyframe: Bool, data: [UInt8]) {
        self.kind = kind
        self.dts = dts
        self.pts = pts
        self.isKeyframe = isKeyframe
        self.data = data
    }

    /// Composition time offset (pts − dts) in milliseconds.
    public var compositionTime: Int64 { pts - dts }
}
