import MediaCore
import NIOCore
import Testing

@testable import RTMP

@Suite("FLV tags")
struct FLVTagTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var kind: MediaKind
        var bytes: [UInt8]
        var tag: FLVTag
        var testDescription: String { name }
    }

    static let avcC = try! AVCDecoderConfigurationRecord(bytes: bytes("01 64 00 1F FF E1 0004 6764001F 01 0004 68EE3CB0"))
    static let asc = try! AudioSpecificConfig(bytes: bytes("11 90 56 E5 00"))

    static let cases: [Case] = [
        Case(name: "AVC sequence header", kind: .video, bytes: bytes("17 00 000000") + avcC.bytes, tag: .avcSequenceHeader(avcC)),
        Case(name: "AVC keyframe, composition time 66", kind: .video, bytes: bytes("17 01 000042 00000001 65"),
             tag: .avcNALUnits(isKeyframe: true, compositionTime: 66, data: bytes("00000001 65"))),
        Case(name: "AVC inter frame, negative composition time", kind: .video, bytes: bytes("27 01 FFFFDF 00000001 41"),
             tag: .avcNALUnits(isKeyframe: false, compositionTime: -33, data: bytes("00000001 41"))),
        Case(name: "AVC end of sequence", kind: .video, bytes: bytes("17 02 000000"), tag: .avcEndOfSequence),
        Case(name: "video info frame", kind: .video, bytes: bytes("57 00"), tag: .videoInfo),
        Case(name: "AAC sequence header (5-byte ASC with SBR extension)", kind: .audio, bytes: bytes("AF 00 1190 56E500"),
             tag: .aacSequenceHeader(asc)),
        Case(name: "AAC raw frame", kind: .audio, bytes: bytes("AF 01 21 1B"), tag: .aacRaw(bytes("21 1B"))),
    ]

    @Test("decodes", arguments: cases)
    func decodes(_ testCase: Case) throws {
        let tag = testCase.kind == .video ? try FLVTag.video(buffer(testCase.bytes)) : try FLVTag.audio(buffer(testCase.bytes))
        #expect(tag == testCase.tag)
    }

    @Test("encodes", arguments: cases)
    func encodes(_ testCase: Case) {
        var output = ByteBuffer()
        testCase.tag.encode(into: &output)
        #expect(Array(output.readableBytesView) == testCase.bytes)
    }

    struct Refused: CustomTestStringConvertible, Sendable {
        var name: String
        var kind: MediaKind
        var bytes: [UInt8]
        var error: FLVTagError
        var testDescription: String { name }
    }

    static let refused: [Refused] = [
        Refused(name: "empty video", kind: .video, bytes: [], error: .empty(.video)),
        Refused(name: "VP6", kind: .video, bytes: bytes("14 00"), error: .unsupportedVideoCodec(id: 4)),
        Refused(name: "Enhanced RTMP HEVC (seam for a later issue)", kind: .video, bytes: bytes("90 68766331 00"),
                error: .enhancedVideo(fourCC: "hvc1")),
        Refused(name: "truncated AVC header", kind: .video, bytes: bytes("17 01 00"), error: .truncated("AVC video tag header")),
        Refused(name: "avcC too short", kind: .video, bytes: bytes("17 00 000000 01 64"),
                error: .invalidConfiguration(.truncated("avcC header"))),
        Refused(name: "MP3 audio", kind: .audio, bytes: bytes("2F FF"), error: .unsupportedAudioFormat(id: 2)),
        Refused(name: "AAC without packet type", kind: .audio, bytes: bytes("AF"), error: .truncated("AAC audio tag header")),
    ]

    @Test("refuses unsupported and malformed tags with a precise error", arguments: refused)
    func refuses(_ testCase: Refused) {
        #expect(throws: testCase.error) {
            testCase.kind == .video ? try FLVTag.video(buffer(testCase.bytes)) : try FLVTag.audio(buffer(testCase.bytes))
        }
    }

    @Test("the demuxer keeps the composition time as sent, negative too: pts = dts + cts", arguments: [
        ("000042", Int64(66)), ("000000", 0), ("FFFFDF", -33), ("FFFFFF", -1), ("800000", -0x80_0000), ("7FFFFF", 0x7F_FFFF),
    ])
    func compositionTime(cts: String, expected: Int64) throws {
        var demuxer = MediaDemuxer()
        _ = try demuxer.video(timestamp: 0, body: buffer(bytes("17 00 000000") + Self.avcC.bytes))
        let output = try demuxer.video(timestamp: 5000, body: buffer(bytes("27 01 \(cts) 00000001 41")))
        guard case .packet(let packet) = output else {
            Issue.record("expected a packet, got \(String(describing: output))")
            return
        }
        #expect(packet.dts == 5000)
        #expect(packet.pts == 5000 + expected)
        #expect(packet.compositionTime == expected)
    }

    @Test("the demuxer drops frames before their sequence header and unwraps 32-bit time")
    func demuxer() throws {
        var demuxer = MediaDemuxer()
        #expect(try demuxer.video(timestamp: 0, body: buffer(bytes("17 01 000000 00000001 65"))) == nil)
        guard case .description = try demuxer.video(timestamp: 0, body: buffer(bytes("17 00 000000") + Self.avcC.bytes)) else {
            Issue.record("expected a description")
            return
        }
        // The same sequence header again changes nothing.
        #expect(try demuxer.video(timestamp: 0, body: buffer(bytes("17 00 000000") + Self.avcC.bytes)) == nil)
        let beforeWrap = try demuxer.video(timestamp: 0xFFFF_FFE0, body: buffer(bytes("17 01 000000 00000001 65")))
        let afterWrap = try demuxer.video(timestamp: 0x10, body: buffer(bytes("27 01 000000 00000001 41")))
        guard case .packet(let first) = beforeWrap, case .packet(let second) = afterWrap else {
            Issue.record("expected packets")
            return
        }
        #expect(second.dts - first.dts == 0x30)
    }
}
