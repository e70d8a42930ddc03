// CHiredis too: struct timeval (rusage below) comes through hiredis.h as well as Glibc, and release builds pick that one.
import CHiredis
import Foundation
import Glibc
public import Logging
import Synchronization

/// The registry every node shares, in Redis (see the README's key layout). Writes are
/// pipelined from a heartbeat; nothing on the media path waits for Redis. When Redis is away
/// the node keeps streaming, says it is degraded, and re-asserts everything once it is back.
public final class RedisRegistry: Registry {
    public struct Configuration: Sendable {
        public var client: RedisClient.Configuration
        /// Prepended to every key and to the events channel.
        public var prefix = "estuary:"
        public var nodeID: String
        public var version = "dev"
        /// How often streams, leases and the node record are refreshed.
        public var heartbeat: Duration = .seconds(5)
        /// How long they live without a refresh: a crashed node's streams vanish after this.
        public var ttl: Duration = .seconds(15)

        public init(client: RedisClient.Configuration, nodeID: String) {
            self.client = client
            self.nodeID = nodeID
        }
    }

    /// What this node publishes, kept so it can be re-asserted after Redis comes back.
    private struct Local {
        var stream: ActiveStream
        var lastBytes = 0
        var lastSample = ContinuousClock.now
        /// Viewers in the last `viewer.count` event.
        var reportedViewers: (rtmp: Int, hls: Int)?
        /// Another node's lease on this channel was reported (once).
        var conflictReported = false
    }

    private struct State {
        var streams: [String: Local] = [:]
        var node: NodeRecord
        /// HLS sessions seen since the last heartbeat, by HyperLogLog key.
        var sessions: [String: Set<String>] = [:]
        var sessionCount = 0
        /// Why the last heartbeat's writes failed, if they did.
        var writeFailure: String?
        var lastCPU: (at: ContinuousClock.Instant, seconds: Double)?
        var hub: WeakHub?
    }

    private struct WeakHub: @unchecked Sendable { weak var hub: StreamHub? }

    public let configuration: Configuration
    public let client: RedisClient
    let keys: RedisKeys
    private let state: Mutex<State>
    private let wake: AsyncStream<Void>.Continuation
    private let wakes: AsyncStream<Void>
    private let logger: Logger

