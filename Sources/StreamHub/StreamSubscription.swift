public import MediaCore
import Synchronization

/// What a consumer of a live stream receives, in order.
public enum StreamEvent: Sendable, Equatable {
    case description(StreamDescription)
    case metadata(StreamMetadata)
    case packet(MediaPacket)
}

/// One consumer's bounded queue on a live stream.
///
/// The publisher never waits on a consumer: when the queue is full the
/// consumer loses what is queued and skips ahead to the next video keyframe
/// (audio-only streams just drop the queue), and `droppedPackets` counts it.
/// The sequence ends when the publisher stops or the subscription is cancelled.
public final class StreamSubscription: AsyncSequence, Sendable {
    public typealias Element = StreamEvent

    public struct Limits: Sendable {
        public var maxPackets: Int
        public var maxBytes: Int
        public init(maxPackets: Int = 2048, maxBytes: Int = 64 << 20) {
            self.maxPackets = maxPackets
            self.maxBytes = maxBytes
        }
    }

    private struct State {
        var queue: [StreamEvent] = []
        var head = 0
        var queuedBytes = 0
        var finished = false
        var waitingForKeyframe = false
        var hasVideo = false
        var droppedPackets = 0
        /// The newest decode time handed to this consumer, queued or not: the live edge it trails.
        var newestDTS: Int64?
        var waiter: CheckedContinuation<StreamEvent?, Never>?
        /// Push mode: told when events arrive on an empty queue, or the stream ends.
        var onReadable: (@Sendable () -> Void)?
        /// The handler was called and nobody has polled since: no need to call it again.
        var readableSignalled = false

        var count: Int { queue.count - head }

        mutating func popFirst() -> StreamEvent? {
            guard head < queue.count else { return nil }
            let event = queue[head]
            head += 1
            if case .packet(let packet) = event { queuedBytes -= packet.data.count }
            if head > 64, head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            return event
        }
    }

    public let id: UInt64
    private let limits: Limits
    private let state = Mutex(State())
    private let onCancel: @Sendable (UInt64) -> Void

    init(id: UInt64, limits: Limits, onCancel: @escaping @Sendable (UInt64) -> Void) {
        self.id = id
        self.limits = limits
        self.onCancel = onCancel
    }

    /// Packets this consumer lost because it fell behind.
    public var droppedPackets: Int { state.withLock { $0.droppedPackets } }

    /// The newest decode time (ms) the publisher has sent since this subscription began.
    public var newestDTS: Int64? { state.withLock { $0.newestDTS } }

    /// A consumer is suspended in `next()` on an empty queue.
    var isWaiting: Bool { state.withLock { $0.waiter != nil } }

    /// Stops receiving; the sequence ends.
    public func cancel() {
        finish()
        onCancel(id)
    }

    /// Returns false once the subscription is finished: the stream then drops it.
    @discardableResult
    func enqueue(_ event: StreamEvent) -> Bool {
        var readable: (@Sendable () -> Void)?
        var open = true
        let waiter: CheckedContinuation<StreamEvent?, Never>? = state.withLock { state in
            guard !state.finished else {
                open = false
                return nil
            }
            if case .packet(let packet) = event {
                if packet.kind == .video { state.hasVideo = true }
                state.newestDTS = Swift.max(state.newestDTS ?? packet.dts, packet.dts)
                if state.waitingForKeyframe {
                    guard packet.kind == .video, packet.isKeyframe else {
                        state.droppedPackets += 1
                        return nil
                    }
                    state.waitingForKeyframe = false
                }
                if state.count >= limits.maxPackets || state.queuedBytes + packet.data.count > limits.maxBytes {
                    // Drop queued packets (keep descriptions and metadata) and resync on a keyframe.
                    let kept = state.queue[state.head...].filter { if case .packet = $0 { false } else { true } }
                    state.droppedPackets += state.count - kept.count
                    state.queue = kept
                    state.head = 0
                    state.queuedBytes = 0
                    if state.hasVideo, !(packet.kind == .video && packet.isKeyframe) {
                        state.waitingForKeyframe = true
                        state.droppedPackets += 1
                        return nil
                    }
                }
            }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            if case .packet(let packet) = event { state.queuedBytes += packet.data.count }
            state.queue.append(event)
            if let handler = state.onReadable, !state.readableSignalled {
                state.readableSignalled = true
                readable = handler
            }
            return nil
        }
        waiter?.resume(returning: event)
        readable?()
        return open
    }

    func finish() {
        var readable: (@Sendable () -> Void)?
        let waiter = state.withLock { state -> CheckedContinuation<StreamEvent?, Never>? in
            state.finished = true
            readable = state.onReadable
            state.onReadable = nil
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
        readable?()
    }

    // MARK: Push mode (a consumer on an event loop, without a task per consumer)

    /// Calls `handler` (on the publisher's thread: keep it short, e.g. schedule a drain) whenever
    /// events arrive and the consumer has not polled since the last call, and when the stream ends.
    /// Use `poll` to take events; do not mix with `next()`.
    public func setReadableHandler(_ handler: @escaping @Sendable () -> Void) {
        let call = state.withLock { state -> Bool in
            state.onReadable = handler
            state.readableSignalled = state.count > 0 || state.finished
            return state.readableSignalled
        }
        if call { handler() }
    }

    public enum Poll: Sendable, Equatable {
        case events([StreamEvent])
        /// Nothing queued now; the readable handler will be called when there is.
        case empty
        /// The stream ended and everything queued was taken.
        case ended
    }

    /// Takes up to `limit` queued events without waiting.
    public func poll(limit: Int = 256) -> Poll {
        state.withLock { state in
            state.readableSignalled = false
            var batch: [StreamEvent] = []
            while batch.count < limit, let event = state.popFirst() { batch.append(event) }
            if !batch.isEmpty {
                // More left: the consumer will poll again without being told.
                if state.count > 0 { state.readableSignalled = true }
                return .events(batch)
            }
            return state.finished ? .ended : .empty
        }
    }

    /// Ended: by the stream, by `cancel()`, or by its consumer's task being cancelled.
    var isFinished: Bool { state.withLock { $0.finished } }

    /// Events waiting to be taken.
    public var queuedCount: Int { state.withLock { $0.count } }

    /// The next event, or nil when the stream ended (queued events are delivered first).
    public func next() async -> StreamEvent? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<StreamEvent?, Never>) in
                let immediate: StreamEvent?? = state.withLock { state in
                    if let event = state.popFirst() { return .some(event) }
                    if state.finished || Task.isCancelled { return .some(nil) }
                    precondition(state.waiter == nil, "StreamSubscription has one consumer; next() called concurrently")
                    state.waiter = continuation
                    return .none
                }
                if let immediate { continuation.resume(returning: immediate) }
            }
        } onCancel: {
            // Not `cancel()`: this runs under the task's status lock, and the stream may be holding
            // its own lock while it resumes this very task (`enqueue`); taking the stream's lock here
            // would deadlock the two. The stream drops a finished subscription on its next event.
            finish()
        }
    }

    /// Everything queued (at least one event, at most `limit`), or nil when the stream ended:
    /// a consumer that writes to a socket sends a batch in one write.
    public func nextBatch(limit: Int = 256) async -> [StreamEvent]? {
        guard let first = await next() else { return nil }
        return state.withLock { state in
            var batch = [first]
            while batch.count < limit, let event = state.popFirst() { batch.append(event) }
            return batch
        }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let subscription: StreamSubscription
        public mutating func next() async -> StreamEvent? { await subscription.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(subscription: self) }
}
