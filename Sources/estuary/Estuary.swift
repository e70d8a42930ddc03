import App
import ArgumentParser
import Configuration
import Foundation
import Logging
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc

/// Segments (100 KB to a few MB) are made and dropped all the time: take them from the heap instead
/// of a fresh mmap each, whose every page is faulted and zeroed again, and keep freed memory for
/// the next ones instead of trimming it back after each. `mallopt` is glibc's (malloc.h, which the
/// Glibc module does not export), hence the lookup.
private func tuneMalloc() {
    typealias MallOpt = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
    let mallopt = unsafeBitCast(symbol, to: MallOpt.self)
    let trimThreshold: Int32 = -1, mmapThreshold: Int32 = -3  // M_TRIM_THRESHOLD, M_MMAP_THRESHOLD
    _ = mallopt(mmapThreshold, 32 << 20)
    _ = mallopt(trimThreshold, 128 << 20)
}
#else
private func tuneMalloc() {}
#endif

@main
struct Estuary: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "estuary",
        abstract: "Live media server: RTMP in, HLS out.",
        discussion: """
            With no subcommand, estuary runs `estuary serve`. Its common options:

              --rtmp-port <port>             RTMP port; 0 picks a free one (ESTUARY_RTMP_PORT, default 1935)
              --http-port <port>             HTTP port for HLS, the API, /health (ESTUARY_HTTP_PORT, default 8080)
              --bind <address>               address to listen on (ESTUARY_BIND, default 0.0.0.0)
              --data-dir <path>              the server's data (ESTUARY_DATA_DIR, default ./estuary-data)
              --hls-segment-duration <s>     target segment length (ESTUARY_HLS_SEGMENT_DURATION, default 2)
              --hls-window <n>               segments in the live playlist (ESTUARY_HLS_WINDOW, default 6)
              --hls-path <path>              also write HLS to this directory (ESTUARY_HLS_PATH)
              --stream-key <key=channel>     allow KEY to publish as CHANNEL, repeatable (ESTUARY_STREAM_KEY);
                                             with no keys anyone may publish, the channel is the stream name
              --log-level <level>            trace … critical (ESTUARY_LOG_LEVEL, default info)
              --redis-url <url>              share live streams with other nodes through Redis,
                                             redis://[:password@]host:port/db (ESTUARY_REDIS_URL)

            Every option has an ESTUARY_<NAME> variable; flags win over the environment.
            See `estuary serve --help` for all of them (recording, relays, signed URLs, API).
            """,
        subcommands: [Serve.self, SignURL.self, Users.self, Keys.self],
        defaultSubcommand: Serve.self)
}

