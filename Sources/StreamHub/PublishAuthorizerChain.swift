/// An authorizer that can follow others: it is told the channel chosen before it and may keep it.
/// nginx-rtmp's `on_publish` is one — a 2xx answer goes on with that channel, a 3xx renames it.
public protocol ChainablePublishAuthorizer: PublishAuthorizer {
    /// Decides `request` (the name as the client sent it) when earlier authorizers chose `channel`.
    func authorize(_ request: PublishRequest, after channel: String) async -> PublishDecision
}

/// Runs authorizers in order; the first refusal wins. Each one sees the request as the client sent
/// it; the channel an allow names carries on to the end (a `ChainablePublishAuthorizer` may keep it).
public struct PublishAuthorizerChain: PublishAuthorizer {
    public let authorizers: [any PublishAuthorizer]

    public init(_ authorizers: [any PublishAuthorizer]) {
        self.authorizers = authorizers
    }

    public func authorize(_ request: PublishRequest) async -> PublishDecision {
        var channel: String?
        for authorizer in authorizers {
            let decision = if let channel, let chainable = authorizer as? any ChainablePublishAuthorizer {
                await chainable.authorize(request, after: channel)
            } else {
                await authorizer.authorize(request)
            }
            switch decision {
            case .deny(let reason): return .deny(reason: reason)
            case .allow(let chosen): channel = chosen
            }
        }
        guard let channel else { return .deny(reason: "no publish authorizer") }
        return .allow(channel: channel)
    }
}
