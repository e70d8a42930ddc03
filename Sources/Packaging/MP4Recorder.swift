import CFFmpeg
public import MediaCore

/// Records a live stream to an MP4 file with libavformat's `mp4` muxer.
///
/// What comes out: one H.264 track (the avcC as its `avcC` box, samples in AVCC form exactly as
/// received) and/or one AAC track (the AudioSpecificConfig as its `esds`), times rebased so the
/// recording starts at 0, with `moov` in front of `mdat` (`movflags=+faststart`) so players can
/// start before downloading everything.
///
/// **An MP4 is only playable once `finish()` has run.** The index (`moov`) is written at the end,
/// from tables kept in memory; until then the file is an `ftyp` and an `mdat` nobody can read. So
/// the owner must call `finish()` when the publisher goes away, however it goes away. `deinit`
/// without `finish()` closes the file and frees everything but leaves it unplayable. (`FLVRecorder`
/// is the format that survives a crash.)
///
/// `finish()` is slow for long recordings: faststart writes `moov` at the end, then re-opens the
/// file by path and shifts every byte of `mdat` forward by the size of `moov`, in place. It reads
/// and rewrites the whole file, needs the path to stay valid and the file seekable (a regular
/// file, not a pipe), and must run off any event loop. Memory grows with the recording too: the
/// muxer keeps an index entry per sample (about 50 bytes) until the end.
///
/// Each packet is held back until the next one on its track arrives, which gives it its exact
/// duration (the difference of the two DTS); the last one of each track gets the duration of the
/// one before it (video) or one AAC frame (audio). That is what makes the file's duration end at
/// the last frame's end rather than its start.
///
/// With B-frames the first video picture is presented after time 0 (pts = dts + composition time);
/// the muxer keeps audio in sync by writing an edit list with an empty edit of that length, so a
/// player shows nothing (or the first frame) for those few tens of milliseconds.
///
/// Not thread-safe: one owner drives it.
public final class MP4Recorder: MediaRecorder {
    /// Where the file is written.
    public let path: String
    private let nalUnitLengthSize: Int
    private var context: UnsafeMutablePointer<AVFormatContext>?
    private var packet: UnsafeMutablePointer<AVPacket>?
    private var video: Track?
    private var audio: Track?
    /// The first packet's DTS (ms, as given); every time written is relative to it.
    private var origin: Int64?
    private var span = RecordingSpan()
    private var finalSize: Int64?
    private var finished = false

    private static let millisecond = AVRational(num: 1, den: 1000)

    /// One track, the last timestamps written to it and the packet held back for its duration.
    private struct Track {
        let stream: UnsafeMutablePointer<AVStream>
        /// The duration (stream time base) of the track's last packet when nothing follows it.
        var finalDuration: Int64
        /// The last packet's DTS as given (ms) and as written (stream time base).
        var last: (input: Int64, written: Int64)?
        var pending: Pending?
    }

    /// A packet waiting for the next one on its track, times in the stream's time base.
    private struct Pending {
        var media: MediaPacket
        var dts: Int64
        var pts: Int64
    }

