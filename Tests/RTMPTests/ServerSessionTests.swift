import MediaCore
import NIOCore
import Testing

@testable import RTMP

/// Builds client messages the way publishers send them.
enum Client {
    static func command(_ values: [AMF0Value], csid: ChunkStreamID = 3, msid: MessageStreamID = 0) -> RTMPMessage {
        ControlMessage.command(values, chunkStreamID: csid, messageStreamID: msid)
    }

    static func connect(_ transaction: Double = 1, app: String = "live") -> RTMPMessage {
        command([.string("connect"), .number(transaction), .object([
            .init("app", .string(app)), .init("type", .string("nonprivate")),
            .init("supportsGoAway", .boolean(true)), .init("tcUrl", .string("rtmp://127.0.0.1/\(app)")),
        ])])
    }

    static func publish(_ key: String, msid: MessageStreamID = 1, transaction: Double = 5) -> RTMPMessage {
        command([.string("publish"), .number(transaction), .null, .string(key), .string("live")], csid: 4, msid: msid)
    }

    static func media(_ type: MessageTypeID, _ body: [UInt8], ts: UInt32 = 0, msid: MessageStreamID = 1) -> RTMPMessage {
        RTMPMessage(type: type, messageStreamID: msid, timestamp: ts, chunkStreamID: 4, payload: buffer(body))
    }

    static let avcSequenceHeader = bytes("17 00 000000") + avcC
    /// High profile, one 4-byte SPS and one 4-byte PPS.
    static let avcC = bytes("01 64 00 1F FF E1 0004 6764001F 01 0004 68EE3CB0")
    static let aacSequenceHeader = bytes("AF 00 1190")
}

/// The AMF values of a `.send` action's command, for assertions.
func sentCommand(_ action: ServerSession.Action) -> [AMF0Value]? {
    guard case .send(let message) = action, message.type == .commandAMF0 else { return nil }
    return try? AMF0Decoder().decodeAll(message.payload)
}

func statusCode(_ action: ServerSession.Action) -> String? {
    guard let values = sentCommand(action), values.first?.stringValue == "onStatus", values.count > 3 else { return nil }
    return values[3]["code"]?.stringValue
}

