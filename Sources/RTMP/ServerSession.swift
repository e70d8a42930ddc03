public import MediaCore
import NIOCore

/// The server side of one RTMP connection after the handshake, as a state
/// machine: feed it messages, perform the actions it returns.
///
/// It answers the NetConnection/NetStream commands of a publisher (OBS's
/// pipelined sequence and ffmpeg's request/response sequence), asks its owner
/// to authorize a publish, and turns media messages into packets.
public struct ServerSession: Sendable {
    public struct Configuration: Sendable {
        public var outgoingChunkSize: UInt32 = 4096
        public var windowAcknowledgementSize: UInt32 = 5_000_000
        public var peerBandwidth: UInt32 = 5_000_000
        public var maxMessageStreams = 8
        /// Commands and metadata are small; this bounds what AMF0 decoding may allocate.
        public var maxCommandLength = 128 << 10
        public var fmsVersion = "FMS/3,0,1,123"
        /// Whether `connect` waits for the owner (`.authorizeConnect`), as nginx-rtmp's `on_connect` holds it.
        public var authorizesConnect = false

        public init() {}
    }

    /// A client's `connect`, for the owner to allow (`connectAllowed(app:)`) or refuse (`connectRejected(_:)`).
    public struct ConnectRequest: Sendable, Equatable {
        /// The application, without the query or any instance after `/`.
        public var app: String
        /// The `a=b` part of connect's `app` (`rtmp://host/app?a=b/name`): nginx-rtmp's connect args.
        public var args: String?
        public var tcURL: String?
        public var flashVer: String?
        public var swfURL: String?
        public var pageURL: String?
        var transactionID: Double
    }

    /// A publisher asking to publish `streamName` (the stream key) in `app`.
    public struct PublishRequest: Sendable, Equatable, CustomStringConvertible {
        public var app: String
        public var tcURL: String?
        /// The publishing name without its query string. This is the stream key: never log it.
        public var streamName: String
        /// The `?a=b&c=d` part of the publishing name, if any.
        public var query: String?
        /// "live", "record" or "append" as sent.
        public var publishType: String
        public var messageStreamID: MessageStreamID

        /// Interpolated into logs by accident one day: never the key.
        public var description: String {
            "publish \(ServerSession.masked(streamName)) in \(app) on stream \(messageStreamID)"
        }
    }

    public enum Rejection: Error, Sendable, Equatable {
        /// The key is wrong or not allowed.
        case denied(String)
        /// The channel is already live.
        case badName(String)
    }

    public enum Action: Sendable, Equatable {
        case send(RTMPMessage)
        /// Decide (with `Configuration.authorizesConnect`), then call `connectAllowed(app:)` or `connectRejected(_:)`.
        case authorizeConnect(ConnectRequest)
        /// Apply to the chunk encoder after sending the preceding Set Chunk Size.
        case setOutgoingChunkSize(Int)
        /// Decide, then call `publishAllowed(channel:)` or `publishRejected(_:)`.
        case authorizePublish(PublishRequest)
        /// Decide, then call `playAllowed(channel:)` or `playRejected(_:)`.
        case authorizePlay(PlayRequest)
        /// Start sending `channel` on the message stream (after the replies before it).
        case startPlayback(channel: String, messageStreamID: MessageStreamID)
        /// Stop sending media to this player.
        case stopPlayback
        /// `receiveAudio`/`receiveVideo` from the player.
        case receive(MediaKind, enabled: Bool)
        /// `pause` from the player (true) or its resume (false).
        case pausePlayback(Bool)
        case streamDescription(StreamDescription)
        case media(MediaPacket)
        case metadata([AMF0Property])
        /// The publisher stopped (FCUnpublish/deleteStream/closeStream).
        case unpublish
        /// End the connection after sending what came before; `reason` is for the log.
        case close(reason: String)
    }

