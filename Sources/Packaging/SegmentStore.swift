public import NIOCore
import Synchronization

/// Live HLS playlists and segments in memory, per channel, for the HTTP routes.
///
/// Bounded: a channel keeps its window plus `retainedAfterWindow` segments that
/// left it (players that loaded an older playlist can still fetch them).
public final class SegmentStore: Sendable {
    private struct Channel {
        var playlist: MediaPlaylist
        var renderedPlaylist: String {
            didSet { playlistBytes = ByteBuffer(string: renderedPlaylist) }
        }
        /// The playlist as HTTP sends it, made once per change rather than once per request.
        var playlistBytes = ByteBuffer()
        /// ByteBuffers: HTTP responses share the bytes instead of copying a segment per request.
        var segments: [Int: ByteBuffer] = [:]
        var retired: [Int] = []
    }

    private let channels = Mutex<[String: Channel]>([:])
    public let retainedAfterWindow: Int

    public init(retainedAfterWindow: Int = 6) {
        self.retainedAfterWindow = retainedAfterWindow
    }

    /// The playlist text, or nil for an unknown channel.
    public func playlist(channel: String) -> String? {
        channels.withLock { $0[channel]?.renderedPlaylist }
    }

    /// The playlist's bytes, shared (no copy), or nil for an unknown channel.
    public func playlistBytes(channel: String) -> ByteBuffer? {
        channels.withLock { $0[channel]?.playlistBytes }
    }

    /// The segment's bytes, shared (no copy).
    public func segment(channel: String, sequence: Int) -> ByteBuffer? {
        channels.withLock { $0[channel]?.segments[sequence] }
    }

    public func playlistModel(channel: String) -> MediaPlaylist? {
        channels.withLock { $0[channel]?.playlist }
    }

    /// Publishes a segment and the playlist that now lists it; returns the rendered playlist
    /// and the sequence numbers no longer retained.
    @discardableResult
    func add(channel name: String, entry: MediaPlaylist.Entry, data: ByteBuffer,
             newPlaylist: @autoclosure () -> MediaPlaylist) -> (playlist: String, evicted: [Int]) {
        channels.withLock { channels in
            var channel = channels[name] ?? Channel(playlist: newPlaylist(), renderedPlaylist: "")
            if channel.playlist.ended {
                // An ended playlist never changes again (RFC 8216 §6.2.1): a new publish starts a new one.
                channel.retired += channel.playlist.entries.map(\.sequence)
                channel.playlist = newPlaylist()
            }
            channel.segments[entry.sequence] = data
            let left = channel.playlist.append(entry)
            channel.retired += left.map(\.sequence)
            var evicted: [Int] = []
            while channel.retired.count > retainedAfterWindow {
                let sequence = channel.retired.removeFirst()
                channel.segments[sequence] = nil
                evicted.append(sequence)
            }
            channel.renderedPlaylist = channel.playlist.render()
            channels[name] = channel
            return (channel.renderedPlaylist, evicted)
        }
    }

    /// Marks the channel's playlist ended (EXT-X-ENDLIST); returns the rendered playlist.
    @discardableResult
    func end(channel name: String) -> String? {
        channels.withLock { channels in
            guard var channel = channels[name] else { return nil }
            channel.playlist.end()
            channel.renderedPlaylist = channel.playlist.render()
            channels[name] = channel
            return channel.renderedPlaylist
        }
    }

    /// Forgets a channel whose playlist ended long enough ago.
    func remove(channel name: String) {
        _ = channels.withLock { $0.removeValue(forKey: name) }
    }

    public var channelNames: [String] {
        channels.withLock { Array($0.keys) }
    }
}
