import App
import Foundation
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

extension EndToEnd {
    /// Nodes sharing a real redis-server: what is stored, the lease, events, viewers, the API and HLS across nodes.
    @Suite("Redis registry")
    struct RedisRegistry {
        /// A node on `redis` with a fast heartbeat (0.5 s) and a short TTL (3 s), so the test waits less.
        static func node(_ id: String, _ redis: RedisServer,
                         configure: (inout EstuaryConfiguration) -> Void = { _ in }) async throws -> TestServer {
            try await node(id, url: redis.url, configure: configure)
        }

        static func node(_ id: String, url: String,
                         configure: (inout EstuaryConfiguration) -> Void = { _ in }) async throws -> TestServer {
            try await TestServer {
                $0.redisURL = url
                $0.nodeID = id
                $0.redisHeartbeat = 0.5
                $0.redisTTL = 3
                $0.redisTimeout = 0.5
                configure(&$0)
            }
        }

        static func waitUntil(_ what: String, timeout: Duration = .seconds(15), _ condition: () async throws -> Bool) async throws {
            try await Relay.waitUntil(what, timeout: timeout, condition)
        }

        static func json(_ data: Data) throws -> [String: Any] {
            try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        }

        @Test("a live stream's hash, listing, lease and node record; a second publish on another node gets BadName; the lease goes with the publisher")
        func leaseAcrossNodes() async throws {
            let redis = try await RedisServer.start()
            let a = try await Self.node("node-a", redis) { $0.streamKeys = ["key-of-a-7781": "show"] }
            let b = try await Self.node("node-b", redis) { $0.streamKeys = ["key-of-b-5521": "show"] }
            let events = try await redis.subscribe("estuary:events")

            let first = try publish("av-long.flv", to: a.rtmpURL("key-of-a-7781"))
            _ = try await a.waitForPlaylist("show") { !$0.segments.isEmpty }
            try await Self.waitUntil("the heartbeat to describe the stream") {
                try await redis.hash("estuary:stream:show")["video_codec"] == "h264"
            }
            let stream = try await redis.hash("estuary:stream:show")
            #expect(stream["node"] == "node-a")
            #expect(stream["app"] == "live")
            #expect(stream["width"] == "426" && stream["height"] == "240", "from onMetaData: \(stream)")
            #expect(stream["audio_codec"] == "aac")
            #expect(Int(stream["bitrate_in"] ?? "") ?? 0 > 0, "\(stream)")
            let ttl = try #require(Int(try await redis.cli("PTTL", "estuary:stream:show")))
            #expect(ttl > 0 && ttl <= 3000)
            #expect(try await redis.cli("GET", "estuary:lease:show") == "node-a")
            let leaseTTL = try #require(Int(try await redis.cli("PTTL", "estuary:lease:show")))
            #expect(leaseTTL > 0 && leaseTTL <= 3000)
            #expect(try await redis.cli("ZRANGE", "estuary:live", "0", "-1") == "show")
            try await Self.waitUntil("both node records") {
                try await redis.cli("ZRANGE", "estuary:nodes", "0", "-1").split(separator: "\n").sorted() == ["node-a", "node-b"]
            }
            let node = try await redis.hash("estuary:node:node-a")
            #expect(node["http"] == "http://127.0.0.1:\(a.httpPort)")
            #expect(node["rtmp"] == "127.0.0.1:\(a.rtmpPort)")
            #expect(node["streams"] == "1")
            print("redis after publishing 'show' on node-a:\n\(try await redis.dump())")

            let second = try await publish("video-only.flv", to: b.rtmpURL("key-of-b-5521")).wait()
            #expect(second.status != 0, "node-b refused the second publisher")
            #expect(b.logs.contains("NetStream.Publish.BadName"))
            #expect(b.logs.all.contains { $0.contains("already being published on node node-a") })
            #expect(first.isRunning, "the first publisher is undisturbed")
            #expect(try await redis.cli("GET", "estuary:lease:show") == "node-a")

            first.kill()
            _ = try await first.wait()
            try await Self.waitUntil("the lease, hash and listing to go with the publisher", timeout: .seconds(5)) {
                let lease = try await redis.cli("EXISTS", "estuary:lease:show", "estuary:stream:show")
                return lease == "0" ? try await redis.cli("ZCARD", "estuary:live") == "0" : false
            }
            let third = try publish("av-long.flv", to: b.rtmpURL("key-of-b-5521"))
            _ = try await b.waitForPlaylist("show") { !$0.segments.isEmpty }
            #expect(try await redis.cli("GET", "estuary:lease:show") == "node-b")
            let dump = try await redis.dump()
            #expect(!dump.contains("key-of-a") && !dump.contains("key-of-b"), "a stream key in Redis: \(dump)")
            third.kill()
            _ = try await third.wait()
            try await Self.waitUntil("node-b's stream to end") { try await redis.cli("EXISTS", "estuary:lease:show") == "0" }

            let messages = try await events.stop()
            let kinds = messages.map { "\($0["type"] as? String ?? "?") \($0["node"] as? String ?? "?")" }
            #expect(kinds.first == "stream.started node-a", "\(kinds)")
            #expect(kinds.contains("stream.updated node-a"))
            #expect(kinds.contains("stream.ended node-a"))
            #expect(kinds.contains("stream.started node-b"))
            #expect(kinds.last == "stream.ended node-b", "\(kinds)")
            let ended = try #require(messages.first { $0["type"] as? String == "stream.ended" })
            #expect(ended["channel"] as? String == "show")
            #expect((ended["durationSeconds"] as? Double ?? 0) > 0)
            #expect(ended["timestamp"] as? String != nil && ended["startedAt"] as? String != nil)
            let updated = try #require(messages.first { $0["type"] as? String == "stream.updated" })
            print("an event seen with SUBSCRIBE estuary:events: \(String(decoding: try JSONSerialization.data(withJSONObject: updated, options: [.sortedKeys]), as: UTF8.self))")
            for message in messages {
                let text = String(decoding: try JSONSerialization.data(withJSONObject: message), as: UTF8.self)
                #expect(!text.contains("key-of-"), "a stream key in an event: \(text)")
            }
            try await a.stop()
            try await b.stop()
            try await redis.stop()
        }

