import Testing

@testable import MediaCore

@Suite("MediaCore")
struct MediaCoreTests {
    @Test("RTMP time wraps at 2^32 ms onto a 64-bit timeline")
    func unwrap() {
        var clock = TimestampUnwrapper()
        #expect(clock.unwrap(0xFFFF_FF00) == 0xFFFF_FF00)
        #expect(clock.unwrap(0x0000_0010) == 0x1_0000_0010)
        // A late packet from before the wrap stays before it.
        #expect(clock.unwrap(0xFFFF_FFF0) == 0xFFFF_FFF0)
        #expect(clock.unwrap(0x0000_0020) == 0x1_0000_0020)
        var small = TimestampUnwrapper()
        #expect(small.unwrap(100) == 100)
        #expect(small.unwrap(50) == 50)
    }

    struct ASCCase: CustomTestStringConvertible, Sendable {
        var name: String
        var bytes: [UInt8]
        var objectType: Int
        var frequency: Int
        var channels: Int
        var testDescription: String { name }
    }

    static let ascCases: [ASCCase] = [
        ASCCase(name: "AAC-LC 48 kHz stereo", bytes: [0x11, 0x90], objectType: 2, frequency: 48000, channels: 2),
        ASCCase(name: "AAC-LC 44.1 kHz mono", bytes: [0x12, 0x08], objectType: 2, frequency: 44100, channels: 1),
        ASCCase(name: "OBS's 5-byte config with SBR sync extension", bytes: [0x11, 0x90, 0x56, 0xE5, 0x00],
                objectType: 2, frequency: 48000, channels: 2),
        ASCCase(name: "explicit frequency", bytes: [0x17, 0x80, 0x00, 0x3E, 0x80, 0x00], objectType: 2,
                frequency: 0x7D, channels: 0),
    ]

    @Test("AudioSpecificConfig", arguments: ascCases)
    func audioSpecificConfig(_ testCase: ASCCase) throws {
        let config = try AudioSpecificConfig(bytes: testCase.bytes)
        #expect(config.audioObjectType == testCase.objectType)
        #expect(config.samplingFrequency == testCase.frequency)
        #expect(config.channelConfiguration == testCase.channels)
        #expect(config.bytes == testCase.bytes)
    }

    @Test("AudioSpecificConfig refuses truncated and reserved values")
    func badAudioSpecificConfig() {
        #expect(throws: CodecConfigurationError.truncated("AudioSpecificConfig")) { try AudioSpecificConfig(bytes: []) }
        #expect(throws: CodecConfigurationError.unsupported("AAC sampling frequency index 13")) {
            try AudioSpecificConfig(bytes: [0x16, 0x90])
        }
    }

    @Test("AVCDecoderConfigurationRecord reads its parameter sets")
    func avcC() throws {
        let record = try AVCDecoderConfigurationRecord(
            bytes: [1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 4, 0x67, 0x64, 0, 0x1F, 1, 0, 3, 0x68, 0xEE, 0x3C])
        #expect(record.profileIndication == 0x64)
        #expect(record.levelIndication == 0x1F)
        #expect(record.nalUnitLengthSize == 4)
        #expect(record.sequenceParameterSets == [[0x67, 0x64, 0, 0x1F]])
        #expect(record.pictureParameterSets == [[0x68, 0xEE, 0x3C]])
    }

    @Test("AVCDecoderConfigurationRecord refuses hostile lengths")
    func badAVCC() {
        #expect(throws: CodecConfigurationError.truncated("avcC SPS")) {
            try AVCDecoderConfigurationRecord(bytes: [1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0xFF, 0xFF, 0x67])
        }
        #expect(throws: CodecConfigurationError.unsupported("avcC configurationVersion 0")) {
            try AVCDecoderConfigurationRecord(bytes: [0, 0x64, 0, 0x1F, 0xFF, 0xE1, 0])
        }
        #expect(throws: CodecConfigurationError.truncated("avcC PPS count")) {
            try AVCDecoderConfigurationRecord(bytes: [1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 1, 0x67])
        }
    }
}
