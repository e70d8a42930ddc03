public import Logging
public import NIOCore
public import NIOPosix
public import RTMP
public import ServiceLifecycle
public import StreamHub
import Synchronization

/// The RTMP listener as a service: binds, accepts publishers, and on graceful
/// shutdown stops accepting and closes every connection (ending their streams).
public final class RTMPServer: Service, Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        public var handshakeTimeout: TimeAmount
        /// From the end of the handshake to a publish or play being accepted.
        public var sessionSetupTimeout: TimeAmount
        public var idleTimeout: TimeAmount
        /// Connections beyond this are closed at once.
        public var maxConnections: Int
        public var chunkLimits: ChunkDecoder.Limits
        public var session: ServerSession.Configuration
        public var nodeID: String
        /// Each RTMP player's queue; a player that falls this far behind skips to the next keyframe.
        public var playerQueue: StreamSubscription.Limits
        /// A player this far behind live (or with a write stuck this long) is disconnected.
        public var playerMaxLag: TimeAmount
        /// SO_SNDBUF for each connection, as nginx's `listen … sndbuf=`; nil leaves the kernel's autotuning.
        public var sendBufferSize: Int?
        /// Merged read: a publisher's socket is read at most this often (zero: as data arrives).
        public var mergedRead: TimeAmount
        /// How long into a publish merged reading begins (its first segment is not held back).
        public var mergedReadStartsAfter: TimeAmount = .seconds(5)
        /// Merged write: media is written to a player at most this often (zero: as it arrives).
        public var mergedWrite: TimeAmount

        public init(host: String = "0.0.0.0", port: Int = 1935, handshakeTimeout: TimeAmount = .seconds(10),
                    sessionSetupTimeout: TimeAmount = .seconds(30), idleTimeout: TimeAmount = .seconds(30),
                    maxConnections: Int = 2000, chunkLimits: ChunkDecoder.Limits = .init(),
                    session: ServerSession.Configuration = .init(), nodeID: String = "local",
                    playerQueue: StreamSubscription.Limits = .init(maxPackets: 1024, maxBytes: 16 << 20),
                    playerMaxLag: TimeAmount = .seconds(15), sendBufferSize: Int? = nil, mergedRead: TimeAmount = .zero,
                    mergedWrite: TimeAmount = .zero) {
            self.mergedRead = mergedRead
            self.mergedWrite = mergedWrite
            self.host = host
            self.port = port
            self.handshakeTimeout = handshakeTimeout
            self.sessionSetupTimeout = sessionSetupTimeout
            self.idleTimeout = idleTimeout
            self.maxConnections = maxConnections
            self.chunkLimits = chunkLimits
            self.session = session
            self.nodeID = nodeID
            self.playerQueue = playerQueue
            self.playerMaxLag = playerMaxLag
            self.sendBufferSize = sendBufferSize
        }
    }

    private let configuration: Configuration
    private let hub: StreamHub
    private let authorizer: any PublishAuthorizer
    private let playAuthorizer: any PlayAuthorizer
    private let observer: (any RTMPSessionObserver)?
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    private let onListening: @Sendable (Int) -> Void
    private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])
    private let nextConnectionID = Atomic<UInt64>(1)

    public init(configuration: Configuration, hub: StreamHub, authorizer: any PublishAuthorizer,
                playAuthorizer: any PlayAuthorizer = OpenPlayAuthorizer(),
                observer: (any RTMPSessionObserver)? = nil,
                eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                logger: Logger, onListening: @escaping @Sendable (Int) -> Void = { _ in }) {
        self.configuration = configuration
        self.hub = hub
        self.authorizer = authorizer
        self.playAuthorizer = playAuthorizer
        self.observer = observer
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        var bootstrap = ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        if let size = configuration.sendBufferSize {
            bootstrap = bootstrap.childChannelOption(.socketOption(.so_sndbuf), value: SocketOptionValue(size))
        }
        let serverChannel = try await bootstrap
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture { try self.initialize(channel) }
            }
            .bind(host: configuration.host, port: configuration.port).get()
        let port = serverChannel.localAddress?.port ?? configuration.port
        logger.info("RTMP listening", metadata: ["address": "rtmp://\(configuration.host):\(port)"])
        onListening(port)

        // Cancellation too (another service failed): a listener left open would keep the process alive.
        try await withTaskCancellationOrGracefulShutdownHandler {
            try await serverChannel.closeFuture.get()
        } onCancelOrGracefulShutdown: { [self] in
            logger.info("RTMP stopping: no new connections, closing open ones")
            serverChannel.close(promise: nil)
            for channel in connections.withLock({ Array($0.values) }) { channel.close(promise: nil) }
        }
    }

    private func initialize(_ channel: any Channel) throws {
        let id = nextConnectionID.wrappingAdd(1, ordering: .relaxed).oldValue
        var connectionLogger = logger
        connectionLogger[metadataKey: "conn"] = "\(id)"
        let key = ObjectIdentifier(channel)
        let admitted = connections.withLock { connections in
            guard connections.count < configuration.maxConnections else { return false }
            connections[key] = channel
            return true
        }
        guard admitted else {
            connectionLogger.warning("closing connection", metadata: [
                "reason": "connection limit of \(configuration.maxConnections) reached",
            ])
            channel.close(promise: nil)
            return
        }
        channel.closeFuture.whenComplete { [self] _ in _ = connections.withLock { $0.removeValue(forKey: key) } }
        let readPacer = ReadPacer(interval: configuration.mergedRead)
        // Bytes sent are counted only for the notify hooks' observer.
        let bytesSent = observer.map { _ in OutboundByteCounter() }
        if let bytesSent { try channel.pipeline.syncOperations.addHandler(bytesSent) }
        try channel.pipeline.syncOperations.addHandlers([
            readPacer,
            IdleStateHandler(readTimeout: configuration.idleTimeout),
            RTMPConnectionHandler(configuration: configuration, hub: hub, authorizer: authorizer,
                                  playAuthorizer: playAuthorizer, observer: observer, bytesSent: bytesSent,
                                  readPacer: readPacer, connectionID: id, logger: connectionLogger),
        ])
    }
}
