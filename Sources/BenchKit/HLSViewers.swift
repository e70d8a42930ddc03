import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// What the HLS viewers saw, shared by every viewer of one run.
public final class ViewerStatistics: Sendable {
    public struct Snapshot: Sendable {
        public var watching = 0
        public var segments = 0
        public var bytes: UInt64 = 0
        /// Per fetched segment after warm-up: wall clock when its last byte arrived minus the wall
        /// clock its media ended on the publisher's replay (ms). Polling cadence included.
        public var delays: [Int64] = []
        /// Segments that left the window before a viewer could fetch them.
        public var missed = 0
        public var errors: [String] = []
    }

    private let state = Mutex(Snapshot())
    private let measuring = Atomic<Bool>(false)
    /// Media duration of each segment by media sequence number, as the playlists give them.
    private let timeline = Mutex<[Int: Double]>([:])
    /// When the publisher's replay began: media time zero, where segment `firstSequence` starts.
    let origin: ContinuousClock.Instant
    let firstSequence: Int

    init(origin: ContinuousClock.Instant, firstSequence: Int) {
        self.origin = origin
        self.firstSequence = firstSequence
    }

    public var snapshot: Snapshot { state.withLock { $0 } }
    func startMeasuring() {
        state.withLock {
            $0.delays.removeAll(keepingCapacity: true)
            $0.missed = 0
            $0.segments = 0
        }
        measuring.store(true, ordering: .relaxed)
    }

    func update(_ change: (inout Snapshot) -> Void) { state.withLock { change(&$0) } }
    func error(_ text: String) { state.withLock { if $0.errors.count < 100 { $0.errors.append(text) } } }

    func learn(_ playlist: PlaylistView) {
        timeline.withLock { durations in
            for (offset, segment) in playlist.segments.enumerated() { durations[playlist.mediaSequence + offset] = segment.duration }
        }
    }

    /// The instant segment `sequence` ends in media time, if every segment before it is known.
    func mediaEnd(of sequence: Int) -> ContinuousClock.Instant? {
        timeline.withLock { durations in
            var seconds = 0.0
            guard sequence >= firstSequence else { return nil }
            for index in firstSequence...sequence {
                guard let duration = durations[index] else { return nil }
                seconds += duration
            }
            return origin + .milliseconds(Int64(seconds * 1000))
        }
    }

    func fetched(sequence: Int, bytes: Int) {
        let now = ContinuousClock.now
        let end = mediaEnd(of: sequence)
        guard measuring.load(ordering: .relaxed) else { return }
        state.withLock {
            $0.segments += 1
            $0.bytes += UInt64(bytes)
            if let end { $0.delays.append(Int64((now - end).milliseconds)) }
        }
    }
}

