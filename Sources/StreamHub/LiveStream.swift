public import MediaCore
import Synchronization
public import struct Foundation.Date

/// One publish of one channel: its codec setup, metadata, GOP cache and consumers.
public final class LiveStream: Sendable {
    public struct GOPCacheLimits: Sendable {
        public var maxPackets: Int
        public var maxBytes: Int
        public init(maxPackets: Int = 4096, maxBytes: Int = 32 << 20) {
            self.maxPackets = maxPackets
            self.maxBytes = maxBytes
        }
    }

    /// Counters for stats pages.
    public struct Statistics: Sendable, Equatable {
        public var videoPackets = 0
        public var audioPackets = 0
        public var bytes = 0
        public var subscribers = 0
    }

    private struct State {
        var description: StreamDescription?
        var metadata: StreamMetadata?
        /// Packets from the latest video keyframe on (audio included), so a consumer starts at once.
        var gop: [MediaPacket] = []
        var gopBytes = 0
        var subscribers: [UInt64: StreamSubscription] = [:]
        var nextSubscriberID: UInt64 = 1
        var ended = false
        var statistics = Statistics()
    }

    public let channel: String
    public let app: String
    public let startedAt: Date
    private let gopCacheLimits: GOPCacheLimits
    private let state = Mutex(State())
    /// How to end the publish from outside (a revoked key, a deleted channel): set by the
    /// publisher's connection.
    private let stopHandler = Mutex<(@Sendable (String) -> Void)?>(nil)

    init(channel: String, app: String, gopCacheLimits: GOPCacheLimits) {
        self.channel = channel
        self.app = app
        self.startedAt = Date()
        self.gopCacheLimits = gopCacheLimits
    }

    /// The publisher's connection says how to end it when `requestStop` is called.
    public func onStopRequested(_ handler: @escaping @Sendable (String) -> Void) {
        stopHandler.withLock { $0 = handler }
    }

    /// Asks the publisher's connection to end the publish; false if nobody can.
    @discardableResult
    public func requestStop(reason: String) -> Bool {
        guard let handler = stopHandler.withLock({ $0 }) else { return false }
        handler(reason)
        return true
    }

    public var description: StreamDescription? { state.withLock { $0.description } }
    public var metadata: StreamMetadata? { state.withLock { $0.metadata } }
    public var statistics: Statistics {
        state.withLock { state in
            // A consumer whose task was cancelled finished its subscription without taking this
            // lock (see `StreamSubscription.next()`); it is dropped here as on the next event.
            // Same lock order as `send`: the stream's, then the subscription's.
            state.subscribers = state.subscribers.filter { !$0.value.isFinished }
            var statistics = state.statistics
            statistics.subscribers = state.subscribers.count
            return statistics
        }
    }

    /// Subscribes a consumer. It first receives the metadata, the codec description and
    /// the cached GOP, then live events. Returns a finished subscription if the stream ended.
    ///
    /// Metadata comes before the codec setup as a publisher sends them (`@setDataFrame`, then the
    /// sequence headers) and as nginx-rtmp replays them to a player: `onMetaData`, then the
    /// sequence headers, then media.
    public func subscribe(limits: StreamSubscription.Limits = .init()) -> StreamSubscription {
        state.withLock { state in
            let id = state.nextSubscriberID
            state.nextSubscriberID += 1
            let subscription = StreamSubscription(id: id, limits: limits) { [weak self] id in
                self?.unsubscribe(id)
            }
            if state.ended {
                subscription.finish()
                return subscription
            }
            if let metadata = state.metadata { subscription.enqueue(.metadata(metadata)) }
            if let description = state.description { subscription.enqueue(.description(description)) }
            for packet in state.gop { subscription.enqueue(.packet(packet)) }
            state.subscribers[id] = subscription
            return subscription
        }
    }

    private func unsubscribe(_ id: UInt64) {
        _ = state.withLock { $0.subscribers.removeValue(forKey: id) }
    }

    func send(_ event: StreamEvent) {
        // Enqueue under the lock so a concurrent subscribe sees either the cached GOP
        // with this packet or receives it live, never both or neither.
        state.withLock { state in
            guard !state.ended else { return }
            switch event {
            case .description(let description):
                state.description = description
            case .metadata(let metadata):
                state.metadata = metadata
            case .packet(let packet):
                cache(packet, in: &state)
            }
            var finished: [UInt64] = []
            for (id, subscription) in state.subscribers where !subscription.enqueue(event) { finished.append(id) }
            for id in finished { state.subscribers[id] = nil }
        }
    }

    private func cache(_ packet: MediaPacket, in state: inout State) {
        state.statistics.bytes += packet.data.count
        if packet.kind == .video {
            state.statistics.videoPackets += 1
        } else {
            state.statistics.audioPackets += 1
        }
        if packet.kind == .video, packet.isKeyframe {
            state.gop.removeAll(keepingCapacity: true)
            state.gopBytes = 0
        } else if state.description?.video != nil, state.gop.isEmpty {
            // Until the first keyframe there is nothing a new consumer could start from.
            return
        }
        if state.description?.video == nil, state.gop.count >= 64 {
            // Audio-only: keep a short tail only.
            state.gopBytes -= state.gop.removeFirst().data.count
        }
        guard state.gop.count < gopCacheLimits.maxPackets, state.gopBytes + packet.data.count <= gopCacheLimits.maxBytes
        else {
            // An overlong GOP: stop caching until the next keyframe rather than grow without bound.
            state.gop.removeAll()
            state.gopBytes = 0
            return
        }
        state.gop.append(packet)
        state.gopBytes += packet.data.count
    }

    func end() {
        let subscribers = state.withLock { state in
            state.ended = true
            state.gop = []
            defer { state.subscribers = [:] }
            return Array(state.subscribers.values)
        }
        for subscription in subscribers { subscription.finish() }
    }
}
