import MediaCore
import NIOCore
import Testing

@testable import RTMP

/// Two sessions joined by real chunk streams: every message goes through a
/// `ChunkEncoder` on one side and a `ChunkDecoder` on the other, with each
/// side's chunk size changes applied as its owner would.
struct SessionLink {
    var client: ClientSession
    var server = ServerSession()
    var clientEncoder = ChunkEncoder()
    var serverEncoder = ChunkEncoder()
    var clientDecoder = ChunkDecoder()
    var serverDecoder = ChunkDecoder()
    /// What the owner of the server session decides for a publish.
    var authorize: (ServerSession.PublishRequest) -> Result<String, ServerSession.Rejection> = { _ in .success("relay") }

    var clientEvents: [ClientSession.Action] = []
    var serverEvents: [ServerSession.Action] = []
    var clientCommands: [[AMF0Value]] = []
    var serverCommands: [[AMF0Value]] = []
    var publishRequest: ServerSession.PublishRequest?
    var playRequest: ServerSession.PlayRequest?
    /// Whether the server session's owner allows a play.
    var playable = true

    init(streamName: String = "secret-key", mode: ClientSession.Mode = .publish) {
        var configuration = ClientSession.Configuration(app: "live", tcURL: "rtmp://upstream.example/live",
                                                        streamName: streamName)
        configuration.mode = mode
        client = ClientSession(configuration: configuration)
    }

    /// Runs the client's actions, delivering its messages to the server, and so on until both are quiet.
    mutating func run(_ actions: [ClientSession.Action]) throws {
        var toServer = ByteBuffer()
        for action in actions {
            switch action {
            case .send(let message):
                if message.type == .commandAMF0 { clientCommands.append(try AMF0Decoder().decodeAll(message.payload)) }
                clientEncoder.encode(message, into: &toServer)
            case .setOutgoingChunkSize(let size):
                clientEncoder.setChunkSize(size)
            default:
                clientEvents.append(action)
            }
        }
        var replies: [ServerSession.Action] = []
        while let message = try serverDecoder.decode(&toServer) {
            replies += server.receive(message)
        }
        #expect(toServer.readableBytes == 0)
        try serve(replies)
    }

    mutating func serve(_ actions: [ServerSession.Action]) throws {
        var toClient = ByteBuffer()
        var pending = actions[...]
        while let action = pending.popFirst() {
            switch action {
            case .send(let message):
                if message.type == .commandAMF0 { serverCommands.append(try AMF0Decoder().decodeAll(message.payload)) }
                serverEncoder.encode(message, into: &toClient)
            case .setOutgoingChunkSize(let size):
                serverEncoder.setChunkSize(size)
            case .authorizePublish(let request):
                publishRequest = request
                switch authorize(request) {
                case .success(let channel): pending = server.publishAllowed(channel: channel)[...] + pending
                case .failure(let rejection): pending = server.publishRejected(rejection)[...] + pending
                }
            case .authorizePlay(let request):
                playRequest = request
                pending = (playable ? server.playAllowed(channel: request.streamName)
                                    : server.playRejected(code: "NetStream.Play.StreamNotFound", "no such stream"))[...] + pending
            default:
                serverEvents.append(action)
            }
        }
        var next: [ClientSession.Action] = []
        while let message = try clientDecoder.decode(&toClient) {
            next += client.receive(message)
        }
        #expect(toClient.readableBytes == 0)
        if !next.isEmpty { try run(next) }
    }

    mutating func sendMedia(_ messages: [RTMPMessage]) throws {
        try run(messages.map(ClientSession.Action.send))
    }
}

let linkAVCC = try! AVCDecoderConfigurationRecord(bytes: [0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0x00, 0x04, 0x67, 0x64,
                                                              0x00, 0x1F, 0x01, 0x00, 0x04, 0x68, 0xEE, 0x3C, 0xB0])
let linkAAC = try! AudioSpecificConfig(bytes: [0x11, 0x90])

