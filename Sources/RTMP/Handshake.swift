public import NIOCore

/// Server side of the RTMP handshake (C0 C1 → S0 S1 S2 → C2).
///
/// Two forms exist in the field: the plain one of the RTMP 1.0 spec (C1's
/// version field zero; OBS sends this) and the digest form Flash Player
/// introduced (ffmpeg and librtmp send it, and ffmpeg checks the server's reply
/// when playing). When C1 carries a valid digest we answer with a digest S1/S2;
/// otherwise S2 echoes C1.
public struct ServerHandshake: Sendable {
    public static let packetSize = 1536

    public enum State: Sendable, Equatable {
        case waitingForC0C1
        case waitingForC2
        case done
    }

    public enum HandshakeError: Error, Equatable, Sendable, CustomStringConvertible {
        case unsupportedVersion(UInt8)
        case alreadyComplete

        public var description: String {
            switch self {
            case .unsupportedVersion(let version): "unsupported RTMP version \(version) in C0 (only 3, plain RTMP)"
            case .alreadyComplete: "handshake already complete"
            }
        }
    }

    /// What the handshake asks its owner to do.
    public enum Action: Sendable, Equatable {
        /// Send S0+S1+S2.
        case send(ByteBuffer)
        /// The handshake finished; bytes after C2 belong to the chunk stream.
        case complete
    }

    public private(set) var state: State = .waitingForC0C1
    /// Whether C1 carried a valid digest (and we answered with one).
    public private(set) var usedDigest = false
    private var random: @Sendable (Int) -> [UInt8]
    private let epoch: UInt32

    /// - Parameters:
    ///   - epoch: the server's time field for S1 (ms).
    ///   - random: source of the random bytes in S1/S2; tests pass a fixed one.
    public init(epoch: UInt32 = 0, random: @escaping @Sendable (Int) -> [UInt8] = ServerHandshake.systemRandom) {
        self.epoch = epoch
        self.random = random
    }

    public static let systemRandom: @Sendable (Int) -> [UInt8] = { count in
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
    }

    /// Consumes what it can from `buffer`; returns nil when it needs more bytes.
    public mutating func feed(_ buffer: inout ByteBuffer) throws(HandshakeError) -> Action? {
        switch state {
        case .waitingForC0C1:
            guard let version = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
            guard version == 3 else { throw .unsupportedVersion(version) }
            guard buffer.readableBytes >= 1 + Self.packetSize else { return nil }
            buffer.moveReaderIndex(forwardBy: 1)
            let c1 = buffer.readBytes(length: Self.packetSize)!
            state = .waitingForC2
            return .send(response(to: c1))
        case .waitingForC2:
            guard buffer.readableBytes >= Self.packetSize else { return nil }
            // C2 should echo S1; clients in the field do not always, and nothing depends on it.
            buffer.moveReaderIndex(forwardBy: Self.packetSize)
            state = .done
            return .complete
        case .done:
            throw .alreadyComplete
        }
    }

    private mutating func response(to c1: [UInt8]) -> ByteBuffer {
        var out = ByteBuffer()
        out.reserveCapacity(1 + 2 * Self.packetSize)
        out.writeInteger(UInt8(3))
        let clientVersion = c1[4..<8]
        if clientVersion.contains(where: { $0 != 0 }), let scheme = HandshakeDigest.Scheme.allCases.first(where: {
            HandshakeDigest.validate(c1, scheme: $0, key: HandshakeDigest.clientKey)
        }) {
            usedDigest = true
            let clientDigest = Array(c1[scheme.digestOffset(in: c1)..<scheme.digestOffset(in: c1) + 32])
            var s1 = writeTimeAndVersion([0x0D, 0x0E, 0x0A, 0x0D]) + random(Self.packetSize - 8)
            HandshakeDigest.imprint(&s1, scheme: scheme, key: HandshakeDigest.serverKey)
            var s2 = random(Self.packetSize - 32)
            let signingKey = SHA256.hmac(key: HandshakeDigest.serverFullKey, message: clientDigest)
            s2 += SHA256.hmac(key: signingKey, message: s2)
            out.writeBytes(s1)
            out.writeBytes(s2)
        } else {
            out.writeBytes(writeTimeAndVersion([0, 0, 0, 0]) + random(Self.packetSize - 8))
            // Plain S2: C1's time, then our time, then C1's random bytes.
            out.writeBytes(c1[0..<4])
            out.writeInteger(epoch)
            out.writeBytes(c1[8...])
        }
        return out
    }

    private func writeTimeAndVersion(_ version: [UInt8]) -> [UInt8] {
        [UInt8(epoch >> 24), UInt8(truncatingIfNeeded: epoch >> 16), UInt8(truncatingIfNeeded: epoch >> 8), UInt8(truncatingIfNeeded: epoch)]
            + version
    }
}

/// The Flash Player handshake digest: an HMAC-SHA256 placed at an offset that
/// the packet itself encodes.
enum HandshakeDigest {
    static let keyTail: [UInt8] = [
        0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57,
        0x6E, 0xEC, 0x5D, 0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
    ]
    /// "Genuine Adobe Flash Player 001": keys a client's C1 digest.
    static let clientKey = Array("Genuine Adobe Flash Player 001".utf8)
    /// "Genuine Adobe Flash Media Server 001": keys the server's S1 digest.
    static let serverKey = Array("Genuine Adobe Flash Media Server 001".utf8)
    /// The server key with its 32-byte tail: keys the S2 signature.
    static let serverFullKey = serverKey + keyTail

    /// Where the 4 offset bytes sit: after the time/version (scheme 0) or after the key block (scheme 1).
    enum Scheme: CaseIterable {
        case digestFirst
        case keyFirst

        private var offsetBase: Int { self == .digestFirst ? 8 : 772 }

        func digestOffset(in packet: [UInt8]) -> Int {
            let sum = packet[offsetBase..<offsetBase + 4].reduce(0) { $0 + Int($1) }
            return sum % 728 + offsetBase + 4
        }
    }

    static func digest(_ packet: [UInt8], at offset: Int, key: [UInt8]) -> [UInt8] {
        SHA256.hmac(key: key, message: packet[..<offset] + packet[(offset + 32)...])
    }

    static func validate(_ packet: [UInt8], scheme: Scheme, key: [UInt8]) -> Bool {
        let offset = scheme.digestOffset(in: packet)
        return digest(packet, at: offset, key: key)[...] == packet[offset..<offset + 32]
    }

    static func imprint(_ packet: inout [UInt8], scheme: Scheme, key: [UInt8]) {
        let offset = scheme.digestOffset(in: packet)
        packet.replaceSubrange(offset..<offset + 32, with: digest(packet, at: offset, key: key))
    }
}
