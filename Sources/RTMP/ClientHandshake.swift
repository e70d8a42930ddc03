public import NIOCore

/// Client side of the RTMP handshake (C0 C1 → S0 S1 S2 → C2).
///
/// We send the plain form of the RTMP 1.0 spec, as OBS does: C1's version
/// field is zero, so servers answer without a digest and nothing in S1/S2 needs
/// checking. C2 echoes S1 and goes out as soon as S1 has arrived; the
/// handshake completes when S2 has been read. S2 is not compared with C1:
/// servers in the field (digest-answering ones especially) do not echo it.
public struct ClientHandshake: Sendable {
    public static let packetSize = ServerHandshake.packetSize

    public enum State: Sendable, Equatable {
        /// `start()` has not been called.
        case initial
        case waitingForS0S1
        case waitingForS2
        case done
    }

    public enum HandshakeError: Error, Equatable, Sendable, CustomStringConvertible {
        case unsupportedVersion(UInt8)
        case notStarted
        case alreadyComplete

        public var description: String {
            switch self {
            case .unsupportedVersion(let version): "server answered RTMP version \(version) in S0 (expected 3)"
            case .notStarted: "handshake bytes arrived before C0+C1 was sent"
            case .alreadyComplete: "handshake already complete"
            }
        }
    }

    /// What the handshake asks its owner to do.
    public enum Action: Sendable, Equatable {
        /// Send C2.
        case send(ByteBuffer)
        /// The handshake finished; bytes after S2 belong to the chunk stream.
        case complete
    }

    public private(set) var state: State = .initial
    private let epoch: UInt32
    private let random: @Sendable (Int) -> [UInt8]

    /// - Parameters:
    ///   - epoch: the client's time field for C1 (ms).
    ///   - random: source of C1's random bytes; tests pass a fixed one.
    public init(epoch: UInt32 = 0, random: @escaping @Sendable (Int) -> [UInt8] = ServerHandshake.systemRandom) {
        self.epoch = epoch
        self.random = random
    }

    /// C0+C1: the first bytes the client sends.
    public mutating func start() -> ByteBuffer {
        precondition(state == .initial, "ClientHandshake.start() called twice")
        state = .waitingForS0S1
        var out = ByteBuffer()
        out.reserveCapacity(1 + Self.packetSize)
        out.writeInteger(UInt8(3))
        out.writeInteger(epoch)
        out.writeInteger(UInt32(0))  // plain handshake: no version, no digest
        out.writeBytes(random(Self.packetSize - 8))
        return out
    }

    /// Consumes what it can from `buffer`; returns nil when it needs more bytes.
    public mutating func feed(_ buffer: inout ByteBuffer) throws(HandshakeError) -> Action? {
        switch state {
        case .initial:
            throw .notStarted
        case .waitingForS0S1:
            guard let version = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
            guard version == 3 else { throw .unsupportedVersion(version) }
            guard buffer.readableBytes >= 1 + Self.packetSize else { return nil }
            buffer.moveReaderIndex(forwardBy: 1)
            let s1 = buffer.readSlice(length: Self.packetSize)!
            state = .waitingForS2
            return .send(s1)
        case .waitingForS2:
            guard buffer.readableBytes >= Self.packetSize else { return nil }
            buffer.moveReaderIndex(forwardBy: Self.packetSize)
            state = .done
            return .complete
        case .done:
            throw .alreadyComplete
        }
    }
}
