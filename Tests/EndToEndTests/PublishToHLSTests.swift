import App
import Foundation
import Testing

@Suite("End to end", .serialized)
struct EndToEnd {}

extension EndToEnd {
    @Suite("ffmpeg publishes over RTMP, HLS comes out")
    struct PublishToHLS {
        /// Segments that play one after another without a break: each one's video spans its EXTINF
        /// (±0.1 s), and video (30 fps) and audio (AAC, 1024 samples at 48 kHz) PTS run on without
        /// gaps or overlaps, inside each segment and from one segment to the next.
        static func expectContinuous(_ segments: ArraySlice<Playlist.Segment>, _ probes: ArraySlice<ProbedSegment>,
                                     _ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let tracks = [("video", 1.0 / 30, \ProbedSegment.videoPTS), ("audio", 1024.0 / 48000, \ProbedSegment.audioPTS)]
            var previousLast: [String: Double] = [:]
            for (index, (segment, probe)) in zip(segments, probes).enumerated() {
                let video = probe.videoPTS
                let span = (video.last ?? 0) + 1.0 / 30 - (video.first ?? 0)
                #expect(abs(span - segment.duration) <= 0.1, "\(label) segment \(index): media \(span) s, EXTINF \(segment.duration)",
                        sourceLocation: sourceLocation)
                for (kind, frame, path) in tracks {
                    let pts = probe[keyPath: path]
                    #expect(!pts.isEmpty, "\(label) segment \(index) has no \(kind)", sourceLocation: sourceLocation)
                    let times = (previousLast[kind].map { [$0] } ?? []) + pts
                    // RTMP times are whole milliseconds: a 33.3 ms frame is 33 or 34, a 21.3 ms one 21 or 22.
                    for (a, b) in zip(times, times.dropFirst()) where abs(b - a - frame) > 0.004 {
                        Issue.record("\(label) segment \(index): \(kind) PTS \(a) → \(b), a frame is \(frame)",
                                     sourceLocation: sourceLocation)
                    }
                    previousLast[kind] = pts.last ?? previousLast[kind]
                }
            }
        }

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
            for (index, probe) in probed.enumerated() {
                #expect(Set(probe.streams.map(\.codec_name)) == ["h264", "aac"], "segment \(index)")
                #expect(probe.packets(of: "video").first?.flags.hasPrefix("K") == true, "segment \(index) starts with a keyframe")
            }
            Self.expectContinuous(playlist.segments[...], probed[...], "live")
            try await server.stop()
        }

        @Test("republishing within the grace continues the playlist after a DISCONTINUITY")
        func republish() async throws {
            let server = try await TestServer { $0.publishGrace = 4 }
            // Whole files: `-t` would cut the source mid-GOP and drop a B-frame, a gap that is not ours.
            let first = try await publish("av-640x360.flv", to: server.rtmpURL("again")).wait()
            #expect(first.status == 0, "ffmpeg: \(first.stderr)")
            let before = try await server.waitForPlaylist("again") { $0.totalDuration > 5.5 }
            #expect(!before.ended)
            #expect(!before.segments.contains { $0.discontinuity })

            let second = try await publish("av-640x360.flv", to: server.rtmpURL("again")).wait()
            #expect(second.status == 0, "ffmpeg: \(second.stderr)")
            let after = try await server.waitForPlaylist("again") { $0.ended }
            #expect(after.totalDuration > 11.5)
            let breaks = after.segments.enumerated().filter { $0.element.discontinuity }.map(\.offset)
            #expect(breaks.count == 1)
            #expect(breaks.first == before.segments.count)
            // URIs (sequence numbers) keep increasing across the break.
            let numbers = after.segments.compactMap { Int($0.uri.dropLast(3)) }
            #expect(numbers == Array(after.mediaSequence..<(after.mediaSequence + numbers.count)))
            let probed = try await downloadAndProbe(server, channel: "again", playlist: after)
            let cut = try #require(breaks.first)
            // Each side of the DISCONTINUITY plays without a gap and matches its EXTINFs.
            Self.expectContinuous(after.segments[..<cut], probed[..<cut], "first publish")
            Self.expectContinuous(after.segments[cut...], probed[cut...], "second publish")
            let firstAfterBreak = try #require(probed[cut].videoPTS.first)
            let lastBeforeBreak = try #require(probed[cut - 1].videoPTS.last)
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
