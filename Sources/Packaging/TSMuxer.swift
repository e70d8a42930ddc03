import CFFmpeg
public import MediaCore
public import NIOCore

/// libavformat's `mpegts` muxer writing into memory, cut into independently decodable segments.
///
/// One muxer serves a whole publish, so continuity counters and timestamps run on across
/// segments. The caller decides where segments end: `takeSegment()` flushes what the muxer
/// holds and returns the bytes since the previous cut, and the next segment starts with PAT
/// and PMT again.
///
/// What comes out:
/// - Video is H.264 Annex B (`H264AnnexBFraming`, done as the packet is copied for libav):
///   start codes instead of lengths, an access unit delimiter before each frame, and SPS/PPS
///   (from the avcC) in each keyframe that lacks them.
/// - Audio is AAC in ADTS frames (`ADTSFraming`, likewise; libav frames the configurations
///   ADTS's fixed header cannot say); one frame per PES packet (about 2 TS packets per frame
///   at 96 kb/s).
/// - TS timestamps are the packets' own: millisecond times × 90 on the 90 kHz clock, with no
///   offset (`max_delay` is 0, which is what would otherwise be added), PCR on the video PID
///   (audio when there is no video) equal to the DTS.
/// - Every segment begins with PAT then PMT; libav's SDT follows them.
///
/// Not thread-safe: one owner drives it. It owns its `AVFormatContext`, the in-memory
/// `AVIOContext` and a reusable `AVPacket`, and frees them in `deinit`, finished or not.
public final class TSMuxer {
    private let h264: H264AnnexBFraming
    /// Nil when ADTS cannot say the audio configuration: libav then frames it.
    private let adts: ADTSFraming?
    private let output: AVIOMemoryWriter
    private var context: UnsafeMutablePointer<AVFormatContext>?
    private var packet: UnsafeMutablePointer<AVPacket>?
    /// The packet's bytes, one buffer reused from packet to packet: when `av_write_frame` returns,
    /// the mpegts muxer has written video out and copied audio into its PES buffer, and with the
    /// payloads already framed no filter holds a packet. Not reference-counted, so libav takes
    /// the bytes as lent. `padding` zero bytes follow the payload, as libav requires.
    private var payload: UnsafeMutableRawPointer
    private var payloadCapacity = 64 << 10
    private static let padding = Int(AV_INPUT_BUFFER_PADDING_SIZE)
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
            // The record as received, parsed again: its bytes are what the framing is made from.
            do {
                h264 = H264AnnexBFraming(try AVCDecoderConfigurationRecord(bytes: video.avcC.bytes))
            } catch {
                throw .invalidData("reading the avcC (\(error))")
            }
        } else {
            h264 = H264AnnexBFraming(lengthSize: 4, parameterSets: [])
        }
        adts = description.audio.flatMap { ADTSFraming($0.config) }
        output = try AVIOMemoryWriter()
        payload = UnsafeMutableRawPointer.allocate(byteCount: payloadCapacity + Self.padding, alignment: 64)
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
            // Annex B parameter sets, not the avcC: with avcC extradata libav would add its own
            // AVCC-to-Annex-B filter, although the packets already come in Annex B.
            let stream = try Self.addStream(to: context, type: AVMEDIA_TYPE_VIDEO, codec: codec,
                                            extradata: h264.parameterSets)
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
        payload.deallocate()
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
        // The payload as the TS carries it (Annex B, ADTS), framed while it is copied for libav.
        let size: Int
        var plan: H264AnnexBFraming.Plan?
        var adts: ADTSFraming?
        switch media.kind {
        case .video:
            guard let videoPlan = h264.plan(media.data, isKeyframe: media.isKeyframe) else {
                throw .invalidData("muxing a video packet at \(media.dts) ms whose NAL unit lengths do not add up")
            }
            plan = videoPlan
            size = videoPlan.size
        case .audio:
            // A frame that already has an ADTS sync word goes as it is, as libav would send it.
            let hasSync = media.data.count >= 2 && media.data[0] == 0xFF && media.data[1] & 0xF0 == 0xF0
            if media.data.count <= ADTSFraming.maxPayload, media.data.count >= 2, !hasSync { adts = self.adts }
            size = media.data.count + (adts == nil ? 0 : ADTSFraming.headerSize)
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

        guard size <= Int(Int32.max) - Self.padding else {
            throw .invalidData("muxing a \(media.kind) packet of \(media.data.count) bytes at \(media.dts) ms: too large")
        }
        if size > payloadCapacity {
            payload.deallocate()
            payloadCapacity = max(size, payloadCapacity * 2)
            payload = UnsafeMutableRawPointer.allocate(byteCount: payloadCapacity + Self.padding, alignment: 64)
        }
        let output = UnsafeMutableRawBufferPointer(start: payload, count: size)
        if let plan {
            h264.write(media.data, plan, to: output)
        } else {
            var body = output
            if let adts {
                adts.writeHeader(payloadLength: media.data.count, to: output)
                body = UnsafeMutableRawBufferPointer(rebasing: output[ADTSFraming.headerSize...])
            }
            media.data.withUnsafeBytes { body.copyMemory(from: $0) }
        }
        (payload + size).initializeMemory(as: UInt8.self, repeating: 0, count: Self.padding)
        packet.pointee.data = payload.assumingMemoryBound(to: UInt8.self)
        packet.pointee.size = Int32(size)
        defer {
            packet.pointee.data = nil
            packet.pointee.size = 0
        }
        packet.pointee.stream_index = stream.pointee.index
        packet.pointee.dts = dts
        packet.pointee.pts = pts
        packet.pointee.flags = media.isKeyframe ? AV_PKT_FLAG_KEY : 0
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
    public func takeSegment() throws(LibAVError) -> ByteBuffer {
        guard !finished, let context else { throw .invalidArgument("cutting a segment from a finished TS muxer") }
        // A null packet makes mpegts write the audio frame it holds for the next PES packet.
        try LibAVError.check(av_write_frame(context, nil), "flushing the TS muxer")
        var bytes = try output.take()
        // Consumed (and cleared) by the muxer at the next PES packet it writes.
        try LibAVError.check(av_opt_set(context.pointee.priv_data, "mpegts_flags", "+resend_headers", 0),
                             "asking for PAT and PMT at the next segment")
        bytes.withUnsafeMutableReadableBytes { Self.moveProgramTablesFirst($0) }
        return bytes
    }

    /// Writes the trailer and returns the bytes since the previous `takeSegment()`.
    /// Nothing can be written after this.
    public func finish() throws(LibAVError) -> ByteBuffer {
        guard !finished, let context else { throw .invalidArgument("finishing a finished TS muxer") }
        finished = true
        try LibAVError.check(av_write_trailer(context), "writing the TS trailer")
        var bytes = try output.take(last: true)
        bytes.withUnsafeMutableReadableBytes { Self.moveProgramTablesFirst($0) }
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
        H264AnnexBFraming(lengthSize: lengthSize, parameterSets: []).plan(data, isKeyframe: false) != nil
    }

    /// The PID of the 188-byte TS packet at `index`.
    private static func pid(_ bytes: UnsafeMutableRawBufferPointer, packet index: Int) -> Int {
        Int(bytes[index * 188 + 1] & 0x1F) << 8 | Int(bytes[index * 188 + 2])
    }

    /// Moves the SDT packets libav writes ahead of PAT and PMT after them, in place.
    ///
    /// libav's table order is SDT, PAT, PMT; RFC 8216 §3.2 wants a segment's first two TS
    /// packets to be PAT and PMT. Packets of different PIDs can swap places freely (continuity
    /// counters are per PID). Anything but that exact layout is left unchanged. Only the few
    /// packets ahead of the media move: a segment is never copied whole.
    static func moveProgramTablesFirst(_ bytes: UnsafeMutableRawBufferPointer) {
        let count = bytes.count / 188
        guard bytes.count % 188 == 0, count >= 3 else { return }
        var sdtPackets = 0
        while sdtPackets < count - 2, pid(bytes, packet: sdtPackets) == serviceDescriptionPID { sdtPackets += 1 }
        guard sdtPackets > 0, pid(bytes, packet: sdtPackets) == 0,
              let pmtPID = programMapPID(inPATPacket: Array(bytes[(sdtPackets * 188)..<(sdtPackets * 188 + 188)])),
              pid(bytes, packet: sdtPackets + 1) == pmtPID
        else { return }
        let tables = sdtPackets * 188
        let head = Array(bytes[0..<(tables + 2 * 188)])
        // PAT and PMT first, then the SDT packets.
        head.withUnsafeBytes { head in
            UnsafeMutableRawBufferPointer(rebasing: bytes[0..<(2 * 188)]).copyMemory(from: UnsafeRawBufferPointer(rebasing: head[tables...]))
            UnsafeMutableRawBufferPointer(rebasing: bytes[(2 * 188)..<(tables + 2 * 188)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: head[..<tables]))
        }
    }

    /// The PMT PID of the first program in a TS packet carrying the start of a PAT section.
    private static func programMapPID(inPATPacket packet: [UInt8]) -> Int? {
        guard packet.count == 188, packet[0] == 0x47, packet[1] & 0x40 != 0 else { return nil }
        var offset = 4
        if packet[3] & 0x20 != 0 { offset += 1 + Int(packet[4]) }  // adaptation field
        guard offset < packet.count else { return nil }
        offset += 1 + Int(packet[offset])  // pointer field
        // table_id, section_length (2), transport_stream_id (2), version, section numbers (2),
        // then (program_number, PID) pairs; program 0 is the network PID, not a PMT.
        guard offset + 8 <= packet.count, packet[offset] == 0 else { return nil }
        let sectionEnd = offset + 3 + (Int(packet[offset + 1] & 0x0F) << 8 | Int(packet[offset + 2])) - 4
        var entry = offset + 8
        while entry + 4 <= min(sectionEnd, packet.count) {
            let program = Int(packet[entry]) << 8 | Int(packet[entry + 1])
            let pid = Int(packet[entry + 2] & 0x1F) << 8 | Int(packet[entry + 3])
            if program != 0 { return pid }
            entry += 4
        }
        return nil
    }
}
