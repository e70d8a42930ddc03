public import Auth
public import Hummingbird
public import Logging
import Delivery
import Metrics
import Prometheus
public import Storage
import Foundation
import IngestServer
import NginxCompat
public import NIOCore
public import Packaging
public import ServiceLifecycle
public import StreamHub

/// The request context every route of the app shares.
public struct AppRequestContext: RequestContext, IdentityRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// The caller, when the request carries a valid access token.
    public var identity: Identity?

    public init(source: Source) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}

/// The whole server: RTMP ingest, the stream hub, HLS packaging and HTTP, as one service.
public struct EstuaryApplication: Service, CustomStringConvertible {
    public let configuration: EstuaryConfiguration
    public let hub: StreamHub
    public let segments: SegmentStore
    public let recordings: RecordingService
    public let relay: RelayService
    public let storage: Storage
    public let accounts: AccountService
    public let channels: ChannelService
    /// The ports actually bound (useful with port 0).
    public let rtmpPort: ListeningPort
    public let httpPort: ListeningPort
    /// Every route the HTTP server answers (what `openapi.yaml` must describe).
    public let routes: [HTTPRoute]
    private let services: [any Service]
    private let logger: Logger

    init(configuration: EstuaryConfiguration, hub: StreamHub, segments: SegmentStore, recordings: RecordingService,
         relay: RelayService, storage: Storage, accounts: AccountService, channels: ChannelService,
         rtmpPort: ListeningPort, httpPort: ListeningPort, routes: [HTTPRoute], services: [any Service], logger: Logger) {
        self.routes = routes
        self.storage = storage
        self.accounts = accounts
        self.channels = channels
        self.configuration = configuration
        self.hub = hub
        self.segments = segments
        self.recordings = recordings
        self.relay = relay
        self.rtmpPort = rtmpPort
        self.httpPort = httpPort
        self.services = services
        self.logger = logger
    }

    /// ServiceLifecycle logs services by description; reflection would print the stream keys.
    public var description: String { "Estuary(\(configuration))" }

    /// Runs until graceful shutdown (of this service's own group, or its parent's).
    public func run() async throws {
        // Shutdown goes in reverse: RTMP stops first, then HLS ends the playlists, recordings are
        // closed, then HTTP.
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, logger: logger))
        do {
            try await group.run()
        } catch {
            rtmpPort.fail(error)
            httpPort.fail(error)
            throw error
        }
        rtmpPort.fail(ListeningPort.NotListening())
        httpPort.fail(ListeningPort.NotListening())
    }
}

/// Builds the app from configuration; `main` and the tests both call this.
///
/// `onRecordDone` is called (in order, never concurrently) each time a recording file is closed.
public func buildApplication(_ configuration: EstuaryConfiguration, logger: Logger,
                             onRecordDone: @escaping @Sendable (RecordingDone) async -> Void = { _ in })
    async throws -> EstuaryApplication {
    try await buildApplication(configuration, logger: logger, onRecordDone: onRecordDone, makeRecorder: nil)
}

