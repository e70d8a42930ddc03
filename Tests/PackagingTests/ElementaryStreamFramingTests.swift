import MediaCore
import Testing

@testable import Packaging

@Suite("Elementary stream framing")
struct ElementaryStreamFramingTests {
    static let sps: [UInt8] = [0x67, 0x42, 0xC0, 0x1E]
    static let pps: [UInt8] = [0x68, 0xCE, 0x3C, 0x80]
    static let delimiter: [UInt8] = [0, 0, 0, 1, 0x09, 0xF0]
    static let start: [UInt8] = [0, 0, 0, 1]
    static let sets = start + sps + start + pps

    static let accessUnits: [(name: String, lengthSize: Int, avcc: [UInt8], isKeyframe: Bool, annexB: [UInt8])] = [
        ("a P frame gets a delimiter", 4, [0, 0, 0, 2, 0x41, 0x9A], false, delimiter + start + [0x41, 0x9A]),
        ("an IDR frame without SPS gets the avcC's, after the delimiter", 4, [0, 0, 0, 2, 0x65, 0x88], true,
         delimiter + sets + start + [0x65, 0x88]),
        ("an IDR frame with its own SPS and PPS keeps them and gets no second copy", 4,
         [0, 0, 0, 4] + sps + [0, 0, 0, 4] + pps + [0, 0, 0, 2, 0x65, 0x88], true,
         delimiter + start + sps + start + pps + start + [0x65, 0x88]),
        ("a frame's own delimiter is kept first and not doubled", 4,
         [0, 0, 0, 2, 0x09, 0xF0, 0, 0, 0, 2, 0x65, 0x88], true, delimiter + sets + start + [0x65, 0x88]),
        ("parameter sets go before SEI", 4, [0, 0, 0, 2, 0x06, 0x05, 0, 0, 0, 2, 0x65, 0x88], true,
         delimiter + sets + start + [0x06, 0x05] + start + [0x65, 0x88]),
        ("a keyframe flagged without an IDR unit (open GOP) gets them too", 4, [0, 0, 0, 2, 0x41, 0x9A], true,
         delimiter + sets + start + [0x41, 0x9A]),
        ("an IDR unit in a frame not flagged key gets them", 4, [0, 0, 0, 2, 0x65, 0x88], false,
         delimiter + sets + start + [0x65, 0x88]),
        ("two-byte lengths; an empty unit is dropped", 2, [0, 0, 0, 2, 0x41, 0x9A], false, delimiter + start + [0x41, 0x9A]),
        ("one-byte lengths", 1, [2, 0x41, 0x9A, 1, 0x0C], false, delimiter + start + [0x41, 0x9A] + start + [0x0C]),
    ]

    @Test("AVCC access units to Annex B", arguments: accessUnits)
    func annexB(name: String, lengthSize: Int, avcc: [UInt8], isKeyframe: Bool, annexB: [UInt8]) throws {
        let framing = H264AnnexBFraming(lengthSize: lengthSize, parameterSets: [Self.sps, Self.pps])
        let plan = try #require(framing.plan(avcc, isKeyframe: isKeyframe), "\(name)")
        #expect(plan.size == annexB.count, "\(name)")
        var output = [UInt8](repeating: 0xEE, count: plan.size)
        output.withUnsafeMutableBytes { framing.write(avcc, plan, to: $0) }
        #expect(output == annexB, "\(name)")
    }

    @Test("malformed AVCC has no plan", arguments: [
        (name: "a length past the end", bytes: [0, 0, 0, 3, 0x65, 0x88] as [UInt8]),
        (name: "only empty units", bytes: [0, 0, 0, 0]),
        (name: "nothing", bytes: []),
        (name: "a length field cut short", bytes: [0, 0, 0, 2, 0x41, 0x9A, 0, 0]),
    ])
    func malformed(name: String, bytes: [UInt8]) {
        let framing = H264AnnexBFraming(lengthSize: 4, parameterSets: [Self.sps, Self.pps])
        #expect(framing.plan(bytes, isKeyframe: true) == nil, "\(name)")
    }

    @Test("without parameter sets in the avcC a keyframe gets only the delimiter")
    func noParameterSets() throws {
        let framing = H264AnnexBFraming(lengthSize: 4, parameterSets: [])
        let plan = try #require(framing.plan([0, 0, 0, 2, 0x65, 0x88], isKeyframe: true))
        #expect(plan == .init(size: 12, delimiter: true, parameterSets: false))
    }

    // ISO/IEC 13818-7 §6.2: syncword, ID 0 (MPEG-4), layer 0, no CRC, profile = object type − 1,
    // frequency index, channel configuration, frame length with the header, fullness 0x7FF, one block.
    static let headers: [(name: String, config: [UInt8], payload: Int, header: [UInt8])] = [
        ("AAC-LC 44.1 kHz stereo", [0x12, 0x10], 100, [0xFF, 0xF1, 0x50, 0x80, 0x0D, 0x7F, 0xFC]),
        ("AAC-LC 48 kHz mono", [0x11, 0x88], 300, [0xFF, 0xF1, 0x4C, 0x40, 0x26, 0x7F, 0xFC]),
        ("largest frame", [0x12, 0x10], ADTSFraming.maxPayload, [0xFF, 0xF1, 0x50, 0x83, 0xFF, 0xFF, 0xFC]),
    ]

    @Test("ADTS headers", arguments: headers)
    func adtsHeader(name: String, config: [UInt8], payload: Int, header: [UInt8]) throws {
        let framing = try #require(ADTSFraming(try AudioSpecificConfig(bytes: config)), "\(name)")
        var output = [UInt8](repeating: 0, count: ADTSFraming.headerSize)
        output.withUnsafeMutableBytes { framing.writeHeader(payloadLength: payload, to: $0) }
        #expect(output == header, "\(name)")
    }

    @Test("configurations ADTS cannot say are left to libav", arguments: [
        (name: "AAC-LD (object type 23)", config: [0xB9, 0x90] as [UInt8]),
        (name: "HE-AAC signalled explicitly (object type 5)", config: [0x2B, 0x92, 0x08, 0x00]),
        (name: "channels from a program config element", config: [0x12, 0x00]),
    ])
    func adtsUnsupported(name: String, config: [UInt8]) throws {
        #expect(ADTSFraming(try AudioSpecificConfig(bytes: config)) == nil, "\(name)")
    }
}
