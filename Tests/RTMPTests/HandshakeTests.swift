import NIOCore
import Testing

@testable import RTMP

@Suite("Handshake")
struct HandshakeTests {
    static let fixedRandom: @Sendable (Int) -> [UInt8] = { count in (0..<count).map { UInt8(truncatingIfNeeded: $0 * 31 + 7) } }

    @Test("SHA-256 and HMAC-SHA256 match published test vectors")
    func hashVectors() {
        #expect(SHA256.hash(Array("abc".utf8)) == bytes("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))
        #expect(SHA256.hash([]) == bytes("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"))
        let long = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256.hash(long) == bytes("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"))
        // RFC 4231 test case 2.
        #expect(SHA256.hmac(key: Array("Jefe".utf8), message: Array("what do ya want for nothing?".utf8))
            == bytes("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"))
        // RFC 4231 test case 6: a key longer than the block size.
        #expect(SHA256.hmac(key: [UInt8](repeating: 0xAA, count: 131),
                            message: Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8))
            == bytes("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"))
    }

    @Test("plain C1 (version zero, as OBS sends): S2 echoes C1")
    func plain() throws {
        var c1 = Self.fixedRandom(ServerHandshake.packetSize)
        c1.replaceSubrange(4..<8, with: [0, 0, 0, 0])
        var handshake = ServerHandshake(epoch: 1000, random: Self.fixedRandom)
        var input = buffer([3] + c1)
        guard case .send(var reply) = try handshake.feed(&input) else {
            Issue.record("no reply")
            return
        }
        #expect(handshake.usedDigest == false)
        #expect(reply.readableBytes == 1 + 2 * 1536)
        #expect(reply.readInteger(as: UInt8.self) == 3)
        let s1 = reply.readBytes(length: 1536)!
        #expect(s1[0..<4] == [0, 0, 0x03, 0xE8][...])
        let s2 = reply.readBytes(length: 1536)!
        #expect(s2[0..<4] == c1[0..<4])
        #expect(s2[8...] == c1[8...])
        var c2 = buffer(s1)
        #expect(try handshake.feed(&c2) == .complete)
        #expect(handshake.state == .done)
    }

    @Test("digest C1 (as ffmpeg sends), both schemes: S1 carries a valid server digest, S2 the signature",
          arguments: [HandshakeDigest.Scheme.digestFirst, .keyFirst])
    func digest(scheme: HandshakeDigest.Scheme) throws {
        var c1 = Self.fixedRandom(ServerHandshake.packetSize)
        c1.replaceSubrange(4..<8, with: [9, 0, 124, 2])
        HandshakeDigest.imprint(&c1, scheme: scheme, key: HandshakeDigest.clientKey)
        #expect(HandshakeDigest.validate(c1, scheme: scheme, key: HandshakeDigest.clientKey))

        var handshake = ServerHandshake(random: Self.fixedRandom)
        var input = buffer([3] + c1)
        guard case .send(var reply) = try handshake.feed(&input) else {
            Issue.record("no reply")
            return
        }
        #expect(handshake.usedDigest)
        reply.moveReaderIndex(forwardBy: 1)
        let s1 = reply.readBytes(length: 1536)!
        let s2 = reply.readBytes(length: 1536)!
        // What a player checks (ffmpeg's rtmp handshake when playing): S1's digest, then S2's signature.
        #expect(s1[4] >= 3)
        #expect(HandshakeDigest.validate(s1, scheme: scheme, key: HandshakeDigest.serverKey))
        let clientDigestOffset = scheme.digestOffset(in: c1)
        let key = SHA256.hmac(key: HandshakeDigest.serverFullKey, message: c1[clientDigestOffset..<clientDigestOffset + 32])
        #expect(SHA256.hmac(key: key, message: s2[0..<1504])[...] == s2[1504...])
    }

    @Test("C1 claiming a version without a valid digest falls back to the plain echo")
    func badDigest() throws {
        var c1 = Self.fixedRandom(ServerHandshake.packetSize)
        c1.replaceSubrange(4..<8, with: [9, 0, 124, 2])
        var handshake = ServerHandshake(random: Self.fixedRandom)
        var input = buffer([3] + c1)
        guard case .send(let reply) = try handshake.feed(&input) else {
            Issue.record("no reply")
            return
        }
        #expect(!handshake.usedDigest)
        #expect(reply.getBytes(at: 1 + 1536 + 8, length: 1528)! == Array(c1[8...]))
    }

    @Test("an unsupported version (RTMPE's 6) is refused on its first byte")
    func version() {
        var handshake = ServerHandshake()
        var input = buffer([6])
        #expect(throws: ServerHandshake.HandshakeError.unsupportedVersion(6)) { try handshake.feed(&input) }
    }

    @Test("fed byte by byte, the handshake answers once, after C0+C1, and completes after C2")
    func byteByByte() throws {
        var handshake = ServerHandshake(random: Self.fixedRandom)
        var accumulated = ByteBuffer()
        var actions: [ServerHandshake.Action] = []
        let input = [3] + Self.fixedRandom(1536) + [UInt8](repeating: 1, count: 1536) + bytes("C3")
        for byte in input {
            accumulated.writeInteger(byte)
            while handshake.state != .done, let action = try handshake.feed(&accumulated) { actions.append(action) }
        }
        #expect(actions.count == 2)
        #expect(actions.last == .complete)
        // The chunk stream's first byte stays for the decoder.
        #expect(Array(accumulated.readableBytesView) == bytes("C3"))
    }
}