    public enum State: Sendable, Equatable {
        case awaitingConnect
        case connected
        case authorizing(PublishRequest)
        case publishing(channel: String, messageStreamID: MessageStreamID)
        case authorizingPlay(PlayRequest)
        case playing(channel: String, messageStreamID: MessageStreamID)
        case closed
    }

    public let configuration: Configuration
    public internal(set) var state: State = .awaitingConnect
    public private(set) var app = ""
    public private(set) var tcURL: String?
    /// From `connect`, for the notify hooks (nginx-rtmp's flashver, swfurl, pageurl).
    public private(set) var flashVer: String?
    public private(set) var swfURL: String?
    public private(set) var pageURL: String?
    /// The query of connect's `app`, nginx-rtmp's connect args (sent to `on_connect` and `on_disconnect`).
    public private(set) var connectArgs: String?
    /// Whether `connect` was answered with success (the connection may have closed since).
    public private(set) var isConnected = false
    /// A connect waiting for `connectAllowed(app:)`.
    private var pendingConnect: ConnectRequest?
    /// Whether the client said it understands GoAway (OBS does); kept for graceful redirects.
    public private(set) var supportsGoAway = false
    var messageStreams: Set<MessageStreamID> = []
    private var nextMessageStreamID: MessageStreamID = 1
    private var demuxer = MediaDemuxer()
    private var pendingMetadata: [AMF0Property]?
    private let amf = AMF0Decoder()

    private var peerWindowAcknowledgementSize: UInt32 = 2_500_000
    private var bytesAcknowledged: UInt64 = 0

    static let commandChunkStream: ChunkStreamID = 3
    static let statusChunkStream: ChunkStreamID = 5

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    // MARK: Input

    /// Tells the session how many bytes have arrived in total; returns an Acknowledgement when due.
    public mutating func bytesReceived(total: UInt64) -> [Action] {
        guard total - bytesAcknowledged >= UInt64(peerWindowAcknowledgementSize) else { return [] }
        bytesAcknowledged = total
        return [.send(ControlMessage.acknowledgement(UInt32(truncatingIfNeeded: total)))]
    }

    public mutating func receive(_ message: RTMPMessage) -> [Action] {
        guard state != .closed else { return [] }
        switch message.type {
        case .commandAMF0:
            return command(message)
        case .dataAMF0:
            return data(message)
        case .audio, .video:
            return media(message)
        case .windowAcknowledgementSize:
            if let size = message.payload.getInteger(at: message.payload.readerIndex, as: UInt32.self), size > 0 {
                peerWindowAcknowledgementSize = size
            }
            return []
        case .userControl:
            if case .pingRequest(let time) = UserControlEvent(payload: message.payload) {
                return [.send(ControlMessage.userControl(.pingResponse(time)))]
            }
            return []
        case .commandAMF3, .dataAMF3, .sharedObjectAMF3, .sharedObjectAMF0:
            return close("AMF3 and shared-object messages are not supported (type \(message.typeID))")
        case .aggregate:
            return close("aggregate messages are not supported")
        case .setChunkSize, .abort, .acknowledgement, .setPeerBandwidth, nil:
            // Chunking is the decoder's; the rest asks nothing of a server.
            return []
        }
    }

    /// The owner allowed the publish requested by `.authorizePublish` as `channel`.
    public mutating func publishAllowed(channel: String) -> [Action] {
        guard case .authorizing(let request) = state else { return [] }
        state = .publishing(channel: channel, messageStreamID: request.messageStreamID)
        demuxer = MediaDemuxer()
        var actions: [Action] = [
            .send(ControlMessage.userControl(.streamBegin(request.messageStreamID))),
            .send(Self.onStatus(.status, "NetStream.Publish.Start", "\(channel) is now published.",
                                messageStreamID: request.messageStreamID)),
        ]
        if let metadata = pendingMetadata.take() { actions.append(.metadata(metadata)) }
        return actions
    }

