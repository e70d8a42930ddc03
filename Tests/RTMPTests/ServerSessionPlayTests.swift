import MediaCore
import NIOCore
import Testing

@testable import RTMP

extension Client {
    static func createStream(_ transaction: Double = 2) -> RTMPMessage {
        command([.string("createStream"), .number(transaction), .null])
    }

    /// `play` as players send it: the name, then whatever of start, duration, reset they pass.
    static func play(_ name: String, _ arguments: [AMF0Value] = [], msid: MessageStreamID = 1) -> RTMPMessage {
        command([.string("play"), .number(4), .null, .string(name)] + arguments, csid: 8, msid: msid)
    }

    static func streamCommand(_ name: String, _ arguments: [AMF0Value], msid: MessageStreamID = 1) -> RTMPMessage {
        command([.string(name), .number(0), .null] + arguments, csid: 8, msid: msid)
    }
}

/// A session that has connected and created message stream 1.
private func connectedSession() -> ServerSession {
    var session = ServerSession()
    _ = session.receive(Client.connect())
    _ = session.receive(Client.createStream())
    return session
}

/// A session playing `channel` on message stream 1, and the actions that started it.
private func playingSession(_ channel: String = "cam", arguments: [AMF0Value] = []) throws
    -> (ServerSession, [ServerSession.Action])
{
    var session = connectedSession()
    let requested = session.receive(Client.play(channel, arguments))
    guard case .authorizePlay(let request) = try #require(requested.first) else {
        Issue.record("expected authorizePlay, got \(requested)")
        throw PlayTestError.unexpected
    }
    let actions = session.playAllowed(channel: request.streamName)
    return (session, actions)
}

private enum PlayTestError: Error { case unexpected }

/// The AMF values of a `.send` action's data message.
private func sentData(_ action: ServerSession.Action) -> [AMF0Value]? {
    guard case .send(let message) = action, message.type == .dataAMF0 else { return nil }
    return try? AMF0Decoder().decodeAll(message.payload)
}

@Suite("Server session: play")
struct ServerSessionPlayTests {
    @Test("play is answered Stream Begin, Play.Reset, Play.Start, |RtmpSampleAccess in this order, then playback starts")
    func replyOrder() throws {
        let (session, actions) = try playingSession()
        try #require(actions.count == 5, "\(actions)")
        #expect(actions[0] == .send(ControlMessage.userControl(.streamBegin(1))))
        #expect(statusCode(actions[1]) == "NetStream.Play.Reset")
        #expect(statusCode(actions[2]) == "NetStream.Play.Start")
        #expect(sentData(actions[3]) == [.string("|RtmpSampleAccess"), .boolean(true), .boolean(true)])
        // Media (onMetaData, sequence headers, the GOP) follows only once the replies are out.
        #expect(actions[4] == .startPlayback(channel: "cam", messageStreamID: 1))
        for action in actions.dropLast() {
            guard case .send(let message) = action, message.type != .userControl else { continue }
            #expect(message.messageStreamID == 1, "replies go on the played stream: \(message)")
        }
        #expect(session.state == .playing(channel: "cam", messageStreamID: 1))
    }

    struct PlayArguments: CustomTestStringConvertible, Sendable {
        var name: String
        var arguments: [AMF0Value]
        var start: Double
        var duration: Double
        var reset: Bool
        var testDescription: String { name }
    }

    static let playArguments: [PlayArguments] = [
        .init(name: "name only (VLC)", arguments: [], start: -2, duration: -1, reset: true),
        .init(name: "ffmpeg: start -2000", arguments: [.number(-2000)], start: -2000, duration: -1, reset: true),
        .init(name: "librtmp live: start -1000", arguments: [.number(-1000)], start: -1000, duration: -1, reset: true),
        .init(name: "librtmp with --stop: start and duration", arguments: [.number(0), .number(10_000)],
              start: 0, duration: 10_000, reset: true),
        .init(name: "reset false", arguments: [.number(-2), .number(-1), .boolean(false)], start: -2, duration: -1, reset: false),
        .init(name: "reset true", arguments: [.number(-1), .number(-1), .boolean(true)], start: -1, duration: -1, reset: true),
        .init(name: "reset as the number 0", arguments: [.number(-2), .number(-1), .number(0)], start: -2, duration: -1,
              reset: false),
        .init(name: "reset as the number 1", arguments: [.number(-2), .number(-1), .number(1)], start: -2, duration: -1,
              reset: true),
        .init(name: "arguments of the wrong type take their defaults",
              arguments: [.string("soon"), .null, .string("no")], start: -2, duration: -1, reset: true),
    ]

