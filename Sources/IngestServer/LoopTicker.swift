import NIOCore
import Synchronization

/// Something a `LoopTicker` calls back on its event loop.
protocol LoopTickerClient: AnyObject {
    func tick()
}

/// One per event loop and interval: every `interval`, the clients scheduled since the last tick
/// are called, all in one turn of the loop. Merged reads and writes use it instead of a timer per
/// connection: NIO keeps timers in a heap, and thousands of them re-armed every 100 ms cost more
/// than the reads and writes they pace. It is armed only while a client waits.
final class LoopTicker: @unchecked Sendable {
    // Touched on `eventLoop` only (after creation).
    private let eventLoop: any EventLoop
    private let interval: TimeAmount
    private var waiting: [any LoopTickerClient] = []
    private var calling: [any LoopTickerClient] = []
    private var armed = false

    private struct Key: Hashable {
        var loop: ObjectIdentifier
        var interval: Int64
    }

    private static let tickers = Mutex<[Key: LoopTicker]>([:])

    /// The ticker of `eventLoop` for `interval` (event loops live as long as the process).
    static func on(_ eventLoop: any EventLoop, interval: TimeAmount) -> LoopTicker {
        let key = Key(loop: ObjectIdentifier(eventLoop as AnyObject), interval: interval.nanoseconds)
        return tickers.withLock { tickers in
            if let ticker = tickers[key] { return ticker }
            let ticker = LoopTicker(eventLoop: eventLoop, interval: interval)
            tickers[key] = ticker
            return ticker
        }
    }

    private init(eventLoop: any EventLoop, interval: TimeAmount) {
        self.eventLoop = eventLoop
        self.interval = interval
    }

    /// Calls `client.tick()` at the next tick. On the ticker's event loop only; a client schedules
    /// itself once per wait (it keeps its own flag).
    func schedule(_ client: any LoopTickerClient) {
        eventLoop.preconditionInEventLoop()
        waiting.append(client)
        guard !armed else { return }
        armed = true
        eventLoop.scheduleTask(in: interval) { self.fire() }
    }

    private func fire() {
        armed = false
        // Swap lists: a client called now may schedule itself again, for the next tick.
        swap(&waiting, &calling)
        for client in calling { client.tick() }
        calling.removeAll(keepingCapacity: true)
    }
}
