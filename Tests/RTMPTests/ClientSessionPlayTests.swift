import MediaCore
import NIOCore
import Testing

@testable import RTMP

extension SessionLink {
    /// Messages the server sends on its own (media, status), delivered to the client.
    mutating func serverSends(_ messages: [RTMPMessage]) throws {
        try serve(messages.map(ServerSession.Action.send))
    }
}

private func playSession(_ name: String = "remote") -> ClientSession {
    var configuration = ClientSession.Configuration(app: "live", tcURL: "rtmp://h/live", streamName: name)
    configuration.mode = .play
    return ClientSession(configuration: configuration)
}

private func status(_ level: String, _ code: String, _ description: String = "", msid: MessageStreamID = 1) -> RTMPMessage {
    ControlMessage.command([
        .string("onStatus"), .number(0), .null,
        .object([.init("level", .string(level)), .init("code", .string(code)), .init("description", .string(description))]),
    ], chunkStreamID: 5, messageStreamID: msid)
}

private let connectSuccess = ControlMessage.command([
    .string("_result"), .number(1), .object([.init("fmsVer", .string("FMS/3,0,1,123"))]),
    .object([.init("level", .string("status")), .init("code", .string("NetConnection.Connect.Success"))]),
])

/// A session driven to `state` by well-formed replies: "connecting", "creatingStream", "requestingPlay", "playing".
private func session(in state: String, mode: ClientSession.Mode = .play) -> ClientSession {
    var configuration = ClientSession.Configuration(app: "live", tcURL: "rtmp://h/live", streamName: "k")
    configuration.mode = mode
    var session = ClientSession(configuration: configuration)
    _ = session.start()
    if state == "connecting" { return session }
    _ = session.receive(connectSuccess)
    if state == "creatingStream" { return session }
    let createStreamID: Double = mode == .play ? 2 : 4
    _ = session.receive(ControlMessage.command([.string("_result"), .number(createStreamID), .null, .number(1)]))
    if state == "requestingPlay" { return session }
    _ = session.receive(status("status", "NetStream.Play.Start"))
    return session
}

