public import MediaCore
public import Logging
import Synchronization

/// The live streams of this process, one per channel, and their consumers.
///
/// A publisher gets a `Publisher` handle for its channel; every consumer
/// (HLS packager, RTMP players, recorders) subscribes with its own bounded
/// queue. Observers registered at setup hear when a channel goes live, before
/// its first packet, so a packager that subscribes then misses nothing.
public final class StreamHub: Sendable {
    public enum HubError: Error, Equatable, Sendable, CustomStringConvertible {
        case alreadyLive(channel: String)
        /// Another node of the deployment publishes the channel (the registry's lease).
        case liveElsewhere(channel: String, node: String)

        public var description: String {
            switch self {
            case .alreadyLive(let channel): "channel \(channel) is already being published"
            case .liveElsewhere(let channel, let node): "channel \(channel) is already being published on node \(node)"
            }
        }
    }

    public typealias Observer = @Sendable (LiveStream) -> Void
    /// Told the name of a channel a viewer wants while it is not live (an on-demand pull starts it).
    public typealias DemandHandler = @Sendable (String) -> Void

    private struct State {
        var streams: [String: LiveStream] = [:]
        /// Channels whose publish waits for the registry's claim.
        var claiming: Set<String> = []
        var observers: [Observer] = []
        /// Consumers waiting for a channel to go live, by channel and waiter id.
        var waiters: [String: [UInt64: CheckedContinuation<LiveStream?, Never>]] = [:]
        var nextWaiterID: UInt64 = 0
        var demandHandlers: [DemandHandler] = []
        /// Viewers (RTMP players) per channel, live or waiting; packagers and relays are not viewers.
        var viewers: [String: Int] = [:]
    }

    private let state = Mutex(State())
    public let registry: any Registry
    public let gopCacheLimits: LiveStream.GOPCacheLimits
    private let logger: Logger

    public init(registry: any Registry = MemoryRegistry(), gopCacheLimits: LiveStream.GOPCacheLimits = .init(),
                logger: Logger = Logger(label: "estuary.hub")) {
        self.registry = registry
        self.gopCacheLimits = gopCacheLimits
        self.logger = logger
    }

    /// Calls `observer` with every stream that starts from now on.
    public func observe(_ observer: @escaping Observer) {
        state.withLock { $0.observers.append(observer) }
    }

    /// Calls `handler` whenever a viewer arrives on a channel that is not live.
    public func onDemand(_ handler: @escaping DemandHandler) {
        state.withLock { $0.demandHandlers.append(handler) }
    }

    /// Counts a viewer of `channel` (live or not yet) until `Viewer.leave()`; when the channel is
    /// not live, the demand handlers hear of it.
    public func addViewer(channel: String) -> Viewer {
        let handlers = state.withLock { state -> [DemandHandler] in
            state.viewers[channel, default: 0] += 1
            return state.streams[channel] == nil ? state.demandHandlers : []
        }
        for handler in handlers { handler(channel) }
        return Viewer { [weak self] in
            self?.state.withLock { state in
                let count = (state.viewers[channel] ?? 1) - 1
                state.viewers[channel] = count > 0 ? count : nil
            }
        }
    }

    /// Viewers of `channel` now.
    public func viewerCount(channel: String) -> Int {
        state.withLock { $0.viewers[channel] ?? 0 }
    }

