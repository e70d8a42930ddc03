/// What a publisher asked for, with what nginx-rtmp's `on_publish` reports about it.
public struct PublishRequest: Sendable, Equatable, CustomStringConvertible {
    public var app: String
    /// The publishing name without its query string: the stream key. Never log it.
    public var streamKey: String
    /// The `a=b&c=d` part of the publishing name, if any.
    public var query: String?
    /// "live", "record" or "append" as sent.
    public var publishType: String
    public var tcURL: String?
    public var flashVer: String?
    public var swfURL: String?
    public var pageURL: String?
    /// The peer's address, as `ip` (no port).
    public var address: String
    public var clientID: UInt64

    public init(app: String, streamKey: String, query: String? = nil, publishType: String = "live",
                tcURL: String? = nil, flashVer: String? = nil, swfURL: String? = nil, pageURL: String? = nil,
                address: String = "", clientID: UInt64 = 0) {
        self.app = app
        self.streamKey = streamKey
        self.query = query
        self.publishType = publishType
        self.tcURL = tcURL
        self.flashVer = flashVer
        self.swfURL = swfURL
        self.pageURL = pageURL
        self.address = address
        self.clientID = clientID
    }

    /// Interpolated into logs by accident one day: never the key.
    public var description: String { "publish of a key in \(app) from \(address) (client \(clientID))" }
}

/// Decides whether a stream key may publish, and as which channel.
public protocol PublishAuthorizer: Sendable {
    func authorize(_ request: PublishRequest) async -> PublishDecision
}

public enum PublishDecision: Sendable, Equatable {
    case allow(channel: String)
    case deny(reason: String)
}

/// Keys from configuration (`--stream-key KEY=CHANNEL`). With no keys it runs
/// open: anyone may publish and the channel is the stream name.
public struct StaticKeyAuthorizer: PublishAuthorizer {
    public let channelsByKey: [String: String]

    public init(channelsByKey: [String: String]) {
        self.channelsByKey = channelsByKey
    }

    public var isOpen: Bool { channelsByKey.isEmpty }

    public func authorize(_ request: PublishRequest) async -> PublishDecision {
        if isOpen {
            return Self.isValidChannelName(request.streamKey)
                ? .allow(channel: request.streamKey)
                : .deny(reason: "stream name is not a valid channel name (letters, digits, '-', '_', '.', 1–64 chars)")
        }
        guard let channel = channelsByKey[request.streamKey] else { return .deny(reason: "unknown stream key") }
        return .allow(channel: channel)
    }

    /// Channel names end up in URLs and file names.
    public static func isValidChannelName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count) && !name.hasPrefix(".")
            && name.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                    || byte == 0x2D || byte == 0x5F || byte == 0x2E
            }
    }
}
