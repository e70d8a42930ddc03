#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
package import MediaCore
public import struct Foundation.Date

/// The container a recording is written in.
public enum RecordingFormat: String, Sendable, Codable, CaseIterable, Hashable {
    /// FLV, written tag by tag: playable up to the last tag even if the process dies.
    case flv
    /// MP4 with `moov` in front (faststart): playable only once finished.
    case mp4

    /// The file name extension.
    public var fileExtension: String { rawValue }
}

/// Why a recording file was closed.
public enum RecordingEndReason: String, Sendable, Codable, Hashable {
    /// The publisher stopped (or dropped).
    case publishEnded = "publish-ended"
    /// Stopped on request (API).
    case stopped
    /// The file reached the maximum size; the recording goes on in a new file.
    case maxSize = "max-size"
    /// The file reached the maximum duration; the recording goes on in a new file.
    case maxDuration = "max-duration"
    /// The codec setup changed mid-stream; the recording goes on in a new file.
    case streamChanged = "stream-changed"
    /// Writing failed; the recording stopped.
    case failed
    /// The server is shutting down.
    case shutdown
}

/// A recording that could not be written, with the path and the system's reason where there is one.
public enum RecordingError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The recordings directory could not be created (`errno` from `mkdir(2)`, or `ENOTDIR`).
    case cannotCreateDirectory(path: String, errno: Int32)
    /// The file could not be created (`errno` from `open(2)`).
    case cannotOpen(path: String, errno: Int32)
    /// Writing, syncing or closing the file failed (`errno` from the call).
    case ioFailed(path: String, operation: String, errno: Int32)
    /// libavformat failed (MP4); the error says what it was doing and names the path.
    case libav(LibAVError)
    case noTracks(path: String)
    /// The stream description cannot be recorded (the avcC does not parse, …).
    case invalidDescription(String)
    /// A packet was refused before anything was written; the recording carries on.
    case invalidPacket(String)
    /// `write` after `finish()` (or after a failure ended the recording).
    case finished(path: String)

    public var description: String {
        switch self {
        case .cannotCreateDirectory(let path, let code): "cannot create directory \(path): \(systemErrorText(code))"
        case .cannotOpen(let path, let code): "cannot open \(path) for writing: \(systemErrorText(code))"
        case .ioFailed(let path, let operation, let code): "\(operation) \(path) failed: \(systemErrorText(code))"
        case .libav(let error): error.description
        case .noTracks(let path): "cannot record \(path): the stream has neither video nor audio"
        case .invalidDescription(let reason): "cannot record this stream: \(reason)"
        case .invalidPacket(let reason): "packet not recorded: \(reason)"
        case .finished(let path): "the recording \(path) is finished"
        }
    }

    /// Whether the recording cannot go on. Only a refused packet leaves it usable.
    public var isFatal: Bool {
        if case .invalidPacket = self { return false }
        return true
    }
}

/// One recorder writing one file; what `SplittingRecorder` drives.
package protocol MediaRecorder: AnyObject {
    var path: String { get }
    /// Bytes in the file so far.
    var bytesWritten: Int64 { get }
    /// Milliseconds of media written.
    var duration: Int64 { get }
    func write(_ media: MediaPacket) throws(RecordingError)
    func finish() throws(RecordingError)
}

/// When a recording moves on to a new file. A new file always starts on a video keyframe (on any
/// audio packet when there is no video), so a file runs past a limit by up to one GOP.
public struct RecordingLimits: Sendable, Equatable {
    /// Bytes; 0 means no limit.
    public var maxBytes: Int64
    /// Milliseconds; 0 means no limit.
    public var maxDuration: Int64

    public init(maxBytes: Int64 = 0, maxDuration: Int64 = 0) {
        self.maxBytes = max(maxBytes, 0)
        self.maxDuration = max(maxDuration, 0)
    }
}

/// One file of a recording as it stands (or stood when it was closed).
public struct RecordingFile: Sendable, Equatable {
    public var path: String
    public var format: RecordingFormat
    /// Wall-clock time the file was opened.
    public var started: Date
    public var bytes: Int64
    /// Milliseconds of media in the file.
    public var duration: Int64

    public init(path: String, format: RecordingFormat, started: Date, bytes: Int64 = 0, duration: Int64 = 0) {
        self.path = path
        self.format = format
        self.started = started
        self.bytes = bytes
        self.duration = duration
    }
}

/// How much media a recording holds: per track, the first and last DTS and the last DTS step.
struct RecordingSpan {
    private struct Track {
        var first: Int64
        var last: Int64
        var step: Int64 = 0
    }

    private var video: Track?
    private var audio: Track?

    /// Notes a packet's DTS (ms, non-decreasing per track).
    mutating func record(_ kind: MediaKind, dts: Int64) {
        func update(_ track: inout Track?) {
            guard var current = track else {
                track = Track(first: dts, last: dts)
                return
            }
            if dts > current.last {
                current.step = dts - current.last
                current.last = dts
            }
            track = current
        }
        switch kind {
        case .video: update(&video)
        case .audio: update(&audio)
        }
    }

    /// Milliseconds from the first DTS on any track to the end of the last packet on any track
    /// (its DTS plus the step before it): what a player shows as the file's length.
    var duration: Int64 {
        let tracks = [video, audio].compactMap { $0 }
        guard let start = tracks.map(\.first).min(), let end = tracks.map({ $0.last + $0.step }).max() else { return 0 }
        return end - start
    }
}
