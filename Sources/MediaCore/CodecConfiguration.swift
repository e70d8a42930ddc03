/// Errors from parsing codec configuration records.
public enum CodecConfigurationError: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case .truncated(let what): "truncated \(what)"
        case .unsupported(let what): "unsupported \(what)"
        }
    }
}

/// ISO/IEC 14496-15 AVCDecoderConfigurationRecord (the FLV AVC sequence header body).
public struct AVCDecoderConfigurationRecord: Sendable, Equatable {
    public var profileIndication: UInt8
    public var profileCompatibility: UInt8
    public var levelIndication: UInt8
    /// Size in bytes of the NAL unit length prefix in samples (1, 2 or 4).
    public var nalUnitLengthSize: Int
    public var sequenceParameterSets: [[UInt8]]
    public var pictureParameterSets: [[UInt8]]
    /// The record exactly as received; this is the codec's extradata.
    public var bytes: [UInt8]

    public init(bytes: [UInt8]) throws(CodecConfigurationError) {
        guard bytes.count >= 7 else { throw .truncated("avcC header") }
        guard bytes[0] == 1 else { throw .unsupported("avcC configurationVersion \(bytes[0])") }
        profileIndication = bytes[1]
        profileCompatibility = bytes[2]
        levelIndication = bytes[3]
        nalUnitLengthSize = Int(bytes[4] & 0x03) + 1
        guard nalUnitLengthSize != 3 else { throw .unsupported("avcC NAL length size 3") }
        var index = 6
        func readSets(count: Int, name: String) throws(CodecConfigurationError) -> [[UInt8]] {
            var sets: [[UInt8]] = []
            for _ in 0..<count {
                guard index + 2 <= bytes.count else { throw .truncated("avcC \(name) length") }
                let length = Int(bytes[index]) << 8 | Int(bytes[index + 1])
                index += 2
                guard index + length <= bytes.count else { throw .truncated("avcC \(name)") }
                sets.append(Array(bytes[index..<index + length]))
                index += length
            }
            return sets
        }
        sequenceParameterSets = try readSets(count: Int(bytes[5] & 0x1F), name: "SPS")
        guard index < bytes.count else { throw .truncated("avcC PPS count") }
        let ppsCount = Int(bytes[index])
        index += 1
        pictureParameterSets = try readSets(count: ppsCount, name: "PPS")
        guard !sequenceParameterSets.isEmpty else { throw .unsupported("avcC without SPS") }
        self.bytes = bytes
    }
}

/// ISO/IEC 14496-3 AudioSpecificConfig (the FLV AAC sequence header body).
public struct AudioSpecificConfig: Sendable, Equatable {
    public var audioObjectType: Int
    public var samplingFrequency: Int
    public var channelConfiguration: Int
    /// The record exactly as received, SBR/PS extensions included; this is the codec's extradata.
    public var bytes: [UInt8]

    public static let samplingFrequencies = [
        96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
    ]

    public init(bytes: [UInt8]) throws(CodecConfigurationError) {
        var reader = BitReader(bytes)
        guard var objectType = reader.read(5) else { throw .truncated("AudioSpecificConfig") }
        if objectType == 31 {
            guard let extended = reader.read(6) else { throw .truncated("AudioSpecificConfig object type") }
            objectType = 32 + extended
        }
        guard let frequencyIndex = reader.read(4) else { throw .truncated("AudioSpecificConfig frequency") }
        let frequency: Int
        if frequencyIndex == 15 {
            guard let explicit = reader.read(24) else { throw .truncated("AudioSpecificConfig frequency") }
            frequency = explicit
        } else if frequencyIndex < Self.samplingFrequencies.count {
            frequency = Self.samplingFrequencies[frequencyIndex]
        } else {
            throw .unsupported("AAC sampling frequency index \(frequencyIndex)")
        }
        guard let channels = reader.read(4) else { throw .truncated("AudioSpecificConfig channels") }
        guard objectType != 0 else { throw .unsupported("AAC object type 0") }
        audioObjectType = objectType
        samplingFrequency = frequency
        channelConfiguration = channels
        self.bytes = bytes
    }

    /// Samples per AAC frame (1024 for AAC-LC and its SBR/PS extensions as signalled here).
    public var samplesPerFrame: Int { 1024 }
}

/// MSB-first bit reader over a byte array, returning nil past the end.
struct BitReader {
    private let bytes: [UInt8]
    private var bitOffset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func read(_ count: Int) -> Int? {
        guard bitOffset + count <= bytes.count * 8 else { return nil }
        var value = 0
        for _ in 0..<count {
            let byte = bytes[bitOffset >> 3]
            value = value << 1 | Int((byte >> (7 - UInt8(bitOffset & 7))) & 1)
            bitOffset += 1
        }
        return value
    }
}
