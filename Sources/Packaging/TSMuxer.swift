import CFFmpeg
public import MediaCore

/// libavformat's `mpegts` muxer writing into memory, cut into independently decodable segments.
///
/// One muxer serves a whole publish, so continuity counters and timestamps run on across
/// segments. The caller decides where segments end: `takeSegment()` flushes what the muxer
/// holds and returns the bytes since the previous cut, and the next segment starts with PAT
/// and PMT again.
///
/// What comes out:
/// - Video is H.264 Annex B: libav's automatic `h264_mp4toannexb` filter turns the AVCC
///   payloads into start-code form, with an access unit delimiter before each frame and
///   SPS/PPS (from the avcC) before each IDR picture that lacks them.
/// - Audio is AAC in ADTS frames, built by the muxer from the AudioSpecificConfig; one frame
///   per PES packet (about 2 TS packets per frame at 96 kb/s).
/// - TS timestamps are the packets' own: millisecond times × 90 on the 90 kHz clock, with no
///   offset (`max_delay` is 0, which is what would otherwise be added), PCR on the video PID
///   (audio when there is no video) equal to the DTS.
/// - Every segment begins with PAT then PMT; libav's SDT follows them.
///
/// Not thread-safe: one owner drives it. It owns its `AVFormatContext`, the in-memory
/// `AVIOContext` and a reusable `AVPacket`, and frees them in `deinit`, finished or not.
public final class TSMuxer {
    private let nalUnitLengthSize: Int
    private let output: AVIOMemoryWriter
    private var context: UnsafeMutablePointer<AVFormatContext>?
    private var packet: UnsafeMutablePointer<AVPacket>?
    private var video: Track?
    private var audio: Track?
    private var finished = false

    private static let millisecond = AVRational(num: 1, den: 1000)
    private static let serviceDescriptionPID = 0x11

    /// One elementary stream and the last timestamps written to it.
    private struct Track {
        let stream: UnsafeMutablePointer<AVStream>
        /// The last packet's DTS as given (ms) and as written (stream time base).
        var last: (input: Int64, written: Int64)?
    }

    /// Creates a muxer with a video stream (H.264, the avcC as extradata) and an audio stream
    /// (AAC, the AudioSpecificConfig as extradata) for whichever the description has, and
    /// writes the TS header.
    ///
    /// Throws when the description has no track or its codec configuration is unusable.
    public init(description: StreamDescription) throws(LibAVError) {
        guard description.video != nil || description.audio != nil else {
            throw .invalidArgument("creating a TS muxer without tracks")
        }
        if let video = description.video {
            // libav only reads the avcC at the first packet; check the bytes it will read now.
            do {
                nalUnitLengthSize = try AVCDecoderConfigurationRecord(bytes: video.avcC.bytes).nalUnitLengthSize
            } catch {
                throw .invalidData("reading the avcC (\(error))")
            }
        } else {
            nalUnitLengthSize = 4
        }
        output = try AVIOMemoryWriter()
        // Every stored property is set from here on, so a throw runs deinit, which frees what exists.

        var context: UnsafeMutablePointer<AVFormatContext>?
        try LibAVError.check(avformat_alloc_output_context2(&context, nil, "mpegts", nil), "allocating the mpegts muxer")
        guard let context else { throw .outOfMemory("allocating the mpegts muxer") }
        self.context = context
        context.pointee.pb = output.context
        context.pointee.flags |= AVFMT_FLAG_CUSTOM_IO | AVFMT_FLAG_AUTO_BSF
        // mpegts adds 2 × max_delay to every TS timestamp and lets audio frames share a PES
        // packet for up to max_delay / 2. At 0 the TS times are the input times and each audio
        // frame is its own PES packet, written when the next one arrives or at a cut.
        context.pointee.max_delay = 0

        packet = av_packet_alloc()
        guard packet != nil else { throw .outOfMemory("allocating a packet") }

        if let track = description.video {
            let codec: AVCodecID = switch track.codec {
            case .h264: AV_CODEC_ID_H264
            }
            let stream = try Self.addStream(to: context, type: AVMEDIA_TYPE_VIDEO, codec: codec,
                                            extradata: track.avcC.bytes)
            video = Track(stream: stream)
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
            audio = Track(stream: stream)
            if description.video == nil {
                // The PCR rides on the audio PID; give its period directly rather than have libav
                // derive it from a frame duration it cannot compute for AAC (and warn).
                try LibAVError.check(av_opt_set_int(context.pointee.priv_data, "pcr_period", 100, 0),
                                     "setting the PCR period")
            }
        }

        // The header is empty for mpegts (tables come with the first packet) but sets the
        // muxer up: stream time bases become 1/90000, the ADTS writer is created from the ASC.
        try LibAVError.check(avformat_write_header(context, nil), "writing the TS header")
    }

