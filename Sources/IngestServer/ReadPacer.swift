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
final class ReadPacer: ChannelOutboundHandler, RemovableChannelHandler, LoopTickerClient {
    typealias OutboundIn = Any
    typealias OutboundOut = Any

    private let interval: TimeAmount
    private var ticker: LoopTicker?
    private var context: ChannelHandlerContext?
    /// A read was asked for and waits for the next tick.
    private(set) var readDeferred = false

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

    func read(context: ChannelHandlerContext) {
        guard let ticker else { return context.read() }
        guard !readDeferred else { return }
        readDeferred = true
        ticker.schedule(self)
    }

    /// The ticker's turn: the deferred read goes out.
    func tick() {
        guard readDeferred else { return }
        readDeferred = false
        context?.read()
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        readDeferred = false
        context.close(mode: mode, promise: promise)
    }
}

