import Foundation
import MediaCore
import NIOCore
import Testing

@testable import Packaging

/// Reads an FLV file's H.264/AAC tags into packets (test-only; the server gets them over RTMP).
///
/// FLV: 9-byte header and a 4-byte previous-tag size, then tags of an 11-byte header (type,
/// 24-bit size, 24-bit time + 8-bit extension) + body + 4-byte previous-tag size. Video body:
/// frame type/codec, AVCPacketType, 24-bit signed composition time. Audio body: format byte,
/// AACPacketType.
struct FLVFile {
    var description = StreamDescription()
    var packets: [MediaPacket] = []

    init(_ path: String) throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var offset = 9 + 4
        func uint24(_ at: Int) -> Int { Int(bytes[at]) << 16 | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) }
        while offset + 11 <= bytes.count {
            let type = bytes[offset]
            let size = uint24(offset + 1)
            let time = Int64(uint24(offset + 4) | Int(bytes[offset + 7]) << 24)
            guard offset + 11 + size <= bytes.count else { break }
            let body = Array(bytes[(offset + 11)..<(offset + 11 + size)])
            offset += 11 + size + 4
            if type == 9, body.count > 5, body[0] & 0x0F == 7 {
                let cts = Int64(Int32(bitPattern: UInt32(body[2]) << 24 | UInt32(body[3]) << 16 | UInt32(body[4]) << 8) >> 8)
                if body[1] == 0 {
                    description.video = .init(avcC: try AVCDecoderConfigurationRecord(bytes: Array(body[5...])))
                } else if body[1] == 1 {
                    packets.append(MediaPacket(kind: .video, dts: time, pts: time + cts, isKeyframe: body[0] >> 4 == 1,
                                               data: Array(body[5...])))
                }
            } else if type == 8, body.count > 2, body[0] >> 4 == 10 {
                if body[1] == 0 {
                    description.audio = .init(config: try AudioSpecificConfig(bytes: Array(body[2...])))
                } else {
                    packets.append(MediaPacket(kind: .audio, dts: time, pts: time, isKeyframe: true, data: Array(body[2...])))
                }
            }
        }
    }

    func packets(_ kind: MediaKind) -> [MediaPacket] { packets.filter { $0.kind == kind } }
}

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("fixtures")

extension TSMuxer {
    /// A segment's bytes as an array, to compare and probe.
    func takeSegmentBytes() throws -> [UInt8] { Array(try takeSegment().readableBytesView) }
    func finishBytes() throws -> [UInt8] { Array(try finish().readableBytesView) }
}

/// The PIDs of the TS packets in `bytes`, in order.
func packetIdentifiers(_ bytes: [UInt8]) -> [Int] {
    stride(from: 0, to: bytes.count, by: 188).map { Int(bytes[$0 + 1] & 0x1F) << 8 | Int(bytes[$0 + 2]) }
}

// MARK: - Running ffmpeg and ffprobe

/// A command-line tool's exit status and output.
private struct ToolRun {
    var status: Int32
    var stdout: String
    var stderr: String

    /// Runs `tool` (found on PATH) with output going to files, so large output cannot fill a pipe.
    static func run(_ tool: String, _ arguments: [String]) throws -> ToolRun {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-tool-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let outURL = directory.appendingPathComponent("stdout")
        let errURL = directory.appendingPathComponent("stderr")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let out = try FileHandle(forWritingTo: outURL)
        let err = try FileHandle(forWritingTo: errURL)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [tool] + arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        try process.run()
        process.waitUntilExit()
        try out.close()
        try err.close()
        return ToolRun(status: process.terminationStatus,
                       stdout: String(decoding: try Data(contentsOf: outURL), as: UTF8.self),
                       stderr: String(decoding: try Data(contentsOf: errURL), as: UTF8.self))
    }
}

/// What `ffprobe -show_streams -show_packets` reports for one file.
private struct Probe: Decodable {
    struct Stream: Decodable {
        var index: Int
        var id: String?
        var codec_type: String
        var codec_name: String
    }

    struct Packet: Decodable {
        var stream_index: Int
        var pts: Int64?
        var dts: Int64?
        var flags: String
    }

