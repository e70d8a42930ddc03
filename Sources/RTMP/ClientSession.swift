public import MediaCore
import NIOCore

/// The client side of one RTMP connection after the handshake, as a state
/// machine: call `start()`, feed it the server's messages, perform the actions
/// it returns.
///
/// As a publisher (`Mode.publish`) it speaks the sequence OBS does (Set Chunk
/// Size, `connect`; then `releaseStream`, `FCPublish`, `createStream`; then
/// `publish` on the new message stream), which YouTube, Twitch, nginx-rtmp and
/// Estuary all accept; once it reports `.published`, turn the live stream into
/// messages with `streamDescription(_:)`, `metadata(_:)` and `packet(_:)`.
/// Media goes out on a clock that starts at zero (a `PlaybackMuxer`), which is
/// what an upstream expects from a new publish.
///
/// As a player (`Mode.play`, see `ClientSession+Play.swift`) it sends
/// `createStream` and `play` as ffmpeg does and turns the media it receives
/// into packets.
public struct ClientSession: Sendable {
    public struct Configuration: Sendable {
        /// The application (`live` in `rtmp://host/live/key`).
        public var app: String
        /// `rtmp://host[:port]/app`, as OBS sends it.
        public var tcURL: String
        /// The publishing name: the stream key, with any `?query`. Never log it.
        public var streamName: String
        /// Publish (relay push) or play (relay pull).
        public var mode = Mode.publish
        /// "live" (or "record"/"append" for servers that honour them).
        public var publishType = "live"
        public var flashVersion = "FMLE/3.0 (compatible; Estuary)"
        /// Chunk size we announce and write with (OBS: 4096).
        public var chunkSize: UInt32 = 4096
        /// Commands are small; this bounds what AMF0 decoding of a server's reply may allocate.
        public var maxCommandLength = 128 << 10

        public init(app: String, tcURL: String, streamName: String) {
            self.app = app
            self.tcURL = tcURL
            self.streamName = streamName
        }
    }

    public enum Mode: Sendable, Equatable {
        case publish
        case play
    }

    /// The info object of an `onStatus` or `_error` reply.
    public struct NetStatus: Sendable, Equatable, CustomStringConvertible {
        public var level: String
        public var code: String
        /// As the server wrote it; some servers repeat the stream name (the key) here.
        public var description: String

        public init(level: String, code: String, description: String) {
            self.level = level
            self.code = code
            self.description = description
        }

        init(_ info: AMF0Value?, defaultCode: String) {
            self.init(level: info?["level"]?.stringValue ?? "error", code: info?["code"]?.stringValue ?? defaultCode,
                      description: info?["description"]?.stringValue ?? "")
        }
    }

    public enum State: Sendable, Equatable {
        /// `start()` not yet called.
        case initial
        /// `connect` sent; waiting for its `_result`.
        case connecting
        /// `createStream` sent (after `releaseStream`, `FCPublish` when publishing); waiting for the stream id.
        case creatingStream
        /// `publish` sent on the message stream; waiting for NetStream.Publish.Start.
        case publishing(messageStreamID: MessageStreamID)
        /// The upstream accepted the publish: media may flow.
        case published(messageStreamID: MessageStreamID)
        /// `play` sent; waiting for NetStream.Play.Start.
        case requestingPlay(messageStreamID: MessageStreamID)
        /// The server started playing: its media arrives as `.media` actions.
        case playing(messageStreamID: MessageStreamID)
        case closed
    }

    public enum Action: Sendable, Equatable {
        case send(RTMPMessage)
        /// Apply to the chunk encoder after sending the preceding Set Chunk Size.
        case setOutgoingChunkSize(Int)
        /// The upstream answered NetStream.Publish.Start: start sending media.
        case published(messageStreamID: MessageStreamID)
        /// Playing: the server answered NetStream.Play.Start.
        case playing(messageStreamID: MessageStreamID)
        /// Playing: the stream's codec setup (new or changed).
        case streamDescription(StreamDescription)
        /// Playing: the stream's `onMetaData`.
        case metadata([AMF0Property])
        /// Playing: one packet, on the server's clock (unwrapped to 64 bits).
        case media(MediaPacket)
        /// Playing: the server's publisher stopped (UnpublishNotify, Play.Stop, Stream EOF). The
        /// connection stays; if the publisher returns, media (with new sequence headers) follows.
        case sourceEnded
        /// The upstream refused (NetStream.Publish.BadName, .Denied, NetConnection.Connect.Rejected, …).
        /// The session is over: close the connection.
        case failed(NetStatus)
        /// End the connection after sending what came before; `reason` is for the log.
        case close(reason: String)
    }

    /// What a transaction id was used for, to route the `_result`/`_error` that answers it.
    enum Call: Sendable, Equatable {
        case connect, releaseStream, fcPublish, createStream, publish, play, fcUnpublish, deleteStream
    }