@Suite("Client handshake")
struct ClientHandshakeTests {
    @Test("against our server handshake: plain C1, C2 echoes S1, complete after S2", arguments: [1, 7, 4000])
    func againstServer(pieceSize: Int) throws {
        var client = ClientHandshake(epoch: 1234, random: { Array(repeating: 0xAB, count: $0) })
        var server = ServerHandshake(epoch: 99, random: { Array(repeating: 0x5C, count: $0) })
        let c0c1 = client.start()
        #expect(c0c1.readableBytes == 1 + 1536)
        #expect(Array(c0c1.readableBytesView.prefix(9)) == [3, 0, 0, 0x04, 0xD2, 0, 0, 0, 0])

        var toServer = c0c1
        guard case .send(let s0s1s2) = try #require(try server.feed(&toServer)) else {
            Issue.record("server did not answer C0+C1")
            return
        }
        #expect(!server.usedDigest, "a version-zero C1 gets the plain handshake")
        let serverBytes = Array(s0s1s2.readableBytesView) + [0x02, 0x00]  // and the start of the chunk stream
        var fromServer = ByteBuffer()
        var c2: ByteBuffer?
        var completed = false
        for start in stride(from: 0, to: serverBytes.count, by: pieceSize) {
            fromServer.writeBytes(serverBytes[start..<min(start + pieceSize, serverBytes.count)])
            while client.state != .done, let action = try client.feed(&fromServer) {
                switch action {
                case .send(let bytes): c2 = bytes
                case .complete: completed = true
                }
            }
        }
        #expect(completed)
        #expect(client.state == .done)
        #expect(Array(fromServer.readableBytesView) == [0x02, 0x00], "bytes after S2 are left for the chunk decoder")
        let echo = try #require(c2)
        #expect(Array(echo.readableBytesView) == Array(serverBytes[1...1536]))
        var c2Buffer = echo
        #expect(try server.feed(&c2Buffer) == .complete)
    }

    @Test("a server version other than 3 is refused")
    func badVersion() {
        var client = ClientHandshake()
        _ = client.start()
        var reply = ByteBuffer(bytes: [6])
        #expect(throws: ClientHandshake.HandshakeError.unsupportedVersion(6)) { try client.feed(&reply) }
    }

    @Test("bytes before start() are an error")
    func notStarted() {
        var client = ClientHandshake()
        var reply = ByteBuffer(bytes: [3])
        #expect(throws: ClientHandshake.HandshakeError.notStarted) { try client.feed(&reply) }
    }
}

@Suite("Client session")
struct ClientSessionTests {
    @Test("publishes to our server session: OBS's commands, Publish.Start, then media and metadata arrive")
    func publishToServerSession() throws {
        var link = SessionLink()
        try link.run(link.client.start())
        #expect(link.clientEvents == [.published(messageStreamID: 1)])
        #expect(link.client.state == .published(messageStreamID: 1))
        #expect(link.clientCommands.map { $0[0].stringValue ?? "?" }
            == ["connect", "releaseStream", "FCPublish", "createStream", "publish"])
        #expect(link.clientCommands.map { $0[1] } == (1...5).map { .number(Double($0)) })
        let connect = link.clientCommands[0][2]
        #expect(connect["app"] == .string("live"))
        #expect(connect["type"] == .string("nonprivate"))
        #expect(connect["flashVer"] == .string("FMLE/3.0 (compatible; Estuary)"))
        #expect(connect["tcUrl"] == .string("rtmp://upstream.example/live"))
        #expect(connect["swfUrl"] == .string("rtmp://upstream.example/live"))
        #expect(link.publishRequest?.streamName == "secret-key")
        #expect(link.publishRequest?.publishType == "live")
        #expect(link.publishRequest?.app == "live")
        #expect(link.serverDecoder.chunkSize == 4096, "Set Chunk Size went out first")
        #expect(link.clientDecoder.chunkSize == 4096, "the server's Set Chunk Size reached the client's decoder")