@Suite("Client session: play")
struct ClientSessionPlayTests {
    @Test("plays from our server session: connect, createStream, play; Play.Start; then setup, metadata and media")
    func playFromServerSession() throws {
        var link = SessionLink(streamName: "remote", mode: .play)
        try link.run(link.client.start())
        #expect(link.clientEvents == [.playing(messageStreamID: 1)])
        #expect(link.client.state == .playing(messageStreamID: 1))
        #expect(link.clientCommands.map { $0[0].stringValue ?? "?" } == ["connect", "createStream", "play"])
        #expect(Array(link.clientCommands[2].dropFirst()) == [.number(3), .null, .string("remote"), .number(-2000)])
        #expect(link.playRequest?.streamName == "remote")
        #expect(link.serverEvents.contains(.startPlayback(channel: "remote", messageStreamID: 1)))

        // What an Estuary player connection sends: sequence headers, metadata, media from a keyframe.
        var muxer = PlaybackMuxer(messageStreamID: 1)
        let description = StreamDescription(video: .init(avcC: linkAVCC), audio: .init(config: linkAAC))
        var messages = muxer.description(description)
        messages.append(muxer.metadata(StreamMetadata(properties: [.init("width", .number(1280)),
                                                                   .init("encoder", .string("obs"))])))
        let frame = [UInt8](repeating: 0x42, count: 10_000)
        for packet in [
            MediaPacket(kind: .video, dts: 5000, pts: 5066, isKeyframe: true, data: frame),
            MediaPacket(kind: .audio, dts: 5010, pts: 5010, isKeyframe: true, data: [4, 5, 6]),
            MediaPacket(kind: .video, dts: 5033, pts: 5033, isKeyframe: false, data: [9, 9]),
        ] {
            messages += [muxer.packet(packet)?.message].compactMap { $0 }
        }
        link.clientEvents = []
        try link.serverSends(messages)
        #expect(link.clientEvents == [
            .streamDescription(StreamDescription(video: .init(avcC: linkAVCC))),
            .streamDescription(description),
            .metadata([.init("width", .number(1280)), .init("encoder", .string("obs"))]),
            .media(MediaPacket(kind: .video, dts: 0, pts: 66, isKeyframe: true, data: frame)),
            .media(MediaPacket(kind: .audio, dts: 10, pts: 10, isKeyframe: true, data: [4, 5, 6])),
            .media(MediaPacket(kind: .video, dts: 33, pts: 33, isKeyframe: false, data: [9, 9])),
        ])

        // nginx-rtmp tells players when the publisher leaves; the same setup after it returns is announced again.
        link.clientEvents = []
        muxer.streamRestarted()
        try link.serverSends([status("status", "NetStream.Play.UnpublishNotify"),
                              status("status", "NetStream.Play.PublishNotify")] + muxer.description(description))
        #expect(link.clientEvents == [.sourceEnded, .streamDescription(StreamDescription(video: .init(avcC: linkAVCC))),
                                      .streamDescription(description)])

        // A clean stop: deleteStream only (FCUnpublish is a publisher's).
        let stop = link.client.unpublish()
        #expect(stop.compactMap { action -> String? in
            guard case .send(let message) = action else { return nil }
            return (try? AMF0Decoder().decodeAll(message.payload))?.first?.stringValue
        } == ["deleteStream"])
        try link.run(stop)
        #expect(link.serverEvents.last == .stopPlayback)
    }

    @Test("the server refuses the play: .failed with its code")
    func playRefused() throws {
        var link = SessionLink(streamName: "nope", mode: .play)
        link.playable = false
        try link.run(link.client.start())
        #expect(link.clientEvents == [.failed(.init(level: "error", code: "NetStream.Play.StreamNotFound",
                                                    description: "no such stream"))])
        #expect(link.client.state == .closed)
    }

    @Test("Stream EOF on the playing stream ends the source; on another stream it is ignored")
    func streamEOF() {
        var session = session(in: "playing")
        #expect(session.receive(ControlMessage.userControl(.streamEOF(7))) == [])
        #expect(session.receive(ControlMessage.userControl(.streamEOF(1))) == [.sourceEnded])
        #expect(session.state == .playing(messageStreamID: 1))
    }

    @Test("media on another message stream, or before play, is ignored")
    func strayMedia() {
        let header = RTMPMessage(type: .video, messageStreamID: 2, chunkStreamID: 7,
                                 payload: ByteBuffer(bytes: [0x17, 0, 0, 0, 0] + linkAVCC.bytes))
        var playing = session(in: "playing")
        #expect(playing.receive(header) == [])
        var connecting = session(in: "connecting")
        var onStream1 = header
        onStream1.messageStreamID = 1
        #expect(connecting.receive(onStream1) == [])
        #expect(playing.receive(onStream1) == [.streamDescription(StreamDescription(video: .init(avcC: linkAVCC)))])
    }

    /// Hostile or broken replies: each must end the session with a reason, never trap or hang.
    @Test("hostile replies end the session", arguments: [
        ("error _result to connect", "connecting", ControlMessage.command([
            .string("_error"), .number(1), .null,
            .object([.init("level", .string("error")), .init("code", .string("NetConnection.Connect.Rejected"))]),
        ]), "failed"),
        ("connect _result with an error code", "connecting", ControlMessage.command([
            .string("_result"), .number(1), .null,
            .object([.init("level", .string("status")), .init("code", .string("NetConnection.Connect.Rejected"))]),
        ]), "failed"),
        ("_error to createStream", "creatingStream", ControlMessage.command([
            .string("_error"), .number(2), .null, .object([.init("code", .string("NetConnection.Call.Failed"))]),
        ]), "failed"),
        ("createStream without a stream id", "creatingStream",
         ControlMessage.command([.string("_result"), .number(2), .null, .string("one")]), "close"),
        ("createStream with stream id 0", "creatingStream",
         ControlMessage.command([.string("_result"), .number(2), .null, .number(0)]), "close"),
        ("Play.StreamNotFound", "requestingPlay", status("error", "NetStream.Play.StreamNotFound"), "failed"),
        ("Publish.BadName while playing", "playing", status("error", "NetStream.Publish.BadName"), "failed"),
        ("garbage AMF in a command", "connecting",
         RTMPMessage(type: .commandAMF0, chunkStreamID: 3, payload: ByteBuffer(bytes: [0x02, 0xFF, 0xFF, 0x41])), "close"),
        ("a command without a name", "connecting", ControlMessage.command([.number(1), .null]), "close"),
        ("an AMF3 command", "connecting",
         RTMPMessage(type: .commandAMF3, chunkStreamID: 3, payload: ByteBuffer(bytes: [0, 2, 0, 1, 0x41])), "close"),
        ("the server's close command", "playing", ControlMessage.command([.string("close"), .number(0), .null]), "close"),
        ("a VP6 video message", "playing",
         RTMPMessage(type: .video, messageStreamID: 1, chunkStreamID: 7, payload: ByteBuffer(bytes: [0x14, 0, 0])), "close"),
        ("an oversized command", "playing", RTMPMessage(type: .commandAMF0, chunkStreamID: 3,
                                                         payload: ByteBuffer(repeating: 0x05, count: 200 << 10)), "close"),
    ] as [(String, String, RTMPMessage, String)])
    func hostile(name: String, state: String, reply: RTMPMessage, outcome: String) {
        var session = session(in: state)
        let actions = session.receive(reply)
        switch (actions.last, outcome) {
        case (.failed?, "failed"), (.close?, "close"): break
        default: Issue.record("\(name): \(actions)")
        }
        #expect(session.state == .closed, "\(name)")
        #expect(session.receive(status("status", "NetStream.Play.Start")) == [], "a closed session stays closed")
    }

    @Test("publishing: Publish.BadName (the channel is live upstream) fails the session")
    func publishBadName() {
        var session = session(in: "requestingPlay", mode: .publish)
        #expect(session.state == .publishing(messageStreamID: 1))
        #expect(session.receive(status("error", "NetStream.Publish.BadName", "already publishing"))
            == [.failed(.init(level: "error", code: "NetStream.Publish.BadName", description: "already publishing"))])
    }

    @Test("random bytes after the handshake never trap the decoder or the session", arguments: 0..<64)
    func garbage(seed: Int) {
        var generator = SplitMix(seed: UInt64(seed))
        let bytes = (0..<4096).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        for mode in [ClientSession.Mode.play, .publish] {
            var session = session(in: "playing", mode: mode)
            var decoder = ChunkDecoder(limits: .init(maxMessageLength: 1 << 16, maxBufferedBytes: 1 << 18))
            var buffer = ByteBuffer(bytes: bytes)
            while session.state != .closed, let message = try? decoder.decode(&buffer) {
                _ = session.receive(message)
            }
        }
        // And as S0: anything but version 3 is refused.
        var handshake = ClientHandshake()
        _ = handshake.start()
        var s0 = ByteBuffer(bytes: [bytes[0] == 3 ? 4 : bytes[0]] + bytes)
        #expect(throws: ClientHandshake.HandshakeError.self) { try handshake.feed(&s0) }
    }
}

/// A small deterministic generator for fuzz inputs.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
