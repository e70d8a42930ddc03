import App
@testable import Delivery
import Foundation
import FoundationNetworking
import HTTPTypes
import NIOCore
import NIOEmbedded
import NIOHTTPTypes
import Packaging
import Testing

extension EndToEnd {
    @Suite("HLS fast path")
    struct HLSFastPathSuite {
        static func request(_ path: String, method: HTTPRequest.Method = .get, _ fields: HTTPFields = [:]) -> HTTPRequest {
            HTTPRequest(method: method, scheme: "http", authority: "127.0.0.1", path: path, headerFields: fields)
        }

        /// Sends one request through the handler; returns what it answered itself and what it passed on.
        static func send(_ request: HTTPRequest, through channel: EmbeddedChannel) throws
            -> (answered: [HTTPResponsePart], passed: [HTTPRequestPart]) {
            try channel.writeInbound(HTTPRequestPart.head(request))
            try channel.writeInbound(HTTPRequestPart.end(nil))
            var answered: [HTTPResponsePart] = []
            while let part = try channel.readOutbound(as: HTTPResponsePart.self) { answered.append(part) }
            var passed: [HTTPRequestPart] = []
            while let part = try channel.readInbound(as: HTTPRequestPart.self) { passed.append(part) }
            return (answered, passed)
        }

