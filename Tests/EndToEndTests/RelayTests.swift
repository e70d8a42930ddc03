import App
import Foundation
import IngestServer
import NIOCore
import NIOPosix
import StreamHub
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

extension EndToEnd {
    @Suite("Relay: push and pull")
    struct Relay {
        /// Polls `condition` every 50 ms until it holds; fails the test after `timeout`.
        static func waitUntil(_ what: String, timeout: Duration = .seconds(30),
                              _ condition: () async throws -> Bool) async throws {
            let deadline = ContinuousClock.now + timeout
            while ContinuousClock.now < deadline {
                if try await condition() { return }
                try await Task.sleep(for: .milliseconds(50))
            }
            Issue.record("timed out after \(timeout) waiting for \(what)")
            throw TestFailure.timeout
        }

        /// Records a few seconds of `url` with ffmpeg as a player and probes the file.
        static func play(_ url: String, seconds: Int = 3) async throws -> ProbedSegment {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-relay-\(UUID().uuidString).flv").path
            defer { try? FileManager.default.removeItem(atPath: path) }
            let result = try await Playback.record("ffmpeg", url: url, seconds: seconds, to: path).wait()
            #expect(result.status == 0, "ffmpeg playing \(url): \(result.stderr)")
            return try await ProbedSegment.probe(path)
        }

        /// `ffmpeg -re` publishing `fixture` (looped for ever with `loop`) that a SIGTERM from `kill()` stops.
        static func publisher(_ fixture: String, to url: String, loop: Bool = false) throws -> ChildProcess {
            try ChildProcess("ffmpeg", ["-hide_banner", "-loglevel", "error", "-re"] + (loop ? ["-stream_loop", "-1"] : [])
                + ["-i", fixturePath(fixture), "-c", "copy", "-f", "flv", url])
        }

        static func fastRetries(_ configuration: inout EstuaryConfiguration) {
            configuration.relay.push.initialBackoff = .milliseconds(200)
            configuration.relay.push.maxBackoff = .seconds(1)
            configuration.relay.pull.initialBackoff = .milliseconds(200)
            configuration.relay.pull.maxBackoff = .seconds(1)
        }

        @Test("A pushes a channel to B (keyed), B serves it as HLS and RTMP with h264 and aac; the key is never logged")
        func pushBetweenTwoServers() async throws {
            let key = "s3cr3t-upstream-key"
            let upstream = try await TestServer { $0.streamKeys = [key: "simulcast"] }
            let origin = try await TestServer {
                Self.fastRetries(&$0)
                $0.relayPush = [.init(channel: "show", url: upstream.rtmpURL(key))]
            }
            let status = try #require(origin.app.relay.targets(channel: "show").first)
            #expect(status.state == .stopped, "not live yet")
            #expect(status.url == "rtmp://127.0.0.1:\(upstream.rtmpPort)/live/\(RTMPURLMask.mask(key))")

            let publisher = try Self.publisher("av-long.flv", to: origin.rtmpURL("show"))
            let playlist = try await upstream.waitForPlaylist("simulcast") { $0.segments.count >= 2 }
            let probed = try await downloadAndProbe(upstream, channel: "simulcast", playlist: playlist)
            for (index, probe) in probed.enumerated() {
                #expect(Set(probe.streams.map(\.codec_name)) == ["h264", "aac"], "upstream segment \(index)")
            }
            let played = try await Self.play(upstream.rtmpURL("simulcast"))
            #expect(Set(played.streams.map(\.codec_name)) == ["h264", "aac"])
            #expect(played.packets(of: "video").first?.flags.hasPrefix("K") == true)

            let pushing = try #require(origin.app.relay.targets(channel: "show").first)
            #expect(pushing.state == .publishing)
            #expect(pushing.bytesSent > 50_000)
            #expect(pushing.connectedSince != nil)
            #expect(pushing.reconnects == 0)

            // The API shows the same, masked.
            let response = try await origin.get("/api/v1/streams/show/relays")
            #expect(response.status == 200)
            let body = String(decoding: response.body, as: UTF8.self)
            #expect(body.contains(#""state":"publishing""#), "\(body)")
            #expect(!body.contains(key))

            // And inside the channel's status document, next to its stream and recordings.
            let document = try await origin.get("/api/v1/streams/show")
            #expect(!String(decoding: document.body, as: UTF8.self).contains(key))
            let channelStatus = try EndToEnd.StreamsAPI.json(document.body)
            #expect(channelStatus["live"] as? Bool == true)
            let relays = try #require(channelStatus["relays"] as? [[String: Any]], "\(channelStatus)")
            #expect(relays.count == 1, "\(relays)")
            let relay = try #require(relays.first)
            #expect(relay["direction"] as? String == "push")
            #expect(relay["channel"] as? String == "show")
            #expect(relay["state"] as? String == "publishing")
            #expect(relay["url"] as? String == "rtmp://127.0.0.1:\(upstream.rtmpPort)/live/\(RTMPURLMask.mask(key))")
            #expect((relay["bytesSent"] as? Int ?? 0) > 50_000, "\(relay)")
            #expect(relay["connectedSince"] is String && relay["reconnects"] as? Int == 0)

            // The publisher stops: the push unpublishes and the upstream's channel ends with it.
            publisher.kill()
            _ = try await publisher.wait()
            try await Self.waitUntil("the push to stop") { origin.app.relay.targets(channel: "show").first?.state == .stopped }
            try await Self.waitUntil("the upstream channel to end") { upstream.app.hub.stream(channel: "simulcast") == nil }
            #expect(origin.logs.contains("relay publishing"))
            #expect(!origin.logs.all.contains { $0.contains(key) }, "the stream key appeared in the origin's log")
            try await origin.stop()
            try await upstream.stop()
        }

