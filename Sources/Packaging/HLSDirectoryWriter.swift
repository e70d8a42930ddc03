import Foundation
import Logging
import NIOCore

/// Writes a channel's segments and playlist to disk as nginx-rtmp's `hls_nested`
/// layout does: `<root>/<channel>/index.m3u8` and `<root>/<channel>/<n>.ts`.
/// The playlist is replaced atomically (temporary file, then rename) so a web
/// server never serves half of one. Failures are logged (on the channel's logger,
/// so the line names the channel); live delivery from memory goes on.
///
/// Plain system calls straight from the segment's buffer: this runs on the publisher's event
/// loop, every 2 s per channel, and Foundation's `Data` and `FileManager` copied each segment
/// and stat'ed the directory on every call.
struct HLSDirectoryWriter {
    let directory: URL
    private let path: String
    private let logger: Logger

    init(root: String, channel: String, logger: Logger) {
        directory = URL(fileURLWithPath: root, isDirectory: true).appendingPathComponent(channel, isDirectory: true)
        path = directory.path
        self.logger = logger
    }

    func write(segment name: String, data: ByteBuffer) {
        perform("write segment \(name)") {
            try data.withUnsafeReadableBytes { try writeFile(name, $0) }
        }
    }

    func write(playlist: String) {
        perform("write playlist") {
            var text = playlist
            try text.withUTF8 { try writeFile(".index.m3u8.tmp", UnsafeRawBufferPointer($0)) }
            guard rename("\(path)/.index.m3u8.tmp", "\(path)/index.m3u8") == 0 else {
                throw DiskError(operation: "rename", path: "\(path)/index.m3u8", code: errno)
            }
        }
    }

    func remove(segments names: [String]) {
        for name in names {
            perform("remove segment \(name)") {
                // Already gone (never written, or removed by someone else) is what we wanted.
                guard unlink("\(path)/\(name)") == 0 || errno == ENOENT else {
                    throw DiskError(operation: "unlink", path: "\(path)/\(name)", code: errno)
                }
            }
        }
    }

    /// Creates or truncates `name` and writes all of `bytes`; makes the directory on first use.
    private func writeFile(_ name: String, _ bytes: UnsafeRawBufferPointer) throws {
        let file = "\(path)/\(name)"
        var descriptor = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if descriptor < 0, errno == ENOENT {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            descriptor = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        }
        guard descriptor >= 0 else { throw DiskError(operation: "open", path: file, code: errno) }
        if let code = writeAll(descriptor, bytes) {
            close(descriptor)
            throw DiskError(operation: "write", path: file, code: code)
        }
        guard close(descriptor) == 0 else { throw DiskError(operation: "close", path: file, code: errno) }
    }

    private func perform(_ what: String, _ body: () throws -> Void) {
        do {
            try body()
        } catch {
            logger.error("HLS directory write failed", metadata: ["operation": "\(what)", "directory": "\(path)",
                                                                  "error": "\(error)"])
        }
    }
}

/// A failed system call on an HLS file, in the system's words.
struct DiskError: Error, CustomStringConvertible {
    let operation: String
    let path: String
    let code: Int32

    var description: String { "\(operation) \(path): \(systemErrorText(code))" }
}