/// Prints the query that signs a play URL of a private channel.
struct SignURL: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sign-url",
        abstract: "Print ?expires=…&token=… for a private channel (secret from ESTUARY_PLAY_SECRET or --secret).")

    @Argument(help: "The channel.")
    var channel: String
    @Option(help: "Seconds the URL stays valid.")
    var ttl: Int = 3600
    @Option(help: "The play secret (prefer ESTUARY_PLAY_SECRET: flags show in `ps`).")
    var secret: String?

    func run() throws {
        guard let secret = secret ?? ProcessInfo.processInfo.environment["ESTUARY_PLAY_SECRET"], !secret.isEmpty else {
            throw ValidationError("no secret: set ESTUARY_PLAY_SECRET or pass --secret")
        }
        guard ttl > 0 else { throw ValidationError("--ttl must be positive") }
        print("?" + SignedPlayURL(secret: secret).query(channel: channel, expires: Date().addingTimeInterval(Double(ttl))))
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the server.",
        discussion: """
            Every option can also be set in the environment as ESTUARY_<NAME> (for example \
            ESTUARY_RTMP_PORT=1936, ESTUARY_STREAM_KEY=key1=main,key2=other). Flags win over the environment.
            With no stream keys the server runs open: anyone may publish, the channel is the stream name.
            """)

    @Option(help: "Address to listen on. [ESTUARY_BIND, default 0.0.0.0]")
    var bind: String?
    @Option(help: "RTMP port; 0 picks a free one. [ESTUARY_RTMP_PORT, default 1935]")
    var rtmpPort: Int?
    @Option(help: "HTTP port; 0 picks a free one. [ESTUARY_HTTP_PORT, default 8080]")
    var httpPort: Int?
    @Option(help: "Directory for the server's data. [ESTUARY_DATA_DIR, default ./estuary-data]")
    var dataDir: String?
    @Option(help: "Target HLS segment length in seconds. [ESTUARY_HLS_SEGMENT_DURATION, default 2]")
    var hlsSegmentDuration: Double?
    @Option(help: "Segments in the live playlist. [ESTUARY_HLS_WINDOW, default 6]")
    var hlsWindow: Int?
    @Option(help: "Package live channels as HLS: on or off (off: RTMP only, like nginx-rtmp without hls on). [ESTUARY_HLS, default on]")
    var hls: String?
    @Option(help: "Also write HLS to this directory, as <path>/<channel>/index.m3u8. [ESTUARY_HLS_PATH]")
    var hlsPath: String?
    @Option(help: "Seconds a playlist waits for its publisher to return before it ends. [ESTUARY_PUBLISH_GRACE, default 10]")
    var publishGrace: Double?
    @Option(help: "Allow KEY to publish as CHANNEL (repeatable). [ESTUARY_STREAM_KEY, comma-separated]")
    var streamKey: [String] = []
    @Option(help: "File of KEY=CHANNEL lines. [ESTUARY_STREAM_KEYS_FILE]")
    var streamKeysFile: String?
    @Option(help: "Messages an RTMP player may fall behind before it skips to the next keyframe. [ESTUARY_PLAYER_QUEUE_PACKETS, default 1024]")
    var playerQueuePackets: Int?
    @Option(help: "Seconds an RTMP player may trail live, or stop reading, before it is disconnected. [ESTUARY_PLAYER_MAX_LAG, default 15]")
    var playerMaxLag: Double?
    @Option(help: "Event loop threads for RTMP and HTTP. [ESTUARY_THREADS, default: the CPUs this process may use]")
    var threads: Int?
    @Option(help: "SO_SNDBUF of RTMP connections in bytes, as nginx's listen sndbuf=; 0 = kernel autotuning. [ESTUARY_RTMP_SEND_BUFFER, default 0]")
    var rtmpSendBuffer: Int?
    @Option(help: "Merged read: milliseconds between reads of a publisher's socket; fewer wakeups per message, that much more ingest latency. [ESTUARY_RTMP_MERGED_READ, default 100]")
    var rtmpMergedRead: Int?
    @Option(help: "Merged write: milliseconds between writes to an RTMP player; fewer syscalls per player, that much more playback latency. [ESTUARY_RTMP_MERGED_WRITE, default 100]")
    var rtmpMergedWrite: Int?
    @Option(help: "Secret for signed play URLs (?expires=&token=, HMAC-SHA256). [ESTUARY_PLAY_SECRET]")
    var playSecret: String?
    @Option(help: "A channel that needs a signed URL to watch, over RTMP and HLS; * for all (repeatable). [ESTUARY_PRIVATE_CHANNEL, comma-separated]")
    var privateChannel: [String] = []
    @Option(help: "nginx-rtmp's on_connect: URL (or APP=URL, repeatable) asked on each RTMP connect; 2xx goes on, 3xx moves to the Location's app, else closes. [ESTUARY_ON_CONNECT]")
    var onConnect: [String] = []
    @Option(help: "nginx-rtmp's on_publish: URL (or APP=URL, repeatable) asked before each publish; 2xx allows, 3xx publishes as the Location's channel, else refuses. [ESTUARY_ON_PUBLISH]")
    var onPublish: [String] = []
    @Option(help: "nginx-rtmp's on_play: URL (or APP=URL, repeatable) asked before each RTMP play; 2xx allows, 3xx renames, else refuses. [ESTUARY_ON_PLAY]")
    var onPlay: [String] = []
    @Option(help: "nginx-rtmp's on_publish_done: URL (or APP=URL) told when a publish ends. [ESTUARY_ON_PUBLISH_DONE]")
    var onPublishDone: [String] = []
    @Option(help: "nginx-rtmp's on_play_done: URL (or APP=URL) told when an RTMP play ends. [ESTUARY_ON_PLAY_DONE]")
    var onPlayDone: [String] = []
    @Option(help: "nginx-rtmp's on_done: URL (or APP=URL) told when a publish or play ends. [ESTUARY_ON_DONE]")
    var onDone: [String] = []
    @Option(help: "nginx-rtmp's on_update: URL (or APP=URL) asked every --notify-update-timeout while a stream goes on; an error status ends it. [ESTUARY_ON_UPDATE]")
    var onUpdate: [String] = []
    @Option(help: "nginx-rtmp's on_disconnect: URL (or APP=URL) told when an RTMP connection closes. [ESTUARY_ON_DISCONNECT]")
    var onDisconnect: [String] = []
    @Option(help: "nginx-rtmp's on_record_done: URL (or APP=URL) told the path of each finished recording. [ESTUARY_ON_RECORD_DONE]")
    var onRecordDone: [String] = []
    @Option(help: "nginx-rtmp's notify_method: post (form body) or get (query string). [ESTUARY_NOTIFY_METHOD, default post]")
    var notifyMethod: String?
    @Option(help: "Seconds a notify hook may take to answer; past it the call counts as refused. [ESTUARY_NOTIFY_TIMEOUT, default 10]")
    var notifyTimeout: Double?
    @Option(help: "nginx-rtmp's notify_update_timeout: seconds between on_update calls; 0 = none. [ESTUARY_NOTIFY_UPDATE_TIMEOUT, default 30]")
    var notifyUpdateTimeout: Double?
    @Option(help: "nginx-rtmp's notify_update_strict: on ends the session on any non-2xx on_update answer, 3xx too. [ESTUARY_NOTIFY_UPDATE_STRICT, default off]")
    var notifyUpdateStrict: String?
    @Option(help: "Bearer token for /api/v1 (16+ characters); without one the API answers loopback clients only. [ESTUARY_API_TOKEN]")
    var apiToken: String?
    @Option(help: "postgres://user:pass@host:port/db for PostgreSQL; default: SQLite file <data-dir>/estuary.sqlite. [ESTUARY_DATABASE_URL]")
    var databaseUrl: String?
    @Option(help: "HS256 secret of access tokens (32+ bytes); default: generated once into <data-dir>/jwt-secret. [ESTUARY_JWT_SECRET]")
    var jwtSecret: String?
    @Option(help: "Seconds an access token is valid. [ESTUARY_ACCESS_TOKEN_TTL, default 900]")
    var accessTokenTtl: Double?
    @Option(help: "Seconds a refresh token is valid. [ESTUARY_REFRESH_TOKEN_TTL, default 2592000 (30 days)]")
    var refreshTokenTtl: Double?
    @Option(help: "Record channels: all, off or manual (started and stopped through the API). [ESTUARY_RECORD, default off]")
    var record: String?
    @Option(help: "Recording format: flv, mp4 or both. [ESTUARY_RECORD_FORMAT, default both]")
    var recordFormat: String?
    @Option(help: "Directory for recordings, <channel>-<yyyyMMdd-HHmmss>.<ext>. [ESTUARY_RECORD_PATH, default <data-dir>/recordings]")
    var recordPath: String?
    @Option(help: "Start a new recording file at the first keyframe past this many bytes; 0 = no limit. [ESTUARY_RECORD_MAX_SIZE, default 0]")
    var recordMaxSize: Int64?
    @Option(help: "Start a new recording file at the first keyframe past this many seconds; 0 = no limit. [ESTUARY_RECORD_MAX_DURATION, default 0]")
    var recordMaxDuration: Double?
    @Option(help: "Push CHANNEL to an upstream RTMP URL (repeatable; * = every channel, APP/* = every channel published in APP, {channel} in the URL is replaced). [ESTUARY_RELAY_PUSH, comma-separated]")
    var relayPush: [String] = []
    @Option(help: "Pull a remote RTMP URL into CHANNEL when a player asks, or all the time with ,always (repeatable). [ESTUARY_RELAY_PULL]")
    var relayPull: [String] = []
    @Option(help: "Seconds an on-demand pull runs without RTMP players. [ESTUARY_RELAY_PULL_IDLE, default 10]")
    var relayPullIdle: Double?
    @Option(help: "Share the registry of live streams through Redis: redis://[[user]:password@]host[:port][/db] (no TLS). [ESTUARY_REDIS_URL, default: in memory]")
    var redisUrl: String?
    @Option(help: "Prefix of Redis keys and of the events channel. [ESTUARY_REDIS_PREFIX, default estuary:]")
    var redisPrefix: String?
    @Option(help: "Seconds between registry refreshes. [ESTUARY_REDIS_HEARTBEAT, default 5]")
    var redisHeartbeat: Double?
    @Option(help: "Seconds a registry entry lives without a refresh. [ESTUARY_REDIS_TTL, default 15]")
    var redisTtl: Double?
    @Option(help: "Seconds a Redis command may take before Redis counts as down. [ESTUARY_REDIS_TIMEOUT, default 1]")
    var redisTimeout: Double?
    @Option(help: "This node's id in the registry. [ESTUARY_NODE_ID, default <hostname>-<random>]")
    var nodeId: String?
    @Option(help: "HTTP base URL other nodes redirect players to, http(s)://host[:port]. [ESTUARY_PUBLIC_URL, default http://<host>:<http port>]")
    var publicUrl: String?
    @Option(help: "trace, debug, info, notice, warning, error or critical. [ESTUARY_LOG_LEVEL, default info]")
    var logLevel: String?

    func run() async throws {
        let configuration = try configuration(environment: ProcessInfo.processInfo.environment)
        let level = configuration.logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "estuary")
        tuneMalloc()
        let app = try await buildApplication(configuration, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: app)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        logger.info("stopped")
    }

    /// What these flags and `environment` resolve to: a flag wins over its `ESTUARY_*` variable,
    /// which wins over the default. Invalid values are a `ValidationError` (usage exit code).
    func configuration(environment: [String: String]) throws -> EstuaryConfiguration {
        let secrets = ["streamKey", "playSecret", "apiToken", "relayPush", "relayPull", "databaseUrl", "jwtSecret", "redisUrl"]
        var flags: [AbsoluteConfigKey: ConfigValue] = [:]
        func flag(_ key: String, _ content: ConfigContent?) {
            if let content { flags[AbsoluteConfigKey(stringLiteral: "estuary.\(key)")] = ConfigValue(content, isSecret: secrets.contains(key)) }
        }
        flag("bind", bind.map(ConfigContent.string))
        flag("rtmpPort", rtmpPort.map { .string("\($0)") })
        flag("httpPort", httpPort.map { .string("\($0)") })
        flag("dataDir", dataDir.map(ConfigContent.string))
        flag("hlsSegmentDuration", hlsSegmentDuration.map { .string("\($0)") })
        flag("hlsWindow", hlsWindow.map { .string("\($0)") })
        flag("hls", hls.map(ConfigContent.string))
        flag("hlsPath", hlsPath.map(ConfigContent.string))
        flag("publishGrace", publishGrace.map { .string("\($0)") })
        flag("streamKey", streamKey.isEmpty ? nil : .stringArray(streamKey))
        flag("streamKeysFile", streamKeysFile.map(ConfigContent.string))
        flag("playerQueuePackets", playerQueuePackets.map { .string("\($0)") })
        flag("playerMaxLag", playerMaxLag.map { .string("\($0)") })
        flag("threads", threads.map { .string("\($0)") })
        flag("rtmpSendBuffer", rtmpSendBuffer.map { .string("\($0)") })
        flag("rtmpMergedRead", rtmpMergedRead.map { .string("\($0)") })
        flag("rtmpMergedWrite", rtmpMergedWrite.map { .string("\($0)") })
        flag("playSecret", playSecret.map(ConfigContent.string))
        flag("privateChannel", privateChannel.isEmpty ? nil : .stringArray(privateChannel))
        for (key, urls) in [("onConnect", onConnect), ("onPublish", onPublish), ("onPlay", onPlay),
                            ("onPublishDone", onPublishDone), ("onPlayDone", onPlayDone), ("onDone", onDone),
                            ("onUpdate", onUpdate), ("onDisconnect", onDisconnect), ("onRecordDone", onRecordDone)] {
            flag(key, urls.isEmpty ? nil : .stringArray(urls))
        }
        flag("notifyMethod", notifyMethod.map(ConfigContent.string))
        flag("notifyTimeout", notifyTimeout.map { .string("\($0)") })
        flag("notifyUpdateTimeout", notifyUpdateTimeout.map { .string("\($0)") })
        flag("notifyUpdateStrict", notifyUpdateStrict.map(ConfigContent.string))
        flag("apiToken", apiToken.map(ConfigContent.string))
        flag("databaseUrl", databaseUrl.map(ConfigContent.string))
        flag("jwtSecret", jwtSecret.map(ConfigContent.string))
        flag("accessTokenTtl", accessTokenTtl.map { .string("\($0)") })
        flag("refreshTokenTtl", refreshTokenTtl.map { .string("\($0)") })
        flag("relayPush", relayPush.isEmpty ? nil : .stringArray(relayPush))
        flag("relayPull", relayPull.isEmpty ? nil : .stringArray(relayPull))
        flag("relayPullIdle", relayPullIdle.map { .string("\($0)") })
        flag("logLevel", logLevel.map(ConfigContent.string))
        flag("redisUrl", redisUrl.map(ConfigContent.string))
        flag("redisPrefix", redisPrefix.map(ConfigContent.string))
        flag("redisHeartbeat", redisHeartbeat.map { .string("\($0)") })
        flag("redisTtl", redisTtl.map { .string("\($0)") })
        flag("redisTimeout", redisTimeout.map { .string("\($0)") })
        flag("nodeId", nodeId.map(ConfigContent.string))
        flag("publicUrl", publicUrl.map(ConfigContent.string))
        flag("record", record.map(ConfigContent.string))
        flag("recordFormat", recordFormat.map(ConfigContent.string))
        flag("recordPath", recordPath.map(ConfigContent.string))
        flag("recordMaxSize", recordMaxSize.map { .string("\($0)") })
        flag("recordMaxDuration", recordMaxDuration.map { .string("\($0)") })
        // Secrets are redacted wherever the reader logs or describes a value.
        let reader = ConfigReader(providers: [
            InMemoryProvider(name: "flags", values: flags),
            EnvironmentVariablesProvider(
                environmentVariables: environment,
                secretsSpecifier: .specific(["ESTUARY_STREAM_KEY", "ESTUARY_PLAY_SECRET", "ESTUARY_API_TOKEN",
                                             "ESTUARY_RELAY_PUSH", "ESTUARY_RELAY_PULL", "ESTUARY_DATABASE_URL",
                                             "ESTUARY_JWT_SECRET", "ESTUARY_REDIS_URL"])),
        ])
        do {
            return try EstuaryConfiguration(reader: reader)
        } catch {
            throw ValidationError("\(error)")
        }
    }
}
