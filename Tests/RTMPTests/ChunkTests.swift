import MediaCore
import NIOCore
import Testing

@testable import RTMP

private func message(_ type: UInt8, csid: ChunkStreamID, msid: MessageStreamID = 0, ts: UInt32 = 0,
                     _ payload: [UInt8]) -> RTMPMessage {
    RTMPMessage(typeID: type, messageStreamID: msid, timestamp: ts, chunkStreamID: csid, payload: buffer(payload))
}

private let body200 = (0..<200).map { UInt8(truncatingIfNeeded: $0) }

@Suite("Chunk stream")
struct ChunkTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var bytes: [UInt8]
        var messages: [RTMPMessage]
        /// Whether our encoder (with header compression) writes exactly these bytes; interleaving
        /// and lenient forms only decode.
        var encodes: Bool
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "type 0, 1-byte basic header",
             bytes: bytes("03 000000 000004 01 00000000") + bytes("00001000"),
             messages: [message(1, csid: 3, bytes("00001000"))], encodes: true),
        Case(name: "type 0, 2-byte basic header (csid 69)",
             bytes: bytes("00 05 00000A 000002 09 01000000 1701"),
             messages: [message(9, csid: 69, msid: 1, ts: 10, bytes("1701"))], encodes: true),
        Case(name: "type 0, 3-byte basic header (csid 364)",
             bytes: bytes("01 2C01 000000 000001 08 01000000 AF"),
             messages: [message(8, csid: 364, msid: 1, bytes("AF"))], encodes: true),
        Case(name: "type 0, extended timestamp",
             bytes: bytes("04 FFFFFF 000001 09 01000000 01000000 17"),
             messages: [message(9, csid: 4, msid: 1, ts: 0x0100_0000, bytes("17"))], encodes: true),
        Case(name: "type 1 and type 2 add deltas, type 3 repeats the last delta",
             bytes: bytes("04 000064 000001 08 01000000 AA")
                 + bytes("44 000015 000002 08 BBBB")
                 + bytes("84 000016 CCCC")
                 + bytes("C4 DDDD"),
             messages: [
                message(8, csid: 4, msid: 1, ts: 100, bytes("AA")),
                message(8, csid: 4, msid: 1, ts: 121, bytes("BBBB")),
                message(8, csid: 4, msid: 1, ts: 143, bytes("CCCC")),
                message(8, csid: 4, msid: 1, ts: 165, bytes("DDDD")),
             ], encodes: true),
        Case(name: "type 1 with an extended timestamp delta",
             bytes: bytes("04 000010 000001 08 01000000 AA")
                 + bytes("44 FFFFFF 000002 09 01000000 BBBB"),
             messages: [
                message(8, csid: 4, msid: 1, ts: 0x10, bytes("AA")),
                message(9, csid: 4, msid: 1, ts: 0x0100_0010, bytes("BBBB")),
             ], encodes: true),
        Case(name: "type 2 with an extended timestamp delta, then type 3 starting a message repeats it",
             bytes: bytes("04 000000 000002 08 01000000 AAAA")
                 + bytes("84 FFFFFF 01000000 BBBB")
                 + bytes("C4 01000000 CCCC"),
             messages: [
                message(8, csid: 4, msid: 1, ts: 0, bytes("AAAA")),
                message(8, csid: 4, msid: 1, ts: 0x0100_0000, bytes("BBBB")),
                message(8, csid: 4, msid: 1, ts: 0x0200_0000, bytes("CCCC")),
             ], encodes: true),
        Case(name: "extended deltas on type 2 and type 3 headers, repeated on their continuations",
             bytes: bytes("04 000000 0000C8 09 01000000") + Array(body200[0..<128]) + bytes("C4") + Array(body200[128...])
                 + bytes("84 FFFFFF 01000000") + Array(body200[0..<128]) + bytes("C4 01000000") + Array(body200[128...])
                 + bytes("C4 01000000") + Array(body200[0..<128]) + bytes("C4 01000000") + Array(body200[128...]),
             messages: [
                message(9, csid: 4, msid: 1, ts: 0, body200),
                message(9, csid: 4, msid: 1, ts: 0x0100_0000, body200),
                message(9, csid: 4, msid: 1, ts: 0x0200_0000, body200),
             ], encodes: true),
        Case(name: "type 1 with an extended delta, then a small delta on type 2",
             bytes: bytes("04 FFFFFF 000001 08 01000000 7FFFFFFF AA")
                 + bytes("44 FFFFFF 000002 08 01000000 BBBB")
                 + bytes("84 000021 CCCC"),
             messages: [
                message(8, csid: 4, msid: 1, ts: 0x7FFF_FFFF, bytes("AA")),
                message(8, csid: 4, msid: 1, ts: 0x8100_0000 - 1, bytes("BBBB")),
                message(8, csid: 4, msid: 1, ts: 0x8100_0020, bytes("CCCC")),
             ], encodes: true),
        Case(name: "a new message stream id, a timestamp going back: type 0 again",
             bytes: bytes("04 000064 000001 08 01000000 AA")
                 + bytes("04 000064 000001 08 02000000 BB")
                 + bytes("04 000032 000001 08 02000000 CC"),
             messages: [
                message(8, csid: 4, msid: 1, ts: 100, bytes("AA")),
                message(8, csid: 4, msid: 2, ts: 100, bytes("BB")),
                message(8, csid: 4, msid: 2, ts: 50, bytes("CC")),
             ], encodes: true),
        Case(name: "message over two chunks (type 3 continuation)",
             bytes: bytes("04 000000 0000C8 09 01000000") + Array(body200[0..<128]) + bytes("C4") + Array(body200[128...]),
             messages: [message(9, csid: 4, msid: 1, body200)], encodes: true),
        Case(name: "extended timestamp repeated on the continuation",
             bytes: bytes("04 FFFFFF 0000C8 09 01000000 01020304") + Array(body200[0..<128])
                 + bytes("C4 01020304") + Array(body200[128...]),
             messages: [message(9, csid: 4, msid: 1, ts: 0x0102_0304, body200)], encodes: true),
        Case(name: "extended timestamp not repeated on the continuation (lenient)",
             bytes: bytes("04 FFFFFF 0000C8 09 01000000 01020304") + Array(body200[0..<128])
                 + bytes("C4") + Array(body200[128...]),
             messages: [message(9, csid: 4, msid: 1, ts: 0x0102_0304, body200)], encodes: false),
        Case(name: "interleaved chunk streams",
             bytes: bytes("04 000000 0000C8 09 01000000") + Array(body200[0..<128])
                 + bytes("06 000005 000001 08 01000000 AF")
                 + bytes("C4") + Array(body200[128...]),
             messages: [message(8, csid: 6, msid: 1, ts: 5, bytes("AF")), message(9, csid: 4, msid: 1, body200)],
             encodes: false),
        Case(name: "zero-length message",
             bytes: bytes("03 000000 000000 14 00000000"),
             messages: [message(20, csid: 3, [])], encodes: true),
    ]

    @Test("decodes, identically in one buffer, byte by byte and in pieces", arguments: cases)
    func decodes(_ testCase: Case) throws {
        let results = try decodeThreeWays(testCase.bytes) {
            let box = ChunkDecoderBox()
            return box.decode
        }
        for result in results {
            #expect(result == testCase.messages)
        }
    }

    @Test("encodes, with header compression", arguments: cases.filter(\.encodes))
    func encodes(_ testCase: Case) {
        var encoder = ChunkEncoder(headerCompression: .all)
        var output = ByteBuffer()
        for message in testCase.messages { encoder.encode(message, into: &output) }
        #expect(Array(output.readableBytesView) == testCase.bytes)
    }

    @Test("without header compression, or on chunk streams it does not cover, every message has a type 0 header",
          arguments: [ChunkEncoder.HeaderCompression.none, .only([6, 7])])
    func uncompressed(_ compression: ChunkEncoder.HeaderCompression) throws {
        let messages = (0..<3).map { message(8, csid: 4, msid: 1, ts: UInt32(100 + 21 * $0), bytes("AABB")) }
        var encoder = ChunkEncoder(headerCompression: compression)
        var output = ByteBuffer()
        for message in messages { encoder.encode(message, into: &output) }
        #expect(Array(output.readableBytesView) == bytes("04 000064 000002 08 01000000 AABB")
            + bytes("04 000079 000002 08 01000000 AABB") + bytes("04 00008E 000002 08 01000000 AABB"))
    }

    @Test("compressed media round-trips through the decoder, byte by byte too, in a fraction of the bytes")
    func compressedRoundTrip() throws {
        // 30 fps video on csid 7 and 48 kHz AAC on csid 6, interleaved as a player receives them.
        var messages: [RTMPMessage] = []
        for index in 0..<300 {
            let videoTime = UInt32(index * 1000 / 30)
            messages.append(message(9, csid: 7, msid: 1, ts: videoTime, (0..<(index % 7 == 0 ? 600 : 90)).map { UInt8(truncatingIfNeeded: $0 &+ index) }))
            let audioTime = UInt32(index * 1024 * 1000 / 48000)
            messages.append(message(8, csid: 6, msid: 1, ts: audioTime, [0xAF, 0x01] + [UInt8](repeating: UInt8(index & 0xFF), count: 24)))
        }
        var compressed = ChunkEncoder(headerCompression: .only([6, 7]))
        var plain = ChunkEncoder()
        var compressedBytes = ByteBuffer()
        var plainBytes = ByteBuffer()
        for message in messages {
            compressed.encode(message, into: &compressedBytes)
            plain.encode(message, into: &plainBytes)
        }
        let results = try decodeThreeWays(Array(compressedBytes.readableBytesView)) { ChunkDecoderBox().decode }
        for result in results {
            #expect(result == messages)
        }
        // After the first message on each chunk stream a 12-byte header is at most 8 (type 1), mostly 4 or 1.
        #expect(plainBytes.readableBytes - compressedBytes.readableBytes >= 4 * (messages.count - 2),
                "\(plainBytes.readableBytes) → \(compressedBytes.readableBytes)")
    }

    @Test("an FLV tag message is written as the same bytes as its payload built first", arguments: [1, 2, 3, 5, 6, 7, 128, 4096])
    func encodesTagsInPlace(chunkSize: Int) {
        // Every tag kind (2- and 5-byte heads, empty bodies), twice over so headers compress, and
        // one time past 0xFFFFFF so continuations repeat the extended field; chunk boundaries fall
        // inside the head, at its end and inside the body.
        let big = FLVTag.avcNALUnits(isKeyframe: true, compositionTime: -33, data: (0..<300).map { UInt8(truncatingIfNeeded: $0) })
        let tags = FLVTagTests.cases.map(\.tag) + [big] + FLVTagTests.cases.map(\.tag) + [big]
        for compression in [ChunkEncoder.HeaderCompression.none, .all] {
            var inPlace = ChunkEncoder(headerCompression: compression)
            var built = ChunkEncoder(headerCompression: compression)
            inPlace.setChunkSize(chunkSize)
            built.setChunkSize(chunkSize)
            var inPlaceBytes = ByteBuffer()
            var builtBytes = ByteBuffer()
            for (index, tag) in tags.enumerated() {
                let kind: MediaKind = switch tag {
                case .aacRaw, .aacSequenceHeader: .audio
                default: .video
                }
                let time = index == tags.count - 1 ? UInt32(0x0100_0000) : UInt32(index * 40)
                let message = FLVTagMessage(kind: kind, messageStreamID: 1, timestamp: time,
                                            chunkStreamID: kind == .video ? 7 : 6, tag: tag)
                inPlace.encode(message, into: &inPlaceBytes)
                built.encode(message.message, into: &builtBytes)
            }
            #expect(inPlaceBytes == builtBytes, "chunk size \(chunkSize), \(compression)")
        }
    }

    @Test("Set Chunk Size applies to the chunks that follow it")
    func setChunkSize() throws {
        var input = ByteBuffer()
        var encoder = ChunkEncoder()
        encoder.encode(ControlMessage.setChunkSize(4096), into: &input)
        encoder.setChunkSize(4096)
        let big = message(9, csid: 4, msid: 1, (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) })
        encoder.encode(big, into: &input)
        // One continuation header at 4096, not 39 at 128.
        #expect(input.readableBytes == 16 + 12 + 5000 + 1)
        let results = try decodeThreeWays(Array(input.readableBytesView)) { ChunkDecoderBox().decode }
        for result in results {
            #expect(result.count == 2)
            #expect(result.last == big)
        }
    }

    @Test("Abort discards the partial message of a chunk stream")
    func abort() throws {
        var input = bytes("04 000000 0000C8 09 01000000") + Array(body200[0..<128])
        input += bytes("02 000000 000004 02 00000000 00000004")
        input += bytes("04 000000 000001 09 01000000 17")
        let results = try decodeThreeWays(input) { ChunkDecoderBox().decode }
        for result in results {
            #expect(result.map(\.typeID) == [2, 9])
            #expect(result.last?.payload == buffer(bytes("17")))
        }
    }

    @Test("a timestamp of 0xFFFFFF or more is written extended, on every chunk")
    func encodesExtendedOnContinuations() throws {
        var output = ByteBuffer()
        var encoder = ChunkEncoder()
        encoder.encode(message(9, csid: 4, msid: 1, ts: 0xFFFFFF, body200), into: &output)
        #expect(output.getBytes(at: 12, length: 4) == bytes("00FFFFFF"))
        #expect(output.getBytes(at: 16 + 128, length: 5) == bytes("C4 00FFFFFF"))
        var decoder = ChunkDecoder()
        #expect(try decoder.decode(&output)?.timestamp == 0xFFFFFF)
    }

    struct Hostile: CustomTestStringConvertible, Sendable {
        var name: String
        var bytes: [UInt8]
        var error: ChunkDecoder.DecodingError
        var testDescription: String { name }
    }

    static let hostile: [Hostile] = [
        Hostile(name: "chunk size 0", bytes: bytes("02 000000 000004 01 00000000 00000000"), error: .invalidChunkSize(0)),
        Hostile(name: "chunk size with the top bit set", bytes: bytes("02 000000 000004 01 00000000 80000000"),
                error: .invalidChunkSize(0x8000_0000)),
        Hostile(name: "chunk size 2^31-1 (over our limit)", bytes: bytes("02 000000 000004 01 00000000 7FFFFFFF"),
                error: .invalidChunkSize(0x7FFF_FFFF)),
        Hostile(name: "16 MiB message is refused at its header", bytes: bytes("03 000000 FFFFFE 14 00000000"),
                error: .messageTooLarge(length: 0xFFFFFE, limit: 8 << 20)),
        Hostile(name: "type 2 header on a new chunk stream", bytes: bytes("84 000000 AA"),
                error: .headerWithoutContext(4, format: 2)),
        Hostile(name: "type 3 header on a new chunk stream", bytes: bytes("C4 AA"),
                error: .headerWithoutContext(4, format: 3)),
        Hostile(name: "type 0 header inside an unfinished message",
                bytes: bytes("04 000000 0000C8 09 01000000") + Array(body200[0..<128]) + bytes("04 000000 000001 09 01000000 AA"),
                error: .headerInsideMessage(4, format: 0)),
    ]

    @Test("a type 1 header may open a chunk stream (as SRS allows): message stream 0")
    func typeOneOpensStream() throws {
        var decoder = ChunkDecoder()
        var input = buffer(bytes("44 000010 000001 09 AA"))
        let message = try #require(try decoder.decode(&input))
        #expect(message.typeID == 9)
        #expect(message.messageStreamID == 0)
        #expect(message.timestamp == 0x10)
        #expect(Array(message.payload.readableBytesView) == [0xAA])
    }

    @Test("refuses hostile chunk streams with a precise error", arguments: hostile)
    func rejects(_ testCase: Hostile) {
        #expect(throws: testCase.error) {
            var decoder = ChunkDecoder()
            var input = buffer(testCase.bytes)
            while try decoder.decode(&input) != nil {}
        }
    }

    @Test("a chunk stream id flood stops at the per-connection limit")
    func chunkStreamFlood() {
        var input = ByteBuffer()
        for id in 64..<(64 + 200) {
            input.writeBytes([0x01, UInt8(id - 64 & 0xFF), UInt8((id - 64) >> 8)])
            input.writeBytes(bytes("000000 0003E8 09 01000000"))
            input.writeBytes([UInt8](repeating: 0, count: 128))
        }
        #expect(throws: ChunkDecoder.DecodingError.tooManyChunkStreams(limit: 64)) {
            var decoder = ChunkDecoder()
            while try decoder.decode(&input) != nil {}
        }
    }

    @Test("partial messages across chunk streams are bounded")
    func bufferedBytesBound() {
        var input = ByteBuffer()
        input.writeBytes(bytes("02 000000 000004 01 00000000 00010000"))  // chunk size 64 KiB
        for id in 4..<40 {
            input.writeInteger(UInt8(id))
            input.writeBytes(bytes("000000 7FFFFF 09 01000000"))
            input.writeBytes([UInt8](repeating: 0, count: 0x10000))
        }
        #expect(throws: ChunkDecoder.DecodingError.bufferedBytesExceeded(limit: 1 << 20)) {
            var decoder = ChunkDecoder(limits: .init(maxBufferedBytes: 1 << 20))
            while try decoder.decode(&input) != nil {}
        }
    }

    @Test("random bytes parse the same however they are split, and end in an error or a wait")
    func garbage() {
        var generator = SplitMix64(seed: 42)
        var errors = 0
        for _ in 0..<100 {
            let input = (0..<2048).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let outcomes = [input.count, 1, 7].map { piece -> String in
                var decoder = ChunkDecoder()
                var accumulated = ByteBuffer()
                var count = 0
                do {
                    for start in stride(from: 0, to: input.count, by: piece) {
                        accumulated.writeBytes(input[start..<min(start + piece, input.count)])
                        while try decoder.decode(&accumulated) != nil { count += 1 }
                    }
                    return "\(count) messages"
                } catch {
                    return "\(count) messages, then \(error)"
                }
            }
            #expect(Set(outcomes).count == 1, "\(outcomes)")
            if outcomes[0].contains("then") { errors += 1 }
        }
        // Random bytes are almost never a valid chunk stream.
        #expect(errors > 50)
    }
}

/// Deterministic generator for fuzz-style tests.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
