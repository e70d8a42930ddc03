#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
public import MediaCore
public import struct Foundation.Date

/// Records one publish of a channel in one format as a series of files
/// `<directory>/<channel>-<yyyyMMdd-HHmmss>.<ext>` (UTC, the time the file was opened; `-2`, `-3`,
/// … is added when that name is taken).
///
/// - A file starts on a video keyframe (on the first audio packet when the stream has no video);
///   what comes before is skipped, as are packets timed before the file's first one.
/// - At a keyframe past a limit (`RecordingLimits`), the file is closed and the next one begins
///   with that keyframe. A changed codec setup, or a track's clock going back by more than a
///   second, closes the file too; the next opens at the next keyframe.
/// - The directory is created (with its parents) when the first file opens.
///
/// Everything that happens to files is reported as `Event`s, collected until `takeEvents()`.
/// A fatal error (the directory or file cannot be created, a write fails) closes the current
/// file — as well as it still can be — and ends the recording: later calls throw `.finished`.
/// Refused packets (`.invalidPacket`) are thrown too, but the recording carries on.
///
/// Not thread-safe: one owner drives it, off any event loop (writes block; closing an MP4
/// rewrites the file).
public final class SplittingRecorder {
    public enum Event: Sendable, Equatable {
        case opened(RecordingFile)
        /// `failure` is set when the file could not be closed cleanly or the recording failed.
        case closed(RecordingFile, reason: RecordingEndReason, failure: RecordingError?)
    }

    public let directory: String
    public let channel: String
    public let format: RecordingFormat
    public let limits: RecordingLimits
    private let now: () -> Date
    /// Opens one file; tests substitute recorders that fail on purpose.
    package typealias RecorderFactory = (_ path: String, StreamDescription, StreamMetadata) throws(RecordingError)
        -> any MediaRecorder
    private let makeRecorder: RecorderFactory?

    private var description: StreamDescription?
    private var metadata = StreamMetadata()
    private var current: Current?
    private var events: [Event] = []
    private var ended = false
    /// Packets dropped because no file was open or they came before the file's start.
    public private(set) var skippedPackets = 0

    private struct Current {
        let recorder: any MediaRecorder
        let description: StreamDescription
        let started: Date
        /// DTS (ms) of the file's first packet.
        let startDTS: Int64
        /// DTS (ms) of the last packet written, per kind.
        var lastDTS: [MediaKind: Int64] = [:]
    }

    /// How far (ms) a track's DTS may go back before it counts as a new timeline rather than a
    /// stray packet (which is refused).
    static let timestampJumpTolerance: Int64 = 1000

    /// `now` gives the wall-clock time used in file names (tests pass a fixed clock).
    public convenience init(directory: String, channel: String, format: RecordingFormat,
                            limits: RecordingLimits = .init(), now: @escaping () -> Date = Date.init) {
        self.init(directory: directory, channel: channel, format: format, limits: limits, now: now, makeRecorder: nil)
    }

    /// `makeRecorder` opens each file instead of the format's recorder (tests make writes fail with it).
    package init(directory: String, channel: String, format: RecordingFormat, limits: RecordingLimits,
                 now: @escaping () -> Date, makeRecorder: RecorderFactory?) {
        self.directory = directory
        self.channel = channel
        self.format = format
        self.limits = limits
        self.now = now
        self.makeRecorder = makeRecorder
    }

    /// The file being written, as it stands.
    public var currentFile: RecordingFile? {
        current.map { current in
            RecordingFile(path: current.recorder.path, format: format, started: current.started,
                          bytes: current.recorder.bytesWritten, duration: current.recorder.duration)
        }
    }

    /// Events since the previous call, in order.
    public func takeEvents() -> [Event] {
        defer { events = [] }
        return events
    }

    /// The stream's codec setup; a change closes the current file (`.streamChanged`).
    public func setDescription(_ description: StreamDescription) {
        self.description = description
        if let current, current.description != description { close(reason: .streamChanged) }
    }

    /// The publisher's metadata, carried into FLV files opened from now on.
    public func setMetadata(_ metadata: StreamMetadata) {
        self.metadata = metadata
    }

    /// Records one packet, opening or splitting files as needed.
    public func write(_ packet: MediaPacket) throws(RecordingError) {
        guard !ended else { throw .finished(path: current?.recorder.path ?? directory) }
        guard let description else {
            skippedPackets += 1
            return
        }
        let startsFile = description.video != nil ? packet.kind == .video && packet.isKeyframe : packet.kind == .audio
        if let current, let last = current.lastDTS[packet.kind], packet.dts < last - Self.timestampJumpTolerance {
            // The publisher's clock went back (an encoder restart): nothing after it would be
            // accepted in this file, so the recording goes on in a new one.
            close(reason: .streamChanged)
        } else if let current, startsFile, let reason = splitReason(current, at: packet) {
            close(reason: reason)
        }
        if current == nil {
            guard startsFile else {
                skippedPackets += 1
                return
            }
            try open(description: description, at: packet.dts)
        }
        guard let current else { return }
        guard packet.dts >= current.startDTS else {
            skippedPackets += 1
            return
        }
        do {
            try current.recorder.write(packet)
        } catch {
            if error.isFatal { fail(error) }
            throw error
        }
        self.current?.lastDTS[packet.kind] = packet.dts
    }

