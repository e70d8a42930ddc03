import Foundation
import Logging
import NIOCore

/// Writes a channel's segments and playlist to disk as nginx-rtmp's `hls_nested`
/// layout does: `<root>/<channel>/index.m3u8` and `<root>/<channel>/<n>.ts`.
/// The playlist is replaced atomically (temporary file, then rename) so a web
/// server never serves half of one. Failures are logged (on the channel's logger,
/// so the line names the channel); live delivery from memory goes on.
struct HLSDirectoryWriter {
    let directory: URL
    private let logger: Logger

    init(root: String, channel: String, logger: Logger) {
        directory = URL(fileURLWithPath: root, isDirectory: true).appendingPathComponent(channel, isDirectory: true)
        self.logger = logger
    }

    func write(segment name: String, data: ByteBuffer) {
        perform("write segment \(name)") {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try Data(data.readableBytesView).write(to: directory.appendingPathComponent(name))
        }
    }

    func write(playlist: String) {
        perform("write playlist") {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let temporary = directory.appendingPathComponent(".index.m3u8.tmp")
            try Data(playlist.utf8).write(to: temporary)
            if rename(temporary.path, directory.appendingPathComponent("index.m3u8").path) != 0 {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSLocalizedDescriptionKey: String(cString: strerror(errno))])
            }
        }
    }

    func remove(segments names: [String]) {
        for name in names {
            perform("remove segment \(name)") {
                try FileManager.default.removeItem(at: directory.appendingPathComponent(name))
            }
        }
    }

    private func perform(_ what: String, _ body: () throws -> Void) {
        do {
            try body()
        } catch {
            logger.error("HLS directory write failed", metadata: ["operation": "\(what)", "directory": "\(directory.path)",
                                                                  "error": "\(error)"])
        }
    }
}