    @Test("start, duration and reset are parsed; only reset changes the replies (false: no Play.Reset)",
          arguments: playArguments)
    func arguments(_ testCase: PlayArguments) throws {
        var session = connectedSession()
        let requested = session.receive(Client.play("cam?token=abc", testCase.arguments))
        guard case .authorizePlay(let request) = try #require(requested.first) else {
            Issue.record("expected authorizePlay, got \(requested)")
            return
        }
        #expect(request.streamName == "cam" && request.query == "token=abc" && request.app == "live")
        #expect(request.start == testCase.start)
        #expect(request.duration == testCase.duration)
        #expect(request.reset == testCase.reset)
        let codes = session.playAllowed(channel: "cam").compactMap(statusCode)
        #expect(codes == (testCase.reset ? ["NetStream.Play.Reset", "NetStream.Play.Start"] : ["NetStream.Play.Start"]))
    }

    @Test("receiveAudio and receiveVideo while playing become receive actions; otherwise they are ignored")
    func receiveAudioVideo() throws {
        var (session, _) = try playingSession()
        #expect(session.receive(Client.streamCommand("receiveVideo", [.boolean(false)])) == [.receive(.video, enabled: false)])
        #expect(session.receive(Client.streamCommand("receiveAudio", [.boolean(false)])) == [.receive(.audio, enabled: false)])
        #expect(session.receive(Client.streamCommand("receiveVideo", [.boolean(true)])) == [.receive(.video, enabled: true)])
        #expect(session.receive(Client.streamCommand("receiveAudio", [.number(1)])) == [], "the flag must be a boolean")
        #expect(session.state == .playing(channel: "cam", messageStreamID: 1))

        var notPlaying = connectedSession()
        #expect(notPlaying.receive(Client.streamCommand("receiveVideo", [.boolean(false)])) == [])
    }

    @Test("pause stops the flow with Pause.Notify, unpause resumes it with Unpause.Notify; only on the played stream")
    func pause() throws {
        var (session, _) = try playingSession()
        let paused = session.receive(Client.streamCommand("pause", [.boolean(true), .number(4000)]))
        #expect(paused.first == .pausePlayback(true))
        #expect(paused.count == 2 && statusCode(paused[1]) == "NetStream.Pause.Notify")
        let resumed = session.receive(Client.streamCommand("pause", [.boolean(false), .number(4000)]))
        #expect(resumed.first == .pausePlayback(false))
        #expect(resumed.count == 2 && statusCode(resumed[1]) == "NetStream.Unpause.Notify")
        #expect(session.receive(Client.streamCommand("pause", [.boolean(true)], msid: 2)) == [], "not the played stream")
        #expect(session.state == .playing(channel: "cam", messageStreamID: 1))

        var notPlaying = connectedSession()
        #expect(notPlaying.receive(Client.streamCommand("pause", [.boolean(true)])) == [])
    }

    @Test("closeStream stops playback and keeps the stream for another play; deleteStream removes it", arguments: [
        "closeStream", "deleteStream",
    ])
    func stopAndPlayAgain(command: String) throws {
        var (session, _) = try playingSession()
        // deleteStream of a stream that is not playing changes nothing.
        #expect(session.receive(Client.command([.string("deleteStream"), .number(0), .null, .number(7)])) == [])
        #expect(session.state == .playing(channel: "cam", messageStreamID: 1))

        let stop = command == "closeStream"
            ? Client.streamCommand("closeStream", [])
            : Client.command([.string("deleteStream"), .number(0), .null, .number(1)])
        #expect(session.receive(stop) == [.stopPlayback])
        #expect(session.state == .connected)

        let streamID: MessageStreamID
        if command == "closeStream" {
            streamID = 1
        } else {
            var refused = session
            #expect(refused.receive(Client.play("cam", msid: 1)).last
                == .close(reason: "play on message stream 1 that createStream did not return"))
            #expect(sentCommand(session.receive(Client.createStream(5)).first!)?[3] == .number(2))
            streamID = 2
        }
        guard case .authorizePlay(let request) = session.receive(Client.play("other", msid: streamID)).first else {
            Issue.record("a second play on the connection was not accepted")
            return
        }
        #expect(request.messageStreamID == streamID)
        #expect(session.playAllowed(channel: "other").last == .startPlayback(channel: "other", messageStreamID: streamID))
    }
}

