import App
import Foundation
import Testing

extension EndToEnd {
    @Suite("HTTP delivery and lifecycle")
    struct Delivery {
        @Test("playlist and segment headers, HEAD, Range, CORS, 404s, health")
        func http() async throws {
            let server = try await TestServer()
            let publisher = try publish("video-only.flv", to: server.rtmpURL("web"))
            let playlist = try await server.waitForPlaylist("web") { !$0.segments.isEmpty }

            let list = try await server.get("/live/web/index.m3u8", headers: ["Origin": "https://player.example"])
            #expect(list.headers["content-type"] == "application/vnd.apple.mpegurl")
            #expect(list.headers["cache-control"] == "no-cache")
            #expect(list.headers["access-control-allow-origin"] == "*")
            #expect(list.headers["content-length"] == "\(list.body.count)")

            // A browser player's preflight (a Range request is not a simple one) gets what it needs, cacheable.
            let preflight = try await server.get("/live/web/index.m3u8", headers: [
                "Origin": "https://player.example", "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "range",
            ], method: "OPTIONS")
            #expect(preflight.status == 204)
            #expect(preflight.headers["access-control-allow-origin"] == "*")
            let methods = Set((preflight.headers["access-control-allow-methods"] ?? "").split(separator: ",").map {
                $0.trimmingCharacters(in: .whitespaces).uppercased()
            })
            #expect(methods.isSuperset(of: ["GET", "HEAD", "OPTIONS"]), "\(methods)")
            #expect(preflight.headers["access-control-allow-headers"]?.lowercased().contains("range") == true)
            #expect(preflight.headers["access-control-max-age"] == "7200")
            #expect(preflight.body.isEmpty)

            let uri = try #require(playlist.segments.first?.uri)
            let segment = try await server.get("/live/web/\(uri)", headers: ["Origin": "https://player.example"])
            #expect(segment.status == 200)
            #expect(segment.headers["access-control-allow-origin"] == "*")
            #expect(segment.headers["content-type"] == "video/mp2t")
            #expect(segment.headers["cache-control"]?.contains("max-age") == true)
            #expect(segment.headers["content-length"] == "\(segment.body.count)")
            #expect(segment.body.first == 0x47)

            let head = try await server.get("/live/web/\(uri)", method: "HEAD")
            #expect(head.status == 200)
            #expect(head.headers["content-length"] == "\(segment.body.count)")
            #expect(head.body.isEmpty)

            let range = try await server.get("/live/web/\(uri)", headers: ["Range": "bytes=188-375"])
            #expect(range.status == 206)
            #expect(range.headers["content-range"] == "bytes 188-375/\(segment.body.count)")
            #expect(range.body == segment.body[188..<376])
            let suffix = try await server.get("/live/web/\(uri)", headers: ["Range": "bytes=-188"])
            #expect(suffix.body == segment.body.suffix(188))
            let unsatisfiable = try await server.get("/live/web/\(uri)", headers: ["Range": "bytes=\(segment.body.count)-"])
            #expect(unsatisfiable.status == 416)

            #expect(try await server.get("/live/nobody/index.m3u8").status == 404)
            #expect(try await server.get("/live/nobody/index.m3u8", method: "HEAD").status == 404)
            #expect(try await server.get("/live/nobody/\(uri)").status == 404)
            #expect(try await server.get("/live/web/999999.ts").status == 404)
            #expect(try await server.get("/live/web/999999.ts", method: "HEAD").status == 404)
            #expect(try await server.get("/live/web/x.ts").status == 404)
            #expect(try await server.get("/live/web/-1.ts").status == 404)
            let health = try await server.get("/health")
            #expect(health.status == 200)
            #expect(String(decoding: health.body, as: UTF8.self).contains(#""status":"ok""#))

            #expect(try await publisher.wait().status == 0)
            // Once ended the playlist no longer changes: HEAD gives the GET's headers and length, no body.
            _ = try await server.waitForPlaylist("web") { $0.ended }
            let full = try await server.get("/live/web/index.m3u8")
            let headList = try await server.get("/live/web/index.m3u8", method: "HEAD")
            #expect(headList.status == 200)
            #expect(headList.headers["content-type"] == "application/vnd.apple.mpegurl")
            #expect(headList.headers["cache-control"] == "no-cache")
            #expect(headList.headers["content-length"] == "\(full.body.count)")
            #expect(headList.body.isEmpty)
            try await server.stop()
        }

        @Test("--hls-path writes the same playlist and segments to disk; graceful shutdown ends the playlist")
        func diskAndShutdown() async throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-hls-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            let server = try await TestServer {
                $0.hlsPath = directory.path
                $0.publishGrace = 30
            }
            let publisher = try publish("av-long.flv", to: server.rtmpURL("disk"))
            let playlist = try await server.waitForPlaylist("disk") { $0.segments.count >= 2 }
            let onDisk = directory.appendingPathComponent("disk")
            let text = try String(contentsOf: onDisk.appendingPathComponent("index.m3u8"), encoding: .utf8)
            #expect(try Playlist(text).segments.count >= playlist.segments.count)
            for segment in playlist.segments {
                let served = try await server.get("/live/disk/\(segment.uri)").body
                #expect(try Data(contentsOf: onDisk.appendingPathComponent(segment.uri)) == served)
            }

            // SIGTERM's path: stop accepting, close the publisher, end the playlist at once (not after the grace).
            try await server.stop()
            let final = try Playlist(String(contentsOf: onDisk.appendingPathComponent("index.m3u8"), encoding: .utf8))
            #expect(final.ended)
            let result = try await publisher.wait()
            #expect(result.status != 0, "the publisher's connection was closed by the server")
        }
    
        @Test("an HTTP port already in use fails startup with the bind error; nothing is left running")
        func portInUse() async throws {
            let first = try await TestServer()
            await #expect(throws: (any Error).self) {
                _ = try await TestServer { $0.httpPort = first.httpPort }
            }
            // The failed instance's RTMP listener closed too (cancelled, not left open): the first still serves.
            #expect(try await first.get("/health").status == 200)
            try await first.stop()
        }
    }
}