        @Test("answers open channels' playlists and whole segments itself; passes through queries, Range, Origin, close, private channels, misses; keeps pipelining order")
        func handler() async throws {
            let server = try await TestServer()
            let publisher = try publish("av-640x360.flv", to: server.rtmpURL("fast"))
            let playlist = try await server.waitForPlaylist("fast") { !$0.segments.isEmpty }
            let segment = try #require(playlist.segments.first?.uri)
            let channel = EmbeddedChannel(handler: HLSFastPath(store: server.app.segments, serverName: "Estuary",
                                                               isOpen: { $0 != "private" }))

            let answered = try Self.send(Self.request("/live/fast/index.m3u8"), through: channel)
            #expect(answered.passed.isEmpty)
            guard answered.answered.count == 3, case .head(let head) = answered.answered[0],
                  case .body(let body) = answered.answered[1], case .end = answered.answered[2]
            else { Issue.record("not head, body, end: \(answered.answered)"); return }
            #expect(head.status == .ok && head.headerFields[.contentType] == "application/vnd.apple.mpegurl")
            #expect(head.headerFields[.contentLength] == "\(body.readableBytes)")
            #expect(String(buffer: body) == server.app.segments.playlist(channel: "fast"))

            let segmentAnswer = try Self.send(Self.request("/live/fast/\(segment)"), through: channel)
            guard case .body(let bytes) = segmentAnswer.answered[1] else { Issue.record("no body"); return }
            #expect(bytes.readableBytes > 1000 && bytes.readableBytes % 188 == 0)
            let head2 = try Self.send(Self.request("/live/fast/\(segment)", method: .head), through: channel)
            #expect(head2.answered.count == 2, "HEAD has no body: \(head2.answered)")

            let passThrough: [HTTPRequest] = [
                Self.request("/live/fast/index.m3u8?expires=1&token=x"),
                Self.request("/live/fast/\(segment)", [.range: "bytes=0-99"]),
                Self.request("/live/fast/index.m3u8", [.origin: "https://player.example"]),
                Self.request("/live/fast/index.m3u8", [.connection: "close"]),
                Self.request("/live/private/index.m3u8"),
                Self.request("/live/nothing-here/index.m3u8"),
                Self.request("/live/fast/999999999.ts"),
                Self.request("/live/fast/index.m3u8", method: .post),
                Self.request("/api/v1/streams"),
            ]
            for request in passThrough {
                let result = try Self.send(request, through: channel)
                #expect(result.answered.isEmpty && result.passed.count == 2, "\(request)")
                // The router's response ends: the next request may be answered here again.
                try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .notFound)))
                try channel.writeOutbound(HTTPResponsePart.end(nil))
                while try channel.readOutbound(as: HTTPResponsePart.self) != nil {}
            }

            // Pipelined behind a request the router has not answered yet, a playlist request waits its turn.
            _ = try Self.send(Self.request("/api/v1/streams"), through: channel)
            let queued = try Self.send(Self.request("/live/fast/index.m3u8"), through: channel)
            #expect(queued.answered.isEmpty && queued.passed.count == 2)
            for _ in 0..<2 {
                try channel.writeOutbound(HTTPResponsePart.head(HTTPResponse(status: .ok)))
                try channel.writeOutbound(HTTPResponsePart.end(nil))
            }
            while try channel.readOutbound(as: HTTPResponsePart.self) != nil {}
            #expect(try Self.send(Self.request("/live/fast/index.m3u8"), through: channel).answered.count == 3)
            _ = try channel.finish()
            publisher.kill()
            _ = try await publisher.wait()
            try await server.stop()
        }

        @Test("over the wire the fast path and the router answer alike (status, headers, body), GET and HEAD")
        func sameAnswers() async throws {
            let server = try await TestServer()
            let publisher = try publish("av-640x360.flv", to: server.rtmpURL("alike"))
            let playlist = try await server.waitForPlaylist("alike") { $0.segments.count >= 2 }
            let segment = try #require(playlist.segments.first?.uri)
            for path in ["/live/alike/\(segment)", "/live/alike/index.m3u8"] {
                for method in ["GET", "HEAD"] {
                    // An Origin header sends the request through the router (which adds CORS headers).
                    let fast = try await server.get(path, method: method)
                    let routed = try await server.get(path, headers: ["Origin": "https://player.example"], method: method)
                    #expect(fast.status == 200 && routed.status == 200)
                    let ignored: Set<String> = ["date", "access-control-allow-origin", "access-control-expose-headers", "vary"]
                    #expect(fast.headers.filter { !ignored.contains($0.key) } == routed.headers.filter { !ignored.contains($0.key) },
                            "\(method) \(path)")
                    if path.hasSuffix(".ts") { #expect(fast.body == routed.body) }
                    #expect(fast.headers["date"] != nil && fast.headers["server"] == "Estuary")
                }
            }
            publisher.kill()
            _ = try await publisher.wait()
            try await server.stop()
        }

        static let plainRequests: [(name: String, bytes: String, parsed: HLSRawFastPath.Parsed)] = {
            let get = "GET /live/a/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"
            let head = "HEAD /live/a/7.ts HTTP/1.1\r\nhost: x\r\nConnection: Keep-Alive\r\nUser-Agent: p/1\r\nContent-Length: 0\r\n\r\n"
            return [
                ("a GET with Host", get, .request(length: get.utf8.count, isHead: false, path: "/live/a/index.m3u8", userAgent: nil)),
                ("a HEAD with keep-alive, a User-Agent and an empty body", head,
                 .request(length: head.utf8.count, isHead: true, path: "/live/a/7.ts", userAgent: nil)),
                ("a head not complete yet", "GET /live/a/index.m3u8 HTTP/1.1\r\nHo", .needMore),
                ("a method not complete yet", "HE", .needMore),
                ("another method", "POST /live/a/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n", .other),
                ("HTTP/1.0", "GET /live/a/index.m3u8 HTTP/1.0\r\nHost: x\r\n\r\n", .other),
                ("no Host", "GET /live/a/index.m3u8 HTTP/1.1\r\nAccept: */*\r\n\r\n", .other),
                ("a query", "GET /live/a/index.m3u8?token=1 HTTP/1.1\r\nHost: x\r\n\r\n", .other),
                ("percent-encoding", "GET /live/a/index%2Em3u8 HTTP/1.1\r\nHost: x\r\n\r\n", .other),
                ("Range", "GET /live/a/7.ts HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n", .other),
                ("Origin, any case", "GET /live/a/7.ts HTTP/1.1\r\nHost: x\r\noRiGiN: https://p\r\n\r\n", .other),
                ("Connection: close", "GET /live/a/7.ts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", .other),
                ("a body", "GET /live/a/7.ts HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", .other),
                ("chunked", "GET /live/a/7.ts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", .other),
                ("bare LF", "GET /live/a/7.ts HTTP/1.1\nHost: x\n\n", .other),
                ("a folded header", "GET /live/a/7.ts HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", .other),
                ("a line without a colon", "GET /live/a/7.ts HTTP/1.1\r\nHost x\r\n\r\n", .other),
                ("a head over 8 KiB", "GET /live/a/7.ts HTTP/1.1\r\nHost: x\r\nX-Pad: " + String(repeating: "p", count: 9000), .other),
            ]
        }()

        @Test("plain requests are read from their bytes; anything else is left to the codec", arguments: plainRequests)
        func rawParse(name: String, bytes: String, parsed: HLSRawFastPath.Parsed) {
            #expect(HLSRawFastPath.parse(ByteBuffer(string: bytes)) == parsed, "\(name)")
        }

        @Test("the byte-level path answers plain requests and hands the codec the rest, from the first it does not answer")
        func rawHandler() async throws {
            let server = try await TestServer()
            let publisher = try publish("av-640x360.flv", to: server.rtmpURL("raw"))
            _ = try await server.waitForPlaylist("raw") { !$0.segments.isEmpty }
            let store = server.app.segments
            let playlist = try #require(store.playlistBytes(channel: "raw"))
            let channel = EmbeddedChannel(handler: HLSRawFastPath(store: store, serverName: "Estuary",
                                                                  isOpen: { $0 != "private" }, onPlaylist: nil))
            func answers() throws -> [ByteBuffer] {
                var buffers: [ByteBuffer] = []
                while let buffer = try channel.readOutbound(as: ByteBuffer.self) { buffers.append(buffer) }
                return buffers
            }
            func passed() throws -> String {
                var text = ""
                while var buffer = try channel.readInbound(as: ByteBuffer.self) { text += buffer.readString(length: buffer.readableBytes)! }
                return text
            }
            let get = "GET /live/raw/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"

            // Split anywhere, a request is answered once its head is complete.
            try channel.writeInbound(ByteBuffer(string: String(get.prefix(20))))
            #expect(try answers().isEmpty)
            try channel.writeInbound(ByteBuffer(string: String(get.dropFirst(20))))
            var response = try answers()
            #expect(response.count == 2 && response.last == playlist)
            let head = String(buffer: response[0])
            #expect(head.hasPrefix("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\nCache-Control: no-cache\r\n"
                                   + "Content-Length: \(playlist.readableBytes)\r\nDate: "), "\(head)")
            #expect(head.hasSuffix(" GMT\r\nServer: Estuary\r\n\r\n"), "\(head)")
            #expect(try passed().isEmpty)

            // HEAD: the same head, no body.
            try channel.writeInbound(ByteBuffer(string: "HEAD /live/raw/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n"))
            response = try answers()
            #expect(response.count == 1 && String(buffer: response[0]).hasPrefix("HTTP/1.1 200 OK\r\n"))

            // Pipelined: the first is answered; from the private channel's request on, the codec has it all.
            let later = "GET /live/private/index.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n" + get
            try channel.writeInbound(ByteBuffer(string: get + later))
            #expect(try answers().count == 2)
            #expect(try passed() == later)
            try channel.writeInbound(ByteBuffer(string: get))
            #expect(try answers().isEmpty)
            #expect(try passed() == get)

            _ = try channel.finish()
            publisher.kill()
            _ = try await publisher.wait()
            try await server.stop()
        }
    }
}
