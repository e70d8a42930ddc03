public import MediaCore
public import NIOCore

/// RTMP chunk stream id (the 6/14/22-bit id in a chunk's basic header).
public typealias ChunkStreamID = UInt32
/// RTMP message stream id (0 for the NetConnection, ≥1 for NetStreams).
public typealias MessageStreamID = UInt32

/// Message type ids (RTMP 1.0 §5.4, §7.1).
public enum MessageTypeID: UInt8, Sendable {
    case setChunkSize = 1
    case abort = 2
    case acknowledgement = 3
    case userControl = 4
    case windowAcknowledgementSize = 5
    case setPeerBandwidth = 6
    case audio = 8
    case video = 9
    case dataAMF3 = 15
    case sharedObjectAMF3 = 16
    case commandAMF3 = 17
    case dataAMF0 = 18
    case sharedObjectAMF0 = 19
    case commandAMF0 = 20
    case aggregate = 22
}

/// A complete RTMP message as reassembled from (or split into) chunks.
public struct RTMPMessage: Sendable, Equatable {
    /// Raw type id; unknown types are carried through for the session to ignore.
    public var typeID: UInt8
    public var messageStreamID: MessageStreamID
    /// The message's 32-bit RTMP time (ms), absolute after delta resolution.
    public var timestamp: UInt32
    public var chunkStreamID: ChunkStreamID
    public var payload: ByteBuffer

    public init(type: MessageTypeID, messageStreamID: MessageStreamID = 0, timestamp: UInt32 = 0,
                chunkStreamID: ChunkStreamID, payload: ByteBuffer) {
        self.init(typeID: type.rawValue, messageStreamID: messageStreamID, timestamp: timestamp,
                  chunkStreamID: chunkStreamID, payload: payload)
    }

    public init(typeID: UInt8, messageStreamID: MessageStreamID, timestamp: UInt32,
                chunkStreamID: ChunkStreamID, payload: ByteBuffer) {
        self.typeID = typeID
        self.messageStreamID = messageStreamID
        self.timestamp = timestamp
        self.chunkStreamID = chunkStreamID
        self.payload = payload
    }

    public var type: MessageTypeID? { MessageTypeID(rawValue: typeID) }
}

/// An audio or video message whose payload is an FLV tag not yet written out. `ChunkEncoder`
/// writes the tag's head and body straight into the chunk stream; `message` builds the payload
/// for code that wants it as bytes.
public struct FLVTagMessage: Sendable, Equatable {
    public var kind: MediaKind
    public var messageStreamID: MessageStreamID
    public var timestamp: UInt32
    public var chunkStreamID: ChunkStreamID
    public var tag: FLVTag

    public init(kind: MediaKind, messageStreamID: MessageStreamID, timestamp: UInt32, chunkStreamID: ChunkStreamID, tag: FLVTag) {
        self.kind = kind
        self.messageStreamID = messageStreamID
        self.timestamp = timestamp
        self.chunkStreamID = chunkStreamID
        self.tag = tag
    }

    public var typeID: UInt8 { (kind == .video ? MessageTypeID.video : .audio).rawValue }

    public var message: RTMPMessage {
        var payload = ByteBuffer()
        tag.encode(into: &payload)
        return RTMPMessage(typeID: typeID, messageStreamID: messageStreamID, timestamp: timestamp,
                           chunkStreamID: chunkStreamID, payload: payload)
    }
}

/// User Control event types (RTMP 1.0 §7.1.7).
public enum UserControlEvent: Sendable, Equatable {
    case streamBegin(MessageStreamID)
    case streamEOF(MessageStreamID)
    case streamDry(MessageStreamID)
    case setBufferLength(MessageStreamID, milliseconds: UInt32)
    case streamIsRecorded(MessageStreamID)
    case pingRequest(UInt32)
    case pingResponse(UInt32)
    case other(type: UInt16)

    public init?(payload: ByteBuffer) {
        var payload = payload
        guard let type = payload.readInteger(as: UInt16.self), let value = payload.readInteger(as: UInt32.self)
        else { return nil }
        switch type {
        case 0: self = .streamBegin(value)
        case 1: self = .streamEOF(value)
        case 2: self = .streamDry(value)
        case 3:
            guard let length = payload.readInteger(as: UInt32.self) else { return nil }
            self = .setBufferLength(value, milliseconds: length)
        case 4: self = .streamIsRecorded(value)
        case 6: self = .pingRequest(value)
        case 7: self = .pingResponse(value)
        default: self = .other(type: type)
        }
    }

    public func encode(into buffer: inout ByteBuffer) {
        switch self {
        case .streamBegin(let id): buffer.writeMultipleIntegers(UInt16(0), id)
        case .streamEOF(let id): buffer.writeMultipleIntegers(UInt16(1), id)
        case .streamDry(let id): buffer.writeMultipleIntegers(UInt16(2), id)
        case .setBufferLength(let id, let ms): buffer.writeMultipleIntegers(UInt16(3), id, ms)
        case .streamIsRecorded(let id): buffer.writeMultipleIntegers(UInt16(4), id)
        case .pingRequest(let time): buffer.writeMultipleIntegers(UInt16(6), time)
        case .pingResponse(let time): buffer.writeMultipleIntegers(UInt16(7), time)
        case .other(let type): buffer.writeMultipleIntegers(type, UInt32(0))
        }
    }
}

/// Builders for the protocol control and command messages a server sends.
public enum ControlMessage {
    public static let controlChunkStream: ChunkStreamID = 2

    public static func setChunkSize(_ size: UInt32) -> RTMPMessage {
        uint32Message(.setChunkSize, size)
    }

    public static func windowAcknowledgementSize(_ size: UInt32) -> RTMPMessage {
        uint32Message(.windowAcknowledgementSize, size)
    }

    public static func acknowledgement(_ sequenceNumber: UInt32) -> RTMPMessage {
        uint32Message(.acknowledgement, sequenceNumber)
    }

    /// Limit type 2 is "dynamic" (RTMP 1.0 §5.4.5).
    public static func setPeerBandwidth(_ size: UInt32, limitType: UInt8 = 2) -> RTMPMessage {
        var payload = ByteBuffer()
        payload.writeMultipleIntegers(size, limitType)
        return RTMPMessage(type: .setPeerBandwidth, chunkStreamID: controlChunkStream, payload: payload)
    }

    public static func userControl(_ event: UserControlEvent) -> RTMPMessage {
        var payload = ByteBuffer()
        event.encode(into: &payload)
        return RTMPMessage(type: .userControl, chunkStreamID: controlChunkStream, payload: payload)
    }

    public static func command(_ values: [AMF0Value], chunkStreamID: ChunkStreamID = 3,
                               messageStreamID: MessageStreamID = 0) -> RTMPMessage {
        var payload = ByteBuffer()
        AMF0Encoder.encode(values, into: &payload)
        return RTMPMessage(type: .commandAMF0, messageStreamID: messageStreamID, chunkStreamID: chunkStreamID,
                           payload: payload)
    }

    private static func uint32Message(_ type: MessageTypeID, _ value: UInt32) -> RTMPMessage {
        var payload = ByteBuffer()
        payload.writeInteger(value)
        return RTMPMessage(type: type, chunkStreamID: controlChunkStream, payload: payload)
    }
}
