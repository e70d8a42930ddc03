public import StreamHub

/// `on_play`: asks an HTTP endpoint whether a player may watch, with nginx-rtmp's fields
/// (`call=play`, app, flashver, swfurl, tcurl, pageurl, addr, clientid, name, start, duration,
/// reset, then the play URL's own query). A 3xx `Location` that is a bare name redirects the
/// player to that channel; an `rtmp://` Location (nginx's pull-on-play) is refused here.
public struct OnPlayHook: PlayAuthorizer {
    public let url: String
    private let client: NotifyClient

    public init(url: String, client: NotifyClient) {
        self.url = url
        self.client = client
    }

    public func authorize(_ request: PlayRequest) async -> PlayDecision {
        switch await client.call(url, fields: Self.fields(request), clientQuery: request.query) {
        case .allow:
            return .allow(channel: request.channel)
        case .redirect(let location):
            guard StaticKeyAuthorizer.isValidChannelName(location) else {
                return .deny(reason: "on_play redirected to '\(location.prefix(80))', which is not a channel name")
            }
            return .allow(channel: location)
        case .deny(let reason):
            return .deny(reason: reason)
        }
    }

    static func fields(_ request: PlayRequest) -> [(String, String)] {
        [
            ("app", request.app), ("flashver", request.flashVer ?? ""), ("swfurl", request.swfURL ?? ""),
            ("tcurl", request.tcURL ?? ""), ("pageurl", request.pageURL ?? ""), ("addr", request.address),
            ("clientid", "\(request.clientID)"), ("call", "play"), ("name", request.channel),
            // nginx-rtmp prints these as unsigned 32-bit: -2 (live or recorded) becomes 4294967294.
            ("start", "\(uint32(request.start))"),
            ("duration", "\(uint32(request.duration))"),
            ("reset", request.reset ? "1" : "0"),
        ]
    }
}

/// A client's number as nginx-rtmp prints it (C's cast to uint32_t); NaN and huge values, which a
/// hostile client can send, become 0 rather than a trap.
func uint32(_ value: Double) -> UInt32 {
    guard value.isFinite, value.magnitude < 9.2e18 else { return 0 }
    return UInt32(truncatingIfNeeded: Int64(value))
}

/// Runs authorizers in order; the first refusal wins, and a redirect carries on under the new name.
public struct PlayAuthorizerChain: PlayAuthorizer {
    public let authorizers: [any PlayAuthorizer]

    public init(_ authorizers: [any PlayAuthorizer]) {
        self.authorizers = authorizers
    }

    public func authorize(_ request: PlayRequest) async -> PlayDecision {
        var request = request
        for authorizer in authorizers {
            switch await authorizer.authorize(request) {
            case .deny(let reason): return .deny(reason: reason)
            case .allow(let channel): request.channel = channel
            }
        }
        return .allow(channel: request.channel)
    }
}
