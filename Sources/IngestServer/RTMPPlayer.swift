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
    private let logger: Logger
    private let controls = Mutex(Controls())
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(channel: any Channel, hub: StreamHub, streamName: String, messageStreamID: MessageStreamID, chunkSize: Int,
         limits: StreamSubscription.Limits, maxLag: TimeAmount, logger: Logger) {
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
        // Media chunk streams are this player's alone (the connection handler writes commands and
        // status on others), so their headers can be compressed as nginx-rtmp's are.
        var encoder = ChunkEncoder(headerCompression: .only([PlaybackMuxer.audioChunkStream, PlaybackMuxer.videoChunkStream]))
        encoder.setChunkSize(chunkSize)
        var firstStream = true
        while !Task.isCancelled, channel.isActive {
            guard let stream = await hub.waitForStream(channel: streamName) else { break }
            // Like nginx-rtmp's default (play_restart off), a republish is not announced: ffmpeg and
            // librtmp end playback on UnpublishNotify. The player sees a pause, then new sequence headers.
            if !firstStream { muxer.streamRestarted() }
            firstStream = false
            let subscription = stream.subscribe(limits: limits)
            var reported = 0
            while let batch = await subscription.nextBatch() {
                let controls = controls.withLock { $0 }
                muxer.receivesAudio = controls.receivesAudio
                muxer.receivesVideo = controls.receivesVideo
                muxer.isPaused = controls.paused
                var messages: [RTMPMessage] = []
                var written: Int64?
                for event in batch {
                    switch event {
                    case .description(let description): messages += muxer.description(description)
                    case .metadata(let metadata): messages.append(muxer.metadata(metadata))
                    case .packet(let packet):
                        written = max(written ?? packet.dts, packet.dts)
                        if let message = muxer.packet(packet) { messages.append(message) }
                    }
                }
                let delivered = await write(messages, encoder: &encoder)
                let dropped = subscription.droppedPackets
                if dropped > reported {
                    logger.debug("player fell behind; skipped to a keyframe", metadata: ["dropped": "\(dropped)"])
                    reported = dropped
                }
                guard delivered else {
                    subscription.cancel()
                    return
                }
                if let written, let newest = subscription.newestDTS, newest - written > maxLag.nanoseconds / 1_000_000 {
                    logger.warning("player disconnected: too far behind live",
                                   metadata: ["behind_ms": "\(newest - written)", "max_lag": "\(maxLag)"])
                    subscription.cancel()
                    channel.close(promise: nil)
                    return
                }
            }
        }
    }

    /// Writes and flushes; false when the connection is gone. A write that does not
    /// complete within `maxLag` (the player stopped reading) closes the connection.
    private func write(_ messages: [RTMPMessage], encoder: inout ChunkEncoder) async -> Bool {
        guard !messages.isEmpty else { return true }
        var buffer = channel.allocator.buffer(capacity: messages.reduce(0) { $0 + $1.payload.readableBytes + 16 })
        for message in messages { encoder.encode(message, into: &buffer) }
        let (channel, logger, maxLag) = (self.channel, self.logger, self.maxLag)
        let watchdog = channel.eventLoop.scheduleTask(in: maxLag) {
            logger.warning("player disconnected: not reading", metadata: ["stalled_for": "\(maxLag)"])
            channel.close(promise: nil)
        }
        defer { watchdog.cancel() }
        do {
            try await channel.writeAndFlush(buffer)
            return true
        } catch {
            logger.debug("player write failed", metadata: ["error": "\(error)"])
            return false
        }
    }
}