    /// Creates `path` (replacing any file there) and writes the MP4 header, with a video track
    /// (H.264, the avcC as extradata, the picture size from its SPS) and an audio track (AAC, the
    /// AudioSpecificConfig as extradata) for whichever the description has.
    ///
    /// Throws when the description has no track or an unusable codec configuration, or when the
    /// file cannot be created; the error then names the path and says why ("No such file or
    /// directory", "Permission denied").
    public init(path: String, description: StreamDescription) throws(RecordingError) {
        self.path = path
        guard description.video != nil || description.audio != nil else { throw .noTracks(path: path) }
        var size: (width: Int, height: Int)?
        if let video = description.video {
            // Parsed again from the bytes libav will get, which are what must be right.
            let record: AVCDecoderConfigurationRecord
            do {
                record = try AVCDecoderConfigurationRecord(bytes: video.avcC.bytes)
            } catch {
                throw .invalidDescription("the avcC does not parse (\(error))")
            }
            nalUnitLengthSize = record.nalUnitLengthSize
            // The mp4 muxer refuses a video stream without dimensions ("dimensions not set").
            guard let sps = record.sequenceParameterSets.first.flatMap(H264SequenceParameterSet.init),
                  sps.width > 0, sps.height > 0
            else { throw .invalidDescription("the picture size cannot be read from the avcC's SPS") }
            size = (sps.width, sps.height)
        } else {
            nalUnitLengthSize = 4
        }
        if let config = description.audio?.config, config.samplingFrequency <= 0 {
            throw .invalidDescription("an AAC sampling frequency of \(config.samplingFrequency)")
        }
        // Every stored property is set from here on, so a throw runs deinit, which frees what exists.
        do {
            try open(description: description, size: size)
        } catch {
            throw .libav(error)
        }
    }

    /// Sets up the muxer and its tracks, opens the file and writes the header.
    private func open(description: StreamDescription, size: (width: Int, height: Int)?) throws(LibAVError) {
        var context: UnsafeMutablePointer<AVFormatContext>?
        try LibAVError.check(avformat_alloc_output_context2(&context, nil, "mp4", path), "allocating the mp4 muxer")
        guard let context else { throw .outOfMemory("allocating the mp4 muxer") }
        self.context = context

        packet = av_packet_alloc()
        guard packet != nil else { throw .outOfMemory("allocating a packet") }

        if let track = description.video, let size {
            let codec: AVCodecID = switch track.codec {
            case .h264: AV_CODEC_ID_H264
            }
            let stream = try Self.addStream(to: context, type: AVMEDIA_TYPE_VIDEO, codec: codec,
                                            extradata: track.avcC.bytes)
            guard let parameters = stream.pointee.codecpar else { throw .outOfMemory("allocating codec parameters") }
            parameters.pointee.width = Int32(clamping: size.width)
            parameters.pointee.height = Int32(clamping: size.height)
            video = Track(stream: stream, finalDuration: 0)
        }
        if let track = description.audio {
            let codec: AVCodecID = switch track.codec {
            case .aac: AV_CODEC_ID_AAC
            }
            let stream = try Self.addStream(to: context, type: AVMEDIA_TYPE_AUDIO, codec: codec,
                                            extradata: track.config.bytes)
            guard let parameters = stream.pointee.codecpar else { throw .outOfMemory("allocating codec parameters") }
            parameters.pointee.sample_rate = Int32(clamping: track.config.samplingFrequency)
            parameters.pointee.frame_size = Int32(clamping: track.config.samplesPerFrame)
            av_channel_layout_default(&parameters.pointee.ch_layout, Self.channelCount(track.config.channelConfiguration))
            audio = Track(stream: stream, finalDuration: 0)
        }

        try LibAVError.check(av_opt_set(context.pointee.priv_data, "movflags", "+faststart", 0),
                             "asking the mp4 muxer for faststart")
        try LibAVError.check(avio_open(&context.pointee.pb, path, AVIO_FLAG_WRITE), "opening \(path) for writing")
        // Sets the stream time bases: video 1/16000 (ms doubled until ≥ 10000), audio 1/sample rate.
        try LibAVError.check(avformat_write_header(context, nil), "writing the MP4 header of \(path)")

        if let config = description.audio?.config, let stream = audio?.stream {
            audio?.finalDuration = av_rescale_q(Int64(config.samplesPerFrame),
                                                AVRational(num: 1, den: Int32(clamping: config.samplingFrequency)),
                                                stream.pointee.time_base)
        }
    }

    deinit {
        av_packet_free(&packet)
        close()
    }

