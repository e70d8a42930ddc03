public import Configuration
import Foundation
public import Logging
public import Packaging
public import Auth
import IngestServer
public import NginxCompat
public import Storage
import StreamHub

/// Everything `estuary serve` can be told, resolved from flags, then `ESTUARY_*`
/// environment variables, then defaults.
public struct EstuaryConfiguration: Sendable, CustomStringConvertible {
    public var bind = "0.0.0.0"
    public var rtmpPort = 1935
    public var httpPort = 8080
    public var dataDirectory = "./estuary-data"
    public var hlsSegmentDuration = 2.0
    public var hlsWindow = 6
    /// Whether live channels are packaged as HLS at all.
    public var hls = true
    public var hlsPath: String?
    /// Stream key → channel. Empty means open publishing (channel = stream name).
    public var streamKeys: [String: String] = [:]
    /// Seconds a channel's playlist stays open for the publisher to come back.
    public var publishGrace = 10.0
    public var handshakeTimeout = 10.0
    public var idleTimeout = 30.0
    /// Messages an RTMP player may fall behind by before it skips to the next keyframe.
    public var playerQueuePackets = 1024
    /// Seconds an RTMP player may trail live (or stop reading) before it is disconnected.
    public var playerMaxLag = 15.0
    /// SO_SNDBUF of RTMP connections in bytes (nginx's `listen … sndbuf=`); 0 leaves the kernel's autotuning.
    public var rtmpSendBuffer = 0
    /// Merged read in milliseconds: a publisher's socket is read at most this often.
    public var rtmpMergedRead = 100
    /// Merged write in milliseconds: media goes to each RTMP player at most this often.
    public var rtmpMergedWrite = 100
    /// HMAC secret of signed play URLs; required when there are private channels.
    public var playSecret: String?
    /// Channels that need a signed URL to watch (RTMP and HLS); `*` makes them all private.
    public var privateChannels: Set<String> = []
    /// nginx-rtmp's notify hooks (`on_connect`, `on_publish`, `on_play`, `on_update`, `on_*_done`,
    /// `on_disconnect`, `on_record_done`), each for every application or per application, and how they are called.
    public var notify = NotifyConfiguration()
    /// Bearer token for `/api/v1`; without one the API answers loopback clients only.
    public var apiToken: String?
    /// `postgres://…` for PostgreSQL; nil means the SQLite file `<dataDirectory>/estuary.sqlite`.
    public var databaseURL: String?
    /// HS256 secret of access tokens; nil means one generated on first start and kept in the data directory.
    public var jwtSecret: String?
    /// Seconds an access token is valid.
    public var accessTokenLifetime = 900.0
    /// Seconds a refresh token is valid.
    public var refreshTokenLifetime = 30 * 86_400.0
    /// Login throttles (not flags: tests tighten them).
    public var accountLimits = AccountService.Limits()
    /// bcrypt cost of new password hashes (not a flag: tests lower it to the minimum allowed, 10).
    public var bcryptCost: UInt8 = Credentials.bcryptCost
    public var logLevel = Logger.Level.info
    /// Event loop threads for RTMP and HTTP; nil = the CPUs this process may run on.
    public var threads: Int?
    /// Which channels are recorded.
    public var recordMode = RecordMode.off
    /// Both by default: FLV survives a crash of the server, MP4 plays anywhere once finished.
    public var recordFormats: [RecordingFormat] = [.flv, .mp4]
    /// Where recordings go; nil means `<dataDirectory>/recordings`.
    public var recordPath: String?
    /// Bytes per recording file before the next keyframe starts a new one; 0 = no limit.
    public var recordMaxSize: Int64 = 0
    /// Seconds per recording file before the next keyframe starts a new one; 0 = no limit.
    public var recordMaxDuration = 0.0

    /// Where accounts, channels and stream keys are kept.
    public var databaseLocation: DatabaseLocation {
        get throws {
            guard let databaseURL else { return .sqlite(path: dataDirectory + "/estuary.sqlite") }
            do {
                return try DatabaseLocation(url: databaseURL)
            } catch {
                throw ConfigurationError.invalid(error.description)
            }
        }
    }

