/// Extends RTMP's 32-bit millisecond timestamps onto a 64-bit timeline.
///
/// RTMP time wraps every 2^32 ms (~49.7 days). A jump backwards of more than
/// half the range is read as a wrap, not as time going back.
public struct TimestampUnwrapper: Sendable {
    /// The latest time handed out, on the 64-bit timeline.
    private var latest: Int64?
    private static let range: Int64 = 1 << 32

    public init() {}

    public mutating func unwrap(_ timestamp: UInt32) -> Int64 {
        guard let latest else {
            latest = Int64(timestamp)
            return Int64(timestamp)
        }
        // Place the timestamp in the 2^32 window nearest the latest time.
        var candidate = (latest & ~(Self.range - 1)) + Int64(timestamp)
        if candidate - latest > Self.range / 2 {
            candidate -= Self.range  // a late packet from before a wrap
        } else if latest - candidate > Self.range / 2 {
            candidate += Self.range  // the clock wrapped
        }
        candidate = max(candidate, 0)
        self.latest = max(latest, candidate)
        return candidate
    }
}