    /// The owner refused the publish; the session answers and closes.
    public mutating func publishRejected(_ rejection: Rejection) -> [Action] {
        guard case .authorizing(let request) = state else { return [] }
        let (code, description) = switch rejection {
        case .denied(let why): ("NetStream.Publish.Denied", why)
        case .badName(let why): ("NetStream.Publish.BadName", why)
        }
        return [
            .send(Self.onStatus(.error, code, description, messageStreamID: request.messageStreamID))
        ] + close("publish refused: \(code): \(description)")
    }

    // MARK: Commands

    private mutating func command(_ message: RTMPMessage) -> [Action] {
        guard message.payload.readableBytes <= configuration.maxCommandLength else {
            return close("command of \(message.payload.readableBytes) bytes exceeds \(configuration.maxCommandLength)")
        }
        let values: [AMF0Value]
        do {
            values = try amf.decodeAll(message.payload)
        } catch {
            return close("malformed command: \(error)")
        }
        guard let name = values.first?.stringValue else { return close("command without a name") }
        let transactionID = values.count > 1 ? values[1].numberValue ?? 0 : 0
        let arguments = Array(values.dropFirst(3))

        if state == .awaitingConnect, name != "connect" {
            return close("\(name) before connect")
        }
        switch name {
        case "connect":
            return connect(transactionID: transactionID, commandObject: values.count > 2 ? values[2] : .null)
        case "releaseStream", "FCPublish":
            var actions: [Action] = []
            if name == "FCPublish" {
                let streamName = arguments.first?.stringValue.map(Self.withoutQuery) ?? ""
                actions.append(.send(ControlMessage.command([
                    .string("onFCPublish"), .number(0), .null,
                    .object([.init("code", .string("NetStream.Publish.Start")),
                             .init("description", .string(Self.masked(streamName)))]),
                ])))
            }
            actions.append(result(transactionID, .undefined))
            return actions
        case "createStream":
            guard messageStreams.count < configuration.maxMessageStreams else {
                return close("more than \(configuration.maxMessageStreams) createStream calls")
            }
            let id = nextMessageStreamID
            nextMessageStreamID += 1
            messageStreams.insert(id)
            return [result(transactionID, .number(Double(id)))]
        case "publish":
            return publish(message.messageStreamID, arguments: arguments)
        case "FCUnpublish":
            return []
        case "deleteStream", "closeStream":
            let id = name == "deleteStream"
                ? arguments.first?.numberValue.flatMap { MessageStreamID(exactly: $0) } ?? message.messageStreamID
                : message.messageStreamID
            var actions: [Action] = []
            switch state {
            case .publishing(_, let publishingID) where publishingID == id:
                state = .connected
                actions.append(.unpublish)
            case .playing(_, let playingID) where playingID == id:
                state = .connected
                actions.append(.stopPlayback)
            case .authorizing(let request) where request.messageStreamID == id:
                state = .connected
            case .authorizingPlay(let request) where request.messageStreamID == id:
                state = .connected
            default:
                break
            }
            if name == "deleteStream" { messageStreams.remove(id) }
            return actions
        case "play":
            return play(message.messageStreamID, arguments: arguments)
        case "receiveAudio", "receiveVideo":
            guard case .playing = state, let flag = arguments.first?.booleanValue else { return [] }
            return [.receive(name == "receiveAudio" ? .audio : .video, enabled: flag)]
        case "pause":
            return pause(message.messageStreamID, arguments: arguments)
        default:
            // Unknown commands (getStreamLength, _checkbw, …) get no answer, as in nginx-rtmp.
            return []
        }
    }

