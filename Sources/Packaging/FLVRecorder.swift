#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
public import MediaCore

/// Records a live stream to an FLV file, byte for byte what RTMP carried, without libav.
///
/// Layout: the 9-byte header (audio/video flags from the description), PreviousTagSize0, an
/// `onMetaData` script tag, the AVC and AAC sequence headers at time 0, then one tag per packet:
/// timestamps in milliseconds from the first packet (24 bits + 8-bit extension; a track starting a
/// little before the first packet is clamped to 0), the composition time and keyframe flag in the
/// video tag header, payloads as received (AVCC video, raw AAC).
///
/// Every tag goes to the kernel in one `write(2)` as soon as it is built, so an FLV stays playable
/// when the process dies mid-recording: all it loses is the duration in `onMetaData`, which is 0
/// until `finish()` patches it (and `filesize`) in place, then `fsync`s and closes the file.
/// `deinit` without `finish()` just closes it.
///
/// Not thread-safe: one owner drives it. Writes block, so run it off any event loop.
public final class FLVRecorder: MediaRecorder {
    /// Where the file is written.
    public let path: String
    private var descriptor: Int32 = -1
    private let nalUnitLengthSize: Int
    private let hasVideo: Bool
    private let hasAudio: Bool
    /// The first packet's DTS (ms, as given); tag timestamps are relative to it.
    private var origin: Int64?
    private var lastVideoDTS: Int64?
    private var lastAudioDTS: Int64?
    private var span = RecordingSpan()
    private var written: Int64 = 0
    /// File offsets of the `duration` and `filesize` numbers' 8 bytes in `onMetaData`.
    private var metadataPatchOffsets: (duration: Int64, fileSize: Int64)?
    private var finished = false

    /// A tag body's size is a 24-bit field.
    static let maximumTagBodySize = 0xFF_FFFF

    /// Creates `path` (replacing any file there) and writes the FLV header, `onMetaData` and the
    /// sequence headers of whichever tracks the description has.
    ///
    /// `metadata` (the publisher's `onMetaData`) is carried over, except for the keys the recorder
    /// writes itself (sizes, codecs, duration, file size). Throws when the description has no
    /// track or its avcC does not parse, or when the file cannot be created or written; the error
    /// names the path and gives the system's reason.
    public init(path: String, description: StreamDescription,
                metadata: StreamMetadata = StreamMetadata()) throws(RecordingError) {
        self.path = path
        hasVideo = description.video != nil
        hasAudio = description.audio != nil
        guard hasVideo || hasAudio else { throw .noTracks(path: path) }
        var size: H264SequenceParameterSet?
        if let video = description.video {
            let record: AVCDecoderConfigurationRecord
            do {
                record = try AVCDecoderConfigurationRecord(bytes: video.avcC.bytes)
            } catch {
                throw .invalidDescription("the avcC does not parse (\(error))")
            }
            nalUnitLengthSize = record.nalUnitLengthSize
            size = record.sequenceParameterSets.first.flatMap(H264SequenceParameterSet.init)
        } else {
            nalUnitLengthSize = 4
        }

        descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw .cannotOpen(path: path, errno: errno) }
        // Every stored property is set: a throw from here runs deinit, which closes the file.

