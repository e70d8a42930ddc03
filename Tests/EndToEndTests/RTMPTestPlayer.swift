import Foundation
import NIOCore
import NIOPosix
import RTMP
import Synchronization

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
        try await connection.setOption(.autoRead, value: false)

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