    private mutating func connect(transactionID: Double, commandObject: AMF0Value) -> [Action] {
        guard state == .awaitingConnect, pendingConnect == nil else { return close("second connect on one connection") }
        // `live?token=1`: the query is connect's args, the app its first part (nginx-rtmp drops a trailing
        // `/` or `/_definst_` first).
        var fullApp = Substring(commandObject["app"]?.stringValue ?? "")
        if fullApp.hasSuffix("/_definst_") {
            fullApp = fullApp.dropLast(10)
        } else if fullApp.hasSuffix("/") {
            fullApp = fullApp.dropLast()
        }
        let query = fullApp.firstIndex(of: "?").map { String(fullApp[fullApp.index(after: $0)...]) }
        app = Self.withoutQuery(String(fullApp)).split(separator: "/").first.map(String.init) ?? ""
        connectArgs = query.flatMap { $0.isEmpty ? nil : $0 }
        tcURL = commandObject["tcUrl"]?.stringValue
        flashVer = commandObject["flashVer"]?.stringValue
        swfURL = commandObject["swfUrl"]?.stringValue
        pageURL = commandObject["pageUrl"]?.stringValue
        supportsGoAway = commandObject["supportsGoAway"]?.booleanValue ?? false
        let objectEncoding = commandObject["objectEncoding"]?.numberValue ?? 0
        guard objectEncoding == 0 else { return close("AMF3 object encoding requested; only AMF0 is supported") }
        guard configuration.authorizesConnect else { return connectReply(transactionID) }
        let request = ConnectRequest(app: app, args: connectArgs, tcURL: tcURL, flashVer: flashVer, swfURL: swfURL,
                                     pageURL: pageURL, transactionID: transactionID)
        pendingConnect = request
        return [.authorizeConnect(request)]
    }

    /// The owner allowed the connect asked for by `.authorizeConnect`, in `app` if it names another one
    /// (nginx-rtmp's `on_connect` redirect).
    public mutating func connectAllowed(app newApp: String? = nil) -> [Action] {
        guard state == .awaitingConnect, let request = pendingConnect.take() else { return [] }
        if let newApp { app = newApp }
        return connectReply(request.transactionID)
    }

    /// The owner refused the connect: the client is told, and the connection closes.
    public mutating func connectRejected(_ reason: String) -> [Action] {
        guard state == .awaitingConnect, let request = pendingConnect.take() else { return [] }
        return [
            .send(ControlMessage.command([
                .string("_error"), .number(request.transactionID), .null,
                .object([
                    .init("level", .string("error")),
                    .init("code", .string("NetConnection.Connect.Rejected")),
                    .init("description", .string(reason)),
                ]),
            ], chunkStreamID: Self.commandChunkStream)),
        ] + close("connect refused: \(reason)")
    }

    private mutating func connectReply(_ transactionID: Double) -> [Action] {
        state = .connected
        isConnected = true
        return [
            .send(ControlMessage.windowAcknowledgementSize(configuration.windowAcknowledgementSize)),
            .send(ControlMessage.setPeerBandwidth(configuration.peerBandwidth)),
            .send(ControlMessage.setChunkSize(configuration.outgoingChunkSize)),
            .setOutgoingChunkSize(Int(configuration.outgoingChunkSize)),
            .send(ControlMessage.command([
                .string("_result"), .number(transactionID),
                .object([.init("fmsVer", .string(configuration.fmsVersion)), .init("capabilities", .number(31))]),
                .object([
                    .init("level", .string("status")),
                    .init("code", .string("NetConnection.Connect.Success")),
                    .init("description", .string("Connection succeeded.")),
                    .init("objectEncoding", .number(0)),
                ]),
            ], chunkStreamID: Self.commandChunkStream)),
        ]
    }