    /// Bytes in the file so far: everything muxed, excluding the index that `finish()` adds
    /// (roughly 1% of the media). After `finish()`, the file's final size.
    public var bytesWritten: Int64 {
        if let finalSize { return finalSize }
        guard let pb = context?.pointee.pb else { return 0 }
        return max(avio_tell(pb), 0)
    }

    /// Milliseconds of media written: from the first packet's DTS to the last packet's DTS plus
    /// the DTS step before it on that track.
    public var duration: Int64 { span.duration }

    /// Writes one packet (millisecond times; per track, DTS must not decrease).
    ///
    /// Video payloads go in as they are (AVCC, which is what MP4 stores). Packets of a kind the
    /// description has no track for are ignored. An equal DTS on a track is moved one tick of the
    /// track's time base on, since libav wants strictly increasing DTS. Throws for an empty or
    /// malformed payload, a decreasing DTS, a failed write, or after
    /// `finish()`. Because a packet is written when the next one on its track arrives, a libav
    /// failure may be reported one packet late.
    public func write(_ media: MediaPacket) throws(RecordingError) {
        guard !finished, context != nil else { throw .finished(path: path) }
        guard var track = media.kind == .video ? video : audio else { return }
        guard !media.data.isEmpty else { throw .invalidPacket("empty \(media.kind) packet at \(media.dts) ms") }
        if media.kind == .video, !TSMuxer.isWellFormedAVCC(media.data, lengthSize: nalUnitLengthSize) {
            throw .invalidPacket("video packet at \(media.dts) ms whose NAL unit lengths do not add up")
        }
        guard media.data.count <= Int(Int32.max) - Int(AV_INPUT_BUFFER_PADDING_SIZE) else {
            throw .invalidPacket("\(media.kind) packet at \(media.dts) ms of \(media.data.count) bytes")
        }
        if let last = track.last, media.dts < last.input {
            throw .invalidPacket("\(media.kind) packet at dts \(media.dts) ms after one at \(last.input) ms")
        }
        if let origin, media.dts < origin {
            // A negative time would need an edit list the muxer writes only for the first track.
            throw .invalidPacket("\(media.kind) packet at dts \(media.dts) ms, before the recording's start at \(origin) ms")
        }

        let origin = self.origin ?? media.dts
        self.origin = origin
        let timeBase = track.stream.pointee.time_base
        var dts = av_rescale_q(media.dts - origin, Self.millisecond, timeBase)
        var pts = av_rescale_q(media.pts - origin, Self.millisecond, timeBase)
        if pts < dts {
            // A negative composition time: libav refuses PTS < DTS, so the DTS is lowered to the PTS
            // (as in TSMuxer), but not before the recording's start, where the PTS moves up instead.
            dts = max(pts, 0)
            pts = dts
        }
        if let last = track.last, dts <= last.written {
            dts = last.written + 1
            pts = max(pts, dts)
        }
        track.last = (media.dts, dts)
        let previous = track.pending
        track.pending = Pending(media: media, dts: dts, pts: pts)
        if let previous { track.finalDuration = dts - previous.dts }
        switch media.kind {
        case .video: video = track
        case .audio: audio = track
        }
        span.record(media.kind, dts: media.dts - origin)

        if let previous {
            do {
                try writeFrame(previous, on: track.stream, duration: dts - previous.dts)
            } catch {
                throw .libav(error)
            }
        }
    }

    /// Writes the held-back packets and the index (moving it in front of the media), and closes
    /// the file. Calling it again does nothing.
    ///
    /// Even when a step fails the later ones are tried, so the file gets its index whenever libav
    /// can still write it; the first failure is thrown. Nothing can be written afterwards.
    public func finish() throws(RecordingError) {
        guard !finished else { return }
        finished = true
        guard let context else { return }
        var failure: LibAVError?
        let held = [video, audio].compactMap { track in track.flatMap { track in track.pending.map { (track, $0) } } }
        for (track, pending) in held.sorted(by: { $0.1.media.dts < $1.1.media.dts }) {
            do { try writeFrame(pending, on: track.stream, duration: track.finalDuration) } catch { failure = failure ?? error }
        }
        video?.pending = nil
        audio?.pending = nil
        do {
            try LibAVError.check(av_write_trailer(context), "writing the MP4 index of \(path)")
        } catch { failure = failure ?? error }
        if let pb = context.pointee.pb { finalSize = max(avio_size(pb), 0) }
        do {
            try LibAVError.check(close(), "closing \(path)")
        } catch { failure = failure ?? error }
        if let failure { throw .libav(failure) }
    }