        @Test("viewers (RTMP exactly, HLS sessions on either node), the API on either node, node-b redirecting HLS to node-a")
        func viewersAPIAndTwoNodeHLS() async throws {
            let redis = try await RedisServer.start()
            let a = try await Self.node("node-a", redis)
            let b = try await Self.node("node-b", redis)
            let events = try await redis.subscribe("estuary:events")
            let publisher = try publish("av-long.flv", to: a.rtmpURL("view"))
            let playlistA = try await a.waitForPlaylist("view") { $0.segments.count >= 2 }

            // Two RTMP players on node-a.
            let players = try (0..<2).map { _ in
                try ChildProcess("ffmpeg", ["-hide_banner", "-loglevel", "error", "-i", a.rtmpURL("view"), "-c", "copy", "-f", "null", "-"])
            }
            // Three HLS sessions: one on node-a, two through node-b; the test's own playlist polls
            // (URLSession's User-Agent) are a fourth.
            for (server, agent) in [(a, "player-1"), (b, "player-2"), (b, "player-3")] {
                let response = try await server.get("/live/view/index.m3u8", headers: ["User-Agent": agent])
                #expect(response.status == 200)
            }
            try await Self.waitUntil("viewer counts in the stream hash") {
                let stream = try await redis.hash("estuary:stream:view")
                return stream["viewers_rtmp"] == "2" && stream["viewers_hls"] == "4" && stream["viewers"] == "6"
            }

            // node-b answers a playlist of node-a's channel with a redirect to the same path on node-a.
            let head = try await ChildProcess.run("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                                                           "http://127.0.0.1:\(b.httpPort)/live/view/index.m3u8?x=1"])
            #expect(head.stdout == "302 http://127.0.0.1:\(a.httpPort)/live/view/index.m3u8?x=1", "\(head.stdout)")
            // Followed, it is node-a's own playlist: continuous whichever node a player asks.
            let viaB = try Playlist(String(decoding: try await b.get("/live/view/index.m3u8").body, as: UTF8.self))
            #expect(viaB.mediaSequence >= playlistA.mediaSequence)
            let nowA = try Playlist(String(decoding: try await a.get("/live/view/index.m3u8").body, as: UTF8.self))
            #expect(Set(viaB.segments.map(\.uri)).intersection(nowA.segments.map(\.uri)).count >= 1)
            // A relative URI resolves against the URL the playlist came from (node-a, after the redirect);
            // a player that resolves it against node-b's URL is redirected too; an absolute one names node-a.
            let uri = try #require(viaB.segments.last?.uri)
            let fromA = try await a.get("/live/view/\(uri)")
            let fromB = try await b.get("/live/view/\(uri)")
            #expect(fromA.status == 200 && fromB.status == 200)
            #expect(fromA.headers["content-type"] == "video/mp2t")
            #expect(fromA.body == fromB.body)

            // The API, asked on node-b; a foreign value under one of our keys is left out, not fatal.
            #expect(try await redis.cli("SET", "estuary:stream:bogus", "not a hash") == "OK")
            #expect(try await redis.cli("ZADD", "estuary:live", "1", "bogus") == "1")
            let list = try Self.json(try await b.get("/api/v1/streams").body)
            let streams = try #require(list["streams"] as? [[String: Any]])
            let view = try #require(streams.first { $0["channel"] as? String == "view" })
            #expect(view["node"] as? String == "node-a")
            #expect((view["video"] as? [String: Any])?["codec"] as? String == "h264")
            #expect(view["rtmpViewers"] as? Int == 2 && view["hlsViewers"] as? Int == 4, "\(view)")
            #expect(streams.count == 1, "\(streams)")
            #expect(b.logs.all.contains { $0.contains("registry entry unreadable") && $0.contains("WRONGTYPE") })
            let one = try Self.json(try await b.get("/api/v1/streams/view").body)
            #expect(one["live"] as? Bool == true)
            #expect((one["stream"] as? [String: Any])?["node"] as? String == "node-a")
            let nodes = try #require(try Self.json(try await b.get("/api/v1/nodes").body)["nodes"] as? [[String: Any]])
            #expect(nodes.compactMap { $0["id"] as? String } == ["node-a", "node-b"])
            #expect(nodes.first?["httpURL"] as? String == "http://127.0.0.1:\(a.httpPort)")
            #expect(nodes.first?["streams"] as? Int == 1)

            // A real HLS player (ffmpeg) pointed at node-b plays node-a's stream: 4 s of audio and video.
            let recording = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-two-nodes-\(UUID().uuidString).ts").path
            defer { try? FileManager.default.removeItem(atPath: recording) }
            let played = try await ChildProcess.run("ffmpeg", ["-hide_banner", "-v", "error", "-i", "http://127.0.0.1:\(b.httpPort)/live/view/index.m3u8",
                                                               "-t", "4", "-c", "copy", "-f", "mpegts", recording])
            #expect(played.status == 0, "\(played.stderr)")
            let probed = try await ProbedSegment.probe(recording)
            #expect((probed.videoPTS.last ?? 0) - (probed.videoPTS.first ?? 0) >= 3, "\(probed.videoPTS.count) video packets")
            #expect(!probed.audioPTS.isEmpty)

            for player in players { player.kill() }
            for player in players { _ = try await player.wait() }
            try await Self.waitUntil("RTMP viewers back to 0") { try await redis.hash("estuary:stream:view")["viewers_rtmp"] == "0" }
            publisher.kill()
            _ = try await publisher.wait()
            try await Self.waitUntil("the stream to end") { try await redis.cli("EXISTS", "estuary:stream:view") == "0" }
            let messages = try await events.stop()
            let counts = messages.filter { $0["type"] as? String == "viewer.count" }
            #expect(counts.contains { $0["rtmpViewers"] as? Int == 2 && $0["hlsViewers"] as? Int == 4 && $0["viewers"] as? Int == 6 },
                    "\(counts)")
            #expect(counts.last?["rtmpViewers"] as? Int == 0)
            try await a.stop()
            try await b.stop()
            try await redis.stop()
        }
    }
}
