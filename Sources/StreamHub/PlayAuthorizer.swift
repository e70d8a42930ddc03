/// What a player asked for, with what nginx-rtmp's `on_play` reports about it.
public struct PlayRequest: Sendable, Equatable {
    public var app: String
    /// The channel, without the query string.
    public var channel: String
    /// The `a=b&c=d` part of the play name, if any (signed-URL tokens travel here).
    public var query: String?
    public var tcURL: String?
    public var flashVer: String?
    public var swfURL: String?
    public var pageURL: String?
    /// The peer's address, as `ip` (no port).
    public var address: String
    public var clientID: UInt64
    public var start: Double
    public var duration: Double
    public var reset: Bool

    public init(app: String, channel: String, query: String? = nil, tcURL: String? = nil, flashVer: String? = nil,
                swfURL: String? = nil, pageURL: String? = nil, address: String = "", clientID: UInt64 = 0,
                start: Double = -2, duration: Double = -1, reset: Bool = false) {
        self.app = app
        self.channel = channel
        self.query = query
        self.tcURL = tcURL
        self.flashVer = flashVer
        self.swfURL = swfURL
        self.pageURL = pageURL
        self.address = address
        self.clientID = clientID
        self.start = start
        self.duration = duration
        self.reset = reset
    }
}

public enum PlayDecision: Sendable, Equatable {
    /// Play `channel` (an `on_play` redirect may name another one than asked for).
    case allow(channel: String)
    case deny(reason: String)
}

/// Decides whether a player may watch a channel.
public protocol PlayAuthorizer: Sendable {
    func authorize(_ request: PlayRequest) async -> PlayDecision
}

/// Anyone may watch any channel: the default.
public struct OpenPlayAuthorizer: PlayAuthorizer {
    public init() {}

    public func authorize(_ request: PlayRequest) async -> PlayDecision {
        StaticKeyAuthorizer.isValidChannelName(request.channel)
            ? .allow(channel: request.channel) : .deny(reason: "not a channel name")
    }
}
