import Foundation
import Testing

/// What ffprobe says about one segment.
struct ProbedSegment {
    struct Packet: Decodable {
        var stream_index: Int
        var pts_time: String?
        var dts_time: String?
        var flags: String
        var pts: Double? { pts_time.flatMap(Double.init) }
    }

    struct Stream: Decodable {
        var index: Int
        var codec_type: String
        var codec_name: String
    }

    private struct Output: Decodable {
        var packets: [Packet]?
        var streams: [Stream]?
    }

    var streams: [Stream]
    var packets: [Packet]

    func packets(of type: String) -> [Packet] {
        let indices = Set(streams.filter { $0.codec_type == type }.map(\.index))
        return packets.filter { indices.contains($0.stream_index) }
    }

    var videoPTS: [Double] { packets(of: "video").compactMap(\.pts).sorted() }
    var audioPTS: [Double] { packets(of: "audio").compactMap(\.pts).sorted() }

    static func probe(_ path: String) async throws -> ProbedSegment {
        let result = try await ChildProcess.run("ffprobe", [
            "-v", "error", "-show_entries", "packet=stream_index,pts_time,dts_time,flags:stream=index,codec_type,codec_name",
            "-of", "json", path,
        ])
        #expect(result.status == 0, "ffprobe failed on \(path): \(result.stderr)")
        #expect(result.stderr.isEmpty, "ffprobe complained about \(path): \(result.stderr)")
        let output = try JSONDecoder().decode(Output.self, from: Data(result.stdout.utf8))
        return ProbedSegment(streams: output.streams ?? [], packets: output.packets ?? [])
    }

    /// Decodes every frame with ffmpeg; returns its error output (empty when clean).
    static func decodeErrors(_ path: String) async throws -> String {
        let result = try await ChildProcess.run("ffmpeg", ["-hide_banner", "-v", "error", "-i", path, "-f", "null", "-"])
        return result.status == 0 ? result.stderr : "exit \(result.status): \(result.stderr)"
    }
}

/// Downloads a playlist's segments into a temporary directory and probes each.
func downloadAndProbe(_ server: TestServer, channel: String, playlist: Playlist) async throws -> [ProbedSegment] {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-probe-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    var probed: [ProbedSegment] = []
    for segment in playlist.segments {
        let response = try await server.get("/live/\(channel)/\(segment.uri)")
        #expect(response.status == 200)
        #expect(response.body.count % 188 == 0, "segment \(segment.uri) is not whole TS packets")
        let path = directory.appendingPathComponent(segment.uri).path
        try response.body.write(to: URL(fileURLWithPath: path))
        #expect(try await ProbedSegment.decodeErrors(path) == "", "segment \(segment.uri) does not decode cleanly")
        probed.append(try await ProbedSegment.probe(path))
    }
    return probed
}
