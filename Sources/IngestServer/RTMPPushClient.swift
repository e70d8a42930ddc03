import struct Foundation.Date
public import Logging
import MediaCore
public import NIOCore
public import NIOPosix
public import RTMP
public import StreamHub
import Synchronization

/// Relays one live channel to one upstream RTMP server (a YouTube/Twitch-style
/// simulcast target, nginx-rtmp, another Estuary).
///
/// `run()` waits for the channel to go live, connects (one TCP connection),
/// publishes as OBS does, and sends the stream on a clock starting at zero,
/// awaiting each write so a slow upstream backs up only this relay's queue
/// (which drops to the next keyframe). When the upstream fails or refuses, it
/// retries with exponential backoff while the channel stays live; when the
/// channel ends it unpublishes cleanly and waits for the next publish. It
/// returns when its task is cancelled.
public final class RTMPPushClient: Sendable {
    public struct Configuration: Sendable {
        /// First retry delay; doubles per failure up to `maxBackoff`.
        public var initialBackoff: Duration = .seconds(1)
        public var maxBackoff: Duration = .seconds(30)
        /// A publish that lasted this long resets the delay to `initialBackoff`.
        public var healthyAfter: Duration = .seconds(60)
        public var connectTimeout: TimeAmount = .seconds(10)
        /// From TCP connect to NetStream.Publish.Start.
        public var setupTimeout: Duration = .seconds(15)
        /// A write the upstream has not taken for this long ends the connection (a peer that stopped reading).
        public var writeStallTimeout: Duration = .seconds(30)
        /// This relay's queue on the live stream; falling this far behind skips to the next keyframe.
        public var queue = StreamSubscription.Limits(maxPackets: 1024, maxBytes: 16 << 20)
        public var chunkLimits = ChunkDecoder.Limits(maxMessageLength: 1 << 20, maxBufferedBytes: 4 << 20)
        /// SO_SNDBUF of the upstream connection (nil: the system's, which grows to megabytes). Smaller,
        /// a slow upstream backs up into this relay's queue sooner, which drops whole GOPs.
        public var socketSendBufferBytes: Int?

        public init() {}
    }

    public let url: RTMPURL
    public let channel: String
    public let configuration: Configuration
    private let hub: StreamHub
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let state: Mutex<RelayTargetStatus>

    public init(url: RTMPURL, hub: StreamHub, channel: String, logger: Logger,
                configuration: Configuration = Configuration(),
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.url = url
        self.hub = hub
        self.channel = channel
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        var logger = logger
        logger[metadataKey: "channel"] = "\(channel)"
        logger[metadataKey: "relay"] = "\(url)"
        self.logger = logger
        state = Mutex(RelayTargetStatus(direction: .push, channel: channel, url: "\(url)"))
    }

    public var status: RelayTargetStatus { state.withLock { $0 } }

    private func update(_ change: (inout RelayTargetStatus) -> Void) {
        state.withLock { change(&$0) }
    }

    /// Relays until the task is cancelled.
    public func run() async {
        var backoff = Backoff(initial: configuration.initialBackoff, maximum: configuration.maxBackoff,
                              healthyAfter: configuration.healthyAfter)
        waiting: while !Task.isCancelled {
            update { $0.state = .stopped; $0.connectedSince = nil }
            guard await hub.waitForStream(channel: channel) != nil else { break }
            // Retry while the channel stays live (a republish is a new stream: keep going with it).
            while !Task.isCancelled, let stream = hub.stream(channel: channel) {
                if backoff.failures > 0 { update { $0.reconnects += 1 } }
                switch await push(stream) {
                case .sourceEnded:
                    logger.info("relay: channel ended; unpublished upstream")
                    backoff.reset()
                    continue waiting
                case .cancelled:
                    break waiting
                case .failed(let reason, let publishedFor):
                    let delay = backoff.failed(healthyFor: publishedFor)
                    let reason = url.redacting(reason)
                    update {
                        $0.state = .backoff
                        $0.connectedSince = nil
                        $0.lastError = reason
                        $0.lastErrorAt = Date()
                    }
                    logger.warning("relay failed; retrying", metadata: ["reason": "\(reason)", "in": "\(delay)"])
                    guard await Self.sleep(for: delay, whileLive: stream, in: hub) else { break waiting }
                }
            }
            // The channel ended during a backoff: the next publish starts afresh.
            backoff.reset()
        }
        update { $0.state = .stopped; $0.connectedSince = nil }
    }

    /// Sleeps `delay`, or less if `stream` ends first; false when cancelled.
    static func sleep(for delay: Duration, whileLive stream: LiveStream, in hub: StreamHub) async -> Bool {
        let deadline = ContinuousClock.now + delay
        while ContinuousClock.now < deadline {
            // Short steps: a channel that ended stops the relay's backoff within a quarter second.
            do {
                try await Task.sleep(for: min(.milliseconds(250), deadline - .now))
            } catch {
                return false
            }
            if hub.stream(channel: stream.channel) !== stream { return true }
        }
        return true
    }