    deinit {
        av_packet_free(&packet)
        // Frees the streams, their extradata, the bitstream filters and the muxer's own state.
        // The AVIOContext is ours (`output`) and is released after this, once nothing refers to it.
        avformat_free_context(context)
    }

    /// Writes one packet (millisecond times; per track, DTS must not decrease).
    ///
    /// Packets of a kind the description has no track for are ignored. Two packets on a track
    /// with the same DTS are fine: the later is moved one 90 kHz tick on, since libav wants
    /// strictly increasing DTS. A PTS before the DTS (a negative composition time, which FLV
    /// allows) cannot be said in MPEG-TS and libav refuses it: the PTS is what viewers see, so
    /// it is kept and the DTS lowered to it; only where that would not leave the DTS above the
    /// track's previous one does the PTS move on with it (by a tick). Throws for an empty or
    /// malformed payload, a decreasing DTS, or after `finish()`.
    public func write(_ media: MediaPacket) throws(LibAVError) {
        guard !finished, let context, let packet else { throw .invalidArgument("writing to a finished TS muxer") }
        let track: Track
        switch media.kind {
        case .video:
            guard let video else { return }
            track = video
        case .audio:
            guard let audio else { return }
            track = audio
        }
        guard !media.data.isEmpty else { throw .invalidData("muxing an empty \(media.kind) packet at \(media.dts) ms") }
        if media.kind == .video, !Self.isWellFormedAVCC(media.data, lengthSize: nalUnitLengthSize) {
            // Caught here because libav decides on its Annex B conversion from the first packet alone.
            throw .invalidData("muxing a video packet at \(media.dts) ms whose NAL unit lengths do not add up")
        }

        let stream = track.stream
        let timeBase = stream.pointee.time_base
        var dts = av_rescale_q(media.dts, Self.millisecond, timeBase)
        var pts = av_rescale_q(media.pts, Self.millisecond, timeBase)
        if pts < dts { dts = pts }
        if let last = track.last, media.dts >= last.input, dts <= last.written {
            dts = last.written + 1
            pts = max(pts, dts)
        }

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
        packet.pointee.dts = dts
        packet.pointee.pts = pts
        if media.isKeyframe { packet.pointee.flags |= AV_PKT_FLAG_KEY }
        // Recorded before the write: libav may have taken this DTS as its last even if the
        // write then fails, and one tick too many on a later equal DTS costs nothing.
        switch media.kind {
        case .video: video?.last = (media.dts, dts)
        case .audio: audio?.last = (media.dts, dts)
        }
        try LibAVError.check(av_write_frame(context, packet),
                             "muxing a \(media.kind) packet at dts \(media.dts) ms, pts \(media.pts) ms")
    }

    /// Flushes the muxer and returns every TS byte since the previous call: whole 188-byte
    /// packets, beginning with PAT and PMT. The next packet written starts a new segment.
    public func takeSegment() throws(LibAVError) -> [UInt8] {
        guard !finished, let context else { throw .invalidArgument("cutting a segment from a finished TS muxer") }
        // A null packet makes mpegts write the audio frame it holds for the next PES packet.
        try LibAVError.check(av_write_frame(context, nil), "flushing the TS muxer")
        var bytes = try output.take()
        // Consumed (and cleared) by the muxer at the next PES packet it writes.
        try LibAVError.check(av_opt_set(context.pointee.priv_data, "mpegts_flags", "+resend_headers", 0),
                             "asking for PAT and PMT at the next segment")
        Self.moveProgramTablesFirst(&bytes)
        return bytes
    }

    /// Writes the trailer and returns the bytes since the previous `takeSegment()`.
    /// Nothing can be written after this.
    public func finish() throws(LibAVError) -> [UInt8] {
        guard !finished, let context else { throw .invalidArgument("finishing a finished TS muxer") }
        finished = true
        try LibAVError.check(av_write_trailer(context), "writing the TS trailer")
        var bytes = try output.take()
        Self.moveProgramTablesFirst(&bytes)
        return bytes
    }

    // MARK: - Helpers

