import AsyncHTTPClient
import Delivery
import Logging
import NginxCompat
import Packaging
import NIOCore
import StreamHub

/// `on_record_done`, as nginx-rtmp calls it when a recording file is closed: `call=record_done`,
/// `recorder` (the format), `name` (the channel), `path`, with the session fields it knows.
/// Its answer changes nothing; a failure is logged by the client.
struct OnRecordDoneHook {
    let url: String
    let client: NotifyClient

    func call(_ done: RecordingDone) async {
        _ = await client.call(url, fields: [
            ("app", done.app), ("flashver", ""), ("swfurl", ""), ("tcurl", ""), ("pageurl", ""), ("addr", ""),
            ("clientid", ""), ("call", "record_done"), ("recorder", done.format.rawValue), ("name", done.channel),
            ("path", done.path),
        ])
    }
}

/// nginx-rtmp's `on_publish` as `PublishAccess`'s last step (after configured and database keys),
/// and the session hooks (`on_connect`, `on_update`, `on_*_done`, `on_disconnect`) that observe the
/// ingest server's connections.
struct NotifyWiring {
    let publish: (any PublishAuthorizer)?
    let sessions: (any RTMPSessionObserver)?
}

func notifyHooks(_ configuration: EstuaryConfiguration, notify: NotifyClient?, logger: Logger) -> NotifyWiring {
    guard let notify else { return NotifyWiring(publish: nil, sessions: nil) }
    let hooks = configuration.notify
    var publish: (any PublishAuthorizer)?
    if !hooks.onPublish.isEmpty {
        publish = OnPublishHook(urls: hooks.onPublish, client: notify)
    }
    for (name, urls) in [("on_connect", hooks.onConnect), ("on_publish", hooks.onPublish), ("on_update", hooks.onUpdate),
                         ("on_publish_done", hooks.onPublishDone), ("on_play_done", hooks.onPlayDone),
                         ("on_done", hooks.onDone), ("on_disconnect", hooks.onDisconnect)] where !urls.isEmpty {
        logger.info("\(name) hook", metadata: ["url": "\(urls.summary)"])
    }
    let sessions = hooks.observesSessions ? NotifyHooks(configuration: hooks, client: notify, logger: logger) : nil
    return NotifyWiring(publish: publish, sessions: sessions)
}

/// Who may watch: RTMP players pass the channel-name check, the signed-URL check for private
/// channels, then `on_play`; HLS requests pass the signed-URL check (nginx-rtmp has no hook there).
struct PlayAccess {
    let rtmp: any PlayAuthorizer
    let http: @Sendable (_ channel: String, _ query: String?) -> HLSRoutes<AppRequestContext>.Access
}

func playAuthorization(_ configuration: EstuaryConfiguration, notify: NotifyClient?, logger: Logger) throws -> PlayAccess {
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
    if !configuration.notify.onPlay.isEmpty, let notify {
        chain.append(OnPlayHook(urls: configuration.notify.onPlay, client: notify))
        logger.info("on_play hook", metadata: ["url": "\(configuration.notify.onPlay.summary)"])
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
    return PlayAccess(rtmp: PlayAuthorizerChain(chain), http: http)
}
