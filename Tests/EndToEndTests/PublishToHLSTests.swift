import App
import Foundation
import Testing

@Suite("End to end", .serialized)
struct EndToEnd {}

extension EndToEnd {
    @Suite("ffmpeg publishes over RTMP, HLS comes out")
    struct PublishToHLS {
        @Test("every segment decodes, starts on a keyframe, has audio and video, matches EXTINF; PTS is continuous; ENDLIST after the grace")
        func liveHLS() async throws {
            let server = try await TestServer { $0.publishGrace = 1 }
            let ffmpeg = try publish("av-640x360.flv", to: server.rtmpURL("show"))
            // Live within one segment of the start: a playlist with a segment while ffmpeg still runs.
            let early = try await server.waitForPlaylist("show") { !$0.segments.isEmpty }
            #expect(!early.ended)
            // Numbering starts at the clock's seconds so segment URIs never repeat across restarts.
            #expect(early.mediaSequence >= Int(Date().timeIntervalSince1970) - 60)
            let result = try await ffmpeg.wait()
            #expect(result.status == 0, "ffmpeg: \(result.stderr)")

            let playlist = try await server.waitForPlaylist("show") { $0.ended }
            #expect(abs(playlist.totalDuration - 6.0) < 0.2, "total \(playlist.totalDuration)")
            #expect(playlist.segments.count == 3)
            for segment in playlist.segments {
                #expect(Int(segment.duration.rounded()) <= playlist.targetDuration)
            }
            let probed = try await downloadAndProbe(server, channel: "show", playlist: playlist)
            var previousLastPTS: Double?
            for (index, (segment, probe)) in zip(playlist.segments, probed).enumerated() {
                #expect(Set(probe.streams.map(\.codec_name)) == ["h264", "aac"], "segment \(index)")
                #expect(probe.packets(of: "video").first?.flags.hasPrefix("K") == true, "segment \(index) starts with a keyframe")
                #expect(!probe.packets(of: "audio").isEmpty, "segment \(index) has audio")
                let pts = probe.videoPTS
                let frame = 1.0 / 30
                let span = (pts.last ?? 0) + frame - (pts.first ?? 0)
                #expect(abs(span - segment.duration) <= 0.1, "segment \(index): media \(span) s, EXTINF \(segment.duration)")
                for (a, b) in zip(pts, pts.dropFirst()) {
                    #expect(b - a > 0.029 && b - a < 0.038, "segment \(index): video PTS gap \(a) → \(b)")
                }
                if let previousLastPTS, let first = pts.first {
                    let step = first - previousLastPTS
                    #expect(step > 0.029 && step < 0.038, "PTS from segment \(index - 1) to \(index): \(previousLastPTS) → \(first)")
                }
                previousLastPTS = pts.last
            }
            try await server.stop()
        }

        @Test("republishing within the grace continues the playlist after a DISCONTINUITY")
        func republish() async throws {
            let server = try await TestServer { $0.publishGrace = 4 }
            let first = try await publish("av-640x360.flv", to: server.rtmpURL("again"), extra: ["-t", "3"]).wait()
            #expect(first.status == 0, "ffmpeg: \(first.stderr)")
            let before = try await server.waitForPlaylist("again") { $0.totalDuration > 2.5 }
            #expect(!before.ended)
            #expect(!before.segments.contains { $0.discontinuity })

            let second = try await publish("av-640x360.flv", to: server.rtmpURL("again"), extra: ["-t", "3"]).wait()
            #expect(second.status == 0, "ffmpeg: \(second.stderr)")
            let after = try await server.waitForPlaylist("again") { $0.ended }
            #expect(after.totalDuration > 5.5)
            let breaks = after.segments.enumerated().filter { $0.element.discontinuity }.map(\.offset)
            #expect(breaks.count == 1)
            #expect(breaks.first == before.segments.count)
            // URIs (sequence numbers) keep increasing across the break.
            let numbers = after.segments.compactMap { Int($0.uri.dropLast(3)) }
            #expect(numbers == Array(after.mediaSequence..<(after.mediaSequence + numbers.count)))
            let probed = try await downloadAndProbe(server, channel: "again", playlist: after)
            let firstAfterBreak = try #require(probed[breaks[0]].videoPTS.first)
            let lastBeforeBreak = try #require(probed[breaks[0] - 1].videoPTS.last)
            #expect(firstAfterBreak > lastBeforeBreak, "the timeline keeps going forward across a republish")
            try await server.stop()
        }

        @Test("audio-only and video-only streams are packaged", arguments: [
            ("audio-only.flv", "aac"), ("video-only.flv", "h264"),
        ])
        func singleTrack(fixture: String, codec: String) async throws {
            let server = try await TestServer { $0.publishGrace = 0.5 }
            let result = try await publish(fixture, to: server.rtmpURL("single")).wait()
            #expect(result.status == 0, "ffmpeg: \(result.stderr)")
            let playlist = try await server.waitForPlaylist("single") { $0.ended }
            #expect(playlist.segments.count >= 2)
            let probed = try await downloadAndProbe(server, channel: "single", playlist: playlist)
            for probe in probed {
                #expect(probe.streams.map(\.codec_name) == [codec])
            }
            try await server.stop()
        }

        @Test("720p publish plays back through ffmpeg reading the live HLS URL")
        func playback() async throws {
            let server = try await TestServer()
            let publisher = try publish("av-1280x720.flv", to: server.rtmpURL("hd"))
            _ = try await server.waitForPlaylist("hd") { !$0.segments.isEmpty }
            let player = try await ChildProcess.run("ffmpeg", [
                "-hide_banner", "-v", "error", "-i", server.httpURL("/live/hd/index.m3u8").absoluteString,
                "-t", "2", "-f", "null", "-",
            ])
            #expect(player.status == 0, "player: \(player.stderr)")
            #expect(player.stderr.isEmpty, "player: \(player.stderr)")
            #expect(try await publisher.wait().status == 0)
            try await server.stop()
        }
    }
}
