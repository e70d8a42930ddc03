/// The picture size coded in an H.264 sequence parameter set (ITU-T H.264 §7.3.2.1.1), after
/// frame cropping. Only what is needed to reach the cropping window is read.
struct H264SequenceParameterSet: Equatable {
    var profileIndication: Int
    var width: Int
    var height: Int

    /// Parses a SPS NAL unit (with its one-byte NAL header, emulation prevention bytes included).
    init?(_ nalUnit: [UInt8]) {
        guard let first = nalUnit.first, first & 0x1F == 7 else { return nil }
        var reader = ExpGolombReader(Self.removingEmulationPrevention(nalUnit.dropFirst()))
        guard let profile = reader.bits(8), reader.bits(16) != nil,  // constraint flags, level
              reader.unsigned() != nil  // seq_parameter_set_id
        else { return nil }
        var chromaFormat = 1
        var separateColourPlanes = false
        if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(profile) {
            guard let format = reader.unsigned(), format <= 3 else { return nil }
            chromaFormat = format
            if chromaFormat == 3 {
                guard let separate = reader.bits(1) else { return nil }
                separateColourPlanes = separate == 1
            }
            guard reader.unsigned() != nil, reader.unsigned() != nil,  // bit depths
                  reader.bits(1) != nil,  // qpprime_y_zero_transform_bypass_flag
                  let scalingMatrix = reader.bits(1)
            else { return nil }
            if scalingMatrix == 1 {
                for list in 0..<(chromaFormat == 3 ? 12 : 8) {
                    guard let present = reader.bits(1) else { return nil }
                    if present == 1, !reader.skipScalingList(size: list < 6 ? 16 : 64) { return nil }
                }
            }
        }
        guard reader.unsigned() != nil,  // log2_max_frame_num_minus4
              let pictureOrderCountType = reader.unsigned()
        else { return nil }
        switch pictureOrderCountType {
        case 0:
            guard reader.unsigned() != nil else { return nil }
        case 1:
            guard reader.bits(1) != nil, reader.signed() != nil, reader.signed() != nil,
                  let cycle = reader.unsigned(), cycle <= 255
            else { return nil }
            for _ in 0..<cycle {
                guard reader.signed() != nil else { return nil }  // offset_for_ref_frame
            }
        case 2:
            break
        default:
            return nil
        }
        guard reader.unsigned() != nil, reader.bits(1) != nil,  // max_num_ref_frames, gaps flag
              let widthInMacroblocks = reader.unsigned().map({ $0 + 1 }),
              let heightInMapUnits = reader.unsigned().map({ $0 + 1 }),
              let frameMacroblocksOnly = reader.bits(1)
        else { return nil }
        if frameMacroblocksOnly == 0, reader.bits(1) == nil { return nil }  // mb_adaptive_frame_field_flag
        guard reader.bits(1) != nil, let cropping = reader.bits(1) else { return nil }  // direct_8x8_inference_flag
        let frameHeightFactor = 2 - frameMacroblocksOnly
        var width = widthInMacroblocks * 16
        var height = heightInMapUnits * 16 * frameHeightFactor
        if cropping == 1 {
            guard let left = reader.unsigned(), let right = reader.unsigned(),
                  let top = reader.unsigned(), let bottom = reader.unsigned()
            else { return nil }
            // Table 6-1: the crop unit follows the chroma subsampling (ChromaArrayType 0 has none).
            let chromaArrayType = separateColourPlanes ? 0 : chromaFormat
            let unitX = chromaArrayType == 1 || chromaArrayType == 2 ? 2 : 1
            let unitY = (chromaArrayType == 1 ? 2 : 1) * frameHeightFactor
            width -= unitX * (left + right)
            height -= unitY * (top + bottom)
        }
        guard width > 0, height > 0 else { return nil }
        profileIndication = profile
        self.width = width
        self.height = height
    }

    /// The RBSP of a NAL unit payload: every 0x03 following two zero bytes removed.
    static func removingEmulationPrevention(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var zeros = 0
        for byte in bytes {
            if zeros >= 2, byte == 3 {
                zeros = 0
                continue
            }
            zeros = byte == 0 ? zeros + 1 : 0
            output.append(byte)
        }
        return output
    }
}

/// MSB-first bit reader with Exp-Golomb codes, returning nil past the end.
struct ExpGolombReader {
    private let bytes: [UInt8]
    private var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func bits(_ count: Int) -> Int? {
        guard offset + count <= bytes.count * 8 else { return nil }
        var value = 0
        for _ in 0..<count {
            value = value << 1 | Int((bytes[offset >> 3] >> (7 - UInt8(offset & 7))) & 1)
            offset += 1
        }
        return value
    }

    /// ue(v); codes longer than 32 bits are refused.
    mutating func unsigned() -> Int? {
        var leadingZeros = 0
        while true {
            guard let bit = bits(1) else { return nil }
            if bit == 1 { break }
            leadingZeros += 1
            guard leadingZeros <= 31 else { return nil }
        }
        guard let suffix = bits(leadingZeros) else { return nil }
        return (1 << leadingZeros) - 1 + suffix
    }

    /// se(v).
    mutating func signed() -> Int? {
        guard let code = unsigned() else { return nil }
        return code & 1 == 1 ? (code + 1) / 2 : -(code / 2)
    }

    /// Skips a scaling_list() of `size` coefficients (§7.3.2.1.1.1); false when it runs out.
    mutating func skipScalingList(size: Int) -> Bool {
        var last = 8
        var next = 8
        for _ in 0..<size {
            if next != 0 {
                guard let delta = signed() else { return false }
                next = (last + delta + 256) % 256
            }
            last = next == 0 ? last : next
        }
        return true
    }
}
