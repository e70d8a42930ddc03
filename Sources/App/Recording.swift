public import struct Foundation.Date
public import Logging
package import MediaCore
import NIOPosix
public import Packaging
public import ServiceLifecycle
public import StreamHub
import Synchronization

/// Which channels are recorded.
public enum RecordMode: String, Sendable, CaseIterable, Codable {
    /// Every publish of every channel, from its first keyframe to its end.
    case all
    /// Nothing, and the API refuses to start recordings.
    case off
    /// Only what the API starts (`POST /api/v1/streams/{channel}/recordings`), until the API
    /// stops it or the publish ends.
    case manual
}

/// One recording file (or a recording that failed before it had one), as the API shows it.
public struct RecordingStatus: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        case recording, finished, failed
    }

    public var format: RecordingFormat
    /// Nil when the recording failed before its file was created.
    public var path: String?
    public var state: State
    public var bytes: Int64
    /// When the file was opened (or the recording failed).
    public var started: Date
    /// Seconds of media in the file.
    public var duration: Double
    public var lastError: String?
    /// Why the file was closed; nil while recording.
    public var reason: RecordingEndReason?
}

/// A recording file was closed: what `on_record_done` reports.
public struct RecordingDone: Sendable, Equatable {
    public var channel: String
    /// The RTMP application the channel was published in.
    public var app: String
    public var path: String
    public var format: RecordingFormat
    /// Seconds of media.
    public var duration: Double
    public var bytes: Int64
    public var reason: RecordingEndReason
}

/// Why the API could not start or stop a recording.
public enum RecordingServiceError: Error, Equatable, Sendable, CustomStringConvertible {
    case disabled
    case notLive(channel: String)
    case alreadyRecording(channel: String)
    case notRecording(channel: String)

    public var description: String {
        switch self {
        case .disabled: "recording is off on this server (start it with --record manual or --record all)"
        case .notLive(let channel): "channel \(channel) is not live"
        case .alreadyRecording(let channel): "channel \(channel) is already being recorded"
        case .notRecording(let channel): "channel \(channel) is not being recorded"
        }
    }
}

/// Records live channels to files: one StreamHub subscriber per channel and format, with the
/// file work (writes, MP4 faststart) on a thread pool of its own so it never holds a cooperative
/// thread or anything the publisher needs. A recorder that falls behind loses its own packets
/// (to the next keyframe), never the live stream's.
public final class RecordingService: Service, Sendable {
    public struct Configuration: Sendable {
        public var mode: RecordMode
        public var formats: [RecordingFormat]
        public var directory: String
        public var limits: RecordingLimits

        public init(mode: RecordMode, formats: [RecordingFormat], directory: String, limits: RecordingLimits = .init()) {
            self.mode = mode
            self.formats = formats
            self.directory = directory
            self.limits = limits
        }
    }

    private struct State {
        var jobs: [UInt64: RecordingJob] = [:]
        var tasks: [UInt64: Task<Void, Never>] = [:]
        /// Statuses of ended jobs per channel, oldest first, at most `historyLimit`.
        var history: [String: [RecordingStatus]] = [:]
        var nextID: UInt64 = 0
        var shuttingDown = false
    }

    /// Opens each recording file in place of the format's recorder: the seam tests use to make
    /// writes fail (a disk filling up) without a full disk.
    package typealias RecorderFactory = @Sendable (_ path: String, StreamDescription, StreamMetadata)
        throws(RecordingError) -> any MediaRecorder

    public let configuration: Configuration
    private let hub: StreamHub
    private let logger: Logger
    private let onRecordDone: @Sendable (RecordingDone) async -> Void
    private let makeRecorder: RecorderFactory?
    private let state = Mutex(State())
    private let pool: NIOThreadPool
    private let done: (stream: AsyncStream<RecordingDone>, continuation: AsyncStream<RecordingDone>.Continuation)
    private static let historyLimit = 50

    public convenience init(hub: StreamHub, configuration: Configuration, logger: Logger,
                            onRecordDone: @escaping @Sendable (RecordingDone) async -> Void = { _ in }) {
        self.init(hub: hub, configuration: configuration, logger: logger, onRecordDone: onRecordDone, makeRecorder: nil)
    }

