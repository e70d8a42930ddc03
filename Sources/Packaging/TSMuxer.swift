import CFFmpeg
public import MediaCore

/// An error from a libav call, with libav's own text.
public struct LibAVError: Error, CustomStringConvertible, Equatable {
    public let operation: String
    public let code: Int32

    public var description: String {
        var text = [CChar](repeating: 0, count: 256)
        av_strerror(code, &text, text.count)
        let message = text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return "\(operation) failed: \(message) (\(code))"
    }

    static func check(_ code: Int32, _ operation: @autoclosure () -> String) throws(LibAVError) {
        if code < 0 { throw LibAVError(operation: operation(), code: code) }
    }
}

/// libavformat's `mpegts` muxer writing into memory.
///
/// Segments are cut by the caller: `takeSegment()` flushes what the muxer
/// holds and returns the bytes since the previous cut, and makes the next
/// packet start with PAT and PMT so every segment decodes on its own. One
/// muxer serves a whole publish so continuity counters and timestamps run on
/// across segments. Not thread-safe; frees everything in `deinit`.
public final class TSMuxer {
    private var context: UnsafeMutablePointer<AVFormatContext>?
    private var output: UnsafeMutablePointer<estuary_membuf>
    private var packet: UnsafeMutablePointer<AVPacket>?
    private var videoStream: Int32 = -1
    private var audioStream: Int32 = -1
    private var finished = false
    private static let millisecond = AVRational(num: 1, den: 1000)

    public init(description: StreamDescription) throws(LibAVError) {
        output = .allocate(capacity: 1)
        output.initialize(to: estuary_membuf(data: nil, size: 0, capacity: 0))
        var context: UnsafeMutablePointer<AVFormatContext>?
        try LibAVError.check(avformat_alloc_output_context2(&context, nil, "mpegts", nil), "allocating the mpegts muxer")
        self.context = context
        guard let context else { throw LibAVError(operation: "allocating the mpegts muxer", code: estuary_averror(ENOMEM)) }
        guard let pb = estuary_avio_open_membuf(output) else {
            throw LibAVError(operation: "allocating the output buffer", code: estuary_averror(ENOMEM))
        }
        context.pointee.pb = pb
        context.pointee.flags |= AVFMT_FLAG_CUSTOM_IO
        // Audio PES packets are written when the next cut flushes them, not held back by max_delay.
        context.pointee.max_delay = 0

        if let video = description.video {
            videoStream = try addStream(
                to: context, type: AVMEDIA_TYPE_VIDEO, codec: AV_CODEC_ID_H264, extradata: video.avcC.bytes)
        }
        if let audio = description.audio {
            audioStream = try addStream(
                to: context, type: AVMEDIA_TYPE_AUDIO, codec: AV_CODEC_ID_AAC, extradata: audio.config.bytes)
            let parameters = context.pointee.streams[Int(audioStream)]!.pointee.codecpar!
            parameters.pointee.sample_rate = Int32(audio.config.samplingFrequency)
            av_channel_layout_default(&parameters.pointee.ch_layout, Int32(max(audio.config.channelConfiguration, 1)))
            parameters.pointee.frame_size = Int32(audio.config.samplesPerFrame)
        }
        guard videoStream >= 0 || audioStream >= 0 else {
            throw LibAVError(operation: "creating a TS muxer without tracks", code: estuary_averror(EINVAL))
        }
        packet = av_packet_alloc()
        guard packet != nil else { throw LibAVError(operation: "allocating a packet", code: estuary_averror(ENOMEM)) }
        try LibAVError.check(avformat_write_header(context, nil), "writing the TS header")
    }

    deinit {
        av_packet_free(&packet)
        if let context {
            estuary_avio_close_membuf(&context.pointee.pb)
            avformat_free_context(context)
        }
        estuary_membuf_free(output)
        output.deinitialize(count: 1)
        output.deallocate()
    }

    private func addStream(to context: UnsafeMutablePointer<AVFormatContext>, type: AVMediaType, codec: AVCodecID,
                           extradata: [UInt8]) throws(LibAVError) -> Int32 {
        guard let stream = avformat_new_stream(context, nil) else {
            throw LibAVError(operation: "adding a stream", code: estuary_averror(ENOMEM))
        }
        stream.pointee.time_base = Self.millisecond
        let parameters = stream.pointee.codecpar!
        parameters.pointee.codec_type = type
        parameters.pointee.codec_id = codec
        let padding = Int(AV_INPUT_BUFFER_PADDING_SIZE)
        guard let buffer = av_mallocz(extradata.count + padding)?.assumingMemoryBound(to: UInt8.self) else {
            throw LibAVError(operation: "allocating extradata", code: estuary_averror(ENOMEM))
        }
        buffer.update(from: extradata, count: extradata.count)
        parameters.pointee.extradata = buffer
        parameters.pointee.extradata_size = Int32(extradata.count)
        return stream.pointee.index
    }

    /// Writes one packet (ms times; per-track dts must not decrease).
    public func write(_ media: MediaPacket) throws(LibAVError) {
        guard let context, let packet, !finished else {
            throw LibAVError(operation: "writing to a finished TS muxer", code: estuary_averror(EINVAL))
        }
        let index = media.kind == .video ? videoStream : audioStream
        guard index >= 0 else { return }
        guard !media.data.isEmpty else {
            throw LibAVError(operation: "writing an empty \(media.kind) packet", code: estuary_averror(EINVAL))
        }
        try LibAVError.check(av_new_packet(packet, Int32(media.data.count)), "allocating a \(media.data.count)-byte packet")
        defer { av_packet_unref(packet) }
        media.data.withUnsafeBufferPointer { source in
            packet.pointee.data.update(from: source.baseAddress!, count: source.count)
        }
        let timeBase = context.pointee.streams[Int(index)]!.pointee.time_base
        packet.pointee.stream_index = index
        packet.pointee.dts = av_rescale_q(media.dts, Self.millisecond, timeBase)
        packet.pointee.pts = av_rescale_q(media.pts, Self.millisecond, timeBase)
        if media.isKeyframe { packet.pointee.flags |= AV_PKT_FLAG_KEY }
        try LibAVError.check(av_write_frame(context, packet), "muxing a \(media.kind) packet at \(media.dts) ms")
    }

    /// Flushes and returns the TS bytes since the previous call; the next packet starts with PAT/PMT.
    public func takeSegment() throws(LibAVError) -> [UInt8] {
        guard let context else { return [] }
        // A null packet flushes the muxer's pending PES data.
        try LibAVError.check(av_write_frame(context, nil), "flushing the TS muxer")
        avio_flush(context.pointee.pb)
        let bytes = drain()
        try LibAVError.check(av_opt_set(context.pointee.priv_data, "mpegts_flags", "+resend_headers", 0),
                             "requesting PAT/PMT for the next segment")
        return bytes
    }

    /// Writes the trailer and returns the remaining bytes.
    public func finish() throws(LibAVError) -> [UInt8] {
        guard let context, !finished else { return [] }
        finished = true
        try LibAVError.check(av_write_trailer(context), "writing the TS trailer")
        avio_flush(context.pointee.pb)
        return drain()
    }

    private func drain() -> [UInt8] {
        let size = output.pointee.size
        guard size > 0, let data = output.pointee.data else { return [] }
        let bytes = [UInt8](UnsafeBufferPointer(start: data, count: size))
        output.pointee.size = 0
        return bytes
    }
}