    public init(configuration: Configuration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        keys = RedisKeys(prefix: configuration.prefix)
        state = Mutex(State(node: NodeRecord(id: configuration.nodeID, httpURL: "", rtmpAddress: "",
                                             version: configuration.version)))
        let (wakes, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        self.wakes = wakes
        self.wake = wake
        // Redis back: re-assert at once instead of at the next heartbeat.
        client = RedisClient(configuration: configuration.client, logger: logger) { state in
            if state == .connected { wake.yield() }
        }
    }

    /// The hub whose streams the heartbeat describes (codecs, bytes, RTMP viewers).
    public func attach(_ hub: StreamHub) {
        state.withLock { $0.hub = WeakHub(hub: hub) }
    }

    /// Where this node can be reached; known once its listeners are bound.
    public func announce(httpURL: String, rtmpAddress: String) {
        state.withLock {
            $0.node.httpURL = httpURL
            $0.node.rtmpAddress = rtmpAddress
        }
        wake.yield()
    }

    public var health: RegistryHealth {
        if case .unavailable(let why) = client.state { return RegistryHealth(kind: "redis", degraded: why) }
        return RegistryHealth(kind: "redis", degraded: state.withLock { $0.writeFailure })
    }

    // MARK: Registry

    public func streamStarted(_ stream: ActiveStream) async throws {
        var stream = stream
        stream.nodeID = configuration.nodeID
        let lease = keys.lease(stream.channel)
        let ttl = "\(configuration.ttl.milliseconds)"
        var taken: String?
        do {
            switch try await client.command(["SET", lease, configuration.nodeID, "NX", "PX", ttl]) {
            case .status:
                break
            default:
                // Held already: by us (a restart under the same node id, or the lease outliving a quick
                // republish) we carry on, by anyone else the publish is refused.
                let owner = try await client.command(["GET", lease]).string
                if let owner, owner != configuration.nodeID {
                    taken = owner
                } else {
                    _ = try await client.command(["SET", lease, configuration.nodeID, "PX", ttl])
                }
            }
        } catch {
            logger.warning("registry could not check the channel's lease; publishing anyway, it is claimed when Redis answers",
                           metadata: ["channel": "\(stream.channel)", "error": "\(error)"])
        }
        if let taken { throw RegistryError.channelTaken(channel: stream.channel, node: taken) }
        state.withLock { $0.streams[stream.channel] = Local(stream: stream) }
        let replies = await client.pipeline(
            describe(stream) + [["PUBLISH", keys.events, RegistryEvent.started(stream).json]])
        noteWrites(replies)
    }

    public func streamEnded(channel: String) async throws {
        guard let local = state.withLock({ $0.streams.removeValue(forKey: channel) }) else { return }
        let replies = await client.pipeline([
            ["EVAL", RedisScripts.release, "1", keys.lease(channel), configuration.nodeID],
            ["DEL", keys.stream(channel)],
            ["ZREM", keys.live, channel],
            ["PUBLISH", keys.events, RegistryEvent.ended(local.stream, at: Date()).json],
        ])
        noteWrites(replies)
    }

    public func activeStreams() async throws -> [ActiveStream] {
        let channels = try await client.command(["ZRANGE", keys.live, "0", "9999"]).array ?? []
        let names = channels.compactMap(\.string)
        let replies = await client.pipeline(names.map { ["HGETALL", keys.stream($0)] })
        return try decoded(replies, as: "stream", ActiveStream.init(hash:)).sorted { $0.channel < $1.channel }
    }

    public func activeStream(channel: String) async throws -> ActiveStream? {
        try RedisHash(try await client.command(["HGETALL", keys.stream(channel)])).flatMap(ActiveStream.init(hash:))
    }

    public func nodes() async throws -> [NodeRecord] {
        let ids = (try await client.command(["ZRANGE", keys.nodes, "0", "999"]).array ?? []).compactMap(\.string)
        let replies = await client.pipeline(ids.map { ["HGETALL", keys.node($0)] })
        return try decoded(replies, as: "node", NodeRecord.init(hash:)).sorted { $0.id < $1.id }
    }

    /// Hashes of a listing: a lost connection fails the listing, one unreadable entry (someone wrote
    /// another type under our key) is left out with a log line instead of hiding every other.
    private func decoded<Value>(_ replies: [Result<RedisReply, RedisError>], as kind: String,
                                _ make: (RedisHash) -> Value?) throws(RedisError) -> [Value] {
        var values: [Value] = []
        for reply in replies {
            do throws(RedisError) {
                if let hash = try RedisHash(try reply.get()), let value = make(hash) { values.append(value) }
            } catch {
                if case .connectionLost = error { throw error }
                if case .unavailable = error { throw error }
                if case .timeout = error { throw error }
                logger.warning("registry entry unreadable, left out", metadata: ["kind": "\(kind)", "error": "\(error)"])
            }
        }
        return values
    }

    /// The HTTP base URL of the node that publishes `channel`, if it is live on another node.
    public func nodeURL(publishing channel: String) async throws -> String? {
        guard let stream = try await activeStream(channel: channel), stream.nodeID != configuration.nodeID else { return nil }
        let url = try await client.command(["HGET", keys.node(stream.nodeID), "http"]).string
        return url?.isEmpty == false ? url : nil
    }

    public func hlsSessionSeen(channel: String, session: String) {
        let key = keys.hlsSessions(channel, slice: RedisKeys.slice(of: Date()))
        state.withLock { state in
            // Bounded between heartbeats: past this, sessions are dropped (the count is an estimate anyway).
            guard state.sessionCount < 50_000 else { return }
            if state.sessions[key, default: []].insert(String(session.prefix(256))).inserted { state.sessionCount += 1 }
        }
    }

    // MARK: Heartbeat

    /// Refreshes everything every heartbeat (and at once when Redis comes back) until cancelled.
    public func run() async {
        let wake = self.wake
        let interval = configuration.heartbeat
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                wake.yield()
            }
        }
        defer { ticker.cancel() }
        wake.yield()
        for await _ in wakes {
            if Task.isCancelled { break }
            await heartbeat()
        }
    }

    /// Ends `run()`.
    public func stopHeartbeat() { wake.finish() }

    /// Withdraws this node: its record goes (its streams were ended by their publishers), then the
    /// connection closes.
    public func shutdown() async {
        wake.finish()
        let id = configuration.nodeID
        noteWrites(await client.pipeline([["DEL", keys.node(id)], ["ZREM", keys.nodes, id]]))
        await client.shutdown()
    }

    func heartbeat() async {
        guard client.state == .connected else { return }
        let now = Date()
        let slice = RedisKeys.slice(of: now)
        // 1. Flush the HLS sessions seen, and count each channel's last minute of them.
        let (sessions, channels) = state.withLock { state in
            defer { state.sessions = [:]; state.sessionCount = 0 }
            return (state.sessions, Array(state.streams.keys).sorted())
        }
        var reads: [[String]] = sessions.flatMap { key, members in
            [["PFADD", key] + members, ["EXPIRE", key, "\(RedisKeys.sliceSeconds * (RedisKeys.slicesPerMinute + 3))"]]
        }
        let firstCount = reads.count
        reads += channels.map { channel in
            ["PFCOUNT"] + (0..<RedisKeys.slicesPerMinute).map { keys.hlsSessions(channel, slice: slice - $0) }
        }
        let counted = await client.pipeline(reads)
        var hlsViewers: [String: Int] = [:]
        for (channel, reply) in zip(channels, counted.dropFirst(firstCount)) {
            if case .success(.integer(let count)) = reply { hlsViewers[channel] = Int(count) }
        }
        noteWrites(Array(counted.prefix(firstCount)))

        // 2. Streams (lease, hash, listing, events), then the node record, in one pipeline.
        let (streams, events, node) = refresh(hlsViewers: hlsViewers, at: now)
        var writes: [[String]] = []
        for stream in streams {
            writes.append(["EVAL", RedisScripts.renew, "1", keys.lease(stream.channel), configuration.nodeID,
                           "\(configuration.ttl.milliseconds)"])
            writes += describe(stream)
        }
        writes += events.map { ["PUBLISH", keys.events, $0] }
        writes += [
            ["HSET", keys.node(node.id)] + node.hashFields,
            ["PEXPIRE", keys.node(node.id), "\(configuration.ttl.milliseconds)"],
            ["ZADD", keys.nodes, "\(Int64(node.startedAt.timeIntervalSince1970 * 1000))", node.id],
            ["EVAL", RedisScripts.prune, "1", keys.live, keys.prefix + "stream:"],
            ["EVAL", RedisScripts.prune, "1", keys.nodes, keys.prefix + "node:"],
        ]
        let replies = await client.pipeline(writes)
        noteWrites(replies)
        // Each stream's first reply is its lease renewal: 1, or the node that holds it instead.
        var index = 0
        for stream in streams {
            if case .success(.bulk(let owner)) = replies[index] { leaseConflict(stream.channel, owner: String(decoding: owner, as: UTF8.self)) }
            index += 1 + describe(stream).count
        }
    }

    /// The commands that write a stream's hash, its TTL and its place in the listing.
    private func describe(_ stream: ActiveStream) -> [[String]] {
        [["HSET", keys.stream(stream.channel)] + stream.hashFields,
         ["PEXPIRE", keys.stream(stream.channel), "\(configuration.ttl.milliseconds)"],
         ["ZADD", keys.live, "\(Int64(stream.startedAt.timeIntervalSince1970 * 1000))", stream.channel]]
    }

    /// Samples the hub's streams: codecs, bitrates, viewers; the events they make.
    private func refresh(hlsViewers: [String: Int], at now: Date) -> ([ActiveStream], [String], NodeRecord) {
        let cpuNow = Self.cpuSeconds()
        return state.withLock { state in
            let hub = state.hub?.hub
            var streams: [ActiveStream] = []
            var events: [String] = []
            for channel in state.streams.keys.sorted() {
                guard var local = state.streams[channel] else { continue }
                if let live = hub?.stream(channel: channel) {
                    local.stream.sample(live)
                    let bytes = live.statistics.bytes
                    let seconds = Double((ContinuousClock.now - local.lastSample).milliseconds) / 1000
                    if seconds > 0.5 {
                        local.stream.bitrateIn = Int(Double(bytes - local.lastBytes) * 8 / seconds)
                        local.lastBytes = bytes
                        local.lastSample = .now
                    }
                    local.stream.rtmpViewers = hub?.viewerCount(channel: channel) ?? 0
                    local.stream.bitrateOut = (local.stream.bitrateIn ?? 0) * local.stream.rtmpViewers
                }
                local.stream.hlsViewers = hlsViewers[channel] ?? local.stream.hlsViewers
                local.stream.updatedAt = now
                events.append(RegistryEvent.updated(local.stream).json)
                let viewers = (rtmp: local.stream.rtmpViewers, hls: local.stream.hlsViewers)
                if local.reportedViewers.map({ $0 != viewers }) ?? (viewers.rtmp + viewers.hls > 0) {
                    events.append(RegistryEvent.viewerCount(local.stream, at: now).json)
                    local.reportedViewers = viewers
                }
                state.streams[channel] = local
                streams.append(local.stream)
            }
            state.node.streams = streams.count
            state.node.viewers = streams.reduce(0) { $0 + $1.viewers }
            state.node.updatedAt = now
            if let last = state.lastCPU {
                let elapsed = Double((ContinuousClock.now - last.at).milliseconds) / 1000
                if elapsed > 0 { state.node.cpu = ((cpuNow - last.seconds) / elapsed * 1000).rounded() / 10 }
            }
            state.lastCPU = (.now, cpuNow)
            return (streams, events, state.node)
        }
    }

    private func leaseConflict(_ channel: String, owner: String) {
        let first = state.withLock { state -> Bool in
            guard var local = state.streams[channel], !local.conflictReported else { return false }
            local.conflictReported = true
            state.streams[channel] = local
            return true
        }
        // Both nodes took the channel while they could not see each other (Redis was away).
        if first {
            logger.error("registry lease conflict: another node claimed this channel while Redis was unreachable; both keep publishing",
                         metadata: ["channel": "\(channel)", "owner": "\(owner)"])
        }
    }

    /// Logs the first failed write after success, and recovery, once each; the health shows it.
    private func noteWrites(_ replies: [Result<RedisReply, RedisError>]) {
        var failure: String?
        for reply in replies {
            switch reply {
            case .success(.error(let message)): failure = "redis refused a write: \(message)"
            case .failure(let error): failure = "\(error)"
            default: continue
            }
            break
        }
        let previous = state.withLock { state in
            defer { state.writeFailure = failure }
            return state.writeFailure
        }
        if let failure, failure != previous, client.state == .connected {
            logger.error("registry writes failing, retrying at the next heartbeat", metadata: ["reason": "\(failure)"])
        } else if failure == nil, let previous {
            logger.notice("registry writes succeed again", metadata: ["after": "\(previous)"])
        }
    }

    private static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(Int32(RUSAGE_SELF.rawValue), &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