    package init(hub: StreamHub, configuration: Configuration, logger: Logger,
                 onRecordDone: @escaping @Sendable (RecordingDone) async -> Void, makeRecorder: RecorderFactory?) {
        self.hub = hub
        self.configuration = configuration
        self.logger = logger
        self.onRecordDone = onRecordDone
        self.makeRecorder = makeRecorder
        pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        done = AsyncStream.makeStream(of: RecordingDone.self)
        guard configuration.mode == .all else { return }
        hub.observe { [self] stream in
            // Subscribed inside the hub's start: the recording misses nothing of the publish.
            _ = startJobs(stream, requireIdle: false)
        }
    }

    /// Starts recording `channel`'s current publish in every configured format.
    @discardableResult
    public func start(channel: String) throws(RecordingServiceError) -> [RecordingStatus] {
        guard configuration.mode != .off else { throw .disabled }
        guard let stream = hub.stream(channel: channel) else { throw .notLive(channel: channel) }
        guard startJobs(stream, requireIdle: true) else { throw .alreadyRecording(channel: channel) }
        return status(channel: channel)
    }

    /// Stops recording `channel` and returns once its files are closed (MP4s rewritten).
    @discardableResult
    public func stop(channel: String) async throws(RecordingServiceError) -> [RecordingStatus] {
        let stopping = state.withLock { state in
            state.jobs.filter { $0.value.channel == channel && $0.value.requestStop(.stopped) }.compactMap { state.tasks[$0.key] }
        }
        guard !stopping.isEmpty else { throw .notRecording(channel: channel) }
        for task in stopping { await task.value }
        return status(channel: channel)
    }

    /// Whether `channel` is being recorded (and not stopping).
    public func isRecording(channel: String) -> Bool {
        state.withLock { $0.jobs.values.contains { $0.channel == channel && !$0.isStopping } }
    }

    /// Every file of `channel` this process recorded (the last 50) and the ones being written, oldest first.
    public func status(channel: String) -> [RecordingStatus] {
        let (history, jobs) = state.withLock { state in
            (state.history[channel] ?? [], state.jobs.values.filter { $0.channel == channel })
        }
        return (history + jobs.flatMap(\.statuses)).sorted { $0.started < $1.started }
    }