    /// The directory recordings are written to.
    public var recordingDirectory: String { recordPath ?? dataDirectory + "/recordings" }
    /// Pushes of live channels to upstream RTMP servers (`*` = every channel).
    public var relayPush: [RelayPushEntry] = []
    /// Remote RTMP streams pulled into local channels.
    public var relayPull: [RelayPullEntry] = []
    /// Seconds an on-demand pull keeps running without viewers.
    public var relayPullIdle = 10.0
    /// Timing of relay reconnects and timeouts (not flags: tests tighten them).
    public var relay = RelayService.Configuration()
    /// `redis://[[user]:password@]host[:port][/db]`: the registry every node shares; nil keeps it in memory.
    public var redisURL: String?
    /// Prefix of every Redis key and of the events channel.
    public var redisPrefix = "estuary:"
    /// Seconds between registry refreshes, and how long an entry lives without one.
    public var redisHeartbeat = 5.0
    public var redisTTL = 15.0
    /// Seconds a Redis command may take (connect, each reply) before Redis counts as down.
    public var redisTimeout = 1.0
    /// This node's id in the registry; nil = `<hostname>-<random>`, new at each start.
    public var nodeID: String?
    /// The HTTP base URL other nodes send players to; nil = `http://<hostname or bind>:<http port>`.
    public var publicURL: String?

    public init() {}

    /// For logs: stream keys are counted, never shown.
    public var description: String {
        "bind=\(bind) rtmp=\(rtmpPort) http=\(httpPort) data=\(dataDirectory) hls=\(hlsSegmentDuration)s×\(hlsWindow)"
            + " hlsPath=\(hlsPath ?? "-") keys=\(streamKeys.count) grace=\(publishGrace)s log=\(logLevel)"
            + " record=\(recordMode.rawValue)"
            + " relayPush=\(relayPush.count) relayPull=\(relayPull.count)"
            + " registry=\(redisURL == nil ? "memory" : "redis")"
            + " database=\((try? databaseLocation)?.description ?? "invalid")"
    }

    public enum ConfigurationError: Error, CustomStringConvertible {
        case invalid(String)

        public var description: String {
            switch self {
            case .invalid(let why): why
            }
        }
    }

