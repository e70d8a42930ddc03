import Logging
import MediaCore
import NIOCore
import NIOPosix
import Packaging
import ServiceLifecycle
import StreamHub
import Synchronization

/// Feeds every live stream into its channel's HLS packager, keeps a channel's
/// playlist open for `grace` after the publisher leaves, then ends it.
final class HLSLivePackager: Service, Sendable {
    private let hub: StreamHub
    private let store: SegmentStore
    private let configuration: HLSConfiguration
    private let grace: Duration
    private let logger: Logger
    private let workers = Mutex<[String: HLSChannelWorker]>([:])

    init(hub: StreamHub, store: SegmentStore, configuration: HLSConfiguration, grace: Duration, logger: Logger) {
        self.hub = hub
        self.store = store
        self.configuration = configuration
        self.grace = grace
        self.logger = logger
        hub.observe { [self] stream in
            // Subscribe now, inside the hub's start, so not one packet is missed.
            let subscription = stream.subscribe(limits: .init(maxPackets: 8192, maxBytes: 256 << 20))
            // Under the workers lock, so a retiring worker cannot be removed between lookup and start.
            workers.withLock { workers in
                let worker = workers[stream.channel] ?? HLSChannelWorker(
                    channel: HLSChannel(name: stream.channel, configuration: configuration, store: store, logger: logger),
                    grace: grace, retention: retention, logger: logger) { [weak self] worker, generation in
                        await self?.retire(worker, generation: generation)
                    }
                workers[stream.channel] = worker
                worker.start(subscription)
            }
        }
    }

    /// How long an ended playlist stays served (players finishing it), before the channel is freed.
    private var retention: Duration {
        .milliseconds(Int64(configuration.segmentDuration * Double(configuration.windowLength) * 1000)) + .seconds(60)
    }

    private func retire(_ worker: HLSChannelWorker, generation: Int) async {
        let retired = workers.withLock { workers in
            guard workers[worker.name] === worker, worker.isIdle(since: generation) else { return false }
            workers[worker.name] = nil
            return true
        }
        if retired { worker.retire() }
    }

    func run() async throws {
        do {
            try await gracefulShutdown()
        } catch is CancellationError {
            // Cancelled instead of shut down gracefully: end the playlists all the same.
        }
        // Publishers are gone (RTMP stops first); end every playlist now rather than after the grace.
        for worker in workers.withLock({ Array($0.values) }) {
            worker.shutdown()
        }
    }
}

/// One channel's packaging. Media is muxed where it arrives: on the publisher's event loop, right
/// after the read that brought it (one scheduled drain per batch; no task and no thread hop per
/// batch, which cost as much as the muxing). A republish waits for the previous publish to drain:
/// publishes queue, and the first is packaged to its end before the next begins.
final class HLSChannelWorker: Sendable {
    private struct Publish {
        let subscription: StreamSubscription
        let generation: Int
    }

    private struct State {
        let channel: HLSChannel
        /// In order; the first is being packaged, the rest wait for it to end.
        var publishes: [Publish] = []
        /// `beginPublish` was called for the first publish.
        var began = false
        var graceTimer: Task<Void, Never>?
        /// Counts publishes; a grace timer only ends the playlist if no publish came after its own.
        var generation = 0
        var shuttingDown = false
    }

    let name: String
    private let grace: Duration
    private let retention: Duration
    private let logger: Logger
    private let onEnded: @Sendable (HLSChannelWorker, Int) async -> Void
    private let state: Mutex<State>

    init(channel: sending HLSChannel, grace: Duration, retention: Duration, logger: Logger,
         onEnded: @escaping @Sendable (HLSChannelWorker, Int) async -> Void) {
        self.name = channel.name
        self.grace = grace
        self.retention = retention
        self.logger = logger
        self.onEnded = onEnded
        self.state = Mutex(State(channel: channel))
    }

    /// No publish started after `generation`.
    func isIdle(since generation: Int) -> Bool {
        state.withLock { $0.generation == generation && !$0.shuttingDown }
    }

    func retire() {
        state.withLock { $0.channel.retire() }
    }

    func start(_ subscription: StreamSubscription) {
        state.withLock { state in
            state.graceTimer?.cancel()
            state.graceTimer = nil
            state.generation += 1
            state.publishes.append(Publish(subscription: subscription, generation: state.generation))
        }
        subscription.setReadableHandler { [weak self] in self?.readable() }
    }

    /// Called by the publisher's thread (inside its stream's send): the drain runs after the
    /// current read on that event loop, batching whatever the read delivered.
    private func readable() {
        if let loop = MultiThreadedEventLoopGroup.currentEventLoop {
            loop.execute { [self] in drain() }
        } else {
            drain()
        }
    }

    /// Packages everything queued, publish after publish.
    private func drain() {
        let failures = state.withLock { state -> [(String, any Error)] in
            var failures: [(String, any Error)] = []
            while let publish = state.publishes.first {
                if !state.began {
                    state.channel.beginPublish()
                    state.began = true
                }
                switch publish.subscription.poll() {
                case .events(let events):
                    for event in events {
                        do {
                            switch event {
                            case .description(let description): try state.channel.setDescription(description)
                            case .packet(let packet): try state.channel.write(packet)
                            case .metadata: break
                            }
                        } catch {
                            failures.append(("HLS packaging failed; segment dropped", error))
                            state.channel.abandonSegment()
                        }
                    }
                case .empty:
                    return failures
                case .ended:
                    do {
                        try state.channel.endPublish()
                    } catch {
                        failures.append(("HLS final segment failed", error))
                    }
                    state.publishes.removeFirst()
                    state.began = false
                    if state.publishes.isEmpty, !state.shuttingDown {
                        state.graceTimer = graceTimer(after: publish.generation)
                    }
                }
            }
            return failures
        }
        for (message, error) in failures {
            logger.error("\(message)", metadata: ["channel": "\(name)", "error": "\(error)"])
        }
    }

    /// Ends the playlist after the grace, unless another publish started meanwhile.
    private func graceTimer(after generation: Int) -> Task<Void, Never> {
        Task { [self, grace, retention] in
            do {
                try await Task.sleep(for: grace)
            } catch {
                return
            }
            let ended = state.withLock { state in
                // Checked where the playlist changes, so a publish starting now cannot be ended.
                guard state.generation == generation else { return false }
                state.channel.endPlaylist()
                return true
            }
            guard ended else { return }
            do {
                try await Task.sleep(for: retention)
            } catch {
                return
            }
            await onEnded(self, generation)
        }
    }

    func shutdown() {
        let subscriptions = state.withLock { state in
            state.shuttingDown = true
            state.graceTimer?.cancel()
            return state.publishes.map(\.subscription)
        }
        for subscription in subscriptions { subscription.cancel() }
        // Their readable handlers may have deferred the drain to an event loop: drain here too.
        drain()
        state.withLock { $0.channel.endPlaylist() }
    }
}
