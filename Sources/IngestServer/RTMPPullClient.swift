import struct Foundation.Date
public import Logging
import MediaCore
public import NIOCore
public import NIOPosix
public import RTMP
public import StreamHub
import Synchronization

/// Plays a remote RTMP stream into a local channel (nginx-rtmp's `pull`).
///
/// `always`: pulls from the start, reconnecting with exponential backoff.
/// `onDemand`: pulls when a viewer asks for the channel (`demand()`, wired to
/// `StreamHub.onDemand`) and stops once the channel has had no viewers for
/// `idleTimeout`. The local channel is live while media arrives: it starts on
/// the first media, ends when the remote publisher stops (UnpublishNotify,
/// Stream EOF) or sends nothing for `mediaTimeout`, and starts again when
/// media returns. `run()` returns when its task is cancelled.
public final class RTMPPullClient: Sendable {
    public enum Mode: String, Sendable, Codable {
        case onDemand = "on-demand"
        case always
    }

    public struct Configuration: Sendable {
        public var initialBackoff: Duration = .seconds(1)
        public var maxBackoff: Duration = .seconds(30)
        /// A pull that carried media this long resets the delay to `initialBackoff`.
        public var healthyAfter: Duration = .seconds(60)
        public var connectTimeout: TimeAmount = .seconds(10)
        /// From TCP connect to NetStream.Play.Start.
        public var setupTimeout: Duration = .seconds(15)
        /// No media for this long ends the local channel (the remote publisher is gone without saying so).
        public var mediaTimeout: Duration = .seconds(10)
        /// On demand: no viewers for this long stops the pull.
        public var idleTimeout: Duration = .seconds(10)
        /// Something is sent at least this often (an Acknowledgement), so the remote server's idle timeout
        /// does not end a pull that only receives.
        public var keepAliveInterval: Duration = .seconds(10)
        /// The app the local channel is published in.
        public var app = "live"
        public var nodeID = "local"
        public var chunkLimits = ChunkDecoder.Limits()

        public init() {}
    }

    public let url: RTMPURL
    public let channel: String
    public let mode: Mode
    public let configuration: Configuration
    private let hub: StreamHub
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let state: Mutex<RelayTargetStatus>
    private let demands: AsyncStream<Void>
    private let demandContinuation: AsyncStream<Void>.Continuation