    var streams: [Stream]
    var packets: [Packet]

    private struct Output: Decodable {
        var streams: [Stream]?
        var packets: [Packet]?
    }

    static func run(_ path: String) throws -> Probe {
        let result = try ToolRun.run("ffprobe", ["-v", "error", "-show_packets", "-show_streams", "-of", "json", path])
        #expect(result.status == 0, "ffprobe failed on \(path): \(result.stderr)")
        #expect(result.stderr.isEmpty, "ffprobe complained about \(path): \(result.stderr)")
        let output = try JSONDecoder().decode(Output.self, from: Data(result.stdout.utf8))
        return Probe(streams: output.streams ?? [], packets: output.packets ?? [])
    }

    func streams(_ type: String) -> [Stream] { streams.filter { $0.codec_type == type } }

    func packets(_ type: String) -> [Packet] {
        let indices = Set(streams(type).map(\.index))
        return packets.filter { indices.contains($0.stream_index) }
    }

    /// The TS PID of the first stream of `type` (ffprobe gives it as "0x100").
    func pid(_ type: String) -> Int? {
        streams(type).first?.id.flatMap { Int($0.dropFirst(2), radix: 16) }
    }
}

/// The first payload bytes of the first PES packet on `pid` in a segment (after the PES header).
private func firstPESPayload(_ segment: [UInt8], pid: Int) -> [UInt8]? {
    for start in stride(from: 0, to: segment.count, by: 188) {
        let packet = Array(segment[start..<start + 188])
        guard Int(packet[1] & 0x1F) << 8 | Int(packet[2]) == pid, packet[1] & 0x40 != 0 else { continue }
        var offset = 4
        if packet[3] & 0x20 != 0 { offset += 1 + Int(packet[4]) }
        guard offset + 9 <= 188, packet[offset..<offset + 3] == [0, 0, 1] else { return nil }
        offset += 9 + Int(packet[offset + 8])
        return Array(packet[offset...])
    }
    return nil
}

// MARK: - Segmenting like the HLS packager

/// Muxes `packets` and cuts a segment at the first keyframe (or audio frame, without video)
/// at least `duration` ms after the segment's start, as the HLS segmenter does.
private func segment(_ file: FLVFile, every duration: Int64 = 2000) throws -> [[UInt8]] {
    let muxer = try TSMuxer(description: file.description)
    let hasVideo = file.description.video != nil
    var segments: [[UInt8]] = []
    var segmentStart: Int64?
    for packet in file.packets {
        let isBoundary = hasVideo ? packet.kind == .video && packet.isKeyframe : packet.kind == .audio
        if isBoundary {
            if let start = segmentStart, packet.pts - start >= duration {
                segments.append(try muxer.takeSegmentBytes())
                segmentStart = packet.pts
            }
            if segmentStart == nil { segmentStart = packet.pts }
        }
        try muxer.write(packet)
    }
    segments.append(try muxer.finishBytes())
    return segments
}