        @Test("a live/* push sends each channel published in app live upstream under its own name, and no other app's")
        func pushPerApplication() async throws {
            let upstream = try await TestServer()
            let origin = try await TestServer {
                Self.fastRetries(&$0)
                $0.relayPush = [.init(channel: "live/*", url: "rtmp://127.0.0.1:\(upstream.rtmpPort)/live")]
            }
            let inLive = try Self.publisher("av-long.flv", to: origin.rtmpURL("cam"))
            let inStudio = try Self.publisher("av-long.flv", to: origin.rtmpURL("desk", app: "studio"))
            try await Self.waitUntil("cam to be pushed upstream") {
                upstream.app.hub.stream(channel: "cam")?.statistics.videoPackets ?? 0 >= 30
            }
            try await Self.waitUntil("desk to be live on the origin") {
                origin.app.hub.stream(channel: "desk")?.statistics.videoPackets ?? 0 >= 30
            }
            #expect(origin.app.hub.stream(channel: "desk")?.app == "studio")
            #expect(origin.app.relay.targets(channel: "cam").map(\.state) == [.publishing])
            #expect(origin.app.relay.targets(channel: "desk").isEmpty, "studio is not pushed")
            #expect(upstream.app.hub.stream(channel: "desk") == nil)
            for publisher in [inLive, inStudio] {
                publisher.kill()
                _ = try await publisher.wait()
            }
            try await origin.stop()
            try await upstream.stop()
        }