    /// Claims `channel` for a publisher; fails when it is already live here or, by the registry's
    /// lease, on another node.
    public func startPublishing(channel: String, app: String, nodeID: String = "local") async throws(HubError) -> Publisher {
        try state.withLock { state throws(HubError) in
            guard state.streams[channel] == nil, !state.claiming.contains(channel) else { throw .alreadyLive(channel: channel) }
            state.claiming.insert(channel)
        }
        let stream = LiveStream(channel: channel, app: app, gopCacheLimits: gopCacheLimits)
        do {
            try await registry.streamStarted(ActiveStream(channel: channel, app: app, nodeID: nodeID,
                                                          startedAt: stream.startedAt))
        } catch RegistryError.channelTaken(_, let node) {
            _ = state.withLock { $0.claiming.remove(channel) }
            throw .liveElsewhere(channel: channel, node: node)
        } catch {
            // The registry is bookkeeping: a failure there must not take the stream down.
            logger.error("registry did not record stream start", metadata: ["channel": "\(channel)", "error": "\(error)"])
        }
        let (observers, waiters) = state.withLock { state in
            state.claiming.remove(channel)
            state.streams[channel] = stream
            return (state.observers, state.waiters.removeValue(forKey: channel) ?? [:])
        }
        for observer in observers { observer(stream) }
        for waiter in waiters.values { waiter.resume(returning: stream) }
        return Publisher(stream: stream) { [weak self] in await self?.ended(stream) }
    }

    /// The live stream on `channel`, now or when it starts; nil if the task is cancelled first.
    public func waitForStream(channel: String) async -> LiveStream? {
        let id = state.withLock { state in
            state.nextWaiterID += 1
            return state.nextWaiterID
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<LiveStream?, Never>) in
                let ready: LiveStream?? = state.withLock { state in
                    if let stream = state.streams[channel] { return .some(stream) }
                    if Task.isCancelled { return .some(nil) }
                    state.waiters[channel, default: [:]][id] = continuation
                    return .none
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state in
                let waiter = state.waiters[channel]?.removeValue(forKey: id)
                if state.waiters[channel]?.isEmpty == true { state.waiters[channel] = nil }
                return waiter
            }
            waiter?.resume(returning: nil)
        }
    }

    /// The live stream on `channel`, if any.
    public func stream(channel: String) -> LiveStream? {
        state.withLock { $0.streams[channel] }
    }

    /// Ends the publish on `channel` (its key was revoked, say); false when it is not live here.
    @discardableResult
    public func stopPublishing(channel: String, reason: String) -> Bool {
        stream(channel: channel)?.requestStop(reason: reason) ?? false
    }

    public var liveChannels: [String] {
        state.withLock { Array($0.streams.keys) }
    }

    private func ended(_ stream: LiveStream) async {
        let removed = state.withLock { state -> Bool in
            guard state.streams[stream.channel] === stream else { return false }
            state.streams[stream.channel] = nil
            return true
        }
        stream.end()
        guard removed else { return }
        do {
            try await registry.streamEnded(channel: stream.channel)
        } catch {
            logger.error("registry did not record stream end", metadata: ["channel": "\(stream.channel)", "error": "\(error)"])
        }
    }
}

/// One viewer of a channel, counted until `leave()` (or until it is released).
public final class Viewer: Sendable {
    private let onLeave: @Sendable () -> Void
    private let left = Atomic(false)

    init(onLeave: @escaping @Sendable () -> Void) {
        self.onLeave = onLeave
    }

    /// Stops counting this viewer. Idempotent.
    public func leave() {
        guard !left.exchange(true, ordering: .acquiringAndReleasing) else { return }
        onLeave()
    }

    deinit { leave() }
}

/// The publisher's handle on its live stream. Call `finish()` when publishing stops.
public final class Publisher: Sendable {
    public let stream: LiveStream
    private let onFinish: @Sendable () async -> Void
    private let finished = Atomic(false)

    init(stream: LiveStream, onFinish: @escaping @Sendable () async -> Void) {
        self.stream = stream
        self.onFinish = onFinish
    }

    public func setDescription(_ description: StreamDescription) { stream.send(.description(description)) }
    public func setMetadata(_ metadata: StreamMetadata) { stream.send(.metadata(metadata)) }
    public func send(_ packet: MediaPacket) { stream.send(.packet(packet)) }

    /// Ends the stream for every consumer and frees the channel. Idempotent.
    public func finish() async {
        guard !finished.exchange(true, ordering: .acquiringAndReleasing) else { return }
        await onFinish()
    }
}