    private static func addStream(to context: UnsafeMutablePointer<AVFormatContext>, type: AVMediaType,
                                  codec: AVCodecID, extradata: [UInt8]) throws(LibAVError) -> UnsafeMutablePointer<AVStream> {
        guard let stream = avformat_new_stream(context, nil) else { throw .outOfMemory("adding a stream") }
        guard let parameters = stream.pointee.codecpar else { throw .outOfMemory("allocating codec parameters") }
        stream.pointee.time_base = millisecond
        parameters.pointee.codec_type = type
        parameters.pointee.codec_id = codec
        // The stream's codec parameters own the extradata from here (freed with the context);
        // libav reads up to AV_INPUT_BUFFER_PADDING_SIZE bytes past its end, which must be zero.
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
        default: 2  // 0: given in a program config element, which the ADTS writer carries over
        }
    }

    /// Whether `data` is a sequence of `lengthSize`-byte big-endian lengths, each followed by
    /// that many bytes, ending exactly at the end, with at least one non-empty NAL unit.
    static func isWellFormedAVCC(_ data: [UInt8], lengthSize: Int) -> Bool {
        var offset = 0
        var sawUnit = false
        while offset < data.count {
            guard data.count - offset >= lengthSize else { return false }
            var length = 0
            for byte in data[offset..<offset + lengthSize] { length = length << 8 | Int(byte) }
            offset += lengthSize
            guard length <= data.count - offset else { return false }
            sawUnit = sawUnit || length > 0
            offset += length
        }
        return sawUnit
    }

    /// The PID of the 188-byte TS packet at `index`.
    private static func pid(_ bytes: [UInt8], packet index: Int) -> Int {
        Int(bytes[index * 188 + 1] & 0x1F) << 8 | Int(bytes[index * 188 + 2])
    }

    /// Moves the SDT packets libav writes ahead of PAT and PMT after them, in place.
    ///
    /// libav's table order is SDT, PAT, PMT; RFC 8216 §3.2 wants a segment's first two TS
    /// packets to be PAT and PMT. Packets of different PIDs can swap places freely (continuity
    /// counters are per PID). Anything but that exact layout is left unchanged. Only the few
    /// packets ahead of the media move: a segment is never copied whole (a copy per segment per
    /// channel was a fresh, page-faulted allocation each time).
    static func moveProgramTablesFirst(_ bytes: inout [UInt8]) {
        let count = bytes.count / 188
        guard bytes.count % 188 == 0, count >= 3 else { return }
        var sdtPackets = 0
        while sdtPackets < count - 2, pid(bytes, packet: sdtPackets) == serviceDescriptionPID { sdtPackets += 1 }
        guard sdtPackets > 0, pid(bytes, packet: sdtPackets) == 0,
              let pmtPID = programMapPID(inPATPacket: bytes[(sdtPackets * 188)..<(sdtPackets * 188 + 188)]),
              pid(bytes, packet: sdtPackets + 1) == pmtPID
        else { return }
        let tables = sdtPackets * 188
        let head = Array(bytes[0..<(tables + 2 * 188)])
        bytes.replaceSubrange(0..<(2 * 188), with: head[tables...])
        bytes.replaceSubrange((2 * 188)..<(tables + 2 * 188), with: head[..<tables])
    }

    /// The PMT PID of the first program in a TS packet carrying the start of a PAT section.
    private static func programMapPID(inPATPacket packet: ArraySlice<UInt8>) -> Int? {
        let start = packet.startIndex
        guard packet.count == 188, packet[start] == 0x47, packet[start + 1] & 0x40 != 0 else { return nil }
        var offset = start + 4
        if packet[start + 3] & 0x20 != 0 { offset += 1 + Int(packet[start + 4]) }  // adaptation field
        guard offset < packet.endIndex else { return nil }
        offset += 1 + Int(packet[offset])  // pointer field
        // table_id, section_length (2), transport_stream_id (2), version, section numbers (2),
        // then (program_number, PID) pairs; program 0 is the network PID, not a PMT.
        guard offset + 8 <= packet.endIndex, packet[offset] == 0 else { return nil }
        let sectionEnd = offset + 3 + (Int(packet[offset + 1] & 0x0F) << 8 | Int(packet[offset + 2])) - 4
        var entry = offset + 8
        while entry + 4 <= min(sectionEnd, packet.endIndex) {
            let program = Int(packet[entry]) << 8 | Int(packet[entry + 1])
            let pid = Int(packet[entry + 2] & 0x1F) << 8 | Int(packet[entry + 3])
            if program != 0 { return pid }
            entry += 4
        }
        return nil
    }
}
