import NIOCore
import Testing

@testable import RTMP

@Suite("AMF0")
struct AMF0Tests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var bytes: [UInt8]
        var value: AMF0Value
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "number 1.0", bytes: bytes("00 3F F0 00 00 00 00 00 00"), value: .number(1)),
        Case(name: "number -0.5", bytes: bytes("00 BF E0 00 00 00 00 00 00"), value: .number(-0.5)),
        Case(name: "boolean true", bytes: bytes("01 01"), value: .boolean(true)),
        Case(name: "boolean false", bytes: bytes("01 00"), value: .boolean(false)),
        Case(name: "string", bytes: bytes("02 00 07 63 6F 6E 6E 65 63 74"), value: .string("connect")),
        Case(name: "empty string", bytes: bytes("02 00 00"), value: .string("")),
        Case(name: "utf-8 string", bytes: bytes("02 00 02 C3 A9"), value: .string("é")),
        Case(name: "null", bytes: bytes("05"), value: .null),
        Case(name: "undefined", bytes: bytes("06"), value: .undefined),
        Case(name: "object keeps key order",
             bytes: bytes("03 00 03 61 70 70 02 00 04 6C 69 76 65 00 01 61 01 01 00 00 09"),
             value: .object([.init("app", .string("live")), .init("a", .boolean(true))])),
        Case(name: "empty object", bytes: bytes("03 00 00 09"), value: .object([])),
        Case(name: "ECMA array",
             bytes: bytes("08 00 00 00 01 00 05 77 69 64 74 68 00 40 84 00 00 00 00 00 00 00 00 09"),
             value: .ecmaArray([.init("width", .number(640))])),
        Case(name: "strict array", bytes: bytes("0A 00 00 00 02 05 01 00"),
             value: .strictArray([.null, .boolean(false)])),
        Case(name: "date", bytes: bytes("0B 42 77 00 00 00 00 00 00 FF C4"),
             value: .date(millisecondsSince1970: Double(bitPattern: 0x4277_0000_0000_0000), timeZone: -60)),
        Case(name: "long string", bytes: bytes("0C 00 00 00 03 61 62 63"), value: .longString("abc")),
        Case(name: "nested object",
             bytes: bytes("03 00 01 6F 03 00 01 6E 00 40 00 00 00 00 00 00 00 00 00 09 00 00 09"),
             value: .object([.init("o", .object([.init("n", .number(2))]))])),
    ]

    @Test("decodes", arguments: cases)
    func decodes(_ testCase: Case) throws {
        var input = buffer(testCase.bytes)
        let value = try AMF0Decoder().decode(&input)
        #expect(value == testCase.value)
        #expect(input.readableBytes == 0)
    }

    @Test("encodes", arguments: cases)
    func encodes(_ testCase: Case) {
        var output = ByteBuffer()
        AMF0Encoder.encode(testCase.value, into: &output)
        #expect(Array(output.readableBytesView) == testCase.bytes)
    }

    @Test("decodes a command's values in sequence")
    func decodesAll() throws {
        var payload = ByteBuffer()
        let values: [AMF0Value] = [.string("createStream"), .number(4), .null]
        AMF0Encoder.encode(values, into: &payload)
        #expect(try AMF0Decoder().decodeAll(payload) == values)
    }

    @Test("a string longer than 65535 bytes is written as a long string")
    func longStringPromotion() throws {
        let long = String(repeating: "x", count: 70_000)
        var output = ByteBuffer()
        AMF0Encoder.encode(.string(long), into: &output)
        #expect(output.getInteger(at: 0, as: UInt8.self) == 0x0C)
        #expect(try AMF0Decoder().decode(&output) == .longString(long))
    }

    struct Hostile: CustomTestStringConvertible, Sendable {
        var name: String
        var bytes: [UInt8]
        var error: AMF0Error
        var testDescription: String { name }
    }

    static let hostile: [Hostile] = [
        Hostile(name: "empty", bytes: [], error: .truncated),
        Hostile(name: "truncated number", bytes: bytes("00 3F F0"), error: .truncated),
        Hostile(name: "string longer than body", bytes: bytes("02 00 10 61"), error: .truncated),
        Hostile(name: "object without end", bytes: bytes("03 00 01 61 05"), error: .missingObjectEnd),
        Hostile(name: "object end marker wrong", bytes: bytes("03 00 00 05"), error: .missingObjectEnd),
        Hostile(name: "reference marker", bytes: bytes("07 00 01"), error: .unsupportedMarker(7)),
        Hostile(name: "AMF3 switch marker", bytes: bytes("11"), error: .unsupportedMarker(0x11)),
        Hostile(name: "strict array count bomb", bytes: bytes("0A FF FF FF FF"),
                error: .tooManyElements(count: 0xFFFF_FFFF, limit: 4096)),
        Hostile(name: "long string length bomb", bytes: bytes("0C 7F FF FF FF"),
                error: .stringTooLong(length: 0x7FFF_FFFF, limit: 1 << 20)),
        Hostile(name: "invalid UTF-8", bytes: bytes("02 00 02 C3 28"), error: .invalidUTF8),
    ]

    @Test("rejects hostile bytes with a precise error", arguments: hostile)
    func rejects(_ testCase: Hostile) {
        var input = buffer(testCase.bytes)
        #expect(throws: testCase.error) { try AMF0Decoder().decode(&input) }
    }

    @Test("nesting deeper than the limit is refused, not recursed into")
    func depthBomb() {
        var input = ByteBuffer()
        for _ in 0..<10_000 { input.writeBytes(bytes("03 00 01 61")) }
        #expect(throws: AMF0Error.depthExceeded(limit: 32)) { try AMF0Decoder().decode(&input) }
        var arrays = ByteBuffer()
        for _ in 0..<10_000 { arrays.writeBytes(bytes("0A 00 00 00 01")) }
        #expect(throws: AMF0Error.depthExceeded(limit: 32)) { try AMF0Decoder().decode(&arrays) }
    }

    @Test("nesting at the limit is accepted")
    func depthAtLimit() throws {
        var value = AMF0Value.null
        for _ in 0..<32 { value = .object([.init("a", value)]) }
        var encoded = ByteBuffer()
        AMF0Encoder.encode(value, into: &encoded)
        #expect(try AMF0Decoder().decode(&encoded) == value)
    }
}