/// One HLS viewer on one keep-alive connection, polling as a player does (RFC 8216 §6.3.4):
/// reload the playlist one target duration after the last load began when it changed, half of
/// one when it did not; fetch each new segment once, in order, starting at the live edge.
final class HLSViewer: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private enum Fetch {
        case playlist(startedAt: NIODeadline)
        case segment(Int)
    }

    private let host: String
    private let playlistPath: String
    private let directory: Substring
    private let statistics: ViewerStatistics
    private var fetching: Fetch?
    private var status: UInt = 0
    private var body = ByteBuffer()
    private var received = 0
    private var queue: [(sequence: Int, uri: String)] = []
    /// The newest segment taken into the queue.
    private var newest: Int?
    private var lastPlaylist: PlaylistView?
    private var lastLoadStarted = NIODeadline.uptimeNanoseconds(0)
    private var reloadAfter: TimeAmount
    private var stopped = false

    /// `firstLoadAfter`: when the viewer joins, after its connection is up.
    init(host: String, playlistPath: String, statistics: ViewerStatistics, firstLoadAfter: TimeAmount = .zero) {
        self.reloadAfter = firstLoadAfter
        self.host = host
        self.playlistPath = playlistPath
        self.directory = playlistPath[..<(playlistPath.lastIndex(of: "/") ?? playlistPath.startIndex)]
        self.statistics = statistics
    }

    func channelActive(context: ChannelHandlerContext) {
        statistics.update { $0.watching += 1 }
        lastLoadStarted = context.eventLoop.now
        next(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        statistics.update { $0.watching -= 1 }
        if !stopped { statistics.error("the server closed a viewer's connection") }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // After Stop, the load itself cut a response short: not the server's error.
        if !stopped { statistics.error("viewer: \(error)") }
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is Stop { stopped = true }
        context.fireUserInboundEventTriggered(event)
    }

    struct Stop: Sendable {}

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status.code
            body.clear()
            received = 0
        case .body(var part):
            received += part.readableBytes
            if case .playlist = fetching { body.writeBuffer(&part) }
        case .end:
            finished(context: context)
        }
    }

    private func finished(context: ChannelHandlerContext) {
        guard let done = fetching else { return }
        fetching = nil
        guard status == 200 else {
            statistics.error("HTTP \(status) for \(done)")
            context.close(promise: nil)
            return
        }
        switch done {
        case .playlist(let startedAt):
            lastLoadStarted = startedAt
            guard let playlist = PlaylistView(String(buffer: body)) else {
                statistics.error("not a media playlist")
                context.close(promise: nil)
                return
            }
            statistics.learn(playlist)
            let target = playlist.targetDuration ?? playlist.segments.map(\.duration).max() ?? 2
            let changed = playlist != lastPlaylist
            reloadAfter = .milliseconds(Int64(target * (changed ? 1000 : 500)))
            lastPlaylist = playlist
            take(playlist)
        case .segment(let sequence):
            statistics.fetched(sequence: sequence, bytes: received)
        }
        next(context: context)
    }

    /// Queues the segments this viewer has not taken yet; at the start only the newest.
    private func take(_ playlist: PlaylistView) {
        let first = playlist.mediaSequence
        let last = first + playlist.segments.count - 1
        var from = newest.map { $0 + 1 } ?? last
        if from < first {
            let missed = first - from
            statistics.update { $0.missed += missed }
            from = first
        }
        if from <= last {
            for sequence in from...last { queue.append((sequence, playlist.segments[sequence - first].uri)) }
        }
        newest = max(newest ?? last, last)
    }

    private func next(context: ChannelHandlerContext) {
        guard !stopped else { return }
        if !queue.isEmpty {
            let (sequence, uri) = queue.removeFirst()
            get(uri.hasPrefix("/") ? uri : "\(directory)/\(uri)", .segment(sequence), context: context)
            return
        }
        let due = lastLoadStarted + reloadAfter
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        let contextBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(deadline: due) {
            let viewer = loopBound.value
            guard !viewer.stopped, contextBound.value.channel.isActive else { return }
            viewer.get(viewer.playlistPath, .playlist(startedAt: contextBound.value.eventLoop.now), context: contextBound.value)
        }
    }

    private func get(_ path: String, _ fetch: Fetch, context: ChannelHandlerContext) {
        fetching = fetch
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: host)
        headers.add(name: "User-Agent", value: "estuary-bench")
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers))),
                      promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
    }
}

/// K HLS viewers of one playlist on one event loop (the generator's core).
public final class HLSViewerLoad: Sendable {
    public let statistics: ViewerStatistics
    private let group: MultiThreadedEventLoopGroup
    private let channels = Mutex<[any Channel]>([])

    /// `origin`: when the publisher's replay began, and `firstSequence` the media sequence number of
    /// the stream's first segment, so a segment's media end is a wall-clock instant.
    public init(origin: ContinuousClock.Instant, firstSequence: Int, threads: Int = 1) {
        statistics = ViewerStatistics(origin: origin, firstSequence: firstSequence)
        group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
    }

    public func watch(host: String = "127.0.0.1", port: Int, playlistPath: String) async throws {
        let statistics = self.statistics
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    // Viewers join at random moments, so their reloads do not all fall in the same instant.
                    try channel.pipeline.syncOperations.addHandler(
                        HLSViewer(host: "\(host):\(port)", playlistPath: playlistPath, statistics: statistics,
                                  firstLoadAfter: .milliseconds(Int64.random(in: 0..<2000))))
                }
            }
            .connect(host: host, port: port).get()
        channels.withLock { $0.append(channel) }
    }

    public func startMeasuring() { statistics.startMeasuring() }

    public func stop() async {
        let open = channels.withLock { channels in
            defer { channels.removeAll() }
            return channels
        }
        for channel in open {
            channel.pipeline.fireUserInboundEventTriggered(HLSViewer.Stop())
            try? await channel.close()
        }
        try? await group.shutdownGracefully()
    }
}
