public import NIOCore

/// Splits messages into chunks (RTMP 1.0 §5.3).
///
/// Without header compression every message starts with a type 0 header. With it, on the
/// chunk streams it covers, a message repeats as little as the peer's decoder needs, as OBS
/// and nginx-rtmp do: type 1 (timestamp delta, length, type) when only those change on the
/// same message stream, type 2 (delta) when only the delta changes, type 3 (nothing) when the
/// delta, length and type all repeat. A type 3 header starting a message is only written after
/// a type 1 or 2 header, so "the previous delta" is never the ambiguous absolute time of a
/// type 0 header (ffmpeg and librtmp read it differently). Continuations are type 3 and repeat
/// the extended timestamp field when the message's header used one, as Flash and ffmpeg expect.
///
/// Compression is only correct when this encoder is the one writer of a chunk stream on its
/// connection: the peer decodes each header against the previous one on that chunk stream.
public struct ChunkEncoder: Sendable {
    /// Which chunk streams get compressed headers.
    public enum HeaderCompression: Sendable {
        case none
        case all
        case only(Set<ChunkStreamID>)
    }

    /// What the peer's decoder remembers of a chunk stream after our last header on it.
    struct SentHeader: Sendable {
        var messageStreamID: MessageStreamID
        var typeID: UInt8
        var length: Int
        var timestamp: UInt32
        /// The delta a type 3 header would repeat; nil after a type 0 header.
        var delta: UInt32?
    }

    public private(set) var chunkSize = 128
    public let headerCompression: HeaderCompression
    private var sent: [ChunkStreamID: SentHeader] = [:]

    public init(headerCompression: HeaderCompression = .none) {
        self.headerCompression = headerCompression
    }

    /// Changes the size of chunks written from now on; send a Set Chunk Size message first.
    public mutating func setChunkSize(_ size: Int) {
        precondition(size >= 1 && size <= 0x7FFF_FFFF, "chunk size out of range")
        chunkSize = size
    }

    private func compresses(_ id: ChunkStreamID) -> Bool {
        switch headerCompression {
        case .none: false
        case .all: true
        case .only(let ids): ids.contains(id)
        }
    }

    /// The header format for a message, and the value of its timestamp field (absolute or delta).
    private func header(for message: MessageHeader) -> (format: UInt8, timeField: UInt32) {
        guard compresses(message.chunkStreamID), let previous = sent[message.chunkStreamID],
              previous.messageStreamID == message.messageStreamID, message.timestamp >= previous.timestamp
        else { return (0, message.timestamp) }
        let delta = message.timestamp - previous.timestamp
        guard previous.length == message.length, previous.typeID == message.typeID else { return (1, delta) }
        return previous.delta == delta ? (3, delta) : (2, delta)
    }

    public mutating func encode(_ message: RTMPMessage, into out: inout ByteBuffer) {
        encode(MessageHeader(message, length: message.payload.readableBytes), message.payload, into: &out)
    }

    /// A media message written straight from its FLV tag's parts: no payload buffer is built
    /// first, so a player's media costs one copy, not two.
    public mutating func encode(_ message: FLVTagMessage, into out: inout ByteBuffer) {
        let payload = TagPayload(head: message.tag.head, body: message.tag.body)
        encode(MessageHeader(typeID: message.typeID, messageStreamID: message.messageStreamID, timestamp: message.timestamp,
                             chunkStreamID: message.chunkStreamID, length: payload.count),
               payload, into: &out)
    }

    private mutating func encode(_ message: MessageHeader, _ payload: some ChunkPayload, into out: inout ByteBuffer) {
        let length = message.length
        let (format, timeField) = header(for: message)
        let extended = timeField >= 0xFFFFFF
        out.reserveCapacity(out.writerIndex + length + 18 + (length / chunkSize) * 8)
        writeBasicHeader(format: format, message.chunkStreamID, into: &out)
        if format <= 2 { writeUInt24(extended ? 0xFFFFFF : timeField, into: &out) }
        if format <= 1 {
            writeUInt24(UInt32(length), into: &out)
            out.writeInteger(message.typeID)
        }
        if format == 0 { out.writeInteger(message.messageStreamID, endianness: .little) }
        if extended { out.writeInteger(timeField) }
        if compresses(message.chunkStreamID) {
            sent[message.chunkStreamID] = SentHeader(messageStreamID: message.messageStreamID, typeID: message.typeID,
                                                     length: length, timestamp: message.timestamp,
                                                     delta: format == 0 ? nil : timeField)
        }

        var offset = 0
        repeat {
            if offset > 0 {
                writeBasicHeader(format: 3, message.chunkStreamID, into: &out)
                if extended { out.writeInteger(timeField) }
            }
            let end = min(offset + chunkSize, length)
            payload.write(offset..<end, into: &out)
            offset = end
        } while offset < length
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

/// The header fields of a message being encoded.
private struct MessageHeader {
    var typeID: UInt8
    var messageStreamID: MessageStreamID
    var timestamp: UInt32
    var chunkStreamID: ChunkStreamID
    var length: Int
}

extension MessageHeader {
    init(_ message: RTMPMessage, length: Int) {
        self.init(typeID: message.typeID, messageStreamID: message.messageStreamID, timestamp: message.timestamp,
                  chunkStreamID: message.chunkStreamID, length: length)
    }
}

/// A payload the encoder copies chunk by chunk, from wherever its bytes are.
private protocol ChunkPayload {
    /// Appends the payload's bytes in `range` (offsets from its start).
    func write(_ range: Range<Int>, into out: inout ByteBuffer)
}

extension ByteBuffer: ChunkPayload {
    fileprivate func write(_ range: Range<Int>, into out: inout ByteBuffer) {
        out.writeImmutableBuffer(getSlice(at: readerIndex + range.lowerBound, length: range.count)!)
    }
}

/// An FLV tag's head then its body, without joining them.
private struct TagPayload: ChunkPayload {
    var head: FLVTag.Head
    var body: [UInt8]
    var count: Int { head.count + body.count }

    func write(_ range: Range<Int>, into out: inout ByteBuffer) {
        let headEnd = min(range.upperBound, head.count)
        if range.lowerBound < headEnd { head.write(range.lowerBound..<headEnd, into: &out) }
        let bodyRange = max(range.lowerBound, head.count) - head.count ..< max(range.upperBound, head.count) - head.count
        if !bodyRange.isEmpty { out.writeBytes(body[bodyRange]) }
    }
}