        var head: [UInt8] = [0x46, 0x4C, 0x56, 1, (hasAudio ? 0x04 : 0) | (hasVideo ? 0x01 : 0), 0, 0, 0, 9, 0, 0, 0, 0]
        var script = Self.metaData(description: description, size: size, extra: metadata)
        if script.body.count > Self.maximumTagBodySize {
            // The publisher's metadata is what can be that big (long strings); ours alone is small.
            script = Self.metaData(description: description, size: size, extra: StreamMetadata())
        }
        let scriptStart = Int64(head.count) + 11
        metadataPatchOffsets = (scriptStart + Int64(script.duration), scriptStart + Int64(script.fileSize))
        head += Self.tag(type: 18, timestamp: 0, body: script.body)
        if let video = description.video {
            head += Self.tag(type: 9, timestamp: 0, body: [0x17, 0x00, 0, 0, 0] + video.avcC.bytes)
        }
        if let audio = description.audio {
            head += Self.tag(type: 8, timestamp: 0, body: [0xAF, 0x00] + audio.config.bytes)
        }
        try append(head)
    }

    deinit {
        if descriptor >= 0 { _ = close(descriptor) }
    }

    /// Bytes in the file so far.
    public var bytesWritten: Int64 { written }

    /// Milliseconds of media written: from the first packet's DTS to the last packet's DTS plus
    /// the DTS step before it on that track.
    public var duration: Int64 { span.duration }

    /// Writes one packet as an FLV tag (millisecond times; per track, DTS must not decrease).
    ///
    /// Packets of a kind the description has no track for are ignored. Throws `.invalidPacket`
    /// (nothing written) for an empty or malformed payload, a decreasing DTS, a PTS before the
    /// DTS or more than 2^23 ms after it, or a payload too big for a tag; `.ioFailed` when the
    /// write fails; `.finished` after `finish()`.
    public func write(_ media: MediaPacket) throws(RecordingError) {
        guard !finished, descriptor >= 0 else { throw .finished(path: path) }
        let lastDTS: Int64?
        switch media.kind {
        case .video:
            guard hasVideo else { return }
            lastDTS = lastVideoDTS
        case .audio:
            guard hasAudio else { return }
            lastDTS = lastAudioDTS
        }
        guard !media.data.isEmpty else { throw .invalidPacket("empty \(media.kind) packet at \(media.dts) ms") }
        if media.kind == .video, !TSMuxer.isWellFormedAVCC(media.data, lengthSize: nalUnitLengthSize) {
            throw .invalidPacket("video packet at \(media.dts) ms whose NAL unit lengths do not add up")
        }
        if let lastDTS, media.dts < lastDTS {
            throw .invalidPacket("\(media.kind) packet at dts \(media.dts) ms after one at \(lastDTS) ms")
        }
        let compositionTime = media.compositionTime
        // FLV's composition time is signed 24-bit: a negative one is written as it came.
        guard (-0x80_0000..<0x80_0000).contains(compositionTime) else {
            throw .invalidPacket("\(media.kind) packet at \(media.dts) ms with composition time \(compositionTime) ms")
        }
        let header: [UInt8] = switch media.kind {
        case .video:
            [media.isKeyframe ? 0x17 : 0x27, 0x01, UInt8(truncatingIfNeeded: compositionTime >> 16),
             UInt8(truncatingIfNeeded: compositionTime >> 8), UInt8(truncatingIfNeeded: compositionTime)]
        case .audio:
            [0xAF, 0x01]
        }
        guard header.count + media.data.count <= Self.maximumTagBodySize else {
            throw .invalidPacket("\(media.kind) packet at \(media.dts) ms of \(media.data.count) bytes, too big for an FLV tag")
        }

        let origin = self.origin ?? media.dts
        self.origin = origin
        let timestamp = max(media.dts - origin, 0)
        try append(Self.tag(type: media.kind == .video ? 9 : 8, timestamp: timestamp, body: header + media.data))
        switch media.kind {
        case .video: lastVideoDTS = media.dts
        case .audio: lastAudioDTS = media.dts
        }
        span.record(media.kind, dts: timestamp)
    }

    /// Writes the final duration and size into `onMetaData`, syncs and closes the file. Calling
    /// it again does nothing; nothing can be written afterwards. Each step is tried even when an
    /// earlier one failed; the first failure is thrown.
    public func finish() throws(RecordingError) {
        guard !finished else { return }
        finished = true
        guard descriptor >= 0 else { return }
        var failure: RecordingError?
        if let offsets = metadataPatchOffsets {
            let patches = [(offsets.duration, Double(duration) / 1000), (offsets.fileSize, Double(written))]
            for (offset, value) in patches {
                let bytes = Self.bigEndian(value.bitPattern)
                let count = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, off_t(offset)) }
                if count != bytes.count, failure == nil {
                    failure = .ioFailed(path: path, operation: "updating onMetaData in", errno: count < 0 ? errno : EIO)
                }
            }
        }
        if fsync(descriptor) != 0, failure == nil { failure = .ioFailed(path: path, operation: "syncing", errno: errno) }
        if close(descriptor) != 0, failure == nil { failure = .ioFailed(path: path, operation: "closing", errno: errno) }
        descriptor = -1
        if let failure { throw failure }
    }

    // MARK: - Writing

    /// Writes all of `bytes` at the end of the file, retrying short and interrupted writes.
    ///
    /// When a write fails part way (the disk is full), the file is cut back to its last whole tag,
    /// so it stays well-formed and the space goes back to the disk.
    private func append(_ bytes: [UInt8]) throws(RecordingError) {
        if let failure = bytes.withUnsafeBytes({ writeAll(descriptor, $0) }) {
            _ = ftruncate(descriptor, off_t(written))
            _ = lseek(descriptor, off_t(written), SEEK_SET)
            throw .ioFailed(path: path, operation: "writing", errno: failure)
        }
        written += Int64(bytes.count)
    }

    /// An FLV tag: 11-byte header, body, and the 4-byte size of both that follows every tag.
    static func tag(type: UInt8, timestamp: Int64, body: [UInt8]) -> [UInt8] {
        let size = body.count
        let time = UInt32(truncatingIfNeeded: timestamp)
        var bytes: [UInt8] = [type, UInt8(truncatingIfNeeded: size >> 16), UInt8(truncatingIfNeeded: size >> 8),
                              UInt8(truncatingIfNeeded: size),
                              UInt8(truncatingIfNeeded: time >> 16), UInt8(truncatingIfNeeded: time >> 8),
                              UInt8(truncatingIfNeeded: time), UInt8(truncatingIfNeeded: time >> 24),  // extension: bits 31–24
                              0, 0, 0]  // stream ID
        bytes.reserveCapacity(11 + size + 4)
        bytes += body
        bytes += bigEndian(UInt32(11 + size))
        return bytes
    }

    // MARK: - onMetaData (AMF0)

    /// The `onMetaData` body and where in it the `duration` and `filesize` numbers' 8 bytes begin.
    static func metaData(description: StreamDescription, size: H264SequenceParameterSet?,
                         extra: StreamMetadata) -> (body: [UInt8], duration: Int, fileSize: Int) {
        var properties: [(String, StreamMetadata.Value)] = [("duration", .number(0)), ("filesize", .number(0))]
        if description.video != nil {
            if let size {
                properties += [("width", .number(Double(size.width))), ("height", .number(Double(size.height)))]
            }
            properties.append(("videocodecid", .number(7)))
        }
        if let audio = description.audio {
            properties += [("audiocodecid", .number(10)),
                           ("audiosamplerate", .number(Double(audio.config.samplingFrequency))),
                           ("audiosamplesize", .number(16)),
                           ("stereo", .boolean(audio.config.channelConfiguration != 1))]
        }
        let ours = Set(properties.map(\.0) + ["framerate", "videodatarate", "audiodatarate", "encoder"])
        properties += extra.properties.filter { !ours.contains($0.key) && $0.key.utf8.count <= 0xFFFF }.map { ($0.key, $0.value) }
        properties.append(("encoder", .string("Estuary")))

        var body: [UInt8] = []
        amf0String("onMetaData", into: &body)
        body += [0x08] + bigEndian(UInt32(properties.count))  // ECMA array
        var offsets: [String: Int] = [:]
        for (key, value) in properties {
            body += bigEndian(UInt16(key.utf8.count)) + Array(key.utf8)
            offsets[key] = body.count + 1  // after the number marker
            switch value {
            case .number(let number): body += [0x00] + bigEndian(number.bitPattern)
            case .boolean(let flag): body += [0x01, flag ? 1 : 0]
            case .string(let text): amf0String(text, into: &body)
            }
        }
        body += [0, 0, 0x09]  // object end
        return (body, offsets["duration"] ?? 0, offsets["filesize"] ?? 0)
    }

    /// An AMF0 string value: short (16-bit length) or, past 65,535 bytes, long (32-bit length).
    private static func amf0String(_ text: String, into body: inout [UInt8]) {
        let utf8 = Array(text.utf8)
        if utf8.count <= 0xFFFF {
            body += [0x02] + bigEndian(UInt16(utf8.count)) + utf8
        } else {
            body += [0x0C] + bigEndian(UInt32(clamping: utf8.count)) + utf8
        }
    }

    private static func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<T.bitWidth / 8).reversed().map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }
}
