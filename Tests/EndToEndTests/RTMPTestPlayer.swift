import Foundation
import NIOCore
import NIOPosix
import RTMP
import Synchronization
import Testing

/// A minimal RTMP player built on our own protocol code, for what real clients cannot be
/// made to do on purpose: play a stream and then stop reading from the socket.
enum StalledPlayer {
    /// Collects the handshake reply, then the test stops reading.
    final class HandshakeReader: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let received: EventLoopPromise<Void>
        var count = 0
        init(received: EventLoopPromise<Void>) { self.received = received }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            count += unwrapInboundIn(data).readableBytes
            if count >= 1 + 2 * ServerHandshake.packetSize { received.succeed() }
        }
    }

    /// Connects with a tiny receive buffer, handshakes, plays `channel`, then never reads again.
    static func start(port: Int, channel: String) async throws -> any Channel {
        let group = MultiThreadedEventLoopGroup.singleton
        let received = group.next().makePromise(of: Void.self)
        let connection = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.so_rcvbuf), value: 4096)
            .channelInitializer { $0.pipeline.addHandler(HandshakeReader(received: received)) }
            .connect(host: "127.0.0.1", port: port).get()
        var c0c1 = ByteBuffer(integer: UInt8(3))
        c0c1.writeBytes([UInt8](repeating: 0, count: ServerHandshake.packetSize))
        try await connection.writeAndFlush(c0c1)
        try await received.futureResult.get()
        // Stop reading: the kernel buffers fill and the server's writes to us stall.
        try await connection.setOption(.autoRead, value: false).get()

        var out = ByteBuffer(bytes: [UInt8](repeating: 0, count: ServerHandshake.packetSize))
        var encoder = ChunkEncoder()
        let commands: [[AMF0Value]] = [
            [.string("connect"), .number(1), .object([.init("app", .string("live")),
                                                      .init("tcUrl", .string("rtmp://127.0.0.1/live"))])],
            [.string("createStream"), .number(2), .null],
        ]
        for command in commands { encoder.encode(ControlMessage.command(command), into: &out) }
        encoder.encode(ControlMessage.command([.string("play"), .number(3), .null, .string(channel)],
                                              chunkStreamID: 8, messageStreamID: 1), into: &out)
        try await connection.writeAndFlush(out)
        return connection
    }
}

/// An RTMP client on our own protocol code, driven message by message: the test sends exactly the
/// commands it wants (play with chosen arguments, receiveVideo, pause, closeStream, …) and reads
/// every message the server sends, in order. A ping is a barrier: whatever the server wrote
/// before answering it has arrived once its response has.
final class RTMPTestPlayer: Sendable {
    enum PlayerError: Error, CustomStringConvertible {
        case timeout(String)
        case closed(String)

        var description: String {
            switch self {
            case .timeout(let what): "timed out waiting for \(what)"
            case .closed(let why): "connection ended: \(why)"
            }
        }
    }

    /// Messages received and not yet read, and the one reader waiting for them.
    final class Inbox: Sendable {
        private struct State {
            var messages: [RTMPMessage] = []
            var head = 0
            var ended: String?
            var waiter: (id: UInt64, continuation: CheckedContinuation<RTMPMessage, any Error>)?
            var nextWaiterID: UInt64 = 0
        }

        private let state = Mutex(State())

        func deliver(_ message: RTMPMessage) {
            let waiter = state.withLock { state -> CheckedContinuation<RTMPMessage, any Error>? in
                guard let waiter = state.waiter else {
                    state.messages.append(message)
                    return nil
                }
                state.waiter = nil
                return waiter.continuation
            }
            waiter?.resume(returning: message)
        }

        func end(_ reason: String) {
            let waiter = state.withLock { state -> CheckedContinuation<RTMPMessage, any Error>? in
                if state.ended == nil { state.ended = reason }
                defer { state.waiter = nil }
                return state.waiter?.continuation
            }
            waiter?.resume(throwing: PlayerError.closed(reason))
        }

        /// Why the connection ended, once it has.
        var ended: String? { state.withLock { $0.ended } }

