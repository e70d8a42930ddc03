import App
import NginxCompat
import Foundation
import Testing

extension EndToEnd {
    @Suite("Play authorization")
    struct PlayAuthorization {
        static let secret = "a-play-secret-for-tests-0123456789"

        /// ffprobe over RTMP: the codecs it found, or its error.
        static func probe(_ url: String) async throws -> ProcessResult {
            try await ChildProcess("ffprobe", ["-v", "error", "-rw_timeout", "15000000", "-show_entries", "stream=codec_name",
                                               "-of", "csv=p=0", url]).wait()
        }

        @Test("a private channel plays over RTMP and HLS only with a valid, unexpired signed URL")
        func signedURLs() async throws {
            let server = try await TestServer {
                $0.playSecret = Self.secret
                $0.privateChannels = ["vip"]
            }
            let publisher = try publish("av-long.flv", to: server.rtmpURL("vip"))
            let openPublisher = try publish("av-640x360.flv", to: server.rtmpURL("lobby"))
            let signer = SignedPlayURL(secret: Self.secret)
            let good = signer.query(channel: "vip", expires: Date().addingTimeInterval(600))

            // HLS: no token, a wrong one, an expired one → 403; the signed playlist signs its segments.
            #expect(try await server.get("/live/vip/index.m3u8").status == 403)
            let expired = signer.query(channel: "vip", expires: Date().addingTimeInterval(-5))
            #expect(try await server.get("/live/vip/index.m3u8?\(expired)").status == 403)
            let otherChannel = signer.query(channel: "lobby", expires: Date().addingTimeInterval(600))
            #expect(try await server.get("/live/vip/index.m3u8?\(otherChannel)").status == 403)
            var playlist: Playlist?
            while playlist?.segments.isEmpty ?? true {
                let response = try await server.get("/live/vip/index.m3u8?\(good)")
                #expect(response.status == 200 || response.status == 404)
                if response.status == 200 { playlist = try Playlist(String(decoding: response.body, as: UTF8.self)) }
                try await Task.sleep(for: .milliseconds(100))
            }
            let segment = try #require(playlist?.segments.first?.uri)
            #expect(segment.hasSuffix("?\(good)"), "segment URI carries the signature: \(segment)")
            #expect(try await server.get("/live/vip/\(segment)").status == 200)
            #expect(try await server.get("/live/vip/\(segment.split(separator: "?")[0])").status == 403)
            // Public channels are untouched.
            _ = try await server.waitForPlaylist("lobby") { !$0.segments.isEmpty }

            // RTMP: refused without a token or with an expired one; plays with a good one.
            let refused = try await Self.probe(server.rtmpURL("vip"))
            #expect(refused.status != 0 && refused.stdout.isEmpty, "unsigned RTMP play must fail: \(refused.stdout)")
            #expect(server.logs.contains("play refused"))
            #expect(try await Self.probe(server.rtmpURL("vip?\(expired)")).status != 0)
            let played = try await Self.probe(server.rtmpURL("vip?\(good)"))
            #expect(played.status == 0, "\(played.stderr)")
            #expect(Set(played.stdout.split(separator: "\n")) == ["h264", "aac"])
            for line in server.logs.all { #expect(!line.contains(Self.secret), "secret in log: \(line)") }

            publisher.kill()
            openPublisher.kill()
            _ = try await publisher.wait()
            _ = try await openPublisher.wait()
            try await server.stop()
        }

        @Test("on_play gets nginx-rtmp's fields; 2xx plays, 3xx renames the channel, 4xx and a dead hook refuse")
        func onPlayHook() async throws {
            let hook = try await HookServer { fields in
                switch fields["name"] {
                case "show": .init(status: 200)
                case "alias": .init(status: 302, location: "show")
                default: .init(status: 403)
                }
            }
            let server = try await TestServer { $0.notify.onPlay = .init(hook.url) }
            let publisher = try publish("av-long.flv", to: server.rtmpURL("show"))
            _ = try await server.waitForPlaylist("show") { !$0.segments.isEmpty }

            let allowed = try await Self.probe(server.rtmpURL("show?user=ann"))
            #expect(allowed.status == 0, "\(allowed.stderr)")
            let call = try #require(hook.calls.first)
            #expect(call["call"] == "play")
            #expect(call["app"] == "live")
            #expect(call["name"] == "show")
            #expect(call["addr"] == "127.0.0.1")
            #expect(call["user"] == "ann", "the play URL's query is passed on")
            #expect(call["tcurl"]?.hasPrefix("rtmp://127.0.0.1:") == true)
            #expect(call["flashver"]?.isEmpty == false)
            for name in ["swfurl", "pageurl", "clientid", "start", "duration", "reset"] {
                #expect(call[name] != nil, "on_play has no \(name): \(call)")
            }

            let renamed = try await Self.probe(server.rtmpURL("alias"))
            #expect(renamed.status == 0 && renamed.stdout.contains("h264"), "redirect plays 'show': \(renamed.stderr)")
            let refused = try await Self.probe(server.rtmpURL("secret"))
            #expect(refused.status != 0)
            #expect(server.logs.contains("play hook answered 403"))

            // A hook that does not answer refuses (nginx-rtmp does the same).
            try await hook.stop()
            #expect(try await Self.probe(server.rtmpURL("show")).status != 0)
            #expect(server.logs.contains("play hook unreachable"))

            publisher.kill()
            _ = try await publisher.wait()
            try await server.stop()
        }
    }
}