    enum Outcome: Sendable {
        /// The channel's publisher stopped; we unpublished.
        case sourceEnded
        case cancelled
        /// `publishedFor`: how long media flowed before the failure (nil: never published).
        case failed(String, publishedFor: Duration?)
    }

    enum PushError: Error, CustomStringConvertible {
        case refused(ClientSession.NetStatus)
        case closed(String)
        case connectionClosed
        case setupTimeout(Duration)
        case writeStalled(Duration)

        var description: String {
            switch self {
            case .refused(let status): "upstream refused: \(status.code): \(status.description)"
            case .closed(let reason): reason
            case .connectionClosed: "upstream closed the connection"
            case .setupTimeout(let timeout): "upstream did not accept the publish within \(timeout)"
            case .writeStalled(let timeout): "upstream took no data for \(timeout)"
            }
        }
    }

    /// One connection: connect, handshake, publish, send until the stream ends or something fails.
    private func push(_ stream: LiveStream) async -> Outcome {
        update {
            $0.state = .connecting
            $0.connectedSince = nil
        }
        logger.info("relay connecting")
        let connection = PushConnection(client: self)
        do {
            var bootstrap = ClientBootstrap(group: eventLoopGroup)
                .connectTimeout(configuration.connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
            if let size = configuration.socketSendBufferBytes {
                bootstrap = bootstrap.channelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(size))
            }
            let channel = try await bootstrap
                .connect(host: url.host, port: url.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            return try await channel.executeThenClose { inbound, outbound in
                try await connection.run(stream: stream, inbound: inbound, outbound: outbound)
            }
        } catch {
            if Task.isCancelled { return .cancelled }
            return .failed("\(error)", publishedFor: connection.publishedFor)
        }
    }

    fileprivate func published() {
        update { $0.state = .publishing; $0.connectedSince = Date() }
        logger.info("relay publishing")
    }

    fileprivate func sent(_ bytes: Int) {
        update { $0.bytesSent += UInt64(bytes) }
    }

    fileprivate func dropped(_ packets: Int) {
        update { $0.droppedPackets += packets }
        logger.debug("relay fell behind; skipped to a keyframe", metadata: ["dropped": "\(packets)"])
    }
}

/// The state one connection's reader and writer tasks share.
private final class PushConnection: Sendable {
    private struct Shared {
        var session: ClientSession
        var publishedAt: ContinuousClock.Instant?
        /// Writes handed to the channel and not yet taken (reader and writer may both have one).
        var pendingWrites = 0
        /// When a write last started on an idle connection or completed.
        var lastWriteProgress = ContinuousClock.now
    }

    private let client: RTMPPushClient
    private let shared: Mutex<Shared>

    init(client: RTMPPushClient) {
        self.client = client
        let url = client.url
        shared = Mutex(Shared(session: ClientSession(configuration: .init(app: url.app, tcURL: url.tcURL,
                                                                            streamName: url.streamKey))))
    }

    var publishedFor: Duration? {
        shared.withLock { $0.publishedAt.map { ContinuousClock.now - $0 } }
    }

    typealias Outbound = NIOAsyncChannelOutboundWriter<ByteBuffer>