        private func expire(waiter id: UInt64, after timeout: TimeAmount) {
            let expired = state.withLock { state -> CheckedContinuation<RTMPMessage, any Error>? in
                guard let waiter = state.waiter, waiter.id == id else { return nil }
                state.waiter = nil
                return waiter.continuation
            }
            expired?.resume(throwing: PlayerError.timeout("a message within \(timeout)"))
        }

        func next(timeout: TimeAmount, on eventLoop: any EventLoop) async throws -> RTMPMessage {
            try await withCheckedThrowingContinuation { continuation in
                let ready = state.withLock { state -> Result<RTMPMessage, any Error>? in
                    if state.head < state.messages.count {
                        defer {
                            state.head += 1
                            if state.head == state.messages.count {
                                state.messages.removeAll(keepingCapacity: true)
                                state.head = 0
                            }
                        }
                        return .success(state.messages[state.head])
                    }
                    if let ended = state.ended { return .failure(PlayerError.closed(ended)) }
                    state.nextWaiterID += 1
                    let id = state.nextWaiterID
                    state.waiter = (id, continuation)
                    eventLoop.scheduleTask(in: timeout) { [self] in self.expire(waiter: id, after: timeout) }
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        }
    }

    /// Handshake, then chunk decoding into the inbox.
    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var handshake = ClientHandshake()
        private var decoder = ChunkDecoder()
        private var buffer = ByteBuffer()
        private let inbox: Inbox
        private let handshaken: EventLoopPromise<Void>
        private var handshakeCompleted = false

        init(inbox: Inbox, handshaken: EventLoopPromise<Void>) {
            self.inbox = inbox
            self.handshaken = handshaken
        }

        func channelActive(context: ChannelHandlerContext) {
            context.writeAndFlush(wrapOutboundOut(handshake.start()), promise: nil)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var incoming = unwrapInboundIn(data)
            buffer.writeBuffer(&incoming)
            do {
                while handshake.state != .done {
                    guard let action = try handshake.feed(&buffer) else { return }
                    switch action {
                    case .send(let c2): context.writeAndFlush(wrapOutboundOut(c2), promise: nil)
                    case .complete:
                        handshakeCompleted = true
                        handshaken.succeed()
                    }
                }
                while let message = try decoder.decode(&buffer) { inbox.deliver(message) }
                buffer.discardReadBytes()
            } catch {
                inbox.end("\(error)")
                if !handshakeCompleted {
                    handshakeCompleted = true
                    handshaken.fail(error)
                }
                context.close(promise: nil)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            inbox.end("closed by the server")
            if !handshakeCompleted { handshaken.fail(PlayerError.closed("closed during the handshake")) }
        }
    }

    let channel: any Channel
    let inbox: Inbox
    /// Ping values sent so far, so each barrier waits for its own response.
    private let pings = Atomic<UInt32>(0)
    /// Transaction ids of commands sent so far.
    private let transactions = Atomic<Int>(1)

    private init(channel: any Channel, inbox: Inbox) {
        self.channel = channel
        self.inbox = inbox
    }

    /// Connects, handshakes and sends `connect`; returns once the server has answered it.
    static func connect(port: Int, app: String = "live") async throws -> RTMPTestPlayer {
        let group = MultiThreadedEventLoopGroup.singleton
        let inbox = Inbox()
        let eventLoop = group.next()
        let handshaken = eventLoop.makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: eventLoop)
            .channelInitializer { $0.pipeline.addHandler(Handler(inbox: inbox, handshaken: handshaken)) }
            .connect(host: "127.0.0.1", port: port).get()
        let player = RTMPTestPlayer(channel: channel, inbox: inbox)
        try await handshaken.futureResult.get()
        try await player.send(ControlMessage.command([
            .string("connect"), .number(1),
            .object([.init("app", .string(app)), .init("tcUrl", .string("rtmp://127.0.0.1:\(port)/\(app)"))]),
        ]))
        _ = try await player.read(until: "connect's _result") { $0.commandName == "_result" }
        return player
    }

    func send(_ messages: RTMPMessage...) async throws {
        var out = ByteBuffer()
        // A fresh encoder per send: headers are never compressed, so no state crosses sends.
        var encoder = ChunkEncoder()
        for message in messages { encoder.encode(message, into: &out) }
        try await channel.writeAndFlush(out)
    }

