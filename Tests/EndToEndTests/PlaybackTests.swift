import App
import NIOCore
import Foundation
import Testing

extension EndToEnd {
    @Suite("RTMP playback")
    struct Playback {
        /// Records `seconds` of a live channel with a real player into an FLV file and probes it.
        static func record(_ player: String, url: String, seconds: Int, to path: String) throws -> ChildProcess {
            switch player {
            case "rtmpdump":
                // -v: live. librtmp is a second, independent RTMP client; --stop counts media seconds.
                return try ChildProcess("rtmpdump", ["-q", "-v", "-r", url, "--stop", "\(seconds)", "-o", path])
            default:
                return try ChildProcess("ffmpeg", ["-hide_banner", "-loglevel", "error", "-i", url, "-t", "\(seconds)",
                                                   "-c", "copy", "-f", "flv", "-y", path])
            }
        }

        @Test("ffmpeg and rtmpdump receive decodable audio and video from the first frame", arguments: ["ffmpeg", "rtmpdump"])
        func players(player: String) async throws {
            let server = try await TestServer()
            let publisher = try publish("av-long.flv", to: server.rtmpURL("watch"))
            _ = try await server.waitForPlaylist("watch") { !$0.segments.isEmpty }
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-play-\(UUID().uuidString).flv").path
            defer { try? FileManager.default.removeItem(atPath: path) }
            let result = try await Self.record(player, url: server.rtmpURL("watch"), seconds: 4, to: path).wait()
            #expect(result.status == 0 || player == "rtmpdump" && result.status == 2, "\(player): \(result.stderr)")

            #expect(try await ProbedSegment.decodeErrors(path) == "", "\(player)'s recording does not decode cleanly")
            let probe = try await ProbedSegment.probe(path)
            #expect(Set(probe.streams.map(\.codec_name)) == ["h264", "aac"])
            let video = probe.packets(of: "video")
            #expect(video.first?.flags.hasPrefix("K") == true, "playback starts on a keyframe")
            #expect(video.count >= 90, "about 3 s or more of 30 fps video, got \(video.count)")
            // The player's clock starts near zero.
            #expect((video.first?.pts ?? 99) < 0.5)
            #expect(server.logs.contains("playing"))
            publisher.kill()
            _ = try await publisher.wait()
            try await server.stop()
        }

        @Test("a player that connects before the publisher waits, then plays; it survives a republish")
        func waitsAndSurvivesRepublish() async throws {
            let server = try await TestServer { $0.publishGrace = 5 }
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-wait-\(UUID().uuidString).flv").path
            defer { try? FileManager.default.removeItem(atPath: path) }
            let player = try Self.record("ffmpeg", url: server.rtmpURL("later"), seconds: 8, to: path)
            // The player is waiting on the hub before anyone publishes.
            while !server.logs.contains("channel=later conn=1") { try await Task.sleep(for: .milliseconds(50)) }
            #expect(try await publish("av-640x360.flv", to: server.rtmpURL("later"), extra: ["-t", "3"]).wait().status == 0)
            #expect(try await publish("av-640x360.flv", to: server.rtmpURL("later")).wait().status == 0)
            let result = try await player.wait()
            #expect(result.status == 0, "player: \(result.stderr)")
            let probe = try await ProbedSegment.probe(path)
            let pts = probe.packets(of: "video").compactMap(\.dts_time).compactMap(Double.init)
            #expect(pts.count > 200, "both publishes reached the player: \(pts.count) frames")
            #expect(zip(pts, pts.dropFirst()).allSatisfy { $0 <= $1 }, "the player's timeline never goes back")
            try await server.stop()
        }
    }
}

extension EndToEnd.Playback {
    @Test("a player that stops reading drops to keyframes, then is disconnected; the publisher and another player are not slowed")
    func slowPlayer() async throws {
        let server = try await TestServer {
            $0.playerQueuePackets = 64
            $0.playerMaxLag = 3
            // The fixture is 12 KB/s: with the kernel's autotuned buffers the whole stream would fit in them.
            $0.rtmpSendBuffer = 4096
        }
        let started = ContinuousClock.now
        let publisher = try publish("av-long.flv", to: server.rtmpURL("busy"))
        _ = try await server.waitForPlaylist("busy") { !$0.segments.isEmpty }
        let stalled = try await StalledPlayer.start(port: server.rtmpPort, channel: "busy")

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-fast-\(UUID().uuidString).flv").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let healthy = try await Self.record("ffmpeg", url: server.rtmpURL("busy"), seconds: 12, to: path).wait()
        #expect(healthy.status == 0, "healthy player: \(healthy.stderr)")

        #expect(try await publisher.wait().status == 0)
        let elapsed = ContinuousClock.now - started
        // av-long is 20 s of media published with -re: a publisher held back by the stalled player would take longer.
        #expect(elapsed < .seconds(24), "publishing took \(elapsed)")
        #expect(server.logs.contains("player fell behind; skipped to a keyframe"), "the stalled player never dropped")
        #expect(server.logs.contains("player disconnected: not reading"), "the stalled player was never disconnected")

        // The healthy player got every keyframe (one a second) without a gap.
        let keyframes = try await ProbedSegment.probe(path).packets(of: "video")
            .filter { $0.flags.hasPrefix("K") }.compactMap { $0.pts }
        #expect(keyframes.count >= 11, "keyframes: \(keyframes)")
        #expect(zip(keyframes, keyframes.dropFirst()).allSatisfy { $1 - $0 < 1.1 }, "keyframe gap in \(keyframes)")
        stalled.close(promise: nil)  // already closed by the server when the test passes
        try await server.stop()
    }

