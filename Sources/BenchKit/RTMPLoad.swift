import Foundation
import MediaCore
public import NIOCore
import NIOPosix
import RTMP
import Synchronization

/// What the RTMP load saw, shared by every connection of one run.
public final class LoadStatistics: Sendable {
    public struct Snapshot: Sendable {
        public var publishing = 0
        public var playing = 0
        public var errors: [String] = []
        /// The generator's own delay: how late (ms) it sent a packet past its real-time slot.
        public var maxPublisherLateness: Int64 = 0
        /// Per received media message after warm-up: how much later than the best case it arrived (ms).
        public var lags: [Int64] = []
        /// Gaps of more than a second between a player's media messages.
        public var stalls = 0
        /// Audio and video payload bytes the players received after warm-up: a server that drops
        /// frames to keep up shows here, not in its CPU.
        public var mediaBytes: UInt64 = 0
    }

    private let state = Mutex(Snapshot())
    /// Lags are kept from the moment this is set (the warm-up is discarded). An atomic, not the
    /// lock: players ask on every media message.
    private let measuringFlag = Atomic(false)

    public init() {}

    /// Players hand in what they measured when they close (`RTMPLoad.stop()`), so a snapshot has
    /// their lags, stalls and bytes only after that (they count nothing before `startMeasuring`).
    public var snapshot: Snapshot { state.withLock { $0 } }
    public func startMeasuring() {
        state.withLock { $0.maxPublisherLateness = 0 }
        measuringFlag.store(true, ordering: .releasing)
    }

    var measuring: Bool { measuringFlag.load(ordering: .acquiring) }
    func update(_ change: (inout Snapshot) -> Void) { state.withLock { change(&$0) } }
    func error(_ text: String) {
        state.withLock { if $0.errors.count < 100 { $0.errors.append(text) } }
    }
}