    public func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask { [self] in
                for await event in done.stream {
                    await onRecordDone(event)
                }
            }
            do {
                try await gracefulShutdown()
            } catch {
                // Cancelled rather than shut down gracefully: close the files all the same.
            }
            // Publishers are gone by now (RTMP stops first); anything still recording is closed.
            let tasks = state.withLock { state in
                state.shuttingDown = true
                for job in state.jobs.values { _ = job.requestStop(.shutdown) }
                return Array(state.tasks.values)
            }
            for task in tasks { await task.value }
            done.continuation.finish()
        }
        try? await pool.shutdownGracefully()
    }

    // MARK: - Jobs

    /// Subscribes one job per format to `stream`; false (nothing started) when `requireIdle` and
    /// the channel is already being recorded, or when shutting down.
    private func startJobs(_ stream: LiveStream, requireIdle: Bool) -> Bool {
        state.withLock { state in
            guard !state.shuttingDown else { return false }
            if requireIdle, state.jobs.values.contains(where: { $0.channel == stream.channel && !$0.isStopping }) {
                return false
            }
            for format in configuration.formats {
                state.nextID += 1
                let id = state.nextID
                let job = RecordingJob(
                    channel: stream.channel, app: stream.app,
                    recorder: Self.recorder(configuration, channel: stream.channel, format: format,
                                            makeRecorder: makeRecorder),
                    subscription: stream.subscribe(limits: .init(maxPackets: 8192, maxBytes: 256 << 20)))
                state.jobs[id] = job
                state.tasks[id] = Task { [self] in
                    let last = await record(job)
                    // Out of the active jobs before the last files are announced, so whoever hears
                    // of them sees the channel's recording over.
                    self.state.withLock { state in
                        state.jobs[id] = nil
                        state.tasks[id] = nil
                        var history = (state.history[job.channel] ?? []) + job.statuses
                        if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
                        state.history[job.channel] = history
                    }
                    for event in last { done.continuation.yield(event) }
                }
            }
            return true
        }
    }

    /// A job's recorder, made from Sendable parts only so it can move into the job.
    private static func recorder(_ configuration: Configuration, channel: String, format: RecordingFormat,
                                 makeRecorder: RecorderFactory?) -> sending SplittingRecorder {
        guard let makeRecorder else {
            return SplittingRecorder(directory: configuration.directory, channel: channel, format: format,
                                     limits: configuration.limits)
        }
        return SplittingRecorder(directory: configuration.directory, channel: channel, format: format,
                                 limits: configuration.limits, now: Date.init,
                                 makeRecorder: { path, description, metadata throws(RecordingError) in
                                     try makeRecorder(path, description, metadata)
                                 })
    }

    /// Feeds the subscription into the job's recorder until the publish ends, the job is stopped
    /// or it fails; returns the done events of its last step, for the caller to announce.
    private func record(_ job: RecordingJob) async -> [RecordingDone] {
        while let batch = await job.subscription.nextBatch(limit: 256) {
            let outcome = await offload { job.process(batch) }
            let finished = report(outcome, of: job)
            if outcome.fatal != nil {
                job.subscription.cancel()
                return finished
            }
            for event in finished { done.continuation.yield(event) }
        }
        job.subscription.cancel()
        let reason = job.stopReason ?? .publishEnded
        return report(await offload { job.finish(reason) }, of: job)
    }

    /// Runs blocking file work on the service's thread pool. The pool stops only after every job
    /// has ended, so running inline instead is a backstop that still closes files properly.
    private func offload<T: Sendable>(_ work: @escaping @Sendable () -> T) async -> T {
        do {
            return try await pool.runIfActive(work)
        } catch {
            return work()
        }
    }

    /// Logs what happened to the job's files and updates its status; returns the closed files.
    private func report(_ outcome: RecordingJob.Outcome, of job: RecordingJob) -> [RecordingDone] {
        let format = job.format
        var finished: [RecordingDone] = []
        for event in outcome.events {
            switch event {
            case .opened(let file):
                logger.info("recording started", metadata: ["channel": "\(job.channel)", "format": "\(format)",
                                                            "path": "\(file.path)"])
            case .closed(let file, let reason, let failure):
                var metadata: Logger.Metadata = [
                    "channel": "\(job.channel)", "format": "\(format)", "path": "\(file.path)", "reason": "\(reason.rawValue)",
                    "duration": "\(Double(file.duration) / 1000)s", "bytes": "\(file.bytes)",
                ]
                if let failure {
                    metadata["error"] = "\(failure)"
                    logger.error("recording failed", metadata: metadata)
                } else {
                    logger.info("recording finished", metadata: metadata)
                }
                finished.append(RecordingDone(channel: job.channel, app: job.app, path: file.path, format: format,
                                              duration: Double(file.duration) / 1000, bytes: file.bytes, reason: reason))
            }
        }
        if let fatal = outcome.fatalBeforeFile {
            // Failed before a file was open (the directory or the file cannot be created).
            logger.error("recording failed", metadata: ["channel": "\(job.channel)", "format": "\(format)",
                                                        "error": "\(fatal)"])
        }
        if let refused = outcome.firstRefused {
            // A hostile stream could refuse every packet: warn once per recording, then at debug.
            let level: Logger.Level = job.noteRefused() ? .warning : .debug
            logger.log(level: level, "packets not recorded", metadata: [
                "channel": "\(job.channel)", "format": "\(format)", "count": "\(outcome.refusedCount)", "first": "\(refused)",
            ])
        }
        job.update(with: outcome)
        return finished
    }
}

/// One channel's recording in one format: its subscription, recorder and statuses.
final class RecordingJob: Sendable {
    /// What one step of the recorder produced.
    struct Outcome: Sendable {
        var events: [SplittingRecorder.Event] = []
        var current: RecordingFile?
        var fatal: RecordingError?
        var refusedCount = 0
        var firstRefused: RecordingError?

