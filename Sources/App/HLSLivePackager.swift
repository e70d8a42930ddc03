import Logging
import MediaCore
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
                    channel: HLSChannelBox(name: stream.channel, configuration: configuration, store: store, logger: logger),
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
        if retired { await worker.retire() }
    }

    func run() async throws {
        do {
            try await gracefulShutdown()
        } catch is CancellationError {
            // Cancelled instead of shut down gracefully: end the playlists all the same.
        }
        // Publishers are gone (RTMP stops first); end every playlist now rather than after the grace.
        for worker in workers.withLock({ Array($0.values) }) {
            await worker.shutdown()
        }
    }
}

/// One channel's packaging, serialized: a republish waits for the previous publish to drain.
final class HLSChannelWorker: Sendable {
    private struct State {
        var task: Task<Void, Never>?
        var subscription: StreamSubscription?
        var graceTimer: Task<Void, Never>?
        /// Counts publishes; a grace timer only ends the playlist if no publish came after its own.
        var generation = 0
        var shuttingDown = false
    }

    private let channel: HLSChannelBox
    private let grace: Duration
    private let retention: Duration
    private let logger: Logger
    private let onEnded: @Sendable (HLSChannelWorker, Int) async -> Void
    private let state = Mutex(State())

    var name: String { channel.name }

    init(channel: HLSChannelBox, grace: Duration, retention: Duration, logger: Logger,
         onEnded: @escaping @Sendable (HLSChannelWorker, Int) async -> Void) {
        self.channel = channel
        self.grace = grace
        self.retention = retention
        self.logger = logger
        self.onEnded = onEnded
    }

    /// No publish started after `generation`.
    func isIdle(since generation: Int) -> Bool {
        state.withLock { $0.generation == generation && !$0.shuttingDown }
    }

    func retire() async {
        await channel.run { $0.retire() }
    }

    func start(_ subscription: StreamSubscription) {
        state.withLock { state in
            state.graceTimer?.cancel()
            state.graceTimer = nil
            state.generation += 1
            let generation = state.generation
            state.subscription = subscription
            let previous = state.task
            state.task = Task { [self] in
                await previous?.value
                await package(subscription, generation: generation)
            }
        }
    }

    private func package(_ subscription: StreamSubscription, generation: Int) async {
        await channel.run { $0.beginPublish() }
        // A batch per actor hop: whatever queued while the last batch was muxed.
        while let batch = await subscription.nextBatch() {
            let failures = await channel.run { channel -> [any Error] in
                var failures: [any Error] = []
                for event in batch {
                    do {
                        switch event {
                        case .description(let description): try channel.setDescription(description)
                        case .packet(let packet): try channel.write(packet)
                        case .metadata: break
                        }
                    } catch {
                        failures.append(error)
                        channel.abandonSegment()
                    }
                }
                return failures
            }
            for error in failures {
                logger.error("HLS packaging failed; segment dropped", metadata: ["channel": "\(channel.name)", "error": "\(error)"])
            }
        }
        do {
            try await channel.run { try $0.endPublish() }
        } catch {
            logger.error("HLS final segment failed", metadata: ["channel": "\(channel.name)", "error": "\(error)"])
        }
        startGraceTimer(after: generation)
    }

    /// Ends the playlist after the grace, unless another publish started meanwhile.
    private func startGraceTimer(after generation: Int) {
        state.withLock { state in
            // A newer publish is already queued or running: its own end arms the timer.
            guard state.generation == generation, !state.shuttingDown else { return }
            state.graceTimer = Task { [self, grace, retention] in
                do {
                    try await Task.sleep(for: grace)
                } catch {
                    return
                }
                let ended = await channel.run { channel in
                    // Checked where the playlist changes, so a publish starting now cannot be ended.
                    guard self.state.withLock({ $0.generation == generation }) else { return false }
                    channel.endPlaylist()
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
    }

    func shutdown() async {
        let (task, subscription) = state.withLock { state in
            state.shuttingDown = true
            return (state.task, state.subscription)
        }
        subscription?.cancel()
        await task?.value
        state.withLock { $0.graceTimer?.cancel() }
        await channel.run { $0.endPlaylist() }
    }
}

/// Serializes access to a non-Sendable `HLSChannel` (its TS muxer owns libav state).
actor HLSChannelBox {
    private let channel: HLSChannel
    nonisolated let name: String

    init(name: String, configuration: HLSConfiguration, store: SegmentStore, logger: Logger) {
        self.channel = HLSChannel(name: name, configuration: configuration, store: store, logger: logger)
        self.name = name
    }

    func run<T: Sendable>(_ body: (HLSChannel) throws -> T) rethrows -> T {
        try body(channel)
    }
}
