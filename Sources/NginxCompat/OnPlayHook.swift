public import StreamHub

/// `on_play`: asks an HTTP endpoint whether a player may watch, with nginx-rtmp's fields
/// (`call=play`, app, flashver, swfurl, tcurl, pageurl, addr, clientid, name, start, duration,
/// reset, then the play URL's own query). A 3xx `Location` that is a bare name redirects the
/// player to that channel; an `rtmp://` Location (nginx's pull-on-play) is refused here.
public struct OnPlayHook: PlayAuthorizer {
    /// The URL for every application, and per application.
    public let urls: NotifyURL
    private let client: NotifyClient

    public init(urls: NotifyURL, client: NotifyClient) {
        self.urls = urls
        self.client = client
    }

    public init(url: String, client: NotifyClient) {
        self.init(urls: NotifyURL(url), client: client)
    }

    public func authorize(_ request: PlayRequest) async -> PlayDecision {
        // An application without an on_play URL plays as asked.
        guard let url = urls.url(app: request.app) else { return .allow(channel: request.channel) }
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

    static func fields(_ request: PlayRequest) -> [(String, String)] { NotifyFields.play(request) }
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
