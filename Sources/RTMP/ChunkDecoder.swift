public import NIOCore

/// Reassembles RTMP messages from the chunk stream (RTMP 1.0 §5.3).
///
/// The decoder consumes whole chunks only: when the bytes for a chunk's headers
/// and payload slice have not all arrived it consumes nothing and returns nil,
/// so feeding byte by byte or in one buffer gives the same messages. Partial
/// messages live per chunk stream; Set Chunk Size and Abort take effect inside
/// the decoder (they change how later chunks parse) and are also returned.
public struct ChunkDecoder: Sendable {
    public struct Limits: Sendable {
        /// Largest message accepted (a message header announcing more is refused before buffering).
        public var maxMessageLength: Int
        /// Largest chunk size a peer may set.
        public var maxChunkSize: Int
        /// Distinct chunk stream ids per connection.
        public var maxChunkStreams: Int
        /// Bytes of partial messages held across all chunk streams.
        public var maxBufferedBytes: Int

        public init(maxMessageLength: Int = 8 << 20, maxChunkSize: Int = 1 << 24, maxChunkStreams: Int = 64,
                    maxBufferedBytes: Int = 16 << 20) {
            self.maxMessageLength = maxMessageLength
            self.maxChunkSize = maxChunkSize
            self.maxChunkStreams = maxChunkStreams
            self.maxBufferedBytes = maxBufferedBytes
        }
    }

    public enum DecodingError: Error, Equatable, Sendable, CustomStringConvertible {
        case messageTooLarge(length: Int, limit: Int)
        case invalidChunkSize(UInt32)
        case tooManyChunkStreams(limit: Int)
        case bufferedBytesExceeded(limit: Int)
        case headerWithoutContext(ChunkStreamID, format: UInt8)
        case headerInsideMessage(ChunkStreamID, format: UInt8)

        public var description: String {
            switch self {
            case .messageTooLarge(let length, let limit): "message length \(length) exceeds limit \(limit)"
            case .invalidChunkSize(let size): "invalid chunk size \(size)"
            case .tooManyChunkStreams(let limit): "more than \(limit) chunk streams"
            case .bufferedBytesExceeded(let limit): "partial messages exceed \(limit) buffered bytes"
            case .headerWithoutContext(let id, let format):
                "chunk type \(format) on chunk stream \(id) without a previous type 0 header"
            case .headerInsideMessage(let id, let format):
                "chunk type \(format) on chunk stream \(id) interrupts an unfinished message"
            }
        }
    }

    /// What a chunk stream remembers between chunks (the basis for header compression).
    struct ChunkStream: Sendable {
        var timestamp: UInt32 = 0
        var timestampDelta: UInt32 = 0
        var messageLength = 0
        var typeID: UInt8 = 0
        var messageStreamID: MessageStreamID = 0
        /// The last header used the extended timestamp field; its raw value.
        var extendedTimestamp: UInt32?
    }

    public let limits: Limits
    public private(set) var chunkSize = 128
    private var streams: [ChunkStreamID: ChunkStream] = [:]
    /// Messages being reassembled, apart from the header state so appending mutates them
    /// in place (a copy out of the dictionary would duplicate the bytes on every chunk).
    private var partials: [ChunkStreamID: ByteBuffer] = [:]
    private var bufferedBytes = 0

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Decodes the next complete message, or returns nil when more bytes are needed.
    public mutating func decode(_ buffer: inout ByteBuffer) throws(DecodingError) -> RTMPMessage? {
        while true {
            guard let (message, consumed) = try decodeChunk(buffer) else { return nil }
            buffer.moveReaderIndex(forwardBy: consumed)
            if let message {
                try apply(message)
                return message
            }
        }
    }

