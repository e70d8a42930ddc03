public import Hummingbird
public import Logging
import Delivery
import Foundation
import IngestServer
import NIOCore
public import Packaging
public import ServiceLifecycle
public import StreamHub

/// The request context every route of the app shares.
public struct AppRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage

    public init(source: Source) {
        coreContext = .init(source: source)
    }
}

/// The whole server: RTMP ingest, the stream hub, HLS packaging and HTTP, as one service.
public struct EstuaryApplication: Service, CustomStringConvertible {
    public let configuration: EstuaryConfiguration
    public let hub: StreamHub
    public let segments: SegmentStore
    public let relay: RelayService
    /// The ports actually bound (useful with port 0).
    public let rtmpPort: ListeningPort
    public let httpPort: ListeningPort
    private let services: [any Service]
    private let logger: Logger

    init(configuration: EstuaryConfiguration, hub: StreamHub, segments: SegmentStore, relay: RelayService,
         rtmpPort: ListeningPort, httpPort: ListeningPort, services: [any Service], logger: Logger) {
        self.configuration = configuration
        self.hub = hub
        self.segments = segments
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
        // Shutdown goes in reverse: RTMP stops first, then HLS ends the playlists, then HTTP.
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
public func buildApplication(_ configuration: EstuaryConfiguration, logger: Logger) throws -> EstuaryApplication {
    let hub = StreamHub(registry: MemoryRegistry(), logger: logger)
    let segments = SegmentStore(retainedAfterWindow: configuration.hlsWindow)
    let rtmpPort = ListeningPort()
    let httpPort = ListeningPort()

    let authorizer = StaticKeyAuthorizer(channelsByKey: configuration.streamKeys)
    if authorizer.isOpen {
        logger.warning(
            "NO STREAM KEYS CONFIGURED: publishing is OPEN to anyone who can reach the RTMP port; the channel is the stream name. Use --stream-key KEY=CHANNEL or --stream-keys-file to require keys.")
    } else {
        logger.info("stream keys loaded", metadata: ["count": "\(configuration.streamKeys.count)"])
    }
    try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)

    let rtmp = RTMPServer(
        configuration: .init(host: configuration.bind, port: configuration.rtmpPort,
                             handshakeTimeout: .milliseconds(Int64(configuration.handshakeTimeout * 1000)),
                             idleTimeout: .milliseconds(Int64(configuration.idleTimeout * 1000)),
                             playerQueue: .init(maxPackets: configuration.playerQueuePackets, maxBytes: 16 << 20)),
        hub: hub, authorizer: authorizer, logger: logger, onListening: { rtmpPort.set($0) })

    let hls = HLSLivePackager(
        hub: hub, store: segments,
        configuration: HLSConfiguration(segmentDuration: configuration.hlsSegmentDuration,
                                        windowLength: configuration.hlsWindow, directory: configuration.hlsPath),
        grace: .milliseconds(Int64(configuration.publishGrace * 1000)), logger: logger)

    var relayConfiguration = configuration.relay
    relayConfiguration.pull.idleTimeout = .milliseconds(Int64(configuration.relayPullIdle * 1000))
    let relay = try RelayService(hub: hub, pushes: configuration.relayPush, pulls: configuration.relayPull,
                                 configuration: relayConfiguration, logger: logger)

    let router = Router(context: AppRequestContext.self)
    router.add(middleware: CORSMiddleware(allowOrigin: .all, allowHeaders: [.range, .accept, .origin],
                                          allowMethods: [.get, .head, .options, .post, .delete],
                                          exposedHeaders: ["Content-Length", "Content-Range"]))
    router.get("/health") { _, _ -> Response in
        let body = #"{"status":"ok","live":\#(hub.liveChannels.count)}"#
        return Response(status: .ok, headers: [.contentType: "application/json"],
                        body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
    router.addRoutes(HLSRoutes<AppRequestContext>(store: segments).routes, atPath: "/live")
    addRelayRoutes(to: router.group("/api/v1"), service: relay)

    let http = Application(
        router: router,
        configuration: .init(address: .hostname(configuration.bind, port: configuration.httpPort), serverName: "Estuary"),
        onServerRunning: { channel in
            let port = channel.localAddress?.port ?? configuration.httpPort
            logger.info("HTTP listening", metadata: ["address": "http://\(configuration.bind):\(port)"])
            httpPort.set(port)
        },
        logger: logger)

    // Services stop in reverse order: RTMP publishers end first (pushes unpublish cleanly), then relays.
    return EstuaryApplication(configuration: configuration, hub: hub, segments: segments, relay: relay, rtmpPort: rtmpPort,
                              httpPort: httpPort, services: [http, hls, relay, rtmp], logger: logger)
}