@Suite("Playback muxer")
struct PlaybackMuxerTests {
    static let description = StreamDescription(video: .init(avcC: linkAVCC), audio: .init(config: linkAAC))

    static func video(_ dts: Int64, key: Bool = false) -> MediaPacket {
        MediaPacket(kind: .video, dts: dts, pts: dts, isKeyframe: key, data: [0, 0, 0, 1, key ? 0x65 : 0x41])
    }

    static func audio(_ dts: Int64) -> MediaPacket {
        MediaPacket(kind: .audio, dts: dts, pts: dts, isKeyframe: true, data: [0x21, 0x10])
    }

    /// What the muxer sends for `packets`: "V"/"K" (video, keyframe) or "A", with the player's timestamp.
    static func sent(_ muxer: inout PlaybackMuxer, _ packets: [MediaPacket]) -> [String] {
        packets.compactMap { packet in
            (muxer.packet(packet)?.message).map { message in
                let kind = message.type == .audio ? "A" : message.payload.getInteger(at: 0, as: UInt8.self) == 0x17 ? "K" : "V"
                return "\(kind)\(message.timestamp)"
            }
        }
    }

    @Test("metadata and sequence headers come out in the order given; media starts on a keyframe, audio with it")
    func start() {
        var muxer = PlaybackMuxer(messageStreamID: 1)
        let metadata = muxer.metadata(StreamMetadata(properties: [.init("width", .number(640))]))
        #expect(metadata.type == .dataAMF0 && metadata.messageStreamID == 1)
        let headers = muxer.description(Self.description)
        #expect(headers.map(\.type) == [.video, .audio])
        #expect(headers.map { $0.payload.getInteger(at: 1, as: UInt8.self) } == [0, 0], "sequence headers")
        #expect(Self.sent(&muxer, [Self.audio(990), Self.video(995), Self.video(1000, key: true), Self.audio(1010),
                                   Self.video(1033)]) == ["K0", "A10", "V33"])
    }

    @Test("receiveVideo false: only audio; true again: video resumes on a keyframe while audio keeps flowing")
    func receiveVideo() {
        var muxer = PlaybackMuxer(messageStreamID: 1)
        _ = muxer.description(Self.description)
        #expect(Self.sent(&muxer, [Self.video(0, key: true), Self.audio(10)]) == ["K0", "A10"])
        muxer.receivesVideo = false
        #expect(Self.sent(&muxer, [Self.video(33), Self.audio(43), Self.video(66, key: true), Self.audio(76)]) == ["A43", "A76"])
        muxer.receivesVideo = true
        #expect(Self.sent(&muxer, [Self.video(99), Self.audio(109), Self.video(132, key: true), Self.audio(142),
                                   Self.video(165)]) == ["A109", "K132", "A142", "V165"])
    }

    @Test("receiveAudio false: only video; a player that starts without video gets audio at once")
    func receiveAudio() {
        var muxer = PlaybackMuxer(messageStreamID: 1)
        _ = muxer.description(Self.description)
        muxer.receivesAudio = false
        #expect(Self.sent(&muxer, [Self.video(0, key: true), Self.audio(10), Self.video(33)]) == ["K0", "V33"])

        var audioOnly = PlaybackMuxer(messageStreamID: 1)
        _ = audioOnly.description(Self.description)
        audioOnly.receivesVideo = false
        #expect(Self.sent(&audioOnly, [Self.audio(0), Self.video(5), Self.audio(21)]) == ["A0", "A21"])
        audioOnly.receivesVideo = true
        #expect(Self.sent(&audioOnly, [Self.audio(42), Self.video(50), Self.video(60, key: true)]) == ["A42", "K60"])
    }

    @Test("pause drops everything; unpause restarts at the next keyframe, audio with it, on a clock that never goes back")
    func pause() {
        var muxer = PlaybackMuxer(messageStreamID: 1)
        _ = muxer.description(Self.description)
        #expect(Self.sent(&muxer, [Self.video(0, key: true), Self.audio(10)]) == ["K0", "A10"])
        muxer.isPaused = true
        #expect(Self.sent(&muxer, [Self.video(33), Self.audio(43), Self.video(1000, key: true)]).isEmpty)
        muxer.isPaused = false
        // Live: what went by during the pause is gone; time on the player's clock moves on with the publisher's.
        #expect(Self.sent(&muxer, [Self.audio(2010), Self.video(2033), Self.video(3000, key: true), Self.audio(3010)])
            == ["K3000", "A3010"])
    }
}