    public let configuration: Configuration
    public internal(set) var state: State = .initial
    private var nextTransactionID: Double = 1
    private(set) var pendingCalls: [Double: Call] = [:]
    private var muxer: PlaybackMuxer?
    /// Playing: turns the server's audio/video messages into packets.
    var demuxer = MediaDemuxer()
    let amf = AMF0Decoder()

    private var peerWindowAcknowledgementSize: UInt32 = 2_500_000
    private var bytesAcknowledged: UInt64 = 0

    /// NetConnection commands (OBS: 3); the publish command on its message stream (OBS: 4).
    static let commandChunkStream: ChunkStreamID = 3
    static let streamCommandChunkStream: ChunkStreamID = 4

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// The message stream media goes on, once `createStream` answered.
    public var messageStreamID: MessageStreamID? {
        switch state {
        case .publishing(let id), .published(let id), .requestingPlay(let id), .playing(let id): id
        default: nil
        }
    }

    // MARK: Output

    /// Set Chunk Size, then `connect`.
    public mutating func start() -> [Action] {
        guard state == .initial else { return [] }
        state = .connecting
        let connect = command("connect", .connect, [
            .object([
                .init("app", .string(configuration.app)),
                .init("type", .string("nonprivate")),
                .init("flashVer", .string(configuration.flashVersion)),
                .init("swfUrl", .string(configuration.tcURL)),
                .init("tcUrl", .string(configuration.tcURL)),
            ]),
        ])
        return [
            .send(ControlMessage.setChunkSize(configuration.chunkSize)),
            .setOutgoingChunkSize(Int(configuration.chunkSize)),
            .send(connect),
        ]
    }

    /// Tells the session how many bytes have arrived in total; returns an Acknowledgement when due.
    public mutating func bytesReceived(total: UInt64) -> [Action] {
        guard total - bytesAcknowledged >= UInt64(peerWindowAcknowledgementSize) else { return [] }
        bytesAcknowledged = total
        return [.send(ControlMessage.acknowledgement(UInt32(truncatingIfNeeded: total)))]
    }

    /// A clean stop, as OBS does it: `FCUnpublish` (when publishing), `deleteStream`, then close.
    public mutating func unpublish() -> [Action] {
        guard let id = messageStreamID else {
            guard state != .closed else { return [] }
            return close("stopped before publishing")
        }
        var messages: [RTMPMessage] = []
        if configuration.mode == .publish {
            messages.append(command("FCUnpublish", .fcUnpublish, [.string(configuration.streamName)]))
        }
        messages.append(command("deleteStream", .deleteStream, [.number(Double(id))]))
        state = .closed
        muxer = nil
        return messages.map(Action.send) + [.close(reason: "unpublished")]
    }

    // MARK: Media (once published)

    /// Sequence headers for the tracks that are new or changed; empty before `.published`.
    public mutating func streamDescription(_ description: StreamDescription) -> [RTMPMessage] {
        muxer?.description(description) ?? []
    }

    /// `@setDataFrame onMetaData`: what a publisher sends for the server to keep and pass on; nil before `.published`.
    public func metadata(_ metadata: StreamMetadata) -> RTMPMessage? {
        guard var message = muxer?.metadata(metadata) else { return nil }
        var payload = ByteBuffer()
        AMF0Encoder.encode(.string("@setDataFrame"), into: &payload)
        payload.writeBuffer(&message.payload)
        message.payload = payload
        return message
    }

    /// The audio/video message for `packet` on the upstream's clock (zero at the first packet; video
    /// starts on a keyframe, audio with it); nil before `.published` or while waiting for a keyframe.
    public mutating func packet(_ packet: MediaPacket) -> RTMPMessage? {
        muxer?.packet(packet)?.message
    }

    // MARK: Input

    public mutating func receive(_ message: RTMPMessage) -> [Action] {
        guard state != .closed, state != .initial else { return [] }
        switch message.type {
        case .commandAMF0:
            return command(message)
        case .windowAcknowledgementSize:
            if let size = message.payload.getInteger(at: message.payload.readerIndex, as: UInt32.self), size > 0 {
                peerWindowAcknowledgementSize = size
            }
            return []
        case .userControl:
            switch UserControlEvent(payload: message.payload) {
            case .pingRequest(let time):
                return [.send(ControlMessage.userControl(.pingResponse(time)))]
            case .streamEOF(let id):
                return playedStreamEnded(id)
            default:
                return []
            }
        case .commandAMF3:
            return close("AMF3 command from the server; only AMF0 is supported")
        case .audio, .video:
            return playedMedia(message)
        case .dataAMF0:
            return playedData(message)
        case .aggregate:
            // FMS/Wowza may bundle media for players; nginx-rtmp, SRS and Estuary do not.
            if case .playing = state { return close("aggregate messages are not supported") }
            return []
        case .setChunkSize, .abort, .acknowledgement, .setPeerBandwidth, .dataAMF3,
             .sharedObjectAMF0, .sharedObjectAMF3, nil:
            // Chunking is the decoder's; the rest (StreamBegin, |RtmpSampleAccess, peer bandwidth) asks nothing of a publisher.
            return []
        }
    }