    /// A NetStream command (`play`, `pause`, `receiveVideo`, `closeStream`, …) on message stream `id`.
    func streamCommand(_ name: String, _ arguments: [AMF0Value], on id: MessageStreamID) async throws {
        let transaction = Double(transactions.add(1, ordering: .relaxed).newValue)
        try await send(ControlMessage.command([.string(name), .number(transaction), .null] + arguments,
                                              chunkStreamID: 8, messageStreamID: id))
    }

    /// `createStream`; returns the message stream id the server answered.
    func createStream() async throws -> MessageStreamID {
        let transaction = Double(transactions.add(1, ordering: .relaxed).newValue)
        try await send(ControlMessage.command([.string("createStream"), .number(transaction), .null]))
        let (_, result) = try await read(until: "createStream's _result") {
            $0.commandName == "_result" && $0.amf?[1] == .number(transaction)
        }
        return try #require(result.amf?[3].numberValue.flatMap { MessageStreamID(exactly: $0) })
    }

    /// The next message from the server.
    func next(timeout: TimeAmount = .seconds(10)) async throws -> RTMPMessage {
        try await inbox.next(timeout: timeout, on: channel.eventLoop)
    }

    /// Reads until a message matches; returns the messages before it, and it.
    func read(until what: String, timeout: TimeAmount = .seconds(10),
              _ matches: (RTMPMessage) -> Bool) async throws -> (before: [RTMPMessage], match: RTMPMessage) {
        var before: [RTMPMessage] = []
        while true {
            let message: RTMPMessage
            do {
                message = try await next(timeout: timeout)
            } catch {
                Issue.record("waiting for \(what): \(error)")
                throw error
            }
            if matches(message) { return (before, message) }
            before.append(message)
        }
    }

    /// Sends a ping and returns everything the server sent before its response.
    func barrier() async throws -> [RTMPMessage] {
        let value = pings.add(1, ordering: .relaxed).newValue
        try await send(ControlMessage.userControl(.pingRequest(value)))
        return try await read(until: "the ping response") {
            $0.type == .userControl && UserControlEvent(payload: $0.payload) == .pingResponse(value)
        }.before
    }

    func close() async throws {
        try await channel.close()
    }
}

extension RTMPMessage {
    /// The AMF0 values of a command or data message.
    var amf: [AMF0Value]? {
        guard type == .commandAMF0 || type == .dataAMF0 else { return nil }
        return try? AMF0Decoder().decodeAll(payload)
    }

    var commandName: String? { amf?.first?.stringValue }

    /// The code of an `onStatus`.
    var statusCode: String? {
        guard let values = amf, values.first == .string("onStatus"), values.count > 3 else { return nil }
        return values[3]["code"]?.stringValue
    }

    var isMedia: Bool { type == .audio || type == .video }

    /// An AVC or AAC sequence header (codec setup rather than media).
    var isSequenceHeader: Bool { isMedia && payload.getInteger(at: payload.readerIndex + 1, as: UInt8.self) == 0 }

    /// Audio or video frames (not a sequence header).
    var isFrame: Bool { isMedia && !isSequenceHeader }

    var isKeyframe: Bool {
        type == .video && isFrame && payload.getInteger(at: payload.readerIndex, as: UInt8.self) == 0x17
    }

    /// A short name for order assertions: "StreamBegin", "NetStream.Play.Start", "onMetaData",
    /// "video header", "keyframe", "video", "audio", …
    var label: String {
        switch type {
        case .userControl:
            return UserControlEvent(payload: payload).map { "\($0)".components(separatedBy: "(").first ?? "\($0)" }
                ?? "userControl"
        case .commandAMF0:
            return statusCode ?? commandName ?? "command"
        case .dataAMF0:
            return commandName ?? "data"
        case .video:
            return isSequenceHeader ? "video header" : isKeyframe ? "keyframe" : "video"
        case .audio:
            return isSequenceHeader ? "audio header" : "audio"
        default:
            return "type \(typeID)"
        }
    }
}
