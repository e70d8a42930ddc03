public import IngestServer
public import Logging
public import ServiceLifecycle
public import StreamHub
import Synchronization

/// A configured push: `channel`, `*` (every channel) or `app/*` (every channel published in the
/// RTMP application `app`) to an upstream URL.
///
/// The URL may hold `{channel}`, replaced by the channel's name; a `*` or `app/*` target without a
/// stream name (`rtmp://host/app`) publishes each channel under its own name.
public struct RelayPushEntry: Sendable, Equatable {
    public static let everyChannel = "*"
    public var channel: String
    public var url: String

    /// Which channels an entry pushes.
    public enum Scope: Sendable, Equatable {
        case channel(String)
        case everyChannel
        /// Every channel published in this RTMP application (`rtmp://host/<app>/<key>`).
        case application(String)
    }

    public init(channel: String, url: String) {
        self.channel = channel
        self.url = url
    }

    /// What `channel` names, or nil when it is neither a channel name, `*`, nor `app/*`.
    public var scope: Scope? {
        if channel == Self.everyChannel { return .everyChannel }
        if channel.hasSuffix("/*") {
            let app = String(channel.dropLast(2))
            return StaticKeyAuthorizer.isValidChannelName(app) ? .application(app) : nil
        }
        return StaticKeyAuthorizer.isValidChannelName(channel) ? .channel(channel) : nil
    }

    /// `*` or `app/*`: a push made for each matching channel when it goes live.
    public var isPattern: Bool {
        switch scope {
        case .everyChannel, .application: true
        case .channel, nil: false
        }
    }

    /// Whether a pattern entry pushes a channel published in `app`.
    public func matches(app: String) -> Bool {
        switch scope {
        case .everyChannel: true
        case .application(let name): name == app
        case .channel, nil: false
        }
    }

    /// The upstream URL for `channel`, or nil when the template does not make a valid one.
    public func url(for channel: String) -> RTMPURL? {
        var text = url.replacing("{channel}", with: channel)
        if RTMPURL(text) == nil, isPattern {
            text += text.hasSuffix("/") ? channel : "/\(channel)"
        }
        return RTMPURL(text)
    }
}

/// A configured pull: the remote stream at `url` played into the local `channel`.
public struct RelayPullEntry: Sendable, Equatable {
    public var channel: String
    public var url: String
    public var mode: RTMPPullClient.Mode

    public init(channel: String, url: String, mode: RTMPPullClient.Mode) {
        self.channel = channel
        self.url = url
        self.mode = mode
    }
}

/// Relays of the node: pushes of live channels to upstream servers and pulls
/// of remote streams into local channels, each with its own status.
public final class RelayService: Service, Sendable, CustomStringConvertible {
    public enum RelayError: Error, Equatable, Sendable, CustomStringConvertible {
        case invalidURL(String)
        case invalidChannel(String)

        public var description: String {
            switch self {
            case .invalidURL(let why): why
            case .invalidChannel(let channel): "'\(channel)' is not a channel name"
            }
        }
    }

    public struct Configuration: Sendable {
        public var push = RTMPPushClient.Configuration()
        public var pull = RTMPPullClient.Configuration()
        public init() {}
    }

    private struct PushKey: Hashable {
        var channel: String
        var url: String
    }

    private struct Running<Client: Sendable> {
        var client: Client
        var task: Task<Void, Never>?
    }

    private struct State {
        /// `*` and `app/*` targets; a client per channel is made when a matching channel goes live.
        var wildcards: [RelayPushEntry] = []
        var pushes: [PushKey: Running<RTMPPushClient>] = [:]
        var pulls: [String: Running<RTMPPullClient>] = [:]
        var running = false
    }

    private let hub: StreamHub
    private let configuration: Configuration
    private let logger: Logger
    private let state = Mutex(State())

    public init(hub: StreamHub, pushes: [RelayPushEntry], pulls: [RelayPullEntry], configuration: Configuration = .init(),
                logger: Logger) throws(RelayError) {
        self.hub = hub
        self.configuration = configuration
        self.logger = logger
        for entry in pushes {
            if entry.isPattern {
                guard entry.url(for: "channel") != nil else { throw .invalidURL(Self.urlProblem(entry.url)) }
                state.withLock { $0.wildcards.append(entry) }
            } else {
                _ = try addPush(channel: entry.channel, url: entry.url)
            }
        }
        for entry in pulls {
            guard StaticKeyAuthorizer.isValidChannelName(entry.channel) else { throw .invalidChannel(entry.channel) }
            guard let url = RTMPURL(entry.url) else { throw .invalidURL(Self.urlProblem(entry.url)) }
            let client = RTMPPullClient(url: url, hub: hub, channel: entry.channel, mode: entry.mode, logger: logger,
                                        configuration: configuration.pull)
            state.withLock { $0.pulls[entry.channel] = Running(client: client) }
        }
        hub.observe { [weak self] stream in self?.channelStarted(stream.channel, app: stream.app) }
        hub.onDemand { [weak self] channel in self?.demanded(channel) }
    }

