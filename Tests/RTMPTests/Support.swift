import Foundation
import NIOCore
import Testing

@testable import RTMP

/// Hex helpers for byte tables: "02 00 03 61 62 63".
func bytes(_ hex: String) -> [UInt8] {
    let digits = hex.filter { !$0.isWhitespace }
    precondition(digits.count.isMultiple(of: 2), "odd hex string")
    var result: [UInt8] = []
    var index = digits.startIndex
    while index < digits.endIndex {
        let next = digits.index(index, offsetBy: 2)
        result.append(UInt8(digits[index..<next], radix: 16)!)
        index = next
    }
    return result
}

func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

/// The repository's fixtures directory.
let fixturesDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("fixtures")

func fixture(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: fixturesDirectory.appendingPathComponent(path)))
}

/// Feeds `input` to a decoder function in three ways — one buffer, byte by byte,
/// and in uneven pieces — and returns the three result lists (which must agree),
/// in the manner of NIO's ByteToMessageDecoderVerifier.
func decodeThreeWays<Output>(
    _ input: [UInt8], make: () -> (inout ByteBuffer) throws -> Output?
) throws -> [[Output]] {
    func run(pieces: [ArraySlice<UInt8>]) throws -> [Output] {
        let decode = make()
        var accumulated = ByteBuffer()
        var outputs: [Output] = []
        for piece in pieces {
            accumulated.writeBytes(piece)
            while let output = try decode(&accumulated) { outputs.append(output) }
        }
        return outputs
    }
    let whole = [input[...]]
    let single = input.indices.map { input[$0...$0] }
    var uneven: [ArraySlice<UInt8>] = []
    var start = 0
    var size = 1
    while start < input.count {
        let end = min(input.count, start + size)
        uneven.append(input[start..<end])
        start = end
        size = size % 97 + 13
    }
    return [try run(pieces: whole), try run(pieces: single), try run(pieces: uneven)]
}

/// A reference-typed decoder so `decodeThreeWays` can hold its state.
final class ChunkDecoderBox {
    var decoder: ChunkDecoder
    init(_ limits: ChunkDecoder.Limits = .init()) { decoder = ChunkDecoder(limits: limits) }
    func decode(_ buffer: inout ByteBuffer) throws -> RTMPMessage? { try decoder.decode(&buffer) }
}