        // Media: sequence headers, @setDataFrame metadata, then packets rebased to start at zero.
        var messages = link.client.streamDescription(StreamDescription(video: .init(avcC: linkAVCC), audio: .init(config: linkAAC)))
        #expect(messages.count == 2)
        messages.append(try #require(link.client.metadata(StreamMetadata(properties: [.init("width", .number(1280))]))))
        let frame = [UInt8](repeating: 0x42, count: 10_000)  // spans several 4096-byte chunks
        for packet in [
            MediaPacket(kind: .audio, dts: 90_000, pts: 90_000, isKeyframe: true, data: [1, 2, 3]),  // before the keyframe: dropped
            MediaPacket(kind: .video, dts: 90_010, pts: 90_076, isKeyframe: true, data: frame),
            MediaPacket(kind: .audio, dts: 90_020, pts: 90_020, isKeyframe: true, data: [4, 5, 6]),
            MediaPacket(kind: .video, dts: 90_043, pts: 90_043, isKeyframe: false, data: [9, 9]),
        ] {
            if let message = link.client.packet(packet) { messages.append(message) }
        }
        #expect(messages.count == 6)
        try link.sendMedia(messages)
        let received = link.serverEvents
        #expect(received.contains(.streamDescription(StreamDescription(video: .init(avcC: linkAVCC), audio: .init(config: linkAAC)))))
        #expect(received.contains(.metadata([.init("width", .number(1280))])))
        let packets = received.compactMap { action -> MediaPacket? in
            if case .media(let packet) = action { packet } else { nil }
        }
        #expect(packets == [
            MediaPacket(kind: .video, dts: 0, pts: 66, isKeyframe: true, data: frame),
            MediaPacket(kind: .audio, dts: 10, pts: 10, isKeyframe: true, data: [4, 5, 6]),
            MediaPacket(kind: .video, dts: 33, pts: 33, isKeyframe: false, data: [9, 9]),
        ])

        // A clean stop: FCUnpublish and deleteStream, and the server ends the publish.
        let stop = link.client.unpublish()
        #expect(stop.last == .close(reason: "unpublished"))
        try link.run(stop)
        #expect(link.clientCommands.suffix(2).map { $0[0].stringValue ?? "?" } == ["FCUnpublish", "deleteStream"])
        #expect(link.clientCommands.last?[3] == .number(1))
        #expect(link.serverEvents.last == .unpublish)
        #expect(link.client.state == .closed)
        #expect(link.client.packet(MediaPacket(kind: .audio, dts: 0, pts: 0, isKeyframe: true, data: [1])) == nil)
    }

    @Test("nothing media-shaped before the publish is accepted")
    func noMediaBeforePublish() {
        var session = ClientSession(configuration: .init(app: "live", tcURL: "rtmp://h/live", streamName: "k"))
        _ = session.start()
        #expect(session.metadata(StreamMetadata()) == nil)
        #expect(session.streamDescription(StreamDescription(video: .init(avcC: linkAVCC))) == [])
        #expect(session.packet(MediaPacket(kind: .video, dts: 0, pts: 0, isKeyframe: true, data: [1])) == nil)
    }

    @Test("the server refuses the publish: BadName and Denied come back as .failed with code and description",
          arguments: [
              (ServerSession.Rejection.badName("channel relay is already live"), "NetStream.Publish.BadName"),
              (ServerSession.Rejection.denied("unknown stream key"), "NetStream.Publish.Denied"),
          ])
    func refused(rejection: ServerSession.Rejection, code: String) throws {
        var link = SessionLink()
        link.authorize = { _ in .failure(rejection) }
        try link.run(link.client.start())
        let description = switch rejection {
        case .badName(let why), .denied(let why): why
        }
        #expect(link.clientEvents == [.failed(.init(level: "error", code: code, description: description))])
        #expect(link.client.state == .closed)
    }

    @Test("replays what nginx-rtmp sent OBS: the client reaches .published on stream 1")
    func nginxReplies() throws {
        var serverBytes = ByteBuffer(bytes: try fixture("obs/obs-publish-s2c.bin"))
        #expect(serverBytes.getInteger(at: 0, as: UInt8.self) == 3)
        serverBytes.moveReaderIndex(forwardBy: 1 + 2 * 1536)

        var session = ClientSession(configuration: .init(app: "live", tcURL: "rtmp://127.0.0.1:19452/live",
                                                         streamName: "obs-test-key"))
        var sent: [[AMF0Value]] = []
        var events: [ClientSession.Action] = []
        func perform(_ actions: [ClientSession.Action]) throws {
            for action in actions {
                switch action {
                case .send(let message):
                    if message.type == .commandAMF0 { sent.append(try AMF0Decoder().decodeAll(message.payload)) }
                case .setOutgoingChunkSize: break
                default: events.append(action)
                }
            }
        }
        try perform(session.start())
        var decoder = ChunkDecoder()
        var received = 0
        while let message = try decoder.decode(&serverBytes) {
            received += 1
            try perform(session.receive(message))
        }
        #expect(received == 6)
        #expect(decoder.chunkSize == 4096)
        #expect(events == [.published(messageStreamID: 1)])
        #expect(sent.map { $0[0].stringValue ?? "?" } == ["connect", "releaseStream", "FCPublish", "createStream", "publish"])
    }

    @Test("our commands match what OBS 29 sent nginx-rtmp: names, transaction ids, arguments, message streams")
    func commandsMatchOBS() throws {
        var obsBytes = ByteBuffer(bytes: try fixture("obs/obs-publish-c2s.bin"))
        obsBytes.moveReaderIndex(forwardBy: 1 + 2 * 1536)
        var decoder = ChunkDecoder()
        var obs: [RTMPMessage] = []
        while obs.count < 7, let message = try decoder.decode(&obsBytes) { obs.append(message) }
        #expect(obs.first?.type == .setChunkSize)
        let obsCommands = obs.filter { $0.type == .commandAMF0 }

        var link = SessionLink(streamName: "obs-test-key")
        let start = link.client.start()
        guard case .send(let setChunkSize) = try #require(start.first) else {
            Issue.record("start() did not begin with a message")
            return
        }
        #expect(setChunkSize == obs.first.map { RTMPMessage(type: .setChunkSize, chunkStreamID: 2, payload: $0.payload) })
        try link.run(start)
        #expect(link.clientCommands.count == 5)
        for (index, (theirs, mine)) in zip(obsCommands, link.clientCommands).enumerated() {
            let values = try AMF0Decoder().decodeAll(theirs.payload)
            #expect(values[0] == mine[0], "command \(index)")
            #expect(values[1] == mine[1], "transaction id of \(values[0])")
            if values[0] == .string("connect") {
                // Same keys but supportsGoAway (we do not follow GoAway redirects).
                let keys = { (value: AMF0Value) -> [String] in
                    if case .object(let properties) = value { properties.map(\.key) } else { [] }
                }
                #expect(keys(values[2]).filter { $0 != "supportsGoAway" } == keys(mine[2]))
            } else {
                #expect(Array(values.dropFirst(2)) == Array(mine.dropFirst(2)), "arguments of \(values[0])")
            }
        }
        #expect(obsCommands.last?.messageStreamID == 1)
        #expect(link.publishRequest?.messageStreamID == 1)
    }

    @Test("connect refused with _error: .failed with the server's code")
    func connectRejected() throws {
        var session = ClientSession(configuration: .init(app: "live", tcURL: "rtmp://h/live", streamName: "k"))
        _ = session.start()
        let reply = ControlMessage.command([
            .string("_error"), .number(1), .null,
            .object([.init("level", .string("error")), .init("code", .string("NetConnection.Connect.Rejected")),
                     .init("description", .string("Connection failed: Application rejected connection."))]),
        ])
        #expect(session.receive(reply) == [.failed(.init(level: "error", code: "NetConnection.Connect.Rejected",
                                                         description: "Connection failed: Application rejected connection."))])
        #expect(session.state == .closed)
    }

    @Test("_error to releaseStream/FCPublish is ignored; onBWDone and onFCPublish need no answer")
    func tolerated() throws {
        var session = ClientSession(configuration: .init(app: "live", tcURL: "rtmp://h/live", streamName: "k"))
        _ = session.start()
        let connected = session.receive(ControlMessage.command([
            .string("_result"), .number(1), .object([.init("fmsVer", .string("FMS/3,5,7,7009"))]),
            .object([.init("level", .string("status")), .init("code", .string("NetConnection.Connect.Success"))]),
        ]))
        #expect(connected.count == 3)
        #expect(session.receive(ControlMessage.command([.string("onBWDone"), .number(0), .null, .number(8192)])) == [])
        #expect(session.receive(ControlMessage.command([
            .string("_error"), .number(2), .null,
            .object([.init("level", .string("error")), .init("code", .string("NetConnection.Call.Failed"))]),
        ])) == [])
        #expect(session.receive(ControlMessage.command([
            .string("onFCPublish"), .number(0), .null, .object([.init("code", .string("NetStream.Publish.Start"))]),
        ])) == [])
        #expect(session.state == .creatingStream)
        let created = session.receive(ControlMessage.command([.string("_result"), .number(4), .null, .number(7)]))
        guard case .send(let publish) = try #require(created.first) else {
            Issue.record("no publish")
            return
        }
        #expect(publish.messageStreamID == 7)
        #expect(try AMF0Decoder().decodeAll(publish.payload) == [.string("publish"), .number(5), .null, .string("k"),
                                                                  .string("live")])
        // A _result nobody asked for is ignored.
        #expect(session.receive(ControlMessage.command([.string("_result"), .number(42), .null, .number(1)])) == [])
        #expect(session.state == .publishing(messageStreamID: 7))
    }

    @Test("pings are answered; acknowledgements follow the server's window")
    func control() {
        var session = ClientSession(configuration: .init(app: "live", tcURL: "rtmp://h/live", streamName: "k"))
        _ = session.start()
        #expect(session.receive(ControlMessage.userControl(.pingRequest(777)))
            == [.send(ControlMessage.userControl(.pingResponse(777)))])
        #expect(session.receive(ControlMessage.windowAcknowledgementSize(1000)) == [])
        #expect(session.bytesReceived(total: 999) == [])
        #expect(session.bytesReceived(total: 1500) == [.send(ControlMessage.acknowledgement(1500))])
        #expect(session.bytesReceived(total: 2000) == [])
        #expect(session.bytesReceived(total: 2600) == [.send(ControlMessage.acknowledgement(2600))])
    }

    @Test("an error status after the publish started ends the session")
    func errorAfterPublish() throws {
        var link = SessionLink()
        try link.run(link.client.start())
        let failed = link.client.receive(ServerSession.onStatus(.error, "NetStream.Publish.Failed", "bad media",
                                                                 messageStreamID: 1))
        #expect(failed == [.failed(.init(level: "error", code: "NetStream.Publish.Failed", description: "bad media"))])
    }
}
