import Logging
import MediaCore
import NIOCore
import RTMP
import StreamHub
import Synchronization

/// Sends one channel to one RTMP player: waits for the channel to be live,
/// subscribes with a bounded queue, and writes batches of messages, awaiting
/// each write so a slow socket backs up only this player's queue (which then
/// drops to the next keyframe). A player more than `maxLag` behind live (in
/// media time, or with one write stuck that long) is disconnected.
/// Survives republishes; ends when cancelled.
final class RTMPPlayer: Sendable {
    /// What the player asked for since it started (receiveAudio/receiveVideo/pause).
    struct Controls: Sendable {
        var receivesAudio = true
        var receivesVideo = true
        var paused = false
    }

    private let channel: any Channel
    private let hub: StreamHub
    private let streamName: String
    private let messageStreamID: MessageStreamID
    private let chunkSize: Int
    private let limits: StreamSubscription.Limits
    private let maxLag: TimeAmount
    private let mergedWrite: TimeAmount
    private let logger: Logger
    private let controls = Mutex(Controls())
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(channel: any Channel, hub: StreamHub, streamName: String, messageStreamID: MessageStreamID, chunkSize: Int,
         limits: StreamSubscription.Limits, maxLag: TimeAmount, mergedWrite: TimeAmount = .zero, logger: Logger) {
        self.mergedWrite = mergedWrite
        self.channel = channel
        self.hub = hub
        self.streamName = streamName
        self.messageStreamID = messageStreamID
        self.chunkSize = chunkSize
        self.limits = limits
        self.maxLag = maxLag
        self.logger = logger
    }

    func start() {
        task.withLock { $0 = Task { await self.run() } }
    }

    func stop() {
        task.withLock { $0?.cancel() }
    }

    func update(_ change: (inout Controls) -> Void) {
        controls.withLock { change(&$0) }
    }

    private func run() async {
        // A viewer for as long as it plays: on-demand pulls start for it and stop when none are left.
        let viewer = hub.addViewer(channel: streamName)
        defer { viewer.leave() }
        var muxer = PlaybackMuxer(messageStreamID: messageStreamID)
        var firstStream = true
        while !Task.isCancelled, channel.isActive {
            guard let stream = await hub.waitForStream(channel: streamName) else { break }
            // Like nginx-rtmp's default (play_restart off), a republish is not announced: ffmpeg and
            // librtmp end playback on UnpublishNotify. The player sees a pause, then new sequence headers.
            if !firstStream { muxer.streamRestarted() }
            firstStream = false
            let subscription = stream.subscribe(limits: limits)
            let pump = PlayerPump(channel: channel, subscription: subscription, muxer: muxer, chunkSize: chunkSize,
                                  maxLag: maxLag, mergedWrite: mergedWrite, controls: { [self] in self.controls.withLock { $0 } }, logger: logger)
            let outcome = await withTaskCancellationHandler {
                await pump.run()
            } onCancel: {
                pump.stop()
            }
            muxer = outcome.muxer
            guard outcome.connectionAlive else { return }
        }
    }
}

/// Delivers one subscription to one player on the player's event loop, without a task hop per
/// packet: the publisher's enqueue schedules a drain; a drain polls what is queued, writes it in
/// one buffer and waits for that write to complete before the next (so a slow socket backs up the
/// subscription's bounded queue, which drops to the next keyframe). A write stuck for `maxLag`, or
/// media more than `maxLag` behind live, closes the connection.
final class PlayerPump: @unchecked Sendable, LoopTickerClient {
    struct Outcome {
        var muxer: PlaybackMuxer
        var connectionAlive: Bool
    }

    // Touched on the channel's event loop only.
    private let channel: any Channel
    private let eventLoop: any EventLoop
    private let subscription: StreamSubscription
    private var muxer: PlaybackMuxer
    // Media chunk streams are this player's alone (the connection handler writes commands and
    // status on others), so their headers can be compressed as nginx-rtmp's are.
    private var encoder = ChunkEncoder(headerCompression: .only([PlaybackMuxer.audioChunkStream, PlaybackMuxer.videoChunkStream]))
    private let maxLag: TimeAmount
    private let controls: @Sendable () -> RTMPPlayer.Controls
    private let logger: Logger
    private var continuation: CheckedContinuation<Outcome, Never>?
    private var writeStartedAt: NIODeadline?
    /// Merged write: drains wait for this loop's next tick.
    private let ticker: LoopTicker?
    private var reportedDrops = 0
    private var watchdog: RepeatedTask?
    private let drainScheduled = Atomic(false)
    /// Set by `stop()` from any thread; `start` may run after it (a task cancelled before it began).
    private let stopRequested = Atomic(false)

    init(channel: any Channel, subscription: StreamSubscription, muxer: PlaybackMuxer, chunkSize: Int, maxLag: TimeAmount,
         mergedWrite: TimeAmount = .zero, controls: @escaping @Sendable () -> RTMPPlayer.Controls, logger: Logger) {
        self.channel = channel
        self.eventLoop = channel.eventLoop
        self.subscription = subscription
        self.muxer = muxer
        self.maxLag = maxLag
        self.ticker = mergedWrite > .zero ? LoopTicker.on(channel.eventLoop, interval: mergedWrite) : nil
        self.controls = controls
        self.logger = logger
        encoder.setChunkSize(chunkSize)
    }

