/// How live HLS is cut and kept.
public struct HLSConfiguration: Sendable {
    /// Target segment length in seconds; segments are cut at the first video keyframe past it.
    public var segmentDuration: Double
    /// Segments listed in the live playlist.
    public var windowLength: Int
    /// Write segments and playlists through to this directory as well (`<path>/<channel>/index.m3u8`).
    public var directory: String?

    public init(segmentDuration: Double = 2, windowLength: Int = 6, directory: String? = nil) {
        self.segmentDuration = segmentDuration
        self.windowLength = windowLength
        self.directory = directory
    }
}