    private mutating func publish(_ messageStreamID: MessageStreamID, arguments: [AMF0Value]) -> [Action] {
        guard messageStreams.contains(messageStreamID) else {
            return close("publish on message stream \(messageStreamID) that createStream did not return")
        }
        guard state == .connected else { return close("publish while \(state)") }
        guard let fullName = arguments.first?.stringValue, !fullName.isEmpty else {
            return [.send(Self.onStatus(.error, "NetStream.Publish.BadName", "missing stream name",
                                        messageStreamID: messageStreamID))] + close("publish without a stream name")
        }
        let query = fullName.firstIndex(of: "?").map { String(fullName[fullName.index(after: $0)...]) }
        let request = PublishRequest(app: app, tcURL: tcURL, streamName: Self.withoutQuery(fullName), query: query,
                                     publishType: arguments.count > 1 ? arguments[1].stringValue ?? "live" : "live",
                                     messageStreamID: messageStreamID)
        state = .authorizing(request)
        return [.authorizePublish(request)]
    }

    // MARK: Data and media

    private mutating func data(_ message: RTMPMessage) -> [Action] {
        guard message.payload.readableBytes <= configuration.maxCommandLength else {
            return close("data message of \(message.payload.readableBytes) bytes exceeds \(configuration.maxCommandLength)")
        }
        let values: [AMF0Value]
        do {
            values = try amf.decodeAll(message.payload)
        } catch {
            return close("malformed data message: \(error)")
        }
        var rest = values[...]
        if rest.first?.stringValue == "@setDataFrame" { rest = rest.dropFirst() }
        guard rest.first?.stringValue == "onMetaData", rest.count >= 2 else { return [] }
        let properties: [AMF0Property]
        switch rest[rest.startIndex + 1] {
        case .object(let list), .ecmaArray(let list): properties = list
        default: return []
        }
        if case .publishing = state { return [.metadata(properties)] }
        pendingMetadata = properties
        return []
    }

    private mutating func media(_ message: RTMPMessage) -> [Action] {
        let kind = message.type == .video ? "video" : "audio"
        guard case .publishing(_, let id) = state else { return close("\(kind) message before publish") }
        guard message.messageStreamID == id else {
            return close("\(kind) message on stream \(message.messageStreamID), publishing on \(id)")
        }
        do {
            let output = message.type == .video
                ? try demuxer.video(timestamp: message.timestamp, body: message.payload)
                : try demuxer.audio(timestamp: message.timestamp, body: message.payload)
            switch output {
            case .description(let description): return [.streamDescription(description)]
            case .packet(let packet): return [.media(packet)]
            case nil: return []
            }
        } catch {
            state = .closed
            return [
                .send(Self.onStatus(.error, "NetStream.Publish.Failed", "\(error)", messageStreamID: id)),
                .unpublish,
                .close(reason: "\(error)"),
            ]
        }
    }

    // MARK: Replies

    func result(_ transactionID: Double, _ value: AMF0Value) -> Action {
        .send(ControlMessage.command([.string("_result"), .number(transactionID), .null, value],
                                     chunkStreamID: Self.commandChunkStream))
    }

    mutating func close(_ reason: String) -> [Action] {
        var actions: [Action] = []
        switch state {
        case .publishing: actions.append(.unpublish)
        case .playing: actions.append(.stopPlayback)
        default: break
        }
        state = .closed
        return actions + [.close(reason: reason)]
    }

    enum Level: String { case status, error }

    static func onStatus(_ level: Level, _ code: String, _ description: String,
                         messageStreamID: MessageStreamID) -> RTMPMessage {
        ControlMessage.command([
            .string("onStatus"), .number(0), .null,
            .object([
                .init("level", .string(level.rawValue)),
                .init("code", .string(code)),
                .init("description", .string(description)),
            ]),
        ], chunkStreamID: statusChunkStream, messageStreamID: messageStreamID)
    }

    static func withoutQuery(_ name: String) -> String {
        name.firstIndex(of: "?").map { String(name[..<$0]) } ?? name
    }

    /// A stream key as it may appear in logs and replies: a short SHA-256 fingerprint, none of its characters.
    public static func masked(_ key: String) -> String {
        "key#" + SHA256.hash(Array(key.utf8)).prefix(4).map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}

extension Optional {
    fileprivate mutating func take() -> Wrapped? {
        defer { self = nil }
        return self
    }
}