    public init(url: RTMPURL, hub: StreamHub, channel: String, mode: Mode, logger: Logger,
                configuration: Configuration = Configuration(),
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.url = url
        self.hub = hub
        self.channel = channel
        self.mode = mode
        self.configuration = configuration
        self.eventLoopGroup = eventLoopGroup
        var logger = logger
        logger[metadataKey: "channel"] = "\(channel)"
        logger[metadataKey: "pull"] = "\(url)"
        self.logger = logger
        state = Mutex(RelayTargetStatus(direction: .pull, channel: channel, url: "\(url)"))
        (demands, demandContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    public var status: RelayTargetStatus { state.withLock { $0 } }

    fileprivate func update(_ change: (inout RelayTargetStatus) -> Void) {
        state.withLock { change(&$0) }
    }

    /// A viewer wants the channel: an on-demand pull starts (if it is not running).
    public func demand() {
        demandContinuation.yield()
    }

    private var wanted: Bool { mode == .always || hub.viewerCount(channel: channel) > 0 }

    /// Pulls until the task is cancelled.
    public func run() async {
        defer { update { $0.state = .stopped; $0.connectedSince = nil } }
        var demands = self.demands.makeAsyncIterator()
        while !Task.isCancelled {
            if mode == .onDemand {
                update { $0.state = .stopped; $0.connectedSince = nil }
                // Wait for a viewer (one may have come and gone: check there still is one).
                while !wanted {
                    guard await demands.next() != nil, !Task.isCancelled else { return }
                }
                logger.info("pull: a viewer asked for the channel")
            }
            await pullWhileWanted()
        }
    }

    /// Connects, and reconnects with backoff, while the pull is wanted.
    private func pullWhileWanted() async {
        var backoff = Backoff(initial: configuration.initialBackoff, maximum: configuration.maxBackoff,
                              healthyAfter: configuration.healthyAfter)
        while !Task.isCancelled, wanted {
            if backoff.failures > 0 { update { $0.reconnects += 1 } }
            switch await pull() {
            case .idle:
                logger.info("pull: no viewers; stopped")
                return
            case .cancelled:
                return
            case .failed(let reason, let mediaFor):
                let delay = backoff.failed(healthyFor: mediaFor)
                let reason = url.redacting(reason)
                update {
                    $0.state = .backoff
                    $0.connectedSince = nil
                    $0.lastError = reason
                    $0.lastErrorAt = Date()
                }
                logger.warning("pull failed; retrying", metadata: ["reason": "\(reason)", "in": "\(delay)"])
                let deadline = ContinuousClock.now + delay
                while ContinuousClock.now < deadline {
                    do {
                        try await Task.sleep(for: min(.milliseconds(250), deadline - .now))
                    } catch {
                        return
                    }
                    if !wanted { return }
                }
            }
        }
    }

    enum Outcome: Sendable {
        /// On demand, nobody watched for `idleTimeout`.
        case idle
        case cancelled
        /// `mediaFor`: how long media flowed before the failure (nil: none came).
        case failed(String, mediaFor: Duration?)
    }

    enum PullError: Error, CustomStringConvertible {
        case refused(ClientSession.NetStatus)
        case closed(String)
        case connectionClosed
        case setupTimeout(Duration)
        case idle

        var description: String {
            switch self {
            case .refused(let status): "remote refused: \(status.code): \(status.description)"
            case .closed(let reason): reason
            case .connectionClosed: "remote closed the connection"
            case .setupTimeout(let timeout): "remote did not start playing within \(timeout)"
            case .idle: "no viewers"
            }
        }
    }

    /// One connection: connect, handshake, play, publish locally what arrives.
    private func pull() async -> Outcome {
        update {
            $0.state = .connecting
            $0.connectedSince = nil
        }
        logger.info("pull connecting")
        let connection = PullConnection(client: self)
        defer { connection.endLocalPublish() }
        do {
            let channel = try await ClientBootstrap(group: eventLoopGroup)
                .connectTimeout(configuration.connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connect(host: url.host, port: url.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
            try await channel.executeThenClose { inbound, outbound in
                try await connection.run(inbound: inbound, outbound: outbound)
            }
            return .cancelled
        } catch PullError.idle {
            return .idle
        } catch {
            if Task.isCancelled { return .cancelled }
            return .failed("\(error)", mediaFor: connection.mediaFor)
        }
    }

    fileprivate func startLocalPublish() async throws -> Publisher {
        let publisher = try await hub.startPublishing(channel: channel, app: configuration.app, nodeID: configuration.nodeID)
        update { $0.state = .publishing; $0.connectedSince = Date() }
        logger.info("pull: media arriving; channel live")
        return publisher
    }

    fileprivate func localPublishEnded(_ reason: String) {
        update { $0.state = .connecting; $0.connectedSince = nil }
        logger.info("pull: channel ended", metadata: ["reason": "\(reason)"])
    }

    fileprivate var hasViewers: Bool { hub.viewerCount(channel: channel) > 0 }
}

/// One pull connection: the reader drives the session; a watchdog keeps time.
private final class PullConnection: Sendable {
    private struct Shared {
        var publisher: Publisher?
        var playStarted = false
        var firstMediaAt: ContinuousClock.Instant?
        var lastMediaAt: ContinuousClock.Instant?
        var lastWriteAt = ContinuousClock.now
        var bytesReceived: UInt64 = 0
    }

    private let client: RTMPPullClient
    private let shared = Mutex(Shared())

    init(client: RTMPPullClient) {
        self.client = client
    }

    var mediaFor: Duration? {
        shared.withLock { shared in
            guard let first = shared.firstMediaAt, let last = shared.lastMediaAt else { return nil }
            return last - first
        }
    }

    typealias Outbound = NIOAsyncChannelOutboundWriter<ByteBuffer>

    func run(inbound: NIOAsyncChannelInboundStream<ByteBuffer>, outbound: Outbound) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.read(inbound, outbound) }
            group.addTask { try await self.watchdog(outbound) }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// Ends the local channel, if one is live. Idempotent.
    func endLocalPublish(_ reason: String? = nil) {
        guard let publisher = shared.withLock({ $0.publisher.take() }) else { return }
        if let reason { client.localPublishEnded(reason) }
        Task { await publisher.finish() }
    }

    private func read(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, _ outbound: Outbound) async throws {
        let url = client.url
        var handshake = ClientHandshake()
        var decoder = ChunkDecoder(limits: client.configuration.chunkLimits)
        var encoder = ChunkEncoder()
        var configuration = ClientSession.Configuration(app: url.app, tcURL: url.tcURL, streamName: url.streamKey)
        configuration.mode = .play
        configuration.flashVersion = "LNX 9,0,124,2"
        var session = ClientSession(configuration: configuration)
        var media = LocalMedia()
        var buffer = ByteBuffer()
        var total: UInt64 = 0
        try await write(handshake.start(), outbound)

        for try await var incoming in inbound {
            total += UInt64(incoming.readableBytes)
            client.update { $0.bytesSent += UInt64(incoming.readableBytes) }
            buffer.writeBuffer(&incoming)
            var out = ByteBuffer()
            while handshake.state != .done, let action = try handshake.feed(&buffer) {
                switch action {
                case .send(let c2): out.writeImmutableBuffer(c2)
                case .complete: try await perform(session.start(), &media, into: &out, encoder: &encoder)
                }
            }
            if handshake.state == .done {
                while let message = try decoder.decode(&buffer) {
                    try await perform(session.receive(message), &media, into: &out, encoder: &encoder)
                }
                try await perform(session.bytesReceived(total: total), &media, into: &out, encoder: &encoder)
            }
            buffer.discardReadBytes()
            shared.withLock { $0.bytesReceived = total }
            if out.readableBytes > 0 { try await write(out, outbound) }
        }
        throw RTMPPullClient.PullError.connectionClosed
    }

    /// The stream's setup as last seen, replayed into each new local publish.
    private struct LocalMedia {
        var description: StreamDescription?
        var metadata: StreamMetadata?
    }

    private func perform(_ actions: [ClientSession.Action], _ media: inout LocalMedia, into out: inout ByteBuffer,
                         encoder: inout ChunkEncoder) async throws {
        for action in actions {
            switch action {
            case .send(let message):
                encoder.encode(message, into: &out)
            case .setOutgoingChunkSize(let size):
                encoder.setChunkSize(size)
            case .playing:
                shared.withLock { $0.playStarted = true }
                client.update { $0.state = .connecting }
            case .streamDescription(let description):
                media.description = description
                let (publisher, started) = try await publisher(media)
                if !started { publisher.setDescription(description) }
            case .metadata(let properties):
                let metadata = StreamMetadata(amf0: properties)
                media.metadata = metadata
                let (publisher, started) = try await publisher(media)
                if !started { publisher.setMetadata(metadata) }
            case .media(let packet):
                try await publisher(media).publisher.send(packet)
            case .sourceEnded:
                media = LocalMedia()
                endLocalPublish("the remote publisher stopped")
            case .failed(let status):
                throw RTMPPullClient.PullError.refused(status)
            case .close(let reason):
                throw RTMPPullClient.PullError.closed(reason)
            case .published:
                break
            }
        }
    }

    /// The local channel's publisher; `started`: it was started now, with the stream's setup as last seen.
    private func publisher(_ media: LocalMedia) async throws -> (publisher: Publisher, started: Bool) {
        let now = ContinuousClock.now
        if let publisher = shared.withLock({ shared -> Publisher? in
            shared.lastMediaAt = now
            if shared.firstMediaAt == nil { shared.firstMediaAt = now }
            return shared.publisher
        }) {
            return (publisher, false)
        }
        let publisher = try await client.startLocalPublish()
        if let description = media.description { publisher.setDescription(description) }
        if let metadata = media.metadata { publisher.setMetadata(metadata) }
        shared.withLock { $0.publisher = publisher }
        return (publisher, true)
    }

    private func write(_ buffer: ByteBuffer, _ outbound: Outbound) async throws {
        guard buffer.readableBytes > 0 else { return }
        shared.withLock { $0.lastWriteAt = .now }
        try await outbound.write(buffer)
    }

    /// Setup timeout, media timeout, viewer idleness, keep-alive.
    private func watchdog(_ outbound: Outbound) async throws {
        let configuration = client.configuration
        let started = ContinuousClock.now
        var lastViewerAt = started
        var encoder = ChunkEncoder()
        while true {
            try await Task.sleep(for: .milliseconds(250))
            let now = ContinuousClock.now
            let shared = shared.withLock { $0 }
            if !shared.playStarted, now - started >= configuration.setupTimeout {
                throw RTMPPullClient.PullError.setupTimeout(configuration.setupTimeout)
            }
            if shared.publisher != nil, let last = shared.lastMediaAt, now - last >= configuration.mediaTimeout {
                endLocalPublish("no media for \(configuration.mediaTimeout)")
            }
            if client.mode == .onDemand {
                if client.hasViewers {
                    lastViewerAt = now
                } else if now - lastViewerAt >= configuration.idleTimeout {
                    throw RTMPPullClient.PullError.idle
                }
            }
            if now - shared.lastWriteAt >= configuration.keepAliveInterval {
                var out = ByteBuffer()
                encoder.encode(ControlMessage.acknowledgement(UInt32(truncatingIfNeeded: shared.bytesReceived)), into: &out)
                try await write(out, outbound)
            }
        }
    }
}

extension Optional {
    fileprivate mutating func take() -> Wrapped? {
        defer { self = nil }
        return self
    }
}
