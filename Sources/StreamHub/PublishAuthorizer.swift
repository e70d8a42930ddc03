/// Decides whether a stream key may publish, and as which channel.
public protocol PublishAuthorizer: Sendable {
    func authorize(app: String, streamKey: String, query: String?) async -> PublishDecision
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

    public func authorize(app: String, streamKey: String, query: String?) async -> PublishDecision {
        if isOpen {
            return Self.isValidChannelName(streamKey)
                ? .allow(channel: streamKey)
                : .deny(reason: "stream name is not a valid channel name (letters, digits, '-', '_', '.', 1–64 chars)")
        }
        guard let channel = channelsByKey[streamKey] else { return .deny(reason: "unknown stream key") }
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
