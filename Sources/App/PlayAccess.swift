import AsyncHTTPClient
import Delivery
import Logging
import NginxCompat
import NIOCore
import StreamHub

/// Who may watch: RTMP players pass the channel-name check, the signed-URL check for private
/// channels, then `on_play`; HLS requests pass the signed-URL check (nginx-rtmp has no hook there).
struct PlayAccess {
    let rtmp: any PlayAuthorizer
    /// Hook calls; a service that must outlive the RTMP server.
    let notify: NotifyClient?
    let http: @Sendable (_ channel: String, _ query: String?) -> HLSRoutes<AppRequestContext>.Access
}

func playAuthorization(_ configuration: EstuaryConfiguration, logger: Logger) throws -> PlayAccess {
    var chain: [any PlayAuthorizer] = [OpenPlayAuthorizer()]
    var signed: SignedURLPlayAuthorizer?
    if !configuration.privateChannels.isEmpty, let secret = configuration.playSecret {
        let authorizer = SignedURLPlayAuthorizer(signer: SignedPlayURL(secret: secret),
                                                 privateChannels: configuration.privateChannels)
        chain.append(authorizer)
        signed = authorizer
        logger.info("private channels need signed URLs", metadata: [
            "channels": "\(configuration.privateChannels.sorted().joined(separator: ","))",
        ])
    }
    var notify: NotifyClient?
    if let url = configuration.onPlay {
        let client = NotifyClient(logger: logger)
        notify = client
        chain.append(OnPlayHook(url: url, client: client))
        logger.info("on_play hook", metadata: ["url": "\(url)"])
    }
    let http: @Sendable (String, String?) -> HLSRoutes<AppRequestContext>.Access = { [signed] channel, query in
        guard let signed, signed.isPrivate(channel) else { return .open }
        switch signed.check(channel: channel, query: query) {
        case .deny(let reason): return .denied(reason)
        case .allow:
            let fields = SignedPlayURL.fields(query ?? "")
            return .signed(query: "expires=\(fields["expires"] ?? "")&token=\(fields["token"] ?? "")")
        }
    }
    return PlayAccess(rtmp: PlayAuthorizerChain(chain), notify: notify, http: http)
}
