public import struct Foundation.Date

/// What one relay target (a push to an upstream, or a pull into a local channel) is doing,
/// for the API and stats pages. The URL is masked: its stream key never appears.
public struct RelayTargetStatus: Codable, Sendable, Equatable {
    public enum Direction: String, Codable, Sendable {
        /// A local channel sent to an upstream server.
        case push
        /// A remote stream played into a local channel.
        case pull
    }

    public enum State: String, Codable, Sendable {
        /// Connecting, handshaking, or waiting for the remote side to accept the publish or play.
        case connecting
        /// Media is flowing (pushed to the upstream, or pulled into the local channel).
        case publishing
        /// The last attempt failed; the next starts after a delay.
        case backoff
        /// Not running: the channel is not live (push), nobody is watching (on-demand pull), or removed.
        case stopped
    }

    public var direction: Direction
    public var channel: String
    /// `rtmp://host:port/app/key#1a2b3c4d`: the key replaced by its fingerprint.
    public var url: String
    public var state: State = .stopped
    /// Bytes written to the upstream (push) or read from the remote server (pull), over all connections.
    public var bytesSent: UInt64 = 0
    /// When media started flowing on the current connection.
    public var connectedSince: Date?
    /// Connection attempts that followed a failure.
    public var reconnects = 0
    /// Why the last connection failed, with the key redacted.
    public var lastError: String?
    public var lastErrorAt: Date?
    /// Packets skipped because the upstream was slower than the stream, over all connections.
    public var droppedPackets = 0

    public init(direction: Direction, channel: String, url: String) {
        self.direction = direction
        self.channel = channel
        self.url = url
    }
}
