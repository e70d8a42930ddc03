public import StreamHub

/// nginx-rtmp's `on_publish`: asks an HTTP endpoint whether a publisher may go live, with
/// nginx-rtmp's fields (app, flashver, swfurl, tcurl, pageurl, addr, clientid, `call=publish`,
/// name, type, then the stream name's own query, as sent). The publish waits for the answer:
///
/// - 2xx: allowed as sent — `.allow(channel:)` with the name as sent (or, after others in a chain,
///   the channel they chose);
/// - 3xx with `Location: <name>`: allowed as that channel (a bare channel name; nginx's `rtmp://`
///   push redirect is refused) — a platform's own service can map keys to channels this way;
/// - anything else, no answer within the notify timeout, or no connection: refused
///   (`NetStream.Publish.Denied`).
///
/// Composition: it runs last — configured keys, then database keys, then this hook (App's
/// `PublishAccess` takes it as its `hook`; `PublishAuthorizerChain` composes it the same way). It
/// always receives the request as the client sent it (the stream key as `name`, as nginx-rtmp
/// sends it). An allow naming the name as sent means "go on": the keys' channel stands, or, with no
/// key, the name must be a valid channel name — the composer checks. An application without an
/// `on_publish` URL is allowed as sent without a call.
public struct OnPublishHook: ChainablePublishAuthorizer {
    /// The URL for every application, and per application.
    public let urls: NotifyURL
    private let client: NotifyClient

    public init(urls: NotifyURL, client: NotifyClient) {
        self.urls = urls
        self.client = client
    }

    public func authorize(_ request: PublishRequest) async -> PublishDecision {
        await decide(request, channel: request.streamKey)
    }

    public func authorize(_ request: PublishRequest, after channel: String) async -> PublishDecision {
        await decide(request, channel: channel)
    }

    private func decide(_ request: PublishRequest, channel: String) async -> PublishDecision {
        guard let url = urls.url(app: request.app) else { return .allow(channel: channel) }
        switch await client.call(url, fields: NotifyFields.publish(request), clientQuery: request.query) {
        case .allow:
            return .allow(channel: channel)
        case .redirect(let location):
            if location.lowercased().hasPrefix("rtmp://") {
                return .deny(reason: "on_publish redirected to an rtmp:// URL (nginx-rtmp's push redirect is not supported)")
            }
            guard StaticKeyAuthorizer.isValidChannelName(location) else {
                return .deny(reason: "on_publish redirected to a Location that is not a channel name")
            }
            return .allow(channel: location)
        case .deny(let reason):
            return .deny(reason: reason)
        }
    }
}