/// One RTMP connection of the load: handshake, then a `ClientSession` (OBS's publish sequence,
/// or ffmpeg's play) — only the wire, never the server's internals.
final class LoadConnection: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Role {
        case publisher(FLVSource)
        case player
    }

    private let role: Role
    private let statistics: LoadStatistics
    private var handshake = ClientHandshake()
    private var decoder = ChunkDecoder()
    private var encoder = ChunkEncoder()
    private var session: ClientSession
    /// Bytes of a chunk not complete at the end of a read, copied out of the read's buffer so
    /// NIO can reuse that buffer for the next read.
    private var leftover: ByteBuffer?
    private var received: UInt64 = 0
    private var context: ChannelHandlerContext?

    // Publisher: the replay clock.
    private var nextIndex = 0
    private var startedAt: NIODeadline?
    private var timer: RepeatedTask?
    // Player: the best (smallest) arrival offset seen, and the last arrival.
    private var bestOffset: Int64?
    private var lastArrival: NIODeadline?
    /// Kept here and handed to the shared statistics on close: a lock per media message would
    /// be the generator's own cost, not the server's.
    private var lags: [Int64] = []
    private var stalls = 0
    private var mediaBytes: UInt64 = 0

    init(role: Role, url: RTMPTarget, statistics: LoadStatistics) {
        self.role = role
        self.statistics = statistics
        var configuration = ClientSession.Configuration(app: url.app, tcURL: url.tcURL, streamName: url.streamName)
        if case .player = role { configuration.mode = .play }
        session = ClientSession(configuration: configuration)
    }

    func channelActive(context: ChannelHandlerContext) {
        self.context = context
        context.writeAndFlush(wrapOutboundOut(handshake.start()), promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        statistics.update {
            switch role {
            case .publisher: if startedAt != nil { $0.publishing -= 1 }
            case .player:
                if lastArrival != nil { $0.playing -= 1 }
                $0.lags.append(contentsOf: lags)
                $0.stalls += stalls
                $0.mediaBytes += mediaBytes
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        statistics.error("connection error: \(error)")
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        received += UInt64(buffer.readableBytes)
        if var pending = leftover.take() {
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        do {
            while handshake.state != .done, let action = try handshake.feed(&buffer) {
                switch action {
                case .send(let c2): context.write(wrapOutboundOut(c2), promise: nil)
                case .complete: perform(session.start(), context: context)
                }
            }
            while handshake.state == .done, let message = try decoder.decode(&buffer) {
                if case .player = role, message.typeID == 8 || message.typeID == 9 {
                    arrived(message, context: context)
                } else {
                    perform(session.receive(message), context: context)
                }
            }
            if buffer.readableBytes > 0 {
                var rest = context.channel.allocator.buffer(capacity: buffer.readableBytes + 4096)
                rest.writeBuffer(&buffer)
                leftover = rest
            }
            perform(session.bytesReceived(total: received), context: context)
        } catch {
            statistics.error("\(error)")
            context.close(promise: nil)
        }
    }

    private func perform(_ actions: [ClientSession.Action], context: ChannelHandlerContext) {
        guard !actions.isEmpty else { return }
        var out = context.channel.allocator.buffer(capacity: 256)
        for action in actions {
            switch action {
            case .send(let message): encoder.encode(message, into: &out)
            case .setOutgoingChunkSize(let size): encoder.setChunkSize(size)
            case .published: startPublishing(context: context, into: &out)
            case .playing: statistics.update { $0.playing += 1 }
            case .failed(let status):
                statistics.error("\(status.code): \(status.description)")
                context.close(promise: nil)
            case .close(let reason):
                statistics.error("closed: \(reason)")
                context.close(promise: nil)
            case .streamDescription, .metadata, .media, .sourceEnded: break
            }
        }
        if out.readableBytes > 0 {
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }
    }

    // MARK: Publisher

    private func startPublishing(context: ChannelHandlerContext, into out: inout ByteBuffer) {
        guard case .publisher(let source) = role else { return }
        for message in session.streamDescription(source.description) { encoder.encode(message, into: &out) }
        let metadata = StreamMetadata(properties: [.init("encoder", .string("estuary-bench")),
                                                   .init("videodatarate", .number(source.bitrate / 1000))])
        if let message = session.metadata(metadata) { encoder.encode(message, into: &out) }
        startedAt = .now()
        statistics.update { $0.publishing += 1 }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleRepeatedTask(initialDelay: .zero, delay: .milliseconds(10)) { _ in
            loopBound.value.sendDue()
        }
    }

    /// Sends every packet whose time has come (the replay is paced by the packets' timestamps).
    private func sendDue() {
        guard let context, let startedAt, case .publisher(let source) = role, context.channel.isActive else { return }
        let elapsed = (NIODeadline.now() - startedAt).nanoseconds / 1_000_000
        var out = context.channel.allocator.buffer(capacity: 16 << 10)
        var lateness: Int64 = 0
        let origin = source.packets[0].dts
        while true {
            let packet = source.packet(at: nextIndex)
            let slot = packet.dts - origin
            guard slot <= elapsed else { break }
            lateness = max(lateness, elapsed - slot)
            if let message = session.packet(packet) { encoder.encode(message, into: &out) }
            nextIndex += 1
        }
        guard out.readableBytes > 0 else { return }
        statistics.update {
            $0.maxPublisherLateness = max($0.maxPublisherLateness, lateness)
        }
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
    }

    // MARK: Player

    private func arrived(_ message: RTMPMessage, context: ChannelHandlerContext) {
        let now = NIODeadline.now()
        let nowMs = now.uptimeNanoseconds / 1_000_000
        let offset = Int64(nowMs) - Int64(message.timestamp)
        let best = min(bestOffset ?? offset, offset)
        bestOffset = best
        let gap = lastArrival.map { (now - $0).nanoseconds / 1_000_000 } ?? 0
        lastArrival = now
        guard statistics.measuring else { return }
        lags.append(offset - best)
        if gap > 1000 { stalls += 1 }
        mediaBytes += UInt64(message.payload.readableBytes)
    }
}

/// `rtmp://host:port/app/stream` taken apart.
public struct RTMPTarget: Sendable {
    public var host: String
    public var port: Int
    public var app: String
    public var streamName: String
    public var tcURL: String { "rtmp://\(host):\(port)/\(app)" }

    public init(host: String = "127.0.0.1", port: Int, app: String = "live", streamName: String) {
        self.host = host
        self.port = port
        self.app = app
        self.streamName = streamName
    }
}

/// Opens publishers and players on one event loop (the generator's core).
///
/// Players read as data arrives, as a real player does. With `playerReadInterval` above zero they
/// read once per interval instead, which costs the generator far less — and the server too: on
/// loopback, waking a reader that waits in epoll is work done in the writer's system call, and
/// nginx-rtmp pays it per message (about half its CPU per player at M = 100). Lag figures are
/// then only as fine as the interval.
public final class RTMPLoad: Sendable {
    public let statistics = LoadStatistics()
    private let group: MultiThreadedEventLoopGroup
    private let channels = Mutex<[any Channel]>([])
    private let players = Mutex<[any Channel]>([])
    private let playerReadInterval: TimeAmount
    private let reader = Mutex<RepeatedTask?>(nil)

    public init(threads: Int = 1, playerReadInterval: TimeAmount = .zero) {
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        self.playerReadInterval = playerReadInterval
    }

    public func publish(_ source: FLVSource, to target: RTMPTarget) async throws {
        try await open(.publisher(source), target)
    }

    public func play(_ target: RTMPTarget) async throws {
        try await open(.player, target)
    }

    private func open(_ role: LoadConnection.Role, _ target: RTMPTarget) async throws {
        let statistics = self.statistics
        var paced = false
        if case .player = role, playerReadInterval > .zero { paced = true }
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.autoRead, value: !paced)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(LoadConnection(role: role, url: target, statistics: statistics))
                }
            }
            .connect(host: target.host, port: target.port).get()
        channels.withLock { $0.append(channel) }
        if paced {
            players.withLock { $0.append(channel) }
            startReading()
        }
    }

    /// One ticker for every player: each tick asks every player's socket for one read.
    private func startReading() {
        reader.withLock { task in
            guard task == nil else { return }
            task = group.next().scheduleRepeatedTask(initialDelay: .zero, delay: playerReadInterval) { [self] _ in
                for channel in players.withLock({ $0 }) where channel.isActive { channel.read() }
            }
        }
    }

    public func stop() async {
        let open = channels.withLock { channels in
            defer { channels.removeAll() }
            return channels
        }
        reader.withLock { $0?.cancel() }
        players.withLock { $0.removeAll() }
        for channel in open { try? await channel.close() }
        try? await group.shutdownGracefully()
    }
}