        @Test("the relay API adds, lists and removes pushes; bad URLs get 400 with a JSON error")
        func api() async throws {
            let server = try await TestServer()
            func send(_ method: String, _ path: String, _ body: String) async throws -> (Int, String) {
                var request = URLRequest(url: server.httpURL(path))
                request.httpMethod = method
                request.httpBody = Data(body.utf8)
                request.setValue("application/json", forHTTPHeaderField: "Content-Type")
                let (data, response) = try await URLSession.shared.data(for: request)
                return (try #require(response as? HTTPURLResponse).statusCode, String(decoding: data, as: UTF8.self))
            }
            let good = #"{"url":"rtmp://127.0.0.1:1/live2/abcdef-secret"}"#
            for (body, fragment) in [
                (#"{"url":"http://example.com/live/key"}"#, "rtmp://"),
                (#"{"url":"rtmps://example.com/live/key"}"#, "rtmps"),
                (#"{"url":"rtmp:///live/key"}"#, "host"),
                (#"{"url":"rtmp://example.com:99999/live/key"}"#, "port"),
                (#"{"url":"rtmp://example.com/live"}"#, "app/stream"),
                (#"{"url":"rtmp://example.com/live/\#(String(repeating: "k", count: 3000))"}"#, "2048"),
                (#"{"uri":"rtmp://example.com/live/key"}"#, "body must be JSON"),
                ("not json", "body must be JSON"),
            ] {
                let (status, text) = try await send("POST", "/api/v1/streams/chan/relays", body)
                #expect(status == 400, "\(body)")
                let error = try JSONDecoder().decode([String: [String: String]].self, from: Data(text.utf8))["error"]?["message"]
                #expect(error?.contains(fragment) == true, "\(body) → \(text)")
                #expect(!text.contains("key\""), "the URL is not echoed: \(text)")
            }
            #expect(try await send("POST", "/api/v1/streams/bad%20name/relays", good).0 == 400)

            let (created, createdBody) = try await send("POST", "/api/v1/streams/chan/relays", good)
            #expect(created == 201, "\(createdBody)")
            let status = try JSONDecoder().decode(RelayTargetStatus.self, from: Data(createdBody.utf8))
            #expect(status.state == .stopped)
            #expect(status.direction == .push)
            #expect(status.url.hasPrefix("rtmp://127.0.0.1:1/live2/key#"))
            #expect(!createdBody.contains("abcdef-secret"))

            let listed = try await server.get("/api/v1/streams/chan/relays")
            #expect(listed.status == 200)
            #expect(try JSONDecoder().decode([RelayTargetStatus].self, from: listed.body) == [status])
            #expect(try await server.get("/api/v1/streams/other/relays").body == Data("[]".utf8))

            #expect(try await send("DELETE", "/api/v1/streams/chan/relays", good).0 == 204)
            #expect(try await send("DELETE", "/api/v1/streams/chan/relays", good).0 == 404)
            #expect(try await server.get("/api/v1/streams/chan/relays").body == Data("[]".utf8))
            #expect(!server.logs.all.contains { $0.contains("abcdef-secret") })
            try await server.stop()
        }

        @Test("B pulls from A on demand when an ffmpeg player asks B, and stops pulling once idle")
        func pullOnDemand() async throws {
            let origin = try await TestServer()
            let edge = try await TestServer {
                Self.fastRetries(&$0)
                $0.relayPull = [.init(channel: "mirror", url: origin.rtmpURL("source"), mode: .onDemand)]
                $0.relayPullIdle = 1
            }
            let publisher = try Self.publisher("av-long.flv", to: origin.rtmpURL("source"))
            _ = try await origin.waitForPlaylist("source") { !$0.segments.isEmpty }
            #expect(edge.app.relay.targets(channel: "mirror").map(\.state) == [.stopped])
            #expect(edge.app.hub.stream(channel: "mirror") == nil, "nothing pulled before a viewer asks")
            #expect(origin.app.hub.viewerCount(channel: "source") == 0)

            let played = try await Self.play(edge.rtmpURL("mirror"))
            #expect(Set(played.streams.map(\.codec_name)) == ["h264", "aac"])
            let video = played.packets(of: "video")
            #expect(video.first?.flags.hasPrefix("K") == true, "playback starts on a keyframe")
            #expect(video.count >= 60, "about 2 s or more of video, got \(video.count)")
            #expect(edge.logs.contains("pull: a viewer asked for the channel"))

            // The player left: after the idle time the pull stops and the edge's channel ends.
            try await Self.waitUntil("the pull to stop") { edge.app.relay.targets(channel: "mirror").first?.state == .stopped }
            try await Self.waitUntil("the mirrored channel to end") { edge.app.hub.stream(channel: "mirror") == nil }
            try await Self.waitUntil("the origin to lose the pull's connection") {
                origin.app.hub.viewerCount(channel: "source") == 0
            }
            #expect(edge.logs.contains("pull: no viewers; stopped"))
            publisher.kill()
            _ = try await publisher.wait()
            try await edge.stop()
            try await origin.stop()
        }

        @Test("an always-on pull starts at once and survives the origin's publisher leaving and returning")
        func pullAlways() async throws {
            let origin = try await TestServer()
            let edge = try await TestServer {
                Self.fastRetries(&$0)
                $0.relayPull = [.init(channel: "mirror", url: origin.rtmpURL("source"), mode: .always)]
                $0.relay.pull.mediaTimeout = .seconds(1)
            }
            try await Self.waitUntil("the pull to connect") { origin.app.hub.viewerCount(channel: "source") == 1 }
            #expect(try await publish("av-640x360.flv", to: origin.rtmpURL("source"), extra: ["-t", "3"]).wait().status == 0)
            _ = try await edge.waitForPlaylist("mirror") { !$0.segments.isEmpty }
            // Estuary does not tell players the publisher left: the edge ends its channel when media stops.
            try await Self.waitUntil("the mirrored channel to end") { edge.app.hub.stream(channel: "mirror") == nil }
            #expect(edge.app.relay.targets(channel: "mirror").first?.state == .connecting)

            let publisher = try Self.publisher("av-long.flv", to: origin.rtmpURL("source"))
            try await Self.waitUntil("the mirror to come back") { edge.app.hub.stream(channel: "mirror") != nil }
            let played = try await Self.play(edge.rtmpURL("mirror"))
            #expect(Set(played.streams.map(\.codec_name)) == ["h264", "aac"])
            #expect(edge.app.relay.targets(channel: "mirror").first?.reconnects == 0, "one connection throughout")
            publisher.kill()
            _ = try await publisher.wait()
            try await edge.stop()
            try await origin.stop()
        }
    }
}

extension EndToEnd.Relay {
    /// nginx with the RTMP module, in the foreground, on a loopback port of its own; its files in a temporary directory.
    final class Nginx: Sendable {
        let directory: URL
        let port: Int
        private let process: ChildProcess

        private init(directory: URL, port: Int, process: ChildProcess) {
            self.directory = directory
            self.port = port
            self.process = process
        }

        /// Starts on `port`, or on a free one; retries when the port was taken in the meantime.
        static func start(port fixedPort: Int? = nil, directory: URL? = nil) async throws -> Nginx {
            let directory = directory ?? FileManager.default.temporaryDirectory.appendingPathComponent("estuary-nginx-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            var lastError = ""
            for _ in 0..<5 {
                let port = try fixedPort ?? freePort()
                let conf = directory.appendingPathComponent("nginx.conf")
                try """
                    load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
                    daemon off;
                    master_process off;
                    error_log \(directory.path)/error.log info;
                    pid \(directory.path)/nginx.pid;
                    events {}
                    rtmp { server { listen 127.0.0.1:\(port); application live { live on; } } }
                    """.write(to: conf, atomically: true, encoding: .utf8)
                let process = try ChildProcess("/usr/sbin/nginx", ["-e", directory.appendingPathComponent("error.log").path,
                                                                   "-p", directory.path, "-c", conf.path])
                // Up when the port accepts; failed when nginx exits first (the port was taken).
                while process.isRunning {
                    if await canConnect(port: port) { return Nginx(directory: directory, port: port, process: process) }
                    try await Task.sleep(for: .milliseconds(50))
                }
                lastError = try await process.wait().stderr
            }
            Issue.record("nginx did not start: \(lastError)")
            throw TestFailure.timeout
        }

        func url(_ name: String) -> String { "rtmp://127.0.0.1:\(port)/live/\(name)" }

        /// SIGTERM by PID, and wait for it to exit.
        func stop() async throws {
            process.kill(SIGTERM)
            _ = try await process.wait()
        }

        /// A new nginx on the same port and directory.
        func restart() async throws -> Nginx {
            try await stop()
            return try await Self.start(port: port, directory: directory)
        }

        func remove() { try? FileManager.default.removeItem(at: directory) }

        static func freePort() throws -> Int {
            let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(host: "127.0.0.1", port: 0).wait()
            defer { try? channel.close().wait() }
            return channel.localAddress?.port ?? 0
        }

        static func canConnect(port: Int) async -> Bool {
            guard let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connect(host: "127.0.0.1", port: port).get() else { return false }
            try? await channel.close()
            return true
        }
    }

    @Test("pushes to a real nginx-rtmp; survives nginx being restarted on the same port")
    func pushToNginx() async throws {
        let key = "nginx-stream-key"
        var nginx = try await Nginx.start()
        defer { nginx.remove() }
        let server = try await TestServer {
            Self.fastRetries(&$0)
            $0.relayPush = [.init(channel: "simul", url: nginx.url(key))]
        }
        let publisher = try Self.publisher("av-long.flv", to: server.rtmpURL("simul"), loop: true)
        try await Self.waitUntil("the push to publish") { server.app.relay.targets(channel: "simul").first?.state == .publishing }
        let first = try await Self.play(nginx.url(key))
        #expect(Set(first.streams.map(\.codec_name)) == ["h264", "aac"])
        #expect(first.packets(of: "video").count >= 60)

        nginx = try await nginx.restart()
        try await Self.waitUntil("the push to publish again") {
            let status = server.app.relay.targets(channel: "simul").first
            return status?.state == .publishing && (status?.reconnects ?? 0) >= 1
        }
        let status = try #require(server.app.relay.targets(channel: "simul").first)
        #expect(status.lastError != nil)
        #expect(status.lastError?.contains(key) == false)
        let second = try await Self.play(nginx.url(key))
        #expect(Set(second.streams.map(\.codec_name)) == ["h264", "aac"])
        #expect(second.packets(of: "video").count >= 60)
        #expect(server.logs.contains("relay failed; retrying"))
        #expect(!server.logs.all.contains { $0.contains(key) }, "the stream key appeared in the log")

        publisher.kill()
        _ = try await publisher.wait()
        try await server.stop()
        try await nginx.stop()
    }
}

extension EndToEnd.Relay {
    @Test("an upstream that stops reading: the push drops to keyframes, ingest and HLS are not slowed, the push reconnects")
    func stalledUpstream() async throws {
        let upstream = try await StalledUpstream.start()
        let server = try await TestServer {
            Self.fastRetries(&$0)
            $0.relay.push.queue = .init(maxPackets: 64, maxBytes: 1 << 20)
            $0.relay.push.writeStallTimeout = .seconds(3)
            // The fixture is 12 kB/s: kernel buffers of the default size would hold all of it.
            $0.relay.push.socketSendBufferBytes = 4096
            $0.relayPush = [.init(channel: "busy", url: upstream.url("stalled-key"))]
        }
        let started = ContinuousClock.now
        let publisher = try Self.publisher("av-long.flv", to: server.rtmpURL("busy"))
        let first = try await server.waitForPlaylist("busy") { !$0.segments.isEmpty }
        try await Self.waitUntil("the push to drop packets") {
            (server.app.relay.targets(channel: "busy").first?.droppedPackets ?? 0) > 0
        }
        try await Self.waitUntil("the stalled connection to be given up and retried") {
            upstream.publishCount >= 2 && (server.app.relay.targets(channel: "busy").first?.reconnects ?? 0) >= 1
        }
        let status = try #require(server.app.relay.targets(channel: "busy").first)
        #expect(status.lastError?.contains("took no data") == true, "\(status)")
        #expect(server.logs.contains("relay fell behind; skipped to a keyframe"))

        // The publisher (20 s of media at real time) and HLS went on as if nothing happened.
        #expect(try await publisher.wait().status == 0)
        #expect(ContinuousClock.now - started < .seconds(24))
        let playlist = try await server.waitForPlaylist("busy") { $0.ended }
        let segments = playlist.mediaSequence + playlist.segments.count - first.mediaSequence
        #expect(segments >= 9, "HLS got the whole stream: \(segments) segments")
        try await server.stop()
        try await upstream.stop()
    }
}

extension EndToEnd.Relay {
    @Test("pulls from a real nginx-rtmp; when nginx's publisher stops, the local channel ends at once")
    func pullFromNginx() async throws {
        let nginx = try await Nginx.start()
        defer { nginx.remove() }
        let publisher = try Self.publisher("av-long.flv", to: nginx.url("source"))
        let edge = try await TestServer {
            Self.fastRetries(&$0)
            $0.relayPull = [.init(channel: "mirror", url: nginx.url("source"), mode: .always)]
        }
        try await Self.waitUntil("the mirror to go live") { edge.app.hub.stream(channel: "mirror") != nil }
        let played = try await Self.play(edge.rtmpURL("mirror"))
        #expect(Set(played.streams.map(\.codec_name)) == ["h264", "aac"])
        #expect(played.packets(of: "video").first?.flags.hasPrefix("K") == true)
        let status = try #require(edge.app.relay.targets(channel: "mirror").first)
        #expect(status.direction == .pull)
        #expect(status.state == .publishing)
        #expect(status.bytesSent > 10_000)

        // nginx tells its players the publisher left (well before the 10 s media timeout).
        let stopped = ContinuousClock.now
        publisher.kill()
        _ = try await publisher.wait()
        try await Self.waitUntil("the mirror to end") { edge.app.hub.stream(channel: "mirror") == nil }
        #expect(ContinuousClock.now - stopped < .seconds(5))
        #expect(edge.logs.contains("the remote publisher stopped"))
        try await edge.stop()
        try await nginx.stop()
    }
}

/// The fingerprint the server logs for a key (`key#` and four bytes of SHA-256, in hex).
enum RTMPURLMask {
    static func mask(_ key: String) -> String {
        String(describing: RTMPURL("rtmp://h/a/\(key)")!).replacingOccurrences(of: "rtmp://h/a/", with: "")
    }
}
