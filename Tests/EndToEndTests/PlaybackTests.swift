import App
import Foundation
import Testing

extension EndToEnd {
    @Suite("RTMP playback")
    struct Playback {
        /// Records `seconds` of a live channel with a real player into an FLV file and probes it.
        static func record(_ player: String, url: String, seconds: Int, to path: String) throws -> ChildProcess {
            switch player {
            case "rtmpdump":
                // -v: live; --stop: seconds of media; librtmp is a second, independent RTMP client.
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