    /// Delivers until the subscription ends (publisher gone, or cancelled) or the connection does.
    func run() async -> Outcome {
        await withCheckedContinuation { continuation in
            eventLoop.execute { self.start(continuation) }
        }
    }

    private func start(_ continuation: CheckedContinuation<Outcome, Never>) {
        self.continuation = continuation
        guard channel.isActive else { return finish(alive: false) }
        guard !stopRequested.load(ordering: .acquiring) else { return finish(alive: true) }
        // Weak: a connection outlives the pumps of earlier publishes, and its close callbacks cannot be removed.
        channel.closeFuture.whenComplete { [weak self] _ in self?.eventLoop.execute { self?.finish(alive: false) } }
        let period = min(TimeAmount.seconds(1), .nanoseconds(maxLag.nanoseconds / 4))
        watchdog = eventLoop.scheduleRepeatedTask(initialDelay: period, delay: period) { [weak self] _ in self?.checkStall() }
        // The first batch (codec setup and the cached GOP) goes out at once: nothing was written yet.
        subscription.setReadableHandler { [self] in scheduleDrain() }
    }

    /// Ends delivery now (closeStream, deleteStream, a new play): what is still queued is not sent,
    /// not even by a drain scheduled before this call.
    func stop() {
        stopRequested.store(true, ordering: .releasing)
        if eventLoop.inEventLoop {
            finish(alive: channel.isActive)
        } else {
            eventLoop.execute { self.finish(alive: self.channel.isActive) }
        }
    }

    /// Drains on a later turn of the loop: never recursively from a write that completed at once,
    /// which would hold the loop for as long as the publisher keeps the queue non-empty. With a
    /// merged write interval, at most once per interval: one write carries every message queued
    /// meanwhile (one syscall instead of one per message, SRS's "mw").
    private func scheduleDrain() {
        guard !drainScheduled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        guard let ticker else { return eventLoop.execute { self.drain() } }
        if eventLoop.inEventLoop {
            ticker.schedule(self)
        } else {
            eventLoop.execute { ticker.schedule(self) }
        }
    }

    /// The merged write's turn.
    func tick() {
        drain()
    }

    private func drain() {
        drainScheduled.store(false, ordering: .releasing)
        guard continuation != nil, writeStartedAt == nil else { return }
        guard !stopRequested.load(ordering: .acquiring) else { return finish(alive: channel.isActive) }
        switch subscription.poll() {
        case .empty:
            return
        case .ended:
            finish(alive: channel.isActive)
        case .events(let batch):
            write(batch)
        }
    }

    private func write(_ batch: [StreamEvent]) {
        let controls = controls()
        muxer.receivesAudio = controls.receivesAudio
        muxer.receivesVideo = controls.receivesVideo
        muxer.isPaused = controls.paused
        var buffer = channel.allocator.buffer(capacity: batch.reduce(0) { total, event in
            if case .packet(let packet) = event { total + packet.data.count + 32 } else { total + 256 }
        })
        var written: Int64?
        for event in batch {
            switch event {
            case .description(let description):
                for message in muxer.description(description) { encoder.encode(message, into: &buffer) }
            case .metadata(let metadata):
                encoder.encode(muxer.metadata(metadata), into: &buffer)
            case .packet(let packet):
                written = max(written ?? packet.dts, packet.dts)
                if let message = muxer.packet(packet) { encoder.encode(message, into: &buffer) }
            }
        }
        reportDrops()
        if let written, let newest = subscription.newestDTS, newest - written > maxLag.nanoseconds / 1_000_000 {
            logger.warning("player disconnected: too far behind live",
                           metadata: ["behind_ms": "\(newest - written)", "max_lag": "\(maxLag)"])
            channel.close(promise: nil)
            return finish(alive: false)
        }
        guard buffer.readableBytes > 0 else { return scheduleDrain() }
        writeStartedAt = .now()
        channel.writeAndFlush(buffer).hop(to: eventLoop).whenComplete { result in
            self.writeStartedAt = nil
            if case .failure(let error) = result {
                self.logger.debug("player write failed", metadata: ["error": "\(error)"])
                return self.finish(alive: false)
            }
            self.scheduleDrain()
        }
    }

    /// Once a second: a write that has not completed for `maxLag` means the player stopped reading.
    private func checkStall() {
        guard let started = writeStartedAt, NIODeadline.now() - started >= maxLag else { return }
        logger.warning("player disconnected: not reading", metadata: ["stalled_for": "\(maxLag)"])
        reportDrops()
        channel.close(promise: nil)
        finish(alive: false)
    }

    /// Logs (at debug) packets this player lost to keyframe skips since the last report.
    private func reportDrops() {
        let dropped = subscription.droppedPackets
        guard dropped > reportedDrops else { return }
        logger.debug("player fell behind; skipped to a keyframe", metadata: ["dropped": "\(dropped)"])
        reportedDrops = dropped
    }

    private func finish(alive: Bool) {
        guard let continuation else { return }
        self.continuation = nil
        watchdog?.cancel()
        subscription.cancel()
        continuation.resume(returning: Outcome(muxer: muxer, connectionAlive: alive))
    }
}