    /// Parses one chunk at the buffer's reader index without moving it; returns
    /// the message it completed (if any) and how many bytes it spans.
    private mutating func decodeChunk(_ buffer: ByteBuffer) throws(DecodingError) -> (RTMPMessage?, Int)? {
        var cursor = buffer.readerIndex
        func byte() -> UInt8? {
            defer { cursor += 1 }
            return buffer.getInteger(at: cursor, as: UInt8.self)
        }
        func uint24() -> UInt32? {
            guard let a = byte(), let b = byte(), let c = byte() else { return nil }
            return UInt32(a) << 16 | UInt32(b) << 8 | UInt32(c)
        }
        func uint32BigEndian() -> UInt32? {
            defer { cursor += 4 }
            return buffer.getInteger(at: cursor, as: UInt32.self)
        }

        guard let first = byte() else { return nil }
        let format = first >> 6
        var chunkStreamID = ChunkStreamID(first & 0x3F)
        if chunkStreamID == 0 {
            guard let next = byte() else { return nil }
            chunkStreamID = 64 + ChunkStreamID(next)
        } else if chunkStreamID == 1 {
            guard let low = byte(), let high = byte() else { return nil }
            chunkStreamID = 64 + ChunkStreamID(low) + ChunkStreamID(high) << 8
        }

        var stream: ChunkStream
        if let existing = streams[chunkStreamID] {
            stream = existing
        } else {
            // A type 1 header names length and type; some encoders open a chunk stream with one, and
            // SRS accepts it (message stream 0). Types 2 and 3 leave too much unknown.
            guard format <= 1 else { throw .headerWithoutContext(chunkStreamID, format: format) }
            guard streams.count < limits.maxChunkStreams else { throw .tooManyChunkStreams(limit: limits.maxChunkStreams) }
            stream = ChunkStream()
        }
        let received = partials[chunkStreamID]?.readableBytes
        if format != 3, received != nil {
            throw .headerInsideMessage(chunkStreamID, format: format)
        }

        var startsMessage = received == nil
        switch format {
        case 0, 1, 2:
            guard let timeField = uint24() else { return nil }
            if format <= 1 {
                guard let length = uint24(), let type = byte() else { return nil }
                stream.messageLength = Int(length)
                stream.typeID = type
                if format == 0 {
                    guard let id = buffer.getInteger(at: cursor, endianness: .little, as: UInt32.self) else { return nil }
                    cursor += 4
                    stream.messageStreamID = id
                }
            }
            var time = timeField
            stream.extendedTimestamp = nil
            if timeField == 0xFFFFFF {
                guard let extended = uint32BigEndian() else { return nil }
                time = extended
                stream.extendedTimestamp = extended
            }
            if format == 0 {
                stream.timestamp = time
                stream.timestampDelta = 0
            } else {
                stream.timestampDelta = time
                stream.timestamp &+= time
            }
            startsMessage = true
        default:
            if let extended = stream.extendedTimestamp {
                if startsMessage {
                    // A type 3 chunk that starts a message repeats the extended field.
                    guard let repeated = uint32BigEndian() else { return nil }
                    stream.extendedTimestamp = repeated
                } else if buffer.getInteger(at: cursor, as: UInt32.self) == extended {
                    // Continuations repeat it too, but not every encoder does: take it only when it matches.
                    cursor += 4
                } else if buffer.readableBytes - (cursor - buffer.readerIndex) < 4 {
                    return nil
                }
            }
            if startsMessage {
                stream.timestamp &+= stream.timestampDelta
            }
        }

        if startsMessage {
            guard stream.messageLength <= limits.maxMessageLength else {
                throw .messageTooLarge(length: stream.messageLength, limit: limits.maxMessageLength)
            }
        }
        let sliceLength = min(chunkSize, stream.messageLength - (received ?? 0))
        guard var slice = buffer.getSlice(at: cursor, length: sliceLength) else { return nil }
        cursor += sliceLength

        let completed: RTMPMessage?
        if (received ?? 0) + sliceLength == stream.messageLength {
            let payload: ByteBuffer
            if var partial = partials.removeValue(forKey: chunkStreamID) {
                bufferedBytes -= partial.readableBytes
                partial.writeBuffer(&slice)
                payload = partial
            } else {
                payload = slice
            }
            completed = RTMPMessage(typeID: stream.typeID, messageStreamID: stream.messageStreamID,
                                    timestamp: stream.timestamp, chunkStreamID: chunkStreamID, payload: payload)
        } else {
            guard bufferedBytes + sliceLength <= limits.maxBufferedBytes else {
                throw .bufferedBytesExceeded(limit: limits.maxBufferedBytes)
            }
            if received == nil {
                var partial = ByteBuffer()
                // Not the announced length: a peer could announce 8 MiB on every chunk stream and send nothing.
                partial.reserveCapacity(min(stream.messageLength, 64 << 10))
                partials[chunkStreamID] = partial
            }
            partials[chunkStreamID]!.writeBuffer(&slice)
            bufferedBytes += sliceLength
            completed = nil
        }
        streams[chunkStreamID] = stream
        return (completed, cursor - buffer.readerIndex)
    }

    /// Protocol control that changes how the following chunks decode.
    private mutating func apply(_ message: RTMPMessage) throws(DecodingError) {
        switch message.type {
        case .setChunkSize:
            guard let size = message.payload.getInteger(at: message.payload.readerIndex, as: UInt32.self) else {
                throw .invalidChunkSize(0)
            }
            guard size & 0x8000_0000 == 0, size >= 1, size <= limits.maxChunkSize else { throw .invalidChunkSize(size) }
            chunkSize = Int(size)
        case .abort:
            guard let id = message.payload.getInteger(at: message.payload.readerIndex, as: UInt32.self),
                  let partial = partials.removeValue(forKey: id)
            else { return }
            bufferedBytes -= partial.readableBytes
        default:
            break
        }
    }
}