    private mutating func command(_ message: RTMPMessage) -> [Action] {
        guard message.payload.readableBytes <= configuration.maxCommandLength else {
            return close("command of \(message.payload.readableBytes) bytes exceeds \(configuration.maxCommandLength)")
        }
        let values: [AMF0Value]
        do {
            values = try amf.decodeAll(message.payload)
        } catch {
            return close("malformed command from the server: \(error)")
        }
        guard let name = values.first?.stringValue else { return close("command without a name from the server") }
        let transactionID = values.count > 1 ? values[1].numberValue ?? 0 : 0
        let arguments = Array(values.dropFirst(3))

        switch name {
        case "_result":
            guard let call = pendingCalls.removeValue(forKey: transactionID) else { return [] }
            return result(of: call, value: arguments.first)
        case "_error":
            guard let call = pendingCalls.removeValue(forKey: transactionID) else { return [] }
            return error(of: call, NetStatus(arguments.first, defaultCode: "NetConnection.Call.Failed"))
        case "onStatus":
            return status(NetStatus(arguments.first, defaultCode: ""))
        case "close":
            return close("the server closed the NetConnection")
        default:
            // onBWDone (FMS, Wowza: a bandwidth probe we do not take part in), onFCPublish and onFCUnpublish
            // (informational; refusals come as onStatus) and anything else need no answer.
            return []
        }
    }

    private mutating func result(of call: Call, value: AMF0Value?) -> [Action] {
        switch call {
        case .connect:
            guard state == .connecting else { return [] }
            let status = NetStatus(value, defaultCode: "NetConnection.Connect.Success")
            guard status.code == "NetConnection.Connect.Success" else { return fail(status) }
            state = .creatingStream
            let name = AMF0Value.string(configuration.streamName)
            guard configuration.mode == .publish else {
                return [.send(command("createStream", .createStream, []))]
            }
            return [
                .send(command("releaseStream", .releaseStream, [name])),
                .send(command("FCPublish", .fcPublish, [name])),
                .send(command("createStream", .createStream, [])),
            ]
        case .createStream:
            guard state == .creatingStream else { return [] }
            guard let number = value?.numberValue, let id = MessageStreamID(exactly: number), id > 0 else {
                return close("createStream answered without a stream id")
            }
            if configuration.mode == .play { return requestPlay(on: id) }
            state = .publishing(messageStreamID: id)
            return [.send(command("publish", .publish, [.string(configuration.streamName), .string(configuration.publishType)],
                                  chunkStreamID: Self.streamCommandChunkStream, messageStreamID: id))]
        case .releaseStream, .fcPublish, .publish, .play, .fcUnpublish, .deleteStream:
            return []
        }
    }

    private mutating func error(of call: Call, _ status: NetStatus) -> [Action] {
        switch call {
        case .connect, .createStream, .publish, .play:
            return fail(status)
        case .releaseStream, .fcPublish, .fcUnpublish, .deleteStream:
            // Some services answer these with _error (no such stream yet); the publish decides.
            return []
        }
    }

    private mutating func status(_ status: NetStatus) -> [Action] {
        if status.level == "error" { return fail(status) }
        switch status.code {
        case "NetStream.Publish.Start":
            guard case .publishing(let id) = state else { return [] }
            state = .published(messageStreamID: id)
            muxer = PlaybackMuxer(messageStreamID: id)
            return [.published(messageStreamID: id)]
        case "NetConnection.Connect.Closed":
            return close("the server closed the NetConnection")
        case "NetStream.Unpublish.Success":
            guard case .published = state else { return [] }
            return close("the server ended the publish")
        default:
            return playStatus(status)
        }
    }

    // MARK: Helpers

    mutating func command(_ name: String, _ call: Call, _ arguments: [AMF0Value],
                                  chunkStreamID: ChunkStreamID = commandChunkStream,
                                  messageStreamID: MessageStreamID = 0) -> RTMPMessage {
        let transactionID = nextTransactionID
        nextTransactionID += 1
        pendingCalls[transactionID] = call
        let commandObject: [AMF0Value] = call == .connect ? [] : [.null]
        return ControlMessage.command([.string(name), .number(transactionID)] + commandObject + arguments,
                                      chunkStreamID: chunkStreamID, messageStreamID: messageStreamID)
    }

    mutating func fail(_ status: NetStatus) -> [Action] {
        state = .closed
        muxer = nil
        return [.failed(status)]
    }

    mutating func close(_ reason: String) -> [Action] {
        state = .closed
        muxer = nil
        return [.close(reason: reason)]
    }
}
