import NIOCore
import NIOPosix
import RTMP
import Synchronization

/// An RTMP server built on our own protocol code that accepts one publish and then never reads
/// again, with a tiny receive buffer: the slowest upstream there is.
final class StalledUpstream: Sendable {
    let port: Int
    private let channel: any Channel
    private let publishes = Atomic(0)

    var publishCount: Int { publishes.load(ordering: .relaxed) }

    private init(port: Int, channel: any Channel) {
        self.port = port
        self.channel = channel
    }

    static func start() async throws -> StalledUpstream {
        let box = Mutex<StalledUpstream?>(nil)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.socketOption(.so_rcvbuf), value: 4096)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Handler { box.withLock { $0 }?.publishes.add(1, ordering: .relaxed) })
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let upstream = StalledUpstream(port: channel.localAddress?.port ?? 0, channel: channel)
        box.withLock { $0 = upstream }
        return upstream
    }

    func url(_ key: String) -> String { "rtmp://127.0.0.1:\(port)/live/\(key)" }

    func stop() async throws { try await channel.close() }

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        private var handshake = ServerHandshake()
        private var decoder = ChunkDecoder()
        private var encoder = ChunkEncoder()
        private var session = ServerSession()
        private var buffer = ByteBuffer()
        private var stalled = false
        private let published: @Sendable () -> Void

        init(published: @escaping @Sendable () -> Void) {
            self.published = published
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard !stalled else { return }
            var incoming = unwrapInboundIn(data)
            buffer.writeBuffer(&incoming)
            do {
                while handshake.state != .done {
                    guard let action = try handshake.feed(&buffer) else { return }
                    if case .send(let reply) = action { context.writeAndFlush(wrapOutboundOut(reply), promise: nil) }
                }
                while !stalled, let message = try decoder.decode(&buffer) {
                    perform(session.receive(message), context: context)
                }
            } catch {
                context.close(promise: nil)
            }
        }

        private func perform(_ actions: [ServerSession.Action], context: ChannelHandlerContext) {
            for action in actions {
                switch action {
                case .send(let message):
                    var out = ByteBuffer()
                    encoder.encode(message, into: &out)
                    context.writeAndFlush(wrapOutboundOut(out), promise: nil)
                case .setOutgoingChunkSize(let size):
                    encoder.setChunkSize(size)
                case .authorizePublish:
                    perform(session.publishAllowed(channel: "stalled"), context: context)
                    // Publish.Start is on its way: from now on, read nothing.
                    stalled = true
                    published()
                    context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
                    return
                default:
                    break
                }
            }
        }
    }
}
