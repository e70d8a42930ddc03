@testable import BenchKit
import Foundation
import MediaCore
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
        let view = try #require(PlaylistView("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.000,\n7.ts\n#EXTINF:1.5,\n8.ts\n"))
        #expect(view.mediaSequence == 7)
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
    }
}