/// `buildApplication` with recording files opened by `makeRecorder` (tests make them fail).
package func buildApplication(_ configuration: EstuaryConfiguration, logger: Logger,
                              onRecordDone: @escaping @Sendable (RecordingDone) async -> Void,
                              makeRecorder: RecordingService.RecorderFactory?) async throws -> EstuaryApplication {
    let registrySetup = try RegistrySetup(configuration, logger: logger)
    let hub = StreamHub(registry: registrySetup.registry, logger: logger)
    registrySetup.redis?.attach(hub)
    let eventLoops = EventLoops.group(threads: configuration.threads ?? EventLoops.availableCPUs)
    let segments = SegmentStore(retainedAfterWindow: configuration.hlsWindow)
    let rtmpPort = ListeningPort()
    let httpPort = ListeningPort()

    try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
    let prometheus = PrometheusCollectorRegistry()
    let metrics = PrometheusMetricsFactory(registry: prometheus)

    // Accounts, channels and stream keys.
    let storage = try await Storage.open(try configuration.databaseLocation, migrations: AuthMigrations.all,
                                         eventLoopGroup: eventLoops, logger: logger)
    let accounts: AccountService
    let channels: ChannelService
    do {
        let secret = try JWTSecret.load(configured: configuration.jwtSecret, dataDirectory: configuration.dataDirectory)
        accounts = AccountService(
            storage: storage, accessTokens: await AccessTokens(secret: secret, lifetime: configuration.accessTokenLifetime),
            refreshLifetime: configuration.refreshTokenLifetime, limits: configuration.accountLimits,
            bcryptCost: configuration.bcryptCost, metrics: metrics, logger: logger)
        channels = ChannelService(storage: storage, hub: hub, logger: logger)
    } catch {
        await storage.close()
        throw error
    }

    // One HTTP client for every notify hook, shut down after everything that calls it.
    let notify = configuration.notify.isEmpty ? nil : NotifyClient(configuration: configuration.notify, logger: logger)
    let playAccess = try playAuthorization(configuration, notify: notify, logger: logger)
    let hooks = notifyHooks(configuration, notify: notify, logger: logger)
    let authorizer = PublishAccess(staticKeys: configuration.streamKeys, channels: channels, hook: hooks.publish,
                                   metrics: metrics, logger: logger)
    if !configuration.streamKeys.isEmpty {
        logger.info("stream keys loaded", metadata: ["count": "\(configuration.streamKeys.count)"])
    }
    if configuration.notify.onPublish.all != nil {
        logger.notice("on_publish decides every publish (after the configured and database keys)")
    } else if configuration.streamKeys.isEmpty, try await !channels.hasAccounts() {
        logger.warning(
            "NO STREAM KEYS: publishing is OPEN to anyone who can reach the RTMP port; the channel is the stream name. Create an account and a key (API or `estuary keys create`) or use --stream-key KEY=CHANNEL to require keys.")
    }
    let rtmp = RTMPServer(
        configuration: .init(host: configuration.bind, port: configuration.rtmpPort,
                             handshakeTimeout: .milliseconds(Int64(configuration.handshakeTimeout * 1000)),
                             idleTimeout: .milliseconds(Int64(configuration.idleTimeout * 1000)),
                             nodeID: registrySetup.nodeID,
                             playerQueue: .init(maxPackets: configuration.playerQueuePackets, maxBytes: 16 << 20),
                             playerMaxLag: .milliseconds(Int64(configuration.playerMaxLag * 1000)),
                             sendBufferSize: configuration.rtmpSendBuffer == 0 ? nil : configuration.rtmpSendBuffer,
                             mergedRead: .milliseconds(Int64(configuration.rtmpMergedRead)),
                             mergedWrite: .milliseconds(Int64(configuration.rtmpMergedWrite))),
        hub: hub, authorizer: authorizer, playAuthorizer: playAccess.rtmp, observer: hooks.sessions,
        eventLoopGroup: eventLoops, logger: logger,
        onListening: { rtmpPort.set($0) })

    // `--hls off` makes a pure RTMP server (relay, recording, playback), like nginx-rtmp without `hls on`.
    let hls = !configuration.hls ? nil : HLSLivePackager(
        hub: hub, store: segments,
        configuration: HLSConfiguration(segmentDuration: configuration.hlsSegmentDuration,
                                        windowLength: configuration.hlsWindow, directory: configuration.hlsPath),
        grace: .milliseconds(Int64(configuration.publishGrace * 1000)), logger: logger)

    let recordings = RecordingService(
        hub: hub,
        configuration: .init(mode: configuration.recordMode, formats: configuration.recordFormats,
                             directory: configuration.recordingDirectory,
                             limits: RecordingLimits(maxBytes: configuration.recordMaxSize,
                                                     maxDuration: Int64(configuration.recordMaxDuration * 1000))),
        logger: logger, onRecordDone: { done in
            await onRecordDone(done)
            if let notify, let url = configuration.notify.onRecordDone.url(app: done.app) {
                await OnRecordDoneHook(url: url, client: notify).call(done)
            }
        }, makeRecorder: makeRecorder)

    var relayConfiguration = configuration.relay
    relayConfiguration.pull.idleTimeout = .milliseconds(Int64(configuration.relayPullIdle * 1000))
    let relay = try RelayService(hub: hub, pushes: configuration.relayPush, pulls: configuration.relayPull,
                                 configuration: relayConfiguration, logger: logger)

    let router = Router(context: AppRequestContext.self)
    // Browser players read HLS from anywhere; browser dashboards call the API with a bearer token.
    router.add(middleware: CORSMiddleware(allowOrigin: .all,
                                          allowHeaders: [.range, .accept, .origin, .authorization, .contentType],
                                          allowMethods: [.get, .head, .options, .post, .put, .patch, .delete],
                                          exposedHeaders: ["Content-Length", "Content-Range"],
                                          // Players preflight Range requests; 2 h is the most Chrome keeps.
                                          maxAge: .seconds(7200)))
    router.get("/health") { _, _ -> Response in healthResponse(hub: hub) }
    router.get("/metrics") { _, _ -> Response in
        Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: prometheus.emitToBuffer())))
    }
    let v1 = router.group("/api/v1")
        .add(middleware: RequestLogMiddleware(logger: logger))
        .add(middleware: APIErrorMiddleware(logger: logger))
        .add(middleware: IdentityMiddleware<AppRequestContext>(tokens: accounts.accessTokens))
    OpenAPIDocument.add(to: v1)
    // Accounts and channels answer anyone: each route checks the caller's token itself.
    AuthRoutes<AppRequestContext>(accounts: accounts).add(to: v1)
    ChannelRoutes<AppRequestContext>(channels: channels).add(to: v1)
    // The operator's routes: an admin's token, the API token, or (with no API token) loopback.
    let api = v1.group().add(middleware: APIAccessMiddleware(token: configuration.apiToken))
    StreamsAPI(hub: hub, nodeID: registrySetup.nodeID, sections: ["recordings": { recordings.status(channel: $0) },
                                   "relays": { relay.targets(channel: $0) }]).add(to: api)
    addRecordingRoutes(to: api, service: recordings)
    addRelayRoutes(to: api, service: relay)
    if configuration.apiToken == nil {
        logger.notice("API answers loopback clients only; set --api-token to open it to the network")
    }
    // With Redis, a channel live on another node is redirected there.
    var elsewhere: (@Sendable (String) async -> String?)?
    if let redis = registrySetup.redis {
        let resolver = RemoteChannelResolver(registry: redis, hub: hub)
        elsewhere = { await resolver.nodeURL(channel: $0) }
    }
    router.addRoutes(HLSRoutes<AppRequestContext>(
        store: segments, access: playAccess.http, elsewhere: elsewhere,
        onPlaylist: { channel, request, context in
            hub.registry.hlsSessionSeen(channel: channel, session: hlsSession(context.remoteAddress, request.headers[.userAgent]))
        }).routes, atPath: "/live")
    // Where this node is reached, for its registry record and `/api/v1/nodes`.
    let addresses: @Sendable () async throws -> (http: String, rtmp: String) = {
        let http = try await httpPort.value
        let rtmp = try await rtmpPort.value
        let host = ["0.0.0.0", "::"].contains(configuration.bind) ? ProcessInfo.processInfo.hostName : configuration.bind
        return (RegistrySetup.publicURL(configuration, httpPort: http), "\(host):\(rtmp)")
    }
    StreamsAPI.addNodeRoutes(to: api, registry: registrySetup.registry) {
        let (http, rtmp) = try await addresses()
        var node = NodeRecord(id: registrySetup.nodeID, httpURL: http, rtmpAddress: rtmp, version: estuaryVersion)
        node.streams = hub.liveChannels.count
        return node
    }

    // Added last, so it wraps only what no route matched: an unknown API path or method gets JSON too.
    router.add(middleware: UnknownAPIRouteMiddleware())
    let httpAccess = playAccess.http
    let sharedRegistry = registrySetup.redis != nil
    // Only a shared registry counts HLS sessions: without one, the fast path looks at no address.
    let countHLSSession: (@Sendable (String, SocketAddress?, String?) -> Void)?
    if sharedRegistry {
        countHLSSession = { @Sendable channel, address, userAgent in
            hub.registry.hlsSessionSeen(channel: channel, session: hlsSession(address, userAgent))
        }
    } else {
        countHLSSession = nil
    }
    let http = Application(
        router: router,
        // Open channels' playlists and whole segments are answered on the event loop (HLSFastPath);
        // everything else goes through the router.
        server: .http1(additionalChannelHandlers: [
            // With Redis, only channels live here: the router redirects those live on another node.
            HLSFastPath(store: segments, serverName: "Estuary",
                        isOpen: { httpAccess($0, nil) == .open && (!sharedRegistry || hub.stream(channel: $0) != nil) },
                        onPlaylist: countHLSSession, rawRequests: true),
        ]),
        configuration: .init(address: .hostname(configuration.bind, port: configuration.httpPort), serverName: "Estuary"),
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? configuration.httpPort
            logger.info("HTTP listening", metadata: ["address": "http://\(configuration.bind):\(port)"])
            httpPort.set(port)
        },
        eventLoopGroupProvider: .shared(eventLoops),
        logger: logger)

    // The registry stops last: by then every publisher ended and released its lease.
    let registryService = registrySetup.redis.map { redis in
        RegistryService(registry: redis, announce: addresses)
    }
    // Services stop in reverse order: RTMP publishers end first (pushes unpublish cleanly), then relays,
    // then HLS ends its playlists, recordings close their files, HTTP stops; hooks are last.
    var services: [any Service] = [StorageService(storage: storage)]
    if let registryService { services.append(registryService) }
    if let notify { services.append(notify) }
    services += [http, recordings] as [any Service]
    if let hls { services.append(hls) }
    services += [relay, rtmp] as [any Service]
    return EstuaryApplication(configuration: configuration, hub: hub, segments: segments, recordings: recordings,
                              relay: relay, storage: storage, accounts: accounts, channels: channels,
                              rtmpPort: rtmpPort, httpPort: httpPort,
                              routes: router.routes.map { HTTPRoute(method: $0.method.rawValue, path: $0.path.description) },
                              services: services,
                              logger: logger)
}

/// Closes the database after everything that uses it has stopped.
struct StorageService: Service {
    let storage: Storage

    func run() async throws {
        do {
            try await gracefulShutdown()
        } catch is CancellationError {}
        await storage.close()
    }
}