    // MARK: - Helpers

    /// Closes the file and frees the muxer; returns `avio_closep`'s result (flushing can fail).
    @discardableResult
    private func close() -> Int32 {
        guard let context else { return 0 }
        self.context = nil
        video = nil
        audio = nil
        // The muxer's state (sample tables and all) is freed with the context, trailer or not.
        let closed = avio_closep(&context.pointee.pb)
        avformat_free_context(context)
        return closed
    }

    private func writeFrame(_ pending: Pending, on stream: UnsafeMutablePointer<AVStream>,
                            duration: Int64) throws(LibAVError) {
        guard let context, let packet else { throw .invalidArgument("writing to a closed MP4 recording") }
        let media = pending.media
        try LibAVError.check(av_new_packet(packet, Int32(clamping: media.data.count)),
                             "allocating a \(media.data.count)-byte packet")
        defer { av_packet_unref(packet) }
        guard let destination = packet.pointee.data, packet.pointee.size == media.data.count else {
            throw .outOfMemory("allocating a \(media.data.count)-byte packet")
        }
        media.data.withUnsafeBytes { source in
            if let base = source.baseAddress { UnsafeMutableRawPointer(destination).copyMemory(from: base, byteCount: source.count) }
        }
        packet.pointee.stream_index = stream.pointee.index
        packet.pointee.dts = pending.dts
        packet.pointee.pts = pending.pts
        packet.pointee.duration = max(duration, 0)
        if media.isKeyframe { packet.pointee.flags |= AV_PKT_FLAG_KEY }
        try LibAVError.check(av_write_frame(context, packet),
                             "recording a \(media.kind) packet at dts \(media.dts) ms, pts \(media.pts) ms to \(path)")
    }

    private static func addStream(to context: UnsafeMutablePointer<AVFormatContext>, type: AVMediaType,
                                  codec: AVCodecID, extradata: [UInt8]) throws(LibAVError) -> UnsafeMutablePointer<AVStream> {
        guard let stream = avformat_new_stream(context, nil) else { throw .outOfMemory("adding a stream") }
        guard let parameters = stream.pointee.codecpar else { throw .outOfMemory("allocating codec parameters") }
        stream.pointee.time_base = millisecond
        parameters.pointee.codec_type = type
        parameters.pointee.codec_id = codec
        // Owned by the codec parameters from here (freed with the context); zero padding as libav wants.
        guard extradata.count < Int(Int32.max) - Int(AV_INPUT_BUFFER_PADDING_SIZE),
              let buffer = av_mallocz(extradata.count + Int(AV_INPUT_BUFFER_PADDING_SIZE))
        else { throw .outOfMemory("allocating \(extradata.count) bytes of extradata") }
        extradata.withUnsafeBytes { source in
            if let base = source.baseAddress { buffer.copyMemory(from: base, byteCount: source.count) }
        }
        parameters.pointee.extradata = buffer.assumingMemoryBound(to: UInt8.self)
        parameters.pointee.extradata_size = Int32(extradata.count)
        return stream
    }

    /// Channels for an AudioSpecificConfig channelConfiguration (ISO/IEC 14496-3 table 1.19).
    private static func channelCount(_ configuration: Int) -> Int32 {
        switch configuration {
        case 1...6: Int32(configuration)
        case 7, 12, 14: 8
        case 11: 7
        default: 2
        }
    }
}
