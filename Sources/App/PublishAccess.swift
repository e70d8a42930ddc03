import Auth
import Foundation
import Logging
import Metrics
import StreamHub

/// Who may publish, decided in this order:
///
/// 1. keys from configuration (`--stream-key KEY=CHANNEL`);
/// 2. keys in the database (created through the API or `estuary keys create`), which map to their channel;
/// 3. the `on_publish` hook, if configured: it sees the name as the client sent it (as nginx-rtmp's
///    does), may refuse, and may rename the stream with a 3xx. A key the first two do not know is
///    published under its own name if the hook allows it, so the hook alone can map keys.
///
/// With no configured keys, no accounts in the database and no hook, publishing is open: the
/// channel is the stream name (a laptop's first run). Once an account exists the server is a
/// platform, and stays closed even if every key is revoked. Addresses that keep sending refused keys are throttled.
struct PublishAccess: PublishAuthorizer {
    let staticKeys: [String: String]
    let channels: ChannelService
    let hook: (any PublishAuthorizer)?
    let refusals: RateLimiter
    let allowed: Counter
    let denied: Counter
    let logger: Logger

    init(staticKeys: [String: String], channels: ChannelService, hook: (any PublishAuthorizer)?,
         metrics: any MetricsFactory, logger: Logger) {
        self.staticKeys = staticKeys
        self.channels = channels
        self.hook = hook
        // Ten refused publishes a minute from one address is a scan, not a typo.
        refusals = RateLimiter(limit: 10, window: 60)
        allowed = Counter(label: "estuary_publish_total", dimensions: [("result", "allow")], factory: metrics)
        denied = Counter(label: "estuary_publish_total", dimensions: [("result", "deny")], factory: metrics)
        self.logger = logger
    }

    func authorize(_ request: PublishRequest) async -> PublishDecision {
        if let wait = refusals.retryAfter(request.address) {
            denied.increment()
            return .deny(reason: "too many refused publishes from \(request.address); retry in \(wait) s")
        }
        let decision = await decide(request)
        switch decision {
        case .allow: allowed.increment()
        case .deny:
            denied.increment()
            refusals.record(request.address)
        }
        return decision
    }

    private func decide(_ request: PublishRequest) async -> PublishDecision {
        var channel: String?
        var keyID: UUID?
        if let configured = staticKeys[request.streamKey] {
            channel = configured
        } else {
            do {
                if let found = try await channels.channel(forKey: request.streamKey) {
                    (channel, keyID) = (found.channel, found.keyID)
                } else if hook == nil, staticKeys.isEmpty, try await !channels.hasAccounts() {
                    guard StaticKeyAuthorizer.isValidChannelName(request.streamKey) else {
                        return .deny(reason: "stream name is not a valid channel name (letters, digits, '-', '_', '.', 1–64 chars)")
                    }
                    channel = request.streamKey
                }
            } catch {
                logger.error("stream key lookup failed", metadata: ["error": "\(error)"])
                return .deny(reason: "stream keys are unavailable (database error)")
            }
        }
        if let hook {
            switch await hook.authorize(request) {
            case .deny(let reason):
                return .deny(reason: reason)
            case .allow(let named):
                // The hook renamed the stream (3xx), or allowed it as sent.
                if named != request.streamKey || channel == nil {
                    guard StaticKeyAuthorizer.isValidChannelName(named) else {
                        return .deny(reason: "stream name is not a valid channel name")
                    }
                    channel = named
                    keyID = nil
                }
            }
        }
        guard let channel else { return .deny(reason: "unknown stream key") }
        channels.publishStarted(channel: channel, keyID: keyID)
        return .allow(channel: channel)
    }
}