/// Writes each segment to a temporary directory, checks it decodes cleanly on its own and probes it.
private func probeSegments(_ segments: [[UInt8]]) throws -> [Probe] {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-ts-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try segments.enumerated().map { index, bytes in
        let path = directory.appendingPathComponent("\(index).ts").path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let decode = try ToolRun.run("ffmpeg", ["-hide_banner", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"])
        #expect(decode.status == 0, "segment \(index) does not decode: \(decode.stderr)")
        #expect(decode.stderr.isEmpty, "segment \(index) decodes with errors: \(decode.stderr)")
        return try Probe.run(path)
    }
}

/// Checks the TS framing every segment must have: whole packets, sync bytes, PAT then PMT first.
private func expectWellFormed(_ segments: [[UInt8]]) {
    for (index, segment) in segments.enumerated() {
        #expect(!segment.isEmpty, "segment \(index) is empty")
        #expect(segment.count.isMultiple(of: 188), "segment \(index): \(segment.count) bytes")
        guard segment.count.isMultiple(of: 188) else { continue }
        #expect(stride(from: 0, to: segment.count, by: 188).allSatisfy { segment[$0] == 0x47 }, "sync bytes in \(index)")
        #expect(Array(packetIdentifiers(segment).prefix(2)) == [0, 0x1000], "segment \(index) starts with PAT, PMT")
    }
}

// MARK: - Tests

@Suite("TS muxer")
struct TSMuxerTests {
    /// 90 kHz ticks per millisecond.
    static let tick: Int64 = 90

    @Test("audio and video: 2 s segments decode on their own, keep every packet and its time, and continue")
    func audioAndVideo() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        let segments = try segment(file)
        #expect(segments.count == 3)
        expectWellFormed(segments)
        let probes = try probeSegments(segments)

        for (index, probe) in probes.enumerated() {
            #expect(probe.streams("video").map(\.codec_name) == ["h264"], "segment \(index)")
            #expect(probe.streams("audio").map(\.codec_name) == ["aac"], "segment \(index)")
            #expect(probe.packets("video").first?.flags.hasPrefix("K") == true, "segment \(index) starts on a keyframe")
            // Annex B with an access unit delimiter first, and ADTS: what the TS carries, not AVCC/raw AAC.
            let video = firstPESPayload(segments[index], pid: try #require(probe.pid("video")))
            #expect(video?.prefix(6) == [0, 0, 0, 1, 0x09, 0xF0], "segment \(index) video starts with start code + AUD")
            let audio = firstPESPayload(segments[index], pid: try #require(probe.pid("audio")))
            #expect(audio.map { $0[0] == 0xFF && $0[1] & 0xF6 == 0xF0 } == true, "segment \(index) audio is ADTS")
        }

        // Every packet comes out once, at its own time (ms × 90, no muxer offset).
        let videoOut = probes.flatMap { $0.packets("video") }
        let audioOut = probes.flatMap { $0.packets("audio") }
        #expect(videoOut.count == file.packets(.video).count)
        #expect(audioOut.count == file.packets(.audio).count)
        #expect(videoOut.compactMap(\.pts) == file.packets(.video).map { $0.pts * Self.tick })
        #expect(videoOut.compactMap(\.dts) == file.packets(.video).map { $0.dts * Self.tick })
        #expect(audioOut.compactMap(\.pts) == file.packets(.audio).map { $0.pts * Self.tick })

        // Presentation continues across cuts: next segment's first frame = this one's last + one frame.
        let frame = Double(90_000) / 30
        for (previous, next) in zip(probes, probes.dropFirst()) {
            let last = try #require(previous.packets("video").compactMap(\.pts).max())
            let first = try #require(next.packets("video").compactMap(\.pts).min())
            #expect(abs(Double(first - last) - frame) <= Double(Self.tick), "gap \(first - last) ticks")
        }
    }

    @Test("audio only: segments cut at audio frames carry one AAC stream and every frame")
    func audioOnly() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("audio-only.flv").path)
        #expect(file.description.video == nil)
        let segments = try segment(file)
        #expect(segments.count == 3)
        expectWellFormed(segments)
        let probes = try probeSegments(segments)
        for (index, probe) in probes.enumerated() {
            #expect(probe.streams.map(\.codec_name) == ["aac"], "segment \(index)")
        }
        let audioOut = probes.flatMap { $0.packets("audio") }
        #expect(audioOut.compactMap(\.pts) == file.packets(.audio).map { $0.pts * Self.tick })
    }

    @Test("video only: segments carry one H.264 stream, start on keyframes and keep every frame")
    func videoOnly() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("video-only.flv").path)
        #expect(file.description.audio == nil)
        let segments = try segment(file)
        #expect(segments.count == 2)
        expectWellFormed(segments)
        let probes = try probeSegments(segments)
        for (index, probe) in probes.enumerated() {
            #expect(probe.streams.map(\.codec_name) == ["h264"], "segment \(index)")
            #expect(probe.packets.first?.flags.hasPrefix("K") == true, "segment \(index)")
        }
        let videoOut = probes.flatMap { $0.packets("video") }
        #expect(videoOut.compactMap(\.pts) == file.packets(.video).map { $0.pts * Self.tick })
    }

    @Test("a segment taken before any packet is empty; the next one still starts with PAT and PMT")
    func emptySegment() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        let muxer = try TSMuxer(description: file.description)
        #expect(try muxer.takeSegmentBytes().isEmpty)
        for packet in file.packets.prefix(20) { try muxer.write(packet) }
        let segment = try muxer.takeSegmentBytes()
        #expect(Array(packetIdentifiers(segment).prefix(3)) == [0, 0x1000, 0x11])
        #expect(try muxer.finishBytes().isEmpty)
    }

    @Test("equal DTS on a track is accepted (moved one tick on); a decreasing one is refused")
    func equalAndDecreasingTimestamps() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        let muxer = try TSMuxer(description: file.description)
        let audio = file.packets(.audio)
        try muxer.write(audio[0])
        var same = audio[1]
        same.dts = audio[0].dts
        same.pts = audio[0].pts
        try muxer.write(same)
        try muxer.write(same)
        var early = audio[2]
        early.dts = audio[0].dts - 10
        early.pts = early.dts
        let error = #expect(throws: LibAVError.self) { try muxer.write(early) }
        #expect(error?.description.contains("Invalid argument") == true, "\(String(describing: error))")
        #expect(try !muxer.finishBytes().isEmpty)
    }

    /// Composition times per frame, cycled: as B-frame streams stamped with negative offsets come.
    @Test("a negative composition time keeps the frame's PTS; the DTS goes down to it, still increasing", arguments: [
        (name: "every frame 80 ms early", pattern: [-80] as [Int64]),
        (name: "I P B B shifted one frame early", pattern: [0, 80, -40, -40]),
    ])
    func negativeCompositionTime(name: String, pattern: [Int64]) throws {
        let file = try FLVFile(fixtures.appendingPathComponent("video-only.flv").path)
        let input = file.packets(.video).enumerated().map { index, packet in
            var packet = packet
            packet.dts = 1000 + Int64(index) * 40
            packet.pts = packet.dts + pattern[index % pattern.count]
            return packet
        }
        let muxer = try TSMuxer(description: file.description)
        for packet in input { try muxer.write(packet) }
        // Probed, not decoded: the reordered times are on baseline pictures that a decoder emits in
        // decode order, which ffmpeg's null output then calls non-monotonic.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-cts-\(UUID().uuidString).ts").path
        try Data(try muxer.finishBytes()).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let output = try Probe.run(path).packets("video")
        #expect(output.count == input.count)
        for (sent, written) in zip(input, output) {
            let pts = try #require(written.pts), dts = try #require(written.dts)
            // Where two frames would share a decode time, the later moves on by a tick.
            #expect(pts - sent.pts * Self.tick <= 1 && pts >= sent.pts * Self.tick, "\(name): pts \(pts) for \(sent.pts) ms")
            #expect(dts <= pts && dts <= sent.dts * Self.tick, "\(name): dts \(dts) pts \(pts)")
        }
        let decodeTimes = output.compactMap(\.dts)
        #expect(zip(decodeTimes, decodeTimes.dropFirst()).allSatisfy { $0 < $1 }, "\(name): \(decodeTimes)")
    }

    @Test("a description without tracks or with unusable extradata is refused at init")
    func badDescriptions() throws {
        #expect(throws: LibAVError.self) { try TSMuxer(description: StreamDescription()) }

        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        var truncatedAVCC = file.description
        // Cut inside the SPS: the stored record no longer matches its own length fields.
        let avcC = try #require(file.description.video?.avcC)
        truncatedAVCC.video?.avcC.bytes = Array(avcC.bytes.prefix(10))
        let avcError = #expect(throws: LibAVError.self) { try TSMuxer(description: truncatedAVCC) }
        #expect(avcError?.description.contains("Invalid data found when processing input") == true)

        // AAC-LD (object type 23) parses as an AudioSpecificConfig but ADTS cannot carry it.
        var lowDelay = file.description
        lowDelay.audio = .init(config: try AudioSpecificConfig(bytes: [0xB9, 0x90]))
        let ascError = #expect(throws: LibAVError.self) { try TSMuxer(description: lowDelay) }
        #expect(ascError?.operation == "writing the TS header")
    }

    @Test("empty and malformed packets and use after finish are errors, not crashes; the muxer carries on")
    func badPackets() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        let muxer = try TSMuxer(description: file.description)
        let video = file.packets(.video)
        #expect(throws: LibAVError.self) {
            try muxer.write(MediaPacket(kind: .video, dts: 0, pts: 0, isKeyframe: true, data: []))
        }
        #expect(throws: LibAVError.self) {
            try muxer.write(MediaPacket(kind: .audio, dts: 0, pts: 0, isKeyframe: true, data: []))
        }
        // A NAL length running past the end of the payload.
        var overrun = video[0]
        overrun.data = [0, 0, 0, 9, 0x65, 0x88, 0x84]
        #expect(throws: LibAVError.self) { try muxer.write(overrun) }
        // One byte of AAC is too short for libav.
        #expect(throws: LibAVError.self) {
            try muxer.write(MediaPacket(kind: .audio, dts: 0, pts: 0, isKeyframe: true, data: [0x21]))
        }
        for packet in file.packets.prefix(30) { try muxer.write(packet) }
        let segment = try muxer.takeSegmentBytes()
        #expect(segment.count.isMultiple(of: 188) && !segment.isEmpty)
        for packet in file.packets[30..<60] { try muxer.write(packet) }
        #expect(try !muxer.finishBytes().isEmpty)
        #expect(throws: LibAVError.self) { try muxer.write(video[30]) }
        #expect(throws: LibAVError.self) { try muxer.takeSegmentBytes() }
        #expect(throws: LibAVError.self) { try muxer.finishBytes() }
    }

    @Test("packets for a track the description lacks are ignored")
    func missingTrack() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        let muxer = try TSMuxer(description: StreamDescription(video: file.description.video))
        for packet in file.packets.prefix(40) { try muxer.write(packet) }
        let bytes = try muxer.finishBytes()
        #expect(Set(packetIdentifiers(bytes)) == [0, 0x11, 0x1000, 0x100])
    }

    @Test("only a leading SDT, PAT, PMT run is reordered")
    func programTablesFirst() {
        /// A TS packet on `pid`; a PAT (PID 0) lists program 1 on PID 0x1000.
        func packet(_ pid: Int) -> [UInt8] {
            var bytes = [UInt8](repeating: 0xFF, count: 188)
            bytes[0...3] = [0x47, 0x40 | UInt8(pid >> 8), UInt8(pid & 0xFF), 0x10]
            if pid == 0 { bytes[4...16] = [0, 0, 0xB0, 13, 0, 1, 0xC1, 0, 0, 0, 1, 0xF0, 0] }
            return bytes
        }
        func reordered(_ bytes: [UInt8]) -> [UInt8] {
            var bytes = bytes
            bytes.withUnsafeMutableBytes { TSMuxer.moveProgramTablesFirst($0) }
            return bytes
        }
        let libav = packet(0x11) + packet(0) + packet(0x1000) + packet(0x100)
        #expect(packetIdentifiers(reordered(libav)) == [0, 0x1000, 0x11, 0x100])
        for unchanged in [packet(0) + packet(0x1000) + packet(0x11), packet(0x11) + packet(0) + packet(0x1001),
                          packet(0x11) + packet(0x100) + packet(0) + packet(0x1000), Array(libav.dropLast())] {
            #expect(reordered(unchanged) == unchanged)
        }
    }

    @Test("AVCC framing check")
    func avccFraming() {
        #expect(TSMuxer.isWellFormedAVCC([0, 0, 0, 2, 0x65, 0x88], lengthSize: 4))
        #expect(TSMuxer.isWellFormedAVCC([0, 0, 0, 0, 0, 0, 0, 1, 0x09], lengthSize: 4))
        #expect(TSMuxer.isWellFormedAVCC([0, 1, 0x09, 0, 1, 0x65], lengthSize: 2))
        #expect(!TSMuxer.isWellFormedAVCC([0, 0, 0, 3, 0x65, 0x88], lengthSize: 4))
        #expect(!TSMuxer.isWellFormedAVCC([0, 0, 0, 1, 0x65, 0], lengthSize: 4))
        #expect(!TSMuxer.isWellFormedAVCC([0, 0, 0, 0], lengthSize: 4))
        #expect(!TSMuxer.isWellFormedAVCC([], lengthSize: 4))
    }
}