    /// Reads the `estuary.*` keys: `estuary.rtmpPort` is `ESTUARY_RTMP_PORT` in the environment.
    public init(reader: ConfigReader) throws {
        let config = reader.scoped(to: "estuary")
        // Numbers are read as text and parsed here: the reader's typed getters fall back to the
        // default on a value like "1936x", and a typo must not quietly run on another port.
        func number<Value: LosslessStringConvertible>(_ key: String, _ current: Value) throws -> Value {
            guard let text = config.string(forKey: ConfigKey(stringLiteral: key)) else { return current }
            guard let value = Value(text.trimmingCharacters(in: .whitespaces)) else {
                throw ConfigurationError.invalid(
                    "\(Self.settingName(key)) '\(text)' is not a \(Value.self == Int.self || Value.self == Int64.self ? "whole number" : "number")")
            }
            return value
        }
        bind = config.string(forKey: "bind", default: bind)
        rtmpPort = try number("rtmpPort", rtmpPort)
        httpPort = try number("httpPort", httpPort)
        dataDirectory = config.string(forKey: "dataDir", default: dataDirectory)
        hlsSegmentDuration = try number("hlsSegmentDuration", hlsSegmentDuration)
        hlsWindow = try number("hlsWindow", hlsWindow)
        switch config.string(forKey: "hls", default: "on").lowercased() {
        case "on", "true", "yes", "1": hls = true
        case "off", "false", "no", "0": hls = false
        case let other: throw ConfigurationError.invalid("hls '\(other)' is not on or off")
        }
        hlsPath = config.string(forKey: "hlsPath")
        publishGrace = try number("publishGrace", publishGrace)
        handshakeTimeout = try number("handshakeTimeout", handshakeTimeout)
        idleTimeout = try number("idleTimeout", idleTimeout)
        playerQueuePackets = try number("playerQueuePackets", playerQueuePackets)
        playerMaxLag = try number("playerMaxLag", playerMaxLag)
        if config.string(forKey: "threads") != nil { threads = try number("threads", 0) }
        rtmpSendBuffer = try number("rtmpSendBuffer", rtmpSendBuffer)
        rtmpMergedRead = try number("rtmpMergedRead", rtmpMergedRead)
        rtmpMergedWrite = try number("rtmpMergedWrite", rtmpMergedWrite)
        playSecret = config.string(forKey: "playSecret", isSecret: true)
        privateChannels = Set(config.stringArray(forKey: "privateChannel", default: []))
        try readNotify(config, number: number)
        apiToken = config.string(forKey: "apiToken", isSecret: true)
        databaseURL = config.string(forKey: "databaseUrl", isSecret: true)
        jwtSecret = config.string(forKey: "jwtSecret", isSecret: true)
        accessTokenLifetime = try number("accessTokenTtl", accessTokenLifetime)
        refreshTokenLifetime = try number("refreshTokenTtl", refreshTokenLifetime)
        let level = config.string(forKey: "logLevel", default: "info")
        guard let parsedLevel = Logger.Level(rawValue: level) else {
            throw ConfigurationError.invalid("log level '\(level)' is not one of \(Logger.Level.allCases.map(\.rawValue))")
        }
        logLevel = parsedLevel

        let mode = config.string(forKey: "record", default: recordMode.rawValue)
        guard let parsedMode = RecordMode(rawValue: mode) else {
            throw ConfigurationError.invalid("record mode '\(mode)' is not one of all, off, manual")
        }
        recordMode = parsedMode
        if let format = config.string(forKey: "recordFormat") {
            switch format {
            case "flv": recordFormats = [.flv]
            case "mp4": recordFormats = [.mp4]
            case "both": recordFormats = [.flv, .mp4]
            default: throw ConfigurationError.invalid("record format '\(format)' is not one of flv, mp4, both")
            }
        }
        recordPath = config.string(forKey: "recordPath")
        recordMaxSize = try number("recordMaxSize", recordMaxSize)
        recordMaxDuration = try number("recordMaxDuration", recordMaxDuration)

        for entry in config.stringArray(forKey: "streamKey", isSecret: true, default: []) {
            try addStreamKey(entry)
        }
        if let file = config.string(forKey: "streamKeysFile") {
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw ConfigurationError.invalid("cannot read stream keys file \(file): \(error.localizedDescription)")
            }
            for line in text.split(whereSeparator: \.isNewline) {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                guard !trimmed.isEmpty, !trimmed.hasPrefix("#") else { continue }
                try addStreamKey(trimmed)
            }
        }
        relayPullIdle = try number("relayPullIdle", relayPullIdle)
        redisURL = config.string(forKey: "redisUrl", isSecret: true)
        redisPrefix = config.string(forKey: "redisPrefix", default: redisPrefix)
        redisHeartbeat = try number("redisHeartbeat", redisHeartbeat)
        redisTTL = try number("redisTtl", redisTTL)
        redisTimeout = try number("redisTimeout", redisTimeout)
        nodeID = config.string(forKey: "nodeId")
        publicURL = config.string(forKey: "publicUrl")
        for entry in config.stringArray(forKey: "relayPush", isSecret: true, default: []) {
            try addRelayPush(entry)
        }
        // In the environment the list is comma-separated, so ",always" arrives as an element of its own.
        for entry in config.stringArray(forKey: "relayPull", isSecret: true, default: []) {
            if let mode = RTMPPullClient.Mode(rawValue: entry.trimmingCharacters(in: .whitespaces)), !relayPull.isEmpty {
                relayPull[relayPull.count - 1].mode = mode
            } else {
                try addRelayPull(entry)
            }
        }
        try validate()
    }

    /// `--on-publish URL` (every application) or `--on-publish APP=URL` (repeatable), and the like for each hook;
    /// `--notify-method`, `--notify-timeout`, `--notify-update-timeout`, `--notify-update-strict`.
    private mutating func readNotify(_ config: ConfigReader, number: (String, Double) throws -> Double) throws {
        let hooks: [(String, WritableKeyPath<NotifyConfiguration, NotifyURL>)] = [
            ("onConnect", \.onConnect), ("onPublish", \.onPublish), ("onPlay", \.onPlay),
            ("onPublishDone", \.onPublishDone), ("onPlayDone", \.onPlayDone), ("onDone", \.onDone),
            ("onUpdate", \.onUpdate), ("onDisconnect", \.onDisconnect), ("onRecordDone", \.onRecordDone),
        ]
        for (key, path) in hooks {
            for entry in config.stringArray(forKey: ConfigKey(stringLiteral: key), default: []) {
                do {
                    try notify[keyPath: path].add(entry)
                } catch {
                    throw ConfigurationError.invalid("\(Self.settingName(key)): \(error)")
                }
            }
        }
        let method = config.string(forKey: "notifyMethod", default: notify.method.rawValue).lowercased()
        guard let parsedMethod = NotifyConfiguration.Method(rawValue: method) else {
            throw ConfigurationError.invalid("notify method '\(method)' is not get or post")
        }
        notify.method = parsedMethod
        let timeout = try number("notifyTimeout", 10)
        let updateTimeout = try number("notifyUpdateTimeout", 30)
        guard timeout > 0, timeout <= 300 else { throw ConfigurationError.invalid("notify timeout must be 0…300 seconds") }
        guard updateTimeout >= 0 else { throw ConfigurationError.invalid("notify update timeout must be 0 (off) or more seconds") }
        notify.timeout = .milliseconds(Int64(timeout * 1000))
        notify.updateTimeout = .milliseconds(Int64(updateTimeout * 1000))
        switch config.string(forKey: "notifyUpdateStrict", default: "off").lowercased() {
        case "on", "true", "yes", "1": notify.updateStrict = true
        case "off", "false", "no", "0": notify.updateStrict = false
        case let other: throw ConfigurationError.invalid("notify update strict '\(other)' is not on or off")
        }
    }

    /// A key as the user sets it: `rtmpPort` → `--rtmp-port (ESTUARY_RTMP_PORT)`.
    static func settingName(_ key: String) -> String {
        var words: [String] = []
        for character in key {
            if character.isUppercase || words.isEmpty { words.append("") }
            words[words.count - 1].append(character.lowercased())
        }
        return "--\(words.joined(separator: "-")) (ESTUARY_\(words.joined(separator: "_").uppercased()))"
    }

    /// `CHANNEL=URL`, `*=URL`, `APP/*=URL`.
    private mutating func addRelayPush(_ entry: String) throws {
        guard let equals = entry.firstIndex(of: "=") else {
            throw ConfigurationError.invalid("relay push must be CHANNEL=URL (or *=URL for every channel, APP/*=URL for an application's)")
        }
        let push = RelayPushEntry(channel: String(entry[..<equals]), url: String(entry[entry.index(after: equals)...]))
        guard push.scope != nil else {
            throw ConfigurationError.invalid("relay push channel '\(push.channel)' is not a channel name, * or APP/*")
        }
        guard push.url(for: push.isPattern ? "channel" : push.channel) != nil else {
            throw ConfigurationError.invalid("relay push for \(push.channel): \(RelayService.urlProblem(push.url))")
        }
        relayPush.append(push)
    }

    /// `CHANNEL=URL[,always|,on-demand]`.
    private mutating func addRelayPull(_ entry: String) throws {
        guard let equals = entry.firstIndex(of: "=") else {
            throw ConfigurationError.invalid("relay pull must be CHANNEL=URL[,always]")
        }
        let channel = String(entry[..<equals])
        var url = String(entry[entry.index(after: equals)...])
        var mode = RTMPPullClient.Mode.onDemand
        if let comma = url.lastIndex(of: ","), let parsed = RTMPPullClient.Mode(rawValue: String(url[url.index(after: comma)...])) {
            mode = parsed
            url = String(url[..<comma])
        }
        guard StaticKeyAuthorizer.isValidChannelName(channel) else {
            throw ConfigurationError.invalid("relay pull channel '\(channel)' is not a channel name")
        }
        guard RTMPURL(url) != nil else {
            throw ConfigurationError.invalid("relay pull for \(channel): \(RelayService.urlProblem(url))")
        }
        guard !relayPull.contains(where: { $0.channel == channel }) else {
            throw ConfigurationError.invalid("channel \(channel) has more than one relay pull")
        }
        relayPull.append(RelayPullEntry(channel: channel, url: url, mode: mode))
    }

    private mutating func addStreamKey(_ entry: String) throws {
        guard let equals = entry.firstIndex(of: "=") else {
            throw ConfigurationError.invalid("stream key must be KEY=CHANNEL")
        }
        let key = String(entry[..<equals])
        let channel = String(entry[entry.index(after: equals)...])
        guard !key.isEmpty else { throw ConfigurationError.invalid("empty stream key for channel \(channel)") }
        guard StaticKeyAuthorizer.isValidChannelName(channel) else {
            throw ConfigurationError.invalid("channel name '\(channel)' must be 1–64 of letters, digits, '-', '_', '.'")
        }
        streamKeys[key] = channel
    }

    private func validate() throws {
        guard (0...65535).contains(rtmpPort), (0...65535).contains(httpPort) else {
            throw ConfigurationError.invalid("ports must be 0…65535 (0 picks a free port)")
        }
        guard hlsSegmentDuration >= 0.5, hlsSegmentDuration <= 30 else {
            throw ConfigurationError.invalid("HLS segment duration must be 0.5…30 seconds")
        }
        guard (1...100).contains(hlsWindow) else { throw ConfigurationError.invalid("HLS window must be 1…100 segments") }
        guard rtmpSendBuffer == 0 || (1024...(64 << 20)).contains(rtmpSendBuffer) else {
            throw ConfigurationError.invalid("RTMP send buffer must be 0 (kernel default) or 1 KiB…64 MiB")
        }
        guard (0...1000).contains(rtmpMergedRead), (0...1000).contains(rtmpMergedWrite) else {
            throw ConfigurationError.invalid("RTMP merged read and write must be 0…1000 milliseconds")
        }
        guard threads.map({ (1...256).contains($0) }) ?? true else {
            throw ConfigurationError.invalid("threads must be 1…256")
        }
        guard playerMaxLag >= 1 else { throw ConfigurationError.invalid("player max lag must be at least 1 second") }
        guard playerQueuePackets >= 16 else { throw ConfigurationError.invalid("player queue must be at least 16 packets") }
        for channel in privateChannels where channel != "*" && !StaticKeyAuthorizer.isValidChannelName(channel) {
            throw ConfigurationError.invalid("private channel '\(channel)' is not a channel name (or *)")
        }
        guard privateChannels.isEmpty || (playSecret?.utf8.count ?? 0) >= 16 else {
            throw ConfigurationError.invalid("private channels need --play-secret of at least 16 characters to check signed URLs")
        }
        guard apiToken.map({ $0.utf8.count >= 16 }) ?? true else {
            throw ConfigurationError.invalid("API token must be at least 16 characters")
        }
        _ = try databaseLocation
        guard jwtSecret.map({ $0.utf8.count >= 32 }) ?? true else {
            throw ConfigurationError.invalid("JWT secret must be at least 32 bytes")
        }
        guard accessTokenLifetime >= 10, accessTokenLifetime <= 86_400, refreshTokenLifetime >= 60,
              refreshTokenLifetime <= 400 * 86_400
        else {
            throw ConfigurationError.invalid("access token TTL must be 10 s…1 day, refresh token TTL 60 s…400 days")
        }
        guard recordMaxSize >= 0, (0...1e9).contains(recordMaxDuration) else {
            throw ConfigurationError.invalid("record max size and duration must be 0 (no limit) or positive")
        }
        guard recordPath?.isEmpty != true else { throw ConfigurationError.invalid("record path must not be empty") }
        if let redisURL {
            do throws(RedisError) {
                _ = try RedisEndpoint(url: redisURL)
            } catch {
                throw ConfigurationError.invalid("redis URL: \(error.reason)")
            }
        }
        guard redisHeartbeat >= 0.1, redisTTL >= redisHeartbeat * 2, (0.05...30).contains(redisTimeout) else {
            throw ConfigurationError.invalid("redis TTL must be at least twice the heartbeat (≥ 0.1 s); timeout 0.05…30 s")
        }
        guard !redisPrefix.isEmpty, redisPrefix.utf8.count <= 64 else {
            throw ConfigurationError.invalid("redis prefix must be 1…64 characters")
        }
        if let nodeID, !StaticKeyAuthorizer.isValidChannelName(nodeID) {
            throw ConfigurationError.invalid("node id '\(nodeID)' must be 1–64 of letters, digits, '-', '_', '.'")
        }
        if let publicURL {
            guard let url = URL(string: publicURL), ["http", "https"].contains(url.scheme ?? ""), url.host != nil,
                  url.query == nil, url.path.isEmpty || url.path == "/" else {
                throw ConfigurationError.invalid("public URL '\(publicURL)' must be http(s)://host[:port]")
            }
        }
        guard publishGrace >= 0, handshakeTimeout > 0, idleTimeout > 0, relayPullIdle > 0 else {
            throw ConfigurationError.invalid("timeouts must be positive")
        }
    }
}