    /// Closes the current file for `reason`; nothing can be written afterwards. Idempotent.
    public func finish(reason: RecordingEndReason) {
        guard !ended else { return }
        close(reason: reason)
        ended = true
    }

    // MARK: - Files

    private func splitReason(_ current: Current, at packet: MediaPacket) -> RecordingEndReason? {
        if limits.maxDuration > 0, packet.dts - current.startDTS >= limits.maxDuration { return .maxDuration }
        if limits.maxBytes > 0, current.recorder.bytesWritten >= limits.maxBytes { return .maxSize }
        return nil
    }

    private func open(description: StreamDescription, at dts: Int64) throws(RecordingError) {
        do {
            try Self.createDirectory(directory)
            let started = now()
            let path = try uniquePath(started: started)
            let recorder: any MediaRecorder = if let makeRecorder {
                try makeRecorder(path, description, metadata)
            } else {
                switch format {
                case .flv: try FLVRecorder(path: path, description: description, metadata: metadata)
                case .mp4: try MP4Recorder(path: path, description: description)
                }
            }
            current = Current(recorder: recorder, description: description, started: started, startDTS: dts)
            events.append(.opened(RecordingFile(path: path, format: format, started: started,
                                                bytes: recorder.bytesWritten)))
        } catch {
            ended = true
            throw error
        }
    }

    private func close(reason: RecordingEndReason, failure: RecordingError? = nil) {
        guard let current else { return }
        self.current = nil
        var failure = failure
        do {
            try current.recorder.finish()
        } catch {
            failure = failure ?? error
        }
        let file = RecordingFile(path: current.recorder.path, format: format, started: current.started,
                                 bytes: current.recorder.bytesWritten, duration: current.recorder.duration)
        events.append(.closed(file, reason: failure == nil ? reason : .failed, failure: failure))
    }

    private func fail(_ error: RecordingError) {
        close(reason: .failed, failure: error)
        ended = true
    }

    /// `<channel>-<yyyyMMdd-HHmmss>.<ext>`, with `-2`, `-3`, … when the name is taken.
    private func uniquePath(started: Date) throws(RecordingError) -> String {
        let base = "\(directory)/\(Self.fileNameSafe(channel))-\(Self.timestamp(started))"
        for attempt in 1...1000 {
            let path = attempt == 1 ? "\(base).\(format.fileExtension)" : "\(base)-\(attempt).\(format.fileExtension)"
            var status = stat()
            if lstat(path, &status) != 0, errno == ENOENT { return path }
        }
        throw .cannotOpen(path: "\(base).\(format.fileExtension)", errno: EEXIST)
    }

    /// UTC `yyyyMMdd-HHmmss`.
    static func timestamp(_ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        guard gmtime_r(&seconds, &parts) != nil else { return "\(seconds)" }
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(parts.tm_year + 1900)\(two(parts.tm_mon + 1))\(two(parts.tm_mday))-"
            + "\(two(parts.tm_hour))\(two(parts.tm_min))\(two(parts.tm_sec))"
    }

    /// The channel with anything but letters, digits, '-', '_' and '.' replaced by '_', never
    /// empty and never starting with '.'; channel names are checked at publish, this is the backstop.
    static func fileNameSafe(_ channel: String) -> String {
        let bytes = channel.utf8.prefix(64).map { byte -> UInt8 in
            let allowed = (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || byte == 0x2D || byte == 0x5F || byte == 0x2E
            return allowed ? byte : 0x5F
        }
        let name = String(decoding: bytes, as: UTF8.self)
        return name.isEmpty || name.hasPrefix(".") ? "_" + name : name
    }

    /// `mkdir -p`, with the failing component's errno.
    static func createDirectory(_ path: String) throws(RecordingError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += "/" + component
            if mkdir(prefix, 0o755) == 0 { continue }
            let code = errno
            var status = stat()
            guard code == EEXIST, stat(prefix, &status) == 0 else { throw .cannotCreateDirectory(path: prefix, errno: code) }
            guard status.st_mode & S_IFMT == S_IFDIR else { throw .cannotCreateDirectory(path: prefix, errno: ENOTDIR) }
        }
    }
}
