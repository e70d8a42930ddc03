import MediaCore

/// H.264 access units in the form MPEG-TS carries them (H.264 Annex B byte stream), made from
/// RTMP's AVCC form while the packet is copied for libav anyway.
///
/// Done here rather than by libav's `h264_mp4toannexb` filter and the mpegts muxer's delimiter
/// insertion: each of those allocates and copies the whole frame again.
/// - Every NAL unit gets a 4-byte start code instead of its length.
/// - An access unit delimiter (`09 F0`: any slice type) comes first unless the frame has one.
/// - A keyframe without its own SPS gets the avcC's SPS and PPS right after the delimiter, so
///   every segment (which starts at a keyframe) decodes on its own.
struct H264AnnexBFraming {
    static let startCode: [UInt8] = [0, 0, 0, 1]
    static let accessUnitDelimiter: [UInt8] = [0, 0, 0, 1, 0x09, 0xF0]

    let lengthSize: Int
    /// The avcC's SPS and PPS, each after a start code.
    let parameterSets: [UInt8]

    init(lengthSize: Int, parameterSets: [[UInt8]]) {
        self.lengthSize = lengthSize
        self.parameterSets = parameterSets.flatMap { Self.startCode + $0 }
    }

    init(_ record: AVCDecoderConfigurationRecord) {
        self.init(lengthSize: record.nalUnitLengthSize,
                  parameterSets: record.sequenceParameterSets + record.pictureParameterSets)
    }

    /// What the Annex B form of one access unit needs.
    struct Plan: Equatable {
        var size: Int
        var delimiter: Bool
        var parameterSets: Bool
    }

    /// The size and additions of `data`'s Annex B form; nil unless `data` is a sequence of
    /// `lengthSize`-byte big-endian lengths, each followed by that many bytes, ending exactly at
    /// the end, with at least one non-empty NAL unit.
    func plan(_ data: [UInt8], isKeyframe: Bool) -> Plan? {
        var offset = 0
        var size = 0
        var firstType: UInt8?
        var hasSPS = false
        var hasIDR = false
        while offset < data.count {
            guard let length = length(in: data, at: offset) else { return nil }
            offset += lengthSize
            if length > 0 {
                let type = data[offset] & 0x1F
                if firstType == nil { firstType = type }
                hasSPS = hasSPS || type == 7
                hasIDR = hasIDR || type == 5
                size += Self.startCode.count + length
            }
            offset += length
        }
        guard firstType != nil else { return nil }
        let delimiter = firstType != 9
        let sets = (isKeyframe || hasIDR) && !hasSPS && !parameterSets.isEmpty
        return Plan(size: size + (delimiter ? Self.accessUnitDelimiter.count : 0) + (sets ? parameterSets.count : 0),
                    delimiter: delimiter, parameterSets: sets)
    }

    /// Writes `data` in Annex B form to `output`, which holds exactly `plan.size` bytes.
    func write(_ data: [UInt8], _ plan: Plan, to output: UnsafeMutableRawBufferPointer) {
        precondition(output.count == plan.size, "the output must be the planned size")
        var written = 0
        func append(_ bytes: UnsafeRawBufferPointer) {
            UnsafeMutableRawBufferPointer(rebasing: output[written..<(written + bytes.count)]).copyMemory(from: bytes)
            written += bytes.count
        }
        var setsPending = plan.parameterSets
        if plan.delimiter { Self.accessUnitDelimiter.withUnsafeBytes(append) }
        data.withUnsafeBytes { data in
            var offset = 0
            while offset < data.count {
                var length = 0
                for index in offset..<(offset + lengthSize) { length = length << 8 | Int(data[index]) }
                offset += lengthSize
                if length > 0 {
                    // After the delimiter (ours or the frame's), before everything else.
                    if setsPending, data[offset] & 0x1F != 9 {
                        parameterSets.withUnsafeBytes(append)
                        setsPending = false
                    }
                    Self.startCode.withUnsafeBytes(append)
                    append(UnsafeRawBufferPointer(rebasing: data[offset..<(offset + length)]))
                }
                offset += length
            }
        }
        if setsPending { parameterSets.withUnsafeBytes(append) }
    }

    private func length(in data: [UInt8], at offset: Int) -> Int? {
        guard data.count - offset >= lengthSize else { return nil }
        var length = 0
        for index in offset..<(offset + lengthSize) { length = length << 8 | Int(data[index]) }
        return length <= data.count - offset - lengthSize ? length : nil
    }
}

/// AAC frames in ADTS (ISO/IEC 13818-7 §6.2), as MPEG-TS carries them: a 7-byte header without
/// CRC before each raw frame, written while the packet is copied for libav. Without it the
/// mpegts muxer runs every frame through an inner ADTS muxer and a dynamic buffer.
struct ADTSFraming {
    static let headerSize = 7
    /// `aac_frame_length` has 13 bits and counts the header.
    static let maxPayload = (1 << 13) - 1 - headerSize

    private let profile: UInt8
    private let frequencyIndex: UInt8
    private let channelConfiguration: UInt8

    /// Nil where the fixed header cannot say the configuration (object types past 4, a frequency
    /// outside the table, channels given by a program config element): libav frames those.
    init?(_ config: AudioSpecificConfig) {
        guard (1...4).contains(config.audioObjectType), (1...7).contains(config.channelConfiguration),
              let index = AudioSpecificConfig.samplingFrequencies.firstIndex(of: config.samplingFrequency)
        else { return nil }
        profile = UInt8(config.audioObjectType - 1)
        frequencyIndex = UInt8(index)
        channelConfiguration = UInt8(config.channelConfiguration)
    }

    /// Writes the header for a frame of `payloadLength` bytes (at most `maxPayload`) to the
    /// first `headerSize` bytes of `output`.
    func writeHeader(payloadLength: Int, to output: UnsafeMutableRawBufferPointer) {
        let frameLength = payloadLength + Self.headerSize
        output[0] = 0xFF  // syncword,
        output[1] = 0xF1  // then MPEG-4, layer 0, no CRC
        output[2] = profile << 6 | frequencyIndex << 2 | channelConfiguration >> 2
        output[3] = (channelConfiguration & 3) << 6 | UInt8(frameLength >> 11)
        output[4] = UInt8(frameLength >> 3 & 0xFF)
        output[5] = UInt8(frameLength & 7) << 5 | 0x1F  // buffer fullness 0x7FF: variable rate
        output[6] = 0xFC  // one raw data block
    }
}