@Suite("Server session")
struct ServerSessionTests {
    @Test("OBS's sequence: pipelined releaseStream/FCPublish/createStream, publish, metadata, media, stop")
    func obsSequence() throws {
        var session = ServerSession()
        let connected = session.receive(Client.connect())
        #expect(connected.count == 5)
        #expect(connected[3] == .setOutgoingChunkSize(4096))
        let result = try #require(sentCommand(connected[4]))
        #expect(result[0] == .string("_result"))
        #expect(result[1] == .number(1))
        #expect(result[3]["code"] == .string("NetConnection.Connect.Success"))
        #expect(session.supportsGoAway)

        #expect(sentCommand(session.receive(Client.command([.string("releaseStream"), .number(2), .null,
                                                            .string("obs-test-key")])).first!)?[0] == .string("_result"))
        let fcPublish = session.receive(Client.command([.string("FCPublish"), .number(3), .null, .string("obs-test-key")]))
        #expect(sentCommand(fcPublish[0])?[0] == .string("onFCPublish"))
        // The reply must not echo the key.
        #expect(sentCommand(fcPublish[0])?[3]["description"] == .string(ServerSession.masked("obs-test-key")))
        #expect(ServerSession.masked("obs-test-key").hasPrefix("key#"))
        #expect(!ServerSession.masked("obs-test-key").contains("obs"))
        let created = session.receive(Client.command([.string("createStream"), .number(4), .null]))
        #expect(sentCommand(created[0]) == [.string("_result"), .number(4), .null, .number(1)])

        let publish = session.receive(Client.publish("obs-test-key?token=abc"))
        guard case .authorizePublish(let request) = try #require(publish.first) else {
            Issue.record("expected authorizePublish, got \(publish)")
            return
        }
        #expect(request.streamName == "obs-test-key")
        #expect(request.query == "token=abc")
        #expect(request.app == "live")
        let started = session.publishAllowed(channel: "main")
        #expect(started[0] == .send(ControlMessage.userControl(.streamBegin(1))))
        #expect(statusCode(started[1]) == "NetStream.Publish.Start")
        #expect(session.state == .publishing(channel: "main", messageStreamID: 1))

        var metadataBody = ByteBuffer()
        AMF0Encoder.encode([.string("@setDataFrame"), .string("onMetaData"),
                            .ecmaArray([.init("width", .number(1280))])], into: &metadataBody)
        let metadata = session.receive(RTMPMessage(type: .dataAMF0, messageStreamID: 1, chunkStreamID: 4, payload: metadataBody))
        #expect(metadata == [.metadata([.init("width", .number(1280))])])

        guard case .streamDescription(let audioOnly) = session.receive(Client.media(.audio, Client.aacSequenceHeader)).first
        else {
            Issue.record("no description after the AAC sequence header")
            return
        }
        #expect(audioOnly.audio?.config.samplingFrequency == 48000)
        #expect(audioOnly.video == nil)
        guard case .streamDescription(let both) = session.receive(Client.media(.video, Client.avcSequenceHeader)).first else {
            Issue.record("no description after the AVC sequence header")
            return
        }
        #expect(both.video?.avcC.profileIndication == 0x64)

        let frame = session.receive(Client.media(.video, bytes("17 01 000042 00000002 0910"), ts: 40))
        #expect(frame == [.media(MediaPacket(kind: .video, dts: 40, pts: 106, isKeyframe: true, data: bytes("00000002 0910")))])

        #expect(session.receive(Client.command([.string("FCUnpublish"), .number(6), .null, .string("obs-test-key")])).isEmpty)
        #expect(session.receive(Client.command([.string("deleteStream"), .number(7), .null, .number(1)])) == [.unpublish])
        #expect(session.state == .connected)
    }

    @Test("ffmpeg's sequence: connect, createStream answered before publish")
    func ffmpegSequence() throws {
        var session = ServerSession()
        _ = session.receive(Client.command([.string("connect"), .number(1), .object([
            .init("app", .string("live")), .init("flashVer", .string("FMLE/3.0 (compatible; Lavf59.27.100)")),
            .init("tcUrl", .string("rtmp://127.0.0.1:1935/live")), .init("fpad", .boolean(false)),
            .init("capabilities", .number(15)), .init("audioCodecs", .number(4071)),
            .init("videoCodecs", .number(252)), .init("videoFunction", .number(1)),
        ])]))
        // ffmpeg sends its Window Acknowledgement Size; the session acknowledges by it.
        var window = ByteBuffer()
        window.writeInteger(UInt32(2_500_000))
        #expect(session.receive(RTMPMessage(type: .windowAcknowledgementSize, chunkStreamID: 2, payload: window)).isEmpty)
        #expect(session.bytesReceived(total: 2_000_000).isEmpty)
        #expect(session.bytesReceived(total: 2_600_000) == [.send(ControlMessage.acknowledgement(2_600_000))])

        _ = session.receive(Client.command([.string("releaseStream"), .number(2), .null, .string("key")]))
        _ = session.receive(Client.command([.string("FCPublish"), .number(3), .null, .string("key")]))
        let created = session.receive(Client.command([.string("createStream"), .number(4), .null]))
        #expect(sentCommand(created[0])?[3] == .number(1))
        guard case .authorizePublish = session.receive(Client.publish("key", transaction: 5)).first else {
            Issue.record("expected authorizePublish")
            return
        }
        _ = session.publishAllowed(channel: "key")
        // ffmpeg sends video on csid 6 and audio on csid 4.
        _ = session.receive(Client.media(.video, Client.avcSequenceHeader))
        let packet = session.receive(RTMPMessage(type: .video, messageStreamID: 1, timestamp: 0, chunkStreamID: 6,
                                                 payload: buffer(bytes("17 01 000000 00000001 65"))))
        #expect(packet.count == 1)
    }

    @Test("a refused key gets NetStream.Publish.Denied, then the connection closes")
    func refusedKey() {
        var session = ServerSession()
        _ = session.receive(Client.connect())
        _ = session.receive(Client.command([.string("createStream"), .number(4), .null]))
        _ = session.receive(Client.publish("wrong"))
        let refused = session.publishRejected(.denied("unknown stream key"))
        #expect(statusCode(refused[0]) == "NetStream.Publish.Denied")
        guard case .close = refused.last else {
            Issue.record("expected close, got \(refused)")
            return
        }
        #expect(session.state == .closed)
        #expect(session.receive(Client.media(.video, Client.avcSequenceHeader)).isEmpty)
    }

    @Test("publishing a live channel again gets NetStream.Publish.BadName")
    func duplicatePublish() {
        var session = ServerSession()
        _ = session.receive(Client.connect())
        _ = session.receive(Client.command([.string("createStream"), .number(4), .null]))
        _ = session.receive(Client.publish("key"))
        let refused = session.publishRejected(.badName("channel key is already being published"))
        #expect(statusCode(refused[0]) == "NetStream.Publish.BadName")
        #expect(session.state == .closed)
    }

    struct OutOfOrder: CustomTestStringConvertible, Sendable {
        var name: String
        var messages: [RTMPMessage]
        var reason: String
        var testDescription: String { name }
    }

    static let outOfOrder: [OutOfOrder] = [
        OutOfOrder(name: "publish before connect",
                   messages: [Client.command([.string("createStream"), .number(1), .null]), Client.publish("k")],
                   reason: "createStream before connect"),
        OutOfOrder(name: "media before publish",
                   messages: [Client.connect(), Client.media(.video, Client.avcSequenceHeader)],
                   reason: "video message before publish"),
        OutOfOrder(name: "publish on a stream never created",
                   messages: [Client.connect(), Client.publish("k", msid: 7)],
                   reason: "publish on message stream 7 that createStream did not return"),
        OutOfOrder(name: "second connect", messages: [Client.connect(), Client.connect(2)],
                   reason: "second connect on one connection"),
        OutOfOrder(name: "malformed command",
                   messages: [RTMPMessage(type: .commandAMF0, chunkStreamID: 3, payload: buffer(bytes("02 00 10 61")))],
                   reason: "malformed command: AMF0 value truncated"),
        OutOfOrder(name: "AMF3 command", messages: [RTMPMessage(type: .commandAMF3, chunkStreamID: 3, payload: buffer([0]))],
                   reason: "AMF3 and shared-object messages are not supported (type 17)"),
    ]

    @Test("commands out of order close the connection with the reason", arguments: outOfOrder)
    func closes(_ testCase: OutOfOrder) {
        var session = ServerSession()
        var actions: [ServerSession.Action] = []
        for message in testCase.messages { actions += session.receive(message) }
        #expect(actions.last == .close(reason: testCase.reason))
        #expect(session.state == .closed)
    }

    @Test("an unsupported codec fails the publish with a status naming it")
    func unsupportedCodec() {
        var session = ServerSession()
        _ = session.receive(Client.connect())
        _ = session.receive(Client.command([.string("createStream"), .number(4), .null]))
        _ = session.receive(Client.publish("k"))
        _ = session.publishAllowed(channel: "k")
        let actions = session.receive(Client.media(.audio, bytes("2F 00 00")))  // MP3
        #expect(statusCode(actions[0]) == "NetStream.Publish.Failed")
        #expect(actions[1] == .unpublish)
        #expect(actions.last == .close(reason: "unsupported audio format id 2 (MP3); AAC only"))
        var enhanced = ServerSession()
        _ = enhanced.receive(Client.connect())
        _ = enhanced.receive(Client.command([.string("createStream"), .number(4), .null]))
        _ = enhanced.receive(Client.publish("k"))
        _ = enhanced.publishAllowed(channel: "k")
        #expect(enhanced.receive(Client.media(.video, bytes("90 68766331"))).last
            == .close(reason: "Enhanced RTMP video 'hvc1' is not supported yet; H.264 only"))
    }

    @Test("a ping request is answered")
    func ping() {
        var session = ServerSession()
        #expect(session.receive(ControlMessage.userControl(.pingRequest(1234)))
            == [.send(ControlMessage.userControl(.pingResponse(1234)))])
    }
}
