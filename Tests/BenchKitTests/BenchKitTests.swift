@testable import BenchKit
import Foundation
import MediaCore
import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@Suite("Bench tools")
struct BenchKitTests {
    @Test("/proc/<pid>/stat: fields counted after the last ')', names with spaces and parentheses", arguments: [
        ("1234 (nginx) S 1 1234 1234 0 -1 4194560 100 0 0 0 25 17 0 0 20 0 1 0 100 1000 200", 1, 25, 17),
        ("99 (a (b) c) R 42 99 99 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 10 2", 42, 7, 3),
    ])
    func stat(line: String, parent: Int32, utime: UInt64, stime: UInt64) throws {
        let parsed = try #require(ProcessStats.parseStat(line))
        #expect(parsed.parent == parent && parsed.utime == utime && parsed.stime == stime)
    }

    @Test("hostile or short stat lines are refused", arguments: ["", "1234 nginx S 1", "1 (x) S 1 2 3", "1 (x) S p 1 1 0 -1 0 0 0 0 0 a b"])
    func badStat(line: String) {
        #expect(ProcessStats.parseStat(line) == nil)
    }

    @Test("VmRSS in kB becomes bytes")
    func resident() {
        #expect(ProcessStats.parseResident("Name:\tx\nVmRSS:\t   2048 kB\nThreads: 1\n") == 2048 * 1024)
        #expect(ProcessStats.parseResident("Name:\tx\n") == nil)
        #expect(ProcessStats.parseResident("VmRSS: lots kB\n") == nil)
    }

    @Test("this process can be sampled; a dead pid cannot")
    func sampleSelf() throws {
        let sample = try #require(ProcessStats.sample(root: getpid()))
        #expect(sample.residentBytes > 1 << 20)
        #expect(sample.processes >= 1)
        #expect(ProcessStats.sample(root: Int32.max) == nil)
    }

    @Test("wrk's report: rate, p99 in any unit, errors")
    func wrk() throws {
        let report = """
            Running 10s test @ http://127.0.0.1:8080/live/x/1.ts
              1 threads and 50 connections
              Latency Distribution
                 50%  812.00us
                 99%    2.31ms
              120000 requests in 10.00s, 2.00GB read
              Socket errors: connect 0, read 2, write 0, timeout 1
              Non-2xx or 3xx responses: 4
            Requests/sec:  12000.50
            """
        let result = try #require(WrkResult.parse(report))
        #expect(result.requestsPerSecond == 12000.50)
        #expect(result.p99Milliseconds == 2.31)
        #expect(result.errors == 7)
        #expect(WrkResult.parse("garbage") == nil)
        #expect(WrkResult.milliseconds("1.5s") == 1500)
        #expect(WrkResult.milliseconds("500.00us") == 0.5)
    }

    @Test("playlists: sequence, durations and URIs")
    func playlist() throws {
        let view = try #require(PlaylistView("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.000,\n7.ts\n#EXTINF:1.5,\n8.ts\n"))
        #expect(view.mediaSequence == 7)
        #expect(view.targetDuration == 2)
        #expect(PlaylistView("#EXTM3U\n#EXTINF:2.000,\n7.ts\n")?.targetDuration == nil)
        #expect(view.segments.map(\.uri) == ["7.ts", "8.ts"])
        #expect(view.segments.map(\.duration) == [2, 1.5])
        #expect(PlaylistView("<html>") == nil)
    }

    @Test("a fixture loops with increasing timestamps")
    func loop() throws {
        let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("fixtures/av-640x360.flv").path
        let source = try FLVSource(path: fixtures)
        #expect(source.description.video != nil && source.description.audio != nil)
        #expect(source.bitrate > 10_000)
        let count = source.packets.count
        let first = source.packet(at: 0), again = source.packet(at: count)
        #expect(again.dts == first.dts + source.loopDuration)
        #expect(source.packet(at: count - 1).dts < again.dts, "the second loop starts after the first ends")
        #expect(throws: FLVSource.LoadError.self) { try FLVSource(path: "/nonexistent.flv") }
    }