        /// The fatal error, when it struck before a file was open (no file was closed with it).
        var fatalBeforeFile: RecordingError? {
            let closedWithFailure = events.contains { event in
                if case .closed(_, _, .some) = event { true } else { false }
            }
            return closedWithFailure ? nil : fatal
        }
    }

    private struct State {
        var statuses: [RecordingStatus] = []
        var stopReason: RecordingEndReason?
        var refusedBefore = false
    }

    let channel: String
    let app: String
    let format: RecordingFormat
    let subscription: StreamSubscription
    /// Used on the service's thread pool, by one call at a time (the job's task awaits each).
    private let recorder: Mutex<SplittingRecorder>
    private let state = Mutex(State())

    init(channel: String, app: String, recorder: sending SplittingRecorder, subscription: StreamSubscription) {
        self.channel = channel
        self.app = app
        self.format = recorder.format
        self.subscription = subscription
        self.recorder = Mutex(recorder)
    }

    var statuses: [RecordingStatus] { state.withLock { $0.statuses } }
    var stopReason: RecordingEndReason? { state.withLock { $0.stopReason } }
    var isStopping: Bool { stopReason != nil }

    /// Notes refused packets; true the first time.
    func noteRefused() -> Bool {
        state.withLock { state in
            defer { state.refusedBefore = true }
            return !state.refusedBefore
        }
    }

    /// Asks the job to stop for `reason`; false when it was already stopping.
    func requestStop(_ reason: RecordingEndReason) -> Bool {
        let first = state.withLock { state in
            guard state.stopReason == nil else { return false }
            state.stopReason = reason
            return true
        }
        if first { subscription.cancel() }
        return first
    }

    /// Records a batch of events (blocking file I/O).
    func process(_ batch: [StreamEvent]) -> Outcome {
        recorder.withLock { recorder in
            var outcome = Outcome()
            events: for event in batch {
                switch event {
                case .description(let description): recorder.setDescription(description)
                case .metadata(let metadata): recorder.setMetadata(metadata)
                case .packet(let packet):
                    do throws(RecordingError) {
                        try recorder.write(packet)
                    } catch where error.isFatal {
                        outcome.fatal = error
                        break events
                    } catch {
                        outcome.refusedCount += 1
                        outcome.firstRefused = outcome.firstRefused ?? error
                    }
                }
            }
            outcome.events = recorder.takeEvents()
            outcome.current = recorder.currentFile
            return outcome
        }
    }

    /// Closes the current file (blocking; an MP4 is rewritten for faststart).
    func finish(_ reason: RecordingEndReason) -> Outcome {
        recorder.withLock { recorder in
            recorder.finish(reason: reason)
            return Outcome(events: recorder.takeEvents())
        }
    }

    func update(with outcome: Outcome) {
        state.withLock { state in
            for event in outcome.events {
                switch event {
                case .opened(let file):
                    state.statuses.append(RecordingStatus(format: format, path: file.path, state: .recording,
                                                          bytes: file.bytes, started: file.started, duration: 0))
                case .closed(let file, let reason, let failure):
                    guard let index = state.statuses.lastIndex(where: { $0.path == file.path }) else { continue }
                    state.statuses[index].state = failure == nil ? .finished : .failed
                    state.statuses[index].bytes = file.bytes
                    state.statuses[index].duration = Double(file.duration) / 1000
                    state.statuses[index].lastError = failure.map { "\($0)" }
                    state.statuses[index].reason = reason
                }
            }
            if let current = outcome.current, let index = state.statuses.lastIndex(where: { $0.path == current.path }) {
                state.statuses[index].bytes = current.bytes
                state.statuses[index].duration = Double(current.duration) / 1000
            }
            if let fatal = outcome.fatalBeforeFile {
                state.statuses.append(RecordingStatus(format: format, path: nil, state: .failed, bytes: 0, started: Date(),
                                                      duration: 0, lastError: "\(fatal)", reason: .failed))
            }
        }
    }
}