    /// Why `text` is not an upstream URL, for API errors and configuration messages (never echoing the key).
    public static func urlProblem(_ text: String) -> String {
        if text.utf8.count > 2048 { return "URL longer than 2048 bytes" }
        let lower = text.lowercased()
        if lower.hasPrefix("rtmps://") { return "rtmps:// is not supported yet; use rtmp://" }
        guard lower.hasPrefix("rtmp://") else { return "URL must start with rtmp://" }
        return "URL must be rtmp://host[:port]/app/stream with a valid host and port"
    }

    /// Statuses of the relays of `channel`: its pushes (explicit, and `*`/`app/*` ones once it has been live), and its pull.
    public func targets(channel: String) -> [RelayTargetStatus] {
        let (pushes, pull) = state.withLock { state in
            (state.pushes.filter { $0.key.channel == channel }.sorted { $0.key.url < $1.key.url }.map(\.value.client),
             state.pulls[channel]?.client)
        }
        return pushes.map(\.status) + (pull.map { [$0.status] } ?? [])
    }

    /// Adds a push of `channel` to `url` (runs at once if the service runs); returns its status.
    @discardableResult
    public func addPush(channel: String, url: String) throws(RelayError) -> RelayTargetStatus {
        guard StaticKeyAuthorizer.isValidChannelName(channel) else { throw .invalidChannel(channel) }
        guard url.utf8.count <= 2048, let parsed = RelayPushEntry(channel: channel, url: url).url(for: channel) else {
            throw .invalidURL(Self.urlProblem(url))
        }
        return addPush(channel: channel, key: PushKey(channel: channel, url: url), url: parsed)
    }

    private func addPush(channel: String, key: PushKey, url: RTMPURL) -> RelayTargetStatus {
        let client = RTMPPushClient(url: url, hub: hub, channel: channel, logger: logger, configuration: configuration.push)
        let added = state.withLock { state -> RTMPPushClient in
            if let existing = state.pushes[key] { return existing.client }
            state.pushes[key] = Running(client: client, task: state.running ? Task { await client.run() } : nil)
            return client
        }
        if added === client { logger.info("relay push added", metadata: ["channel": "\(channel)", "relay": "\(url)"]) }
        return added.status
    }

    /// Stops and removes the push of `channel` to `url`; false when there is none.
    public func removePush(channel: String, url: String) -> Bool {
        guard let removed = state.withLock({ $0.pushes.removeValue(forKey: PushKey(channel: channel, url: url)) }) else {
            return false
        }
        removed.task?.cancel()
        logger.info("relay push removed", metadata: ["channel": "\(channel)", "relay": "\(removed.client.url)"])
        return true
    }

    private func channelStarted(_ channel: String, app: String) {
        let wildcards = state.withLock { $0.wildcards }
        for entry in wildcards where entry.matches(app: app) {
            guard let url = entry.url(for: channel) else { continue }
            _ = addPush(channel: channel, key: PushKey(channel: channel, url: entry.url), url: url)
        }
    }

    private func demanded(_ channel: String) {
        guard let pull = state.withLock({ $0.pulls[channel]?.client }), pull.mode == .onDemand else { return }
        pull.demand()
    }

    public func run() async throws {
        state.withLock { state in
            state.running = true
            for key in state.pushes.keys where state.pushes[key]?.task == nil {
                let client = state.pushes[key]!.client
                state.pushes[key]?.task = Task { await client.run() }
            }
            for key in state.pulls.keys {
                let client = state.pulls[key]!.client
                state.pulls[key]?.task = Task { await client.run() }
            }
        }
        do {
            try await gracefulShutdown()
        } catch is CancellationError {
            // Cancelled rather than shut down: stop the relays all the same.
        }
        let tasks = state.withLock { state in
            state.running = false
            return state.pushes.values.compactMap(\.task) + state.pulls.values.compactMap(\.task)
        }
        for task in tasks { task.cancel() }
        for task in tasks { await task.value }
    }

    /// ServiceLifecycle logs services by description; reflection would print the stream keys.
    public var description: String { "RelayService" }
}