    @Test("the report pairs rows and judges the bar")
    func report() {
        var estuary = ServerRun(scenario: "ingest 600k", size: "N=50", server: .estuary)
        estuary.cpuPerUnit = 0.2
        var nginx = ServerRun(scenario: "ingest 600k", size: "N=50", server: .nginx)
        nginx.cpuPerUnit = 0.5
        let text = Report.markdown([estuary, nginx], machine: "m", date: "d")
        #expect(text.contains("| ingest 600k | N=50 | CPU per stream | 0.400 | ≤ 0.55 | PASS |"))
        estuary.cpuPerUnit = 0.3
        #expect(Report.markdown([estuary, nginx], machine: "m", date: "d").contains("FALL SHORT"))
        estuary.valid = false
        #expect(Report.markdown([estuary, nginx], machine: "m", date: "d").contains("invalid run"))
        estuary.valid = true
        // A busy reader lowers the server's CPU: on nginx-rtmp's side a PASS still stands, nothing else does.
        nginx.readerBusy = true
        #expect(Report.result(estuary, nginx, pass: true) == "PASS (ratio an upper bound: generator busy reading nginx-rtmp)")
        #expect(Report.result(estuary, nginx, pass: false) == "invalid run")
        nginx.readerBusy = false
        estuary.readerBusy = true
        #expect(Report.result(estuary, nginx, pass: true) == "invalid run")
        #expect(Report.markdown([estuary, nginx], machine: "m", date: "d").contains("FALL SHORT") == false)
    }

    @Test("an HLS viewer starts at the live edge, fetches each new segment once, reloads as RFC 8216 says, counts what slid away")
    func viewer() throws {
        let statistics = ViewerStatistics(origin: .now, firstSequence: 10)
        statistics.startMeasuring()
        let channel = EmbeddedChannel(handler: HLSViewer(host: "h:1", playlistPath: "/live/s/index.m3u8", statistics: statistics))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.embeddedEventLoop.run()  // the first load is scheduled for the moment of joining
        #expect(try requested(channel) == "/live/s/index.m3u8")
        let first = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n#EXTINF:2,\n10.ts\n#EXTINF:2,\n11.ts\n"
        try respond(channel, first)
        #expect(try requested(channel) == "/live/s/11.ts", "only the newest segment at the start")
        try respond(channel, String(repeating: "x", count: 188))
        #expect(try requested(channel) == nil)
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(try requested(channel) == "/live/s/index.m3u8", "a changed playlist is reloaded a target duration later")
        try respond(channel, first)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(999))
        #expect(try requested(channel) == nil)
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(try requested(channel) == "/live/s/index.m3u8", "an unchanged one half a target duration later")
        try respond(channel, "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:14\n#EXTINF:2,\n14.ts\n#EXTINF:2,\n15.ts\n")
        #expect(try requested(channel) == "/live/s/14.ts")
        try respond(channel, "y")
        #expect(try requested(channel) == "/live/s/15.ts")
        try respond(channel, "", status: .notFound)
        let snapshot = statistics.snapshot
        #expect(snapshot.missed == 2, "12 and 13 left the window unseen")
        #expect(snapshot.segments == 2 && snapshot.bytes == 189)
        #expect(snapshot.delays.count == 1, "only 11's media end is known: 12 and 13 were never listed")
        #expect(snapshot.errors.first?.hasPrefix("HTTP 404") == true)
        #expect(!channel.isActive)
    }

    private func requested(_ channel: EmbeddedChannel) throws -> String? {
        guard case .head(let head)? = try channel.readOutbound(as: HTTPClientRequestPart.self) else { return nil }
        guard case .end? = try channel.readOutbound(as: HTTPClientRequestPart.self) else { return nil }
        #expect(head.headers["Host"] == ["h:1"])
        return head.uri
    }

    private func respond(_ channel: EmbeddedChannel, _ body: String, status: HTTPResponseStatus = .ok) throws {
        try channel.writeInbound(HTTPClientResponsePart.head(HTTPResponseHead(version: .http1_1, status: status)))
        try channel.writeInbound(HTTPClientResponsePart.body(ByteBuffer(string: body)))
        try channel.writeInbound(HTTPClientResponsePart.end(nil))
    }
}
