/// One RTMP connection as nginx-rtmp's notify module describes it: what the client said in
/// `connect`, where it came from, and the connection's number.
public struct RTMPSessionInfo: Sendable, Equatable {
    /// The application (after an `on_connect` redirect, the new one).
    public var app: String
    /// The query of connect's `app` (`rtmp://host/live?a=b/…`): nginx-rtmp's connect args.
    public var args: String?
    public var flashVer: String?
    public var swfURL: String?
    public var tcURL: String?
    public var pageURL: String?
    /// The peer's address, as `ip` (no port).
    public var address: String
    public var clientID: UInt64
    /// The server's handshake time in milliseconds (nginx-rtmp's `epoch`).
    public var epoch: UInt32

    public init(app: String, args: String? = nil, flashVer: String? = nil, swfURL: String? = nil, tcURL: String? = nil,
                pageURL: String? = nil, address: String = "", clientID: UInt64 = 0, epoch: UInt32 = 0) {
        self.app = app
        self.args = args
        self.flashVer = flashVer
        self.swfURL = swfURL
        self.tcURL = tcURL
        self.pageURL = pageURL
        self.address = address
        self.clientID = clientID
        self.epoch = epoch
    }
}

/// A publish or play of one connection, as its client asked for it.
public struct RTMPStreamInfo: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case publish, play
    }

    public var kind: Kind
    /// The name as sent, without its query. For a publish this is the stream key: never log it.
    public var name: String
    /// The `a=b&c=d` part of the name, if any.
    public var args: String?
    /// The channel it publishes or plays (after keys and hooks).
    public var channel: String

    public init(kind: Kind, name: String, args: String? = nil, channel: String) {
        self.kind = kind
        self.name = name
        self.args = args
        self.channel = channel
    }

    /// Never the name: for a publish it is the key.
    public var description: String { "\(kind.rawValue) of \(channel)" }
}

public enum ConnectDecision: Sendable, Equatable {
    /// Go on, in `app` (an `on_connect` redirect may name another application).
    case allow(app: String)
    case deny(reason: String)
}

public enum UpdateDecision: Sendable, Equatable {
    case `continue`
    /// End the session (nginx-rtmp's `on_update` refusal).
    case end(reason: String)
}

/// What an RTMP connection reports as it goes: the seam for nginx-rtmp's notify hooks
/// (`on_connect`, `on_update`, `on_publish_done`, `on_play_done`, `on_done`, `on_disconnect`).
/// The ingest server calls it on the connection's event loop and never waits on it there:
/// the answers that matter (`connect`, `update`) are awaited off the loop while the connection
/// holds its processing (connect) or carries on (update).
public protocol RTMPSessionObserver: Sendable {
    /// Whether `connect` waits for `connect(_:)`'s answer before it is replied to.
    var holdsConnect: Bool { get }

    /// A client's `connect`; its processing waits for the answer when `holdsConnect`.
    func connect(_ session: RTMPSessionInfo) async -> ConnectDecision

    /// A publish or play was accepted.
    func streamStarted(_ session: RTMPSessionInfo, stream: RTMPStreamInfo)

    /// How often `update` is called while a stream of `app` goes on; nil: never.
    func updateInterval(app: String) -> Duration?

    /// Periodically while `stream` goes on: `elapsed` seconds since it started, `timestamp` the
    /// stream's last RTMP timestamp (ms). `.end` closes the connection.
    func update(_ session: RTMPSessionInfo, stream: RTMPStreamInfo, elapsed: Int64, timestamp: UInt32) async
        -> UpdateDecision

    /// The publish or play ended (closeStream, deleteStream, FCUnpublish, the connection closing).
    func streamEnded(_ session: RTMPSessionInfo, stream: RTMPStreamInfo)

    /// The connection closed, after `connect` was accepted.
    func disconnected(_ session: RTMPSessionInfo, bytesReceived: UInt64, bytesSent: UInt64)
}

extension RTMPSessionObserver {
    public var holdsConnect: Bool { false }
    public func connect(_ session: RTMPSessionInfo) async -> ConnectDecision { .allow(app: session.app) }
    public func streamStarted(_ session: RTMPSessionInfo, stream: RTMPStreamInfo) {}
    public func updateInterval(app: String) -> Duration? { nil }
    public func update(_ session: RTMPSessionInfo, stream: RTMPStreamInfo, elapsed: Int64, timestamp: UInt32) async
        -> UpdateDecision { .continue }
    public func streamEnded(_ session: RTMPSessionInfo, stream: RTMPStreamInfo) {}
    public func disconnected(_ session: RTMPSessionInfo, bytesReceived: UInt64, bytesSent: UInt64) {}
}
