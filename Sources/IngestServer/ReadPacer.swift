import NIOCore
import Synchronization

/// Merged read, as SRS calls it: once a connection streams media in, its socket is read at most
/// once per `interval`. Each read then takes every message that arrived meanwhile, instead of one
/// wakeup, one `read` and one pass through the pipeline per message — the cost that dominates
/// ingest at typical bitrates. The price is up to `interval` of added ingest latency; bytes wait
/// in the kernel's receive buffer, so nothing is lost and TCP flow control still applies.
///
/// Reads are released by one ticker per event loop (not a timer per connection): every
/// publisher on a loop is read in the same turn, one `epoll_wait` for all of them.
final class ReadPacer: ChannelDuplexHandler, RemovableChannelHandler, LoopTickerClient {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = Any
    typealias OutboundOut = Any

    /// A burst this large (NIO reads at most 4 × 64 KiB per wakeup) likely left more in the socket:
    /// the next read goes at once, so pacing never caps a high-bitrate publisher (at 100 ms ticks,
    /// pacing alone would top out near 20 Mbit/s).
    static let fullBurst = 128 << 10

    private let interval: TimeAmount
    private var ticker: LoopTicker?
    private var context: ChannelHandlerContext?
    /// A read was asked for and waits for the next tick.
    private(set) var readDeferred = false
    /// Bytes read since the last read was let through.
    private var burstBytes = 0

    init(interval: TimeAmount) {
        self.interval = interval
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        ticker = nil
    }

    /// From now on reads wait for the loop's next tick (a no-op for a zero interval).
    func startPacing() {
        guard interval > .zero, ticker == nil, let context else { return }
        ticker = LoopTicker.on(context.eventLoop, interval: interval)
    }

    /// Paces from `delay` on: the first seconds of a publish are read as they arrive, so its first
    /// HLS segment and first players are not held back (start-up time is what viewers notice).
    func startPacing(after delay: TimeAmount) {
        guard interval > .zero, let context else { return }
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: delay) { bound.value.startPacing() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        burstBytes += unwrapInboundIn(data).readableBytes
        context.fireChannelRead(data)
    }

    func read(context: ChannelHandlerContext) {
        guard let ticker, burstBytes < Self.fullBurst else {
            burstBytes = 0
            return context.read()
        }
        guard !readDeferred else { return }
        readDeferred = true
        ticker.schedule(self)
    }

    /// The ticker's turn: the deferred read goes out.
    func tick() {
        guard readDeferred else { return }
        readDeferred = false
        burstBytes = 0
        context?.read()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        readDeferred = false
        context.close(mode: mode, promise: promise)
    }
}

