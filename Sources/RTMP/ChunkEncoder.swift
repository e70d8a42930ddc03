public import NIOCore

/// Splits messages into chunks (RTMP 1.0 §5.3).
///
/// Every message starts with a type 0 header; continuations are type 3 and
/// repeat the extended timestamp when one is used, as Flash and ffmpeg expect.
public struct ChunkEncoder: Sendable {
    public private(set) var chunkSize = 128

    public init() {}

    /// Changes the size of chunks written from now on; send a Set Chunk Size message first.
    public mutating func setChunkSize(_ size: Int) {
        precondition(size >= 1 && size <= 0x7FFF_FFFF, "chunk size out of range")
        chunkSize = size
    }

    public func encode(_ message: RTMPMessage, into out: inout ByteBuffer) {
        let length = message.payload.readableBytes
        let extended = message.timestamp >= 0xFFFFFF
        out.reserveCapacity(out.writerIndex + length + 18 + (length / chunkSize) * 8)
        writeBasicHeader(format: 0, message.chunkStreamID, into: &out)
        let timeField = extended ? 0xFFFFFF : message.timestamp
        writeUInt24(timeField, into: &out)
        writeUInt24(UInt32(length), into: &out)
        out.writeInteger(message.typeID)
        out.writeInteger(message.messageStreamID, endianness: .little)
        if extended { out.writeInteger(message.timestamp) }

        var payload = message.payload
        var first = true
        while first || payload.readableBytes > 0 {
            if !first {
                writeBasicHeader(format: 3, message.chunkStreamID, into: &out)
                if extended { out.writeInteger(message.timestamp) }
            }
            first = false
            var slice = payload.readSlice(length: min(chunkSize, payload.readableBytes))!
            out.writeBuffer(&slice)
        }
    }

    private func writeBasicHeader(format: UInt8, _ id: ChunkStreamID, into out: inout ByteBuffer) {
        precondition(id >= 2 && id <= 65599, "chunk stream id out of range")
        switch id {
        case 2...63:
            out.writeInteger(format << 6 | UInt8(id))
        case 64...319:
            out.writeMultipleIntegers(format << 6, UInt8(id - 64))
        default:
            out.writeInteger(format << 6 | 1)
            out.writeInteger(UInt16(id - 64), endianness: .little)
        }
    }

    private func writeUInt24(_ value: UInt32, into out: inout ByteBuffer) {
        out.writeMultipleIntegers(UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8),
                                  UInt8(truncatingIfNeeded: value))
    }
}