    func run(stream: LiveStream, inbound: NIOAsyncChannelInboundStream<ByteBuffer>,
             outbound: Outbound) async throws -> RTMPPushClient.Outcome {
        // The reader announces the publish (with the chunk size in force) to the writer.
        let (publishedStream, publishedContinuation) = AsyncStream<Int>.makeStream()
        return try await withThrowingTaskGroup(of: RTMPPushClient.Outcome.self) { group in
            group.addTask {
                try await self.read(inbound, outbound, published: publishedContinuation)
            }
            group.addTask {
                try await self.send(stream, outbound, published: publishedStream)
            }
            group.addTask {
                try await self.watchdog()
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    // MARK: Reading: handshake, then the session's replies

    private func read(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, _ outbound: Outbound,
                      published: AsyncStream<Int>.Continuation) async throws -> RTMPPushClient.Outcome {
        defer { published.finish() }
        var handshake = ClientHandshake()
        var decoder = ChunkDecoder(limits: client.configuration.chunkLimits)
        var encoder = ChunkEncoder()
        var buffer = ByteBuffer()
        var total: UInt64 = 0
        try await write(handshake.start(), outbound)

        for try await var incoming in inbound {
            total += UInt64(incoming.readableBytes)
            buffer.writeBuffer(&incoming)
            var out = ByteBuffer()
            while handshake.state != .done, let action = try handshake.feed(&buffer) {
                switch action {
                case .send(let c2):
                    out = c2
                case .complete:
                    try perform(shared.withLock { $0.session.start() }, into: &out, encoder: &encoder, published: published)
                }
            }
            if handshake.state == .done {
                while let message = try decoder.decode(&buffer) {
                    try perform(shared.withLock { $0.session.receive(message) }, into: &out, encoder: &encoder,
                                published: published)
                }
                try perform(shared.withLock { $0.session.bytesReceived(total: total) }, into: &out, encoder: &encoder,
                            published: published)
            }
            buffer.discardReadBytes()
            guard buffer.readableBytes <= client.configuration.chunkLimits.maxBufferedBytes else {
                throw RTMPPushClient.PushError.closed("upstream sent more than the buffer limit without a whole message")
            }
            if out.readableBytes > 0 { try await write(out, outbound) }
        }
        throw RTMPPushClient.PushError.connectionClosed
    }

    /// Encodes the session's messages into `out` for the caller to write. A refusal or close
    /// throws at once: a session that has failed owes the server nothing more.
    private func perform(_ actions: [ClientSession.Action], into out: inout ByteBuffer, encoder: inout ChunkEncoder,
                         published: AsyncStream<Int>.Continuation) throws {
        for action in actions {
            switch action {
            case .send(let message):
                encoder.encode(message, into: &out)
            case .setOutgoingChunkSize(let size):
                encoder.setChunkSize(size)
            case .published:
                shared.withLock { $0.publishedAt = .now }
                client.published()
                published.yield(encoder.chunkSize)
            case .failed(let status):
                throw RTMPPushClient.PushError.refused(status)
            case .close(let reason):
                throw RTMPPushClient.PushError.closed(reason)
            case .playing, .streamDescription, .metadata, .media, .sourceEnded:
                // Play-side actions: a publishing session never returns them.
                break
            }
        }
    }

    // MARK: Writing media

    private func send(_ stream: LiveStream, _ outbound: Outbound,
                      published: AsyncStream<Int>) async throws -> RTMPPushClient.Outcome {
        let setupTimeout = client.configuration.setupTimeout
        // Wait for the upstream to accept, within the setup timeout.
        let chunkSize = try await withThrowingTaskGroup(of: Int?.self) { group in
            group.addTask {
                for await size in published { return size }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: setupTimeout)
                throw RTMPPushClient.PushError.setupTimeout(setupTimeout)
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
        guard let chunkSize else {
            // The reader ended before a publish; its error is the outcome. Returning now could
            // race it, so wait to be cancelled.
            try await Task.sleep(for: .seconds(86_400))
            throw CancellationError()
        }

        var encoder = ChunkEncoder()
        encoder.setChunkSize(chunkSize)
        let subscription = stream.subscribe(limits: client.configuration.queue)
        var reportedDrops = 0
        defer {
            // Drops while the last write hung (until the watchdog ended it) count too.
            if subscription.droppedPackets > reportedDrops { client.dropped(subscription.droppedPackets - reportedDrops) }
            subscription.cancel()
        }
        while let batch = await subscription.nextBatch() {
            try Task.checkCancellation()
            let messages = shared.withLock { shared -> [RTMPMessage] in
                var messages: [RTMPMessage] = []
                for event in batch {
                    switch event {
                    case .description(let description):
                        messages += shared.session.streamDescription(description)
                    case .metadata(let metadata):
                        if let message = shared.session.metadata(metadata) { messages.append(message) }
                    case .packet(let packet):
                        if let message = shared.session.packet(packet) { messages.append(message) }
                    }
                }
                return messages
            }
            guard !messages.isEmpty else { continue }
            var out = ByteBuffer()
            out.reserveCapacity(messages.reduce(0) { $0 + $1.payload.readableBytes + 16 })
            for message in messages { encoder.encode(message, into: &out) }
            try await write(out, outbound)
            let dropped = subscription.droppedPackets
            if dropped > reportedDrops {
                client.dropped(dropped - reportedDrops)
                reportedDrops = dropped
            }
        }
        try Task.checkCancellation()
        // The publisher stopped: unpublish as OBS does, so the upstream ends the stream at once.
        var out = ByteBuffer()
        for action in shared.withLock({ $0.session.unpublish() }) {
            if case .send(let message) = action { encoder.encode(message, into: &out) }
        }
        try await write(out, outbound)
        return .sourceEnded
    }

    private func write(_ buffer: ByteBuffer, _ outbound: Outbound) async throws {
        let bytes = buffer.readableBytes
        guard bytes > 0 else { return }
        shared.withLock {
            if $0.pendingWrites == 0 { $0.lastWriteProgress = .now }
            $0.pendingWrites += 1
        }
        defer {
            shared.withLock {
                $0.pendingWrites -= 1
                $0.lastWriteProgress = .now
            }
        }
        try await outbound.write(buffer)
        client.sent(bytes)
    }

    /// Ends the connection when a write makes no progress: an upstream that stopped reading
    /// would otherwise hold the relay forever.
    private func watchdog() async throws -> RTMPPushClient.Outcome {
        let timeout = client.configuration.writeStallTimeout
        while true {
            try await Task.sleep(for: min(timeout / 4, .seconds(1)))
            let stalled = shared.withLock { $0.pendingWrites > 0 && ContinuousClock.now - $0.lastWriteProgress >= timeout }
            if stalled { throw RTMPPushClient.PushError.writeStalled(timeout) }
        }
    }
}
