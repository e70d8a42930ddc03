/// An HLS media playlist (RFC 8216 §4.3.3) over a sliding window of segments.
public struct MediaPlaylist: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var sequence: Int
        /// Seconds of media, from the segment's real timestamps.
        public var duration: Double
        /// The segment follows a break in the timeline (a republish).
        public var discontinuity: Bool
        public var uri: String

        public init(sequence: Int, duration: Double, discontinuity: Bool, uri: String) {
            self.sequence = sequence
            self.duration = duration
            self.discontinuity = discontinuity
            self.uri = uri
        }
    }

    public private(set) var entries: [Entry] = []
    /// EXT-X-MEDIA-SEQUENCE: the sequence number of the first entry.
    public private(set) var mediaSequence = 0
    /// EXT-X-DISCONTINUITY-SEQUENCE: discontinuities that left the window.
    public private(set) var discontinuitySequence = 0
    public private(set) var ended = false
    /// Never below the configured target; grows if a GOP runs longer, never shrinks.
    public private(set) var targetDuration: Int
    public let windowLength: Int

    public init(targetDuration: Double, windowLength: Int) {
        self.targetDuration = max(1, Int(targetDuration.rounded(.up)))
        self.windowLength = max(1, windowLength)
    }

    /// Adds a segment and slides the window; returns the entries that left it.
    @discardableResult
    public mutating func append(_ entry: Entry) -> [Entry] {
        if entries.isEmpty { mediaSequence = entry.sequence }
        entries.append(entry)
        targetDuration = max(targetDuration, Int(entry.duration.rounded()))
        var removed: [Entry] = []
        while entries.count > windowLength {
            let head = entries.removeFirst()
            removed.append(head)
            mediaSequence = head.sequence + 1
            if head.discontinuity { discontinuitySequence += 1 }
        }
        return removed
    }

    public mutating func end() {
        ended = true
    }

    public func render() -> String {
        var text = "#EXTM3U\n#EXT-X-VERSION:3\n"
        text += "#EXT-X-TARGETDURATION:\(targetDuration)\n"
        text += "#EXT-X-MEDIA-SEQUENCE:\(mediaSequence)\n"
        if discontinuitySequence > 0 { text += "#EXT-X-DISCONTINUITY-SEQUENCE:\(discontinuitySequence)\n" }
        for entry in entries {
            if entry.discontinuity { text += "#EXT-X-DISCONTINUITY\n" }
            text += "#EXTINF:\(Self.format(entry.duration)),\n\(entry.uri)\n"
        }
        if ended { text += "#EXT-X-ENDLIST\n" }
        return text
    }

    /// Three decimals, no locale.
    static func format(_ seconds: Double) -> String {
        let milliseconds = Int((seconds * 1000).rounded())
        let fraction = String(milliseconds % 1000)
        return "\(milliseconds / 1000).\(String(repeating: "0", count: 3 - fraction.count))\(fraction)"
    }
}
