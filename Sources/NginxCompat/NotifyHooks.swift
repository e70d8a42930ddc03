public import Logging
public import StreamHub
import Synchronization

/// nginx-rtmp's session hooks — `on_connect`, `on_update`, `on_publish_done`, `on_play_done`,
/// `on_done`, `on_disconnect` — as the ingest server's observer. (`on_publish` and `on_play` are
/// authorizers: `OnPublishHook`, `OnPlayHook`; `on_record_done` is told by the recorder.)
///
/// `on_connect` holds the connection until it answers: 2xx goes on, 3xx with a `Location` moves the
/// connection to that application, anything else closes it. `on_update` is asked every
/// `updateTimeout` while a publish or play goes on: an error status, a timeout or no connection ends
/// the session (with `updateStrict`, so does a 3xx). The `*_done` and `on_disconnect` calls are
/// fire-and-forget, and go out one at a time per connection, in the order they happened
/// (`on_publish_done` / `on_play_done`, `on_done`, then `on_disconnect`).
public struct NotifyHooks: RTMPSessionObserver {
    public let configuration: NotifyConfiguration
    private let client: NotifyClient
    private let logger: Logger
    private let queue = CallQueue()

    public init(configuration: NotifyConfiguration, client: NotifyClient, logger: Logger) {
        self.configuration = configuration
        self.client = client
        self.logger = logger
    }

    public var holdsConnect: Bool { !configuration.onConnect.isEmpty }

    public func connect(_ session: RTMPSessionInfo) async -> ConnectDecision {
        guard let url = configuration.onConnect.url(app: session.app) else { return .allow(app: session.app) }
        switch await client.call(url, fields: NotifyFields.connect(session), clientQuery: session.args) {
        case .allow:
            return .allow(app: session.app)
        case .redirect(let location):
            guard Self.isApplicationName(location) else {
                return .deny(reason: "on_connect redirected to a Location that is not an application name")
            }
            return .allow(app: location)
        case .deny(let reason):
            return .deny(reason: reason)
        }
    }

    public func updateInterval(app: String) -> Duration? {
        configuration.onUpdate.url(app: app) != nil && configuration.updateTimeout > .zero
            ? configuration.updateTimeout : nil
    }

    public func update(_ session: RTMPSessionInfo, stream: RTMPStreamInfo, elapsed: Int64, timestamp: UInt32) async
        -> UpdateDecision {
        guard let url = configuration.onUpdate.url(app: session.app) else { return .continue }
        let fields = NotifyFields.update(session, stream, elapsed: elapsed, timestamp: timestamp)
        switch await client.call(url, fields: fields, clientQuery: stream.args) {
        case .allow:
            return .continue
        case .redirect:
            return configuration.updateStrict ? .end(reason: "update hook redirected (notify_update_strict on)") : .continue
        case .deny(let reason):
            return .end(reason: reason)
        }
    }

    public func streamEnded(_ session: RTMPSessionInfo, stream: RTMPStreamInfo) {
        let done = stream.kind == .publish ? configuration.onPublishDone : configuration.onPlayDone
        let calls = [(done.url(app: session.app), "\(stream.kind.rawValue)_done"),
                     (configuration.onDone.url(app: session.app), "done")]
            .compactMap { url, call in url.map { ($0, call) } }
        for (url, call) in calls {
            tell(url, call, NotifyFields.done(call, session, stream), query: stream.args, client: session.clientID)
        }
    }

    public func disconnected(_ session: RTMPSessionInfo, bytesReceived: UInt64, bytesSent: UInt64) {
        if let url = configuration.onDisconnect.url(app: session.app) {
            tell(url, "disconnect", NotifyFields.disconnect(session), query: session.args, client: session.clientID)
        }
        logger.debug("connection totals", metadata: ["client": "\(session.clientID)", "in": "\(bytesReceived)",
                                                     "out": "\(bytesSent)"])
        queue.finish(client: session.clientID)
    }

    /// A fire-and-forget call, after the connection's earlier ones; its answer is only logged.
    private func tell(_ url: String, _ call: String, _ fields: NotifyFields.Fields, query: String?, client id: UInt64) {
        let client = self.client
        let logger = self.logger
        queue.enqueue(client: id) {
            if case .deny(let reason) = await client.call(url, fields: fields, clientQuery: query) {
                logger.notice("notify call not accepted", metadata: ["call": "\(call)", "reason": "\(reason)"])
            }
        }
    }

    /// What a redirect may name as an application: a channel-like name (no `/`, `?`, spaces).
    static func isApplicationName(_ name: String) -> Bool { StaticKeyAuthorizer.isValidChannelName(name) }
}

/// Runs each connection's fire-and-forget calls one after another, connections independently.
final class CallQueue: Sendable {
    private let tails = Mutex<[UInt64: Task<Void, Never>]>([:])

    func enqueue(client: UInt64, _ work: @escaping @Sendable () async -> Void) {
        tails.withLock { tails in
            let previous = tails[client]
            tails[client] = Task {
                await previous?.value
                await work()
            }
        }
    }

    /// The connection is gone: what is queued still runs, the queue's entry goes.
    func finish(client: UInt64) {
        _ = tails.withLock { $0.removeValue(forKey: client) }
    }
}