    @Test("a player that only receives outlives the idle timeout (which is for connections that send nothing)")
    func quietPlayer() async throws {
        let server = try await TestServer { $0.idleTimeout = 1 }
        let publisher = try publish("av-long.flv", to: server.rtmpURL("quiet"))
        _ = try await server.waitForPlaylist("quiet") { !$0.segments.isEmpty }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-quiet-\(UUID().uuidString).flv").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try await Self.record("ffmpeg", url: server.rtmpURL("quiet"), seconds: 4, to: path).wait()
        #expect(result.status == 0, "\(result.stderr)")
        let video = try await ProbedSegment.probe(path).packets(of: "video")
        #expect(video.count >= 110, "4 s at 30 fps despite a 1 s idle timeout: \(video.count) frames")
        #expect(!server.logs.all.contains { $0.contains("no data for") && $0.contains("channel=quiet") && !$0.contains("conn=1 ") })
        publisher.kill()
        _ = try await publisher.wait()
        try await server.stop()
    }

    @Test("50 concurrent rtmpdump players of one stream all receive every keyframe")
    func fiftyPlayers() async throws {
        let server = try await TestServer()
        let publisher = try publish("av-long.flv", to: server.rtmpURL("crowd"))
        _ = try await server.waitForPlaylist("crowd") { !$0.segments.isEmpty }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-crowd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // rtmpdump records a live stream until signalled (it ignores --stop with -v).
        let players = try (0..<50).map { index in
            try ChildProcess("rtmpdump", ["-q", "-v", "-r", server.rtmpURL("crowd"),
                                          "-o", directory.appendingPathComponent("\(index).flv").path])
        }
        // Once all 50 are playing, let 6 s of media (three more segments) go by, then stop every player.
        while server.logs.all.filter({ $0.contains("channel=crowd") && $0.contains(" playing") }).count < 50 {
            try await Task.sleep(for: .milliseconds(50))
        }
        let now = try await server.waitForPlaylist("crowd") { _ in true }
        let startNumber = now.mediaSequence + now.segments.count
        _ = try await server.waitForPlaylist("crowd") { $0.mediaSequence + $0.segments.count >= startNumber + 3 }
        for player in players { player.kill() }
        for (index, player) in players.enumerated() {
            let result = try await player.wait()
            #expect(result.status == 0 || result.status == 2, "player \(index): \(result.stderr)")
            let tags = try FLVTags(path: directory.appendingPathComponent("\(index).flv").path)
            let keyframes = tags.videoKeyframeTimestamps
            #expect(keyframes.count >= 5, "player \(index) got \(keyframes.count) keyframes")
            #expect(zip(keyframes, keyframes.dropFirst()).allSatisfy { $1 - $0 <= 1100 }, "player \(index): \(keyframes)")
            #expect(keyframes.first == tags.firstVideoTimestamp, "player \(index) starts on a keyframe")
        }
        publisher.kill()
        _ = try await publisher.wait()
        try await server.stop()
    }
}

/// The video tags of an FLV file a player wrote.
struct FLVTags {
    var videoKeyframeTimestamps: [Int] = []
    var firstVideoTimestamp: Int?

    init(path: String) throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var offset = 13
        while offset + 11 <= bytes.count {
            let size = Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            let time = Int(bytes[offset + 4]) << 16 | Int(bytes[offset + 5]) << 8 | Int(bytes[offset + 6])
                | Int(bytes[offset + 7]) << 24
            guard offset + 11 + size <= bytes.count else { break }
            if bytes[offset] == 9, size > 1, bytes[offset + 12] == 1 {
                if firstVideoTimestamp == nil { firstVideoTimestamp = time }
                if bytes[offset + 11] >> 4 == 1 { videoKeyframeTimestamps.append(time) }
            }
            offset += 11 + size + 4
        }
    }
}
