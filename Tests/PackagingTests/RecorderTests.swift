import Foundation
import MediaCore
import Testing

@testable import Packaging

// MARK: - Tools

/// Runs `tool` (found on PATH), output going to files so large output cannot fill a pipe.
func runTool(_ tool: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-tool-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let outURL = directory.appendingPathComponent("stdout")
    let errURL = directory.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
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
    return (process.terminationStatus, String(decoding: try Data(contentsOf: outURL), as: UTF8.self),
            String(decoding: try Data(contentsOf: errURL), as: UTF8.self))
}

/// What `ffprobe -show_streams -show_format` reports for a recording.
struct RecordingProbe: Decodable {
    struct Stream: Decodable {
        var codec_type: String
        var codec_name: String
        var width: Int?
        var height: Int?
        var start_time: String?
        var nb_frames: String?
    }

    struct Format: Decodable {
        var format_name: String
        var duration: String?
        var start_time: String?
    }

    var streams: [Stream]
    var format: Format

    var duration: Double { format.duration.flatMap(Double.init) ?? -1 }

    func stream(_ type: String) -> Stream? { streams.first { $0.codec_type == type } }

    /// Probes `path`, expecting ffprobe to succeed without complaint.
    static func run(_ path: String) throws -> RecordingProbe {
        let result = try runTool("ffprobe", ["-v", "error", "-show_streams", "-show_format", "-of", "json", path])
        #expect(result.status == 0, "ffprobe failed on \(path): \(result.stderr)")
        #expect(result.stderr.isEmpty, "ffprobe complained about \(path): \(result.stderr)")
        return try JSONDecoder().decode(RecordingProbe.self, from: Data(result.stdout.utf8))
    }
}

/// Expects `path` to decode from start to end without a single error message.
func expectDecodesCleanly(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let decode = try runTool("ffmpeg", ["-hide_banner", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"])
    #expect(decode.status == 0, "\(path) does not decode: \(decode.stderr)", sourceLocation: sourceLocation)
    #expect(decode.stderr.isEmpty, "\(path) decodes with errors: \(decode.stderr)", sourceLocation: sourceLocation)
}

/// The types of an ISO BMFF file's top-level boxes, in order.
func topLevelBoxes(_ path: String) throws -> [String] {
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    var boxes: [String] = []
    var offset = 0
    while offset + 8 <= bytes.count {
        var size = bytes[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
        boxes.append(String(decoding: bytes[offset + 4..<offset + 8], as: UTF8.self))
        if size == 1, offset + 16 <= bytes.count {
            size = bytes[offset + 8..<offset + 16].reduce(0) { $0 << 8 | Int($1) }
        } else if size == 0 {
            size = bytes.count - offset  // to the end of the file (an unfinished mdat)
        }
        guard size >= 8 else { break }
        offset += size
    }
    return boxes
}

/// A fresh temporary directory, removed by `body`'s end.
func withTemporaryDirectory<T>(_ body: (URL) throws -> T) throws -> T {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-rec-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try body(directory)
}

func fileSize(_ path: String) throws -> Int64 {
    (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value ?? -1
}

// MARK: - Tests

@Suite("Recorders")
struct RecorderTests {
    static let fixtureNames = ["av-640x360.flv", "audio-only.flv", "video-only.flv"]

    /// Checks a finished recording of the whole of `fixture` against ffprobe's view of the fixture.
    private func expectComplete(_ path: String, of fixture: String, file: FLVFile) throws {
        let input = try RecordingProbe.run(fixtures.appendingPathComponent(fixture).path)
        let output = try RecordingProbe.run(path)
        #expect(output.streams.map(\.codec_type).sorted() == input.streams.map(\.codec_type).sorted(), "\(fixture)")
        #expect(output.stream("video")?.codec_name == (file.description.video == nil ? nil : "h264"))
        #expect(output.stream("audio")?.codec_name == (file.description.audio == nil ? nil : "aac"))
        #expect(output.stream("video")?.width == input.stream("video")?.width)
        #expect(output.stream("video")?.height == input.stream("video")?.height)
        #expect(abs(output.duration - input.duration) <= 0.1, "\(fixture): \(output.duration) s, input \(input.duration) s")
        try expectDecodesCleanly(path)
    }

    @Test("MP4: every packet recorded, moov before mdat, codecs, sizes and duration as the input", arguments: fixtureNames)
    func mp4(fixture: String) throws {
        let file = try FLVFile(fixtures.appendingPathComponent(fixture).path)
        try withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("recording.mp4").path
            let recorder = try MP4Recorder(path: path, description: file.description)
            let headerSize = recorder.bytesWritten
            #expect(headerSize > 0)
            for packet in file.packets { try recorder.write(packet) }
            #expect(recorder.bytesWritten > headerSize + Int64(file.packets.count / 2 * 100))
            let last = file.packets.map(\.dts).max() ?? 0
            #expect(recorder.duration > last && recorder.duration <= last + 50, "\(recorder.duration) ms, last dts \(last)")
            try recorder.finish()
            try recorder.finish()  // idempotent
            #expect(recorder.bytesWritten == (try fileSize(path)))

            let boxes = try topLevelBoxes(path)
            let moov = try #require(boxes.firstIndex(of: "moov"), "\(boxes)")
            let mdat = try #require(boxes.firstIndex(of: "mdat"), "\(boxes)")
            #expect(boxes.first == "ftyp" && moov < mdat, "faststart: \(boxes)")

            try expectComplete(path, of: fixture, file: file)
            let output = try RecordingProbe.run(path)
            // Every sample is in the index.
            #expect(output.stream("video")?.nb_frames.flatMap(Int.init) == (file.description.video == nil ? nil : file.packets(.video).count))
            #expect(output.stream("audio")?.nb_frames.flatMap(Int.init) == (file.description.audio == nil ? nil : file.packets(.audio).count))
            #expect(throws: RecordingError.finished(path: path)) { try recorder.write(file.packets[0]) }
        }
    }

    @Test("FLV: header flags, metadata and sequence headers first, every packet back byte for byte", arguments: fixtureNames)
    func flv(fixture: String) throws {
        let file = try FLVFile(fixtures.appendingPathComponent(fixture).path)
        try withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("recording.flv").path
            let recorder = try FLVRecorder(path: path, description: file.description)
            for packet in file.packets { try recorder.write(packet) }
            let last = file.packets.map(\.dts).max() ?? 0
            #expect(recorder.duration > last && recorder.duration <= last + 50, "\(recorder.duration) ms, last dts \(last)")
            try recorder.finish()
            try recorder.finish()  // idempotent
            #expect(recorder.bytesWritten == (try fileSize(path)))

            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            let flags: UInt8 = (file.description.audio == nil ? 0 : 4) | (file.description.video == nil ? 0 : 1)
            #expect(Array(bytes.prefix(13)) == [0x46, 0x4C, 0x56, 1, flags, 0, 0, 0, 9, 0, 0, 0, 0])
            // onMetaData, then the sequence headers, all at time 0.
            var offset = 13
            var leading: [(type: UInt8, time: Int, first: [UInt8])] = []
            while offset + 11 <= bytes.count, leading.count < 4 {
                let size = Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
                let time = Int(bytes[offset + 4]) << 16 | Int(bytes[offset + 5]) << 8 | Int(bytes[offset + 6])
                leading.append((bytes[offset], time, Array(bytes[(offset + 11)..<(offset + 11 + min(size, 2))])))
                let previousTagSize = bytes[(offset + 11 + size)..<(offset + 15 + size)].reduce(0) { $0 << 8 | Int($1) }
                #expect(previousTagSize == 11 + size)
                offset += 11 + size + 4
            }
            #expect(leading[0].type == 18 && leading[0].first == [0x02, 0x00], "onMetaData first")
            var expected: [(UInt8, [UInt8])] = []
            if file.description.video != nil { expected.append((9, [0x17, 0x00])) }
            if file.description.audio != nil { expected.append((8, [0xAF, 0x00])) }
            for (index, (type, first)) in expected.enumerated() {
                #expect(leading[index + 1].type == type && leading[index + 1].first == first && leading[index + 1].time == 0)
            }

            // The fixture starts at 0, so rebasing changes nothing: the same description and packets come back.
            let reread = try FLVFile(path)
            #expect(reread.description == file.description)
            #expect(reread.packets == file.packets)

            try expectComplete(path, of: fixture, file: file)
            #expect(throws: RecordingError.self) { try recorder.write(file.packets[0]) }
        }
    }

    @Test("FLV: onMetaData gets the size, codecs and, at finish, the duration and file size")
    func flvMetadata() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        try withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("recording.flv").path
            let publisher = StreamMetadata(properties: [.init("encoder", .string("obs-output module")),
                                                        .init("width", .number(1)), .init("fps", .number(30))])
            let recorder = try FLVRecorder(path: path, description: file.description, metadata: publisher)
            for packet in file.packets { try recorder.write(packet) }
            try recorder.finish()
            // ffmpeg's FLV demuxer keeps the standard keys to itself, so read onMetaData here.
            let tags = try onMetaData(path)
            #expect(tags["width"] == .number(640) && tags["height"] == .number(360), "\(tags)")
            #expect(tags["videocodecid"] == .number(7) && tags["audiocodecid"] == .number(10))
            #expect(tags["audiosamplerate"] == .number(48000) && tags["stereo"] == .boolean(true))
            #expect(tags["fps"] == .number(30) && tags["encoder"] == .string("Estuary"))
            #expect(tags["filesize"] == .number(Double(recorder.bytesWritten)), "\(tags)")
            #expect(tags["duration"] == .number(Double(recorder.duration) / 1000), "\(tags)")
            let probe = try RecordingProbe.run(path)
            #expect(abs(probe.duration - Double(recorder.duration) / 1000) < 0.05, "\(probe.format)")
        }
    }

    @Test("FLV: publisher metadata too big for a tag is left out, the recording's own is kept")
    func flvHugeMetadata() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        try withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("recording.flv").path
            let huge = String(repeating: "x", count: 9 << 20)
            let publisher = StreamMetadata(properties: [.init("a", .string(huge)), .init("b", .string(huge))])
            let recorder = try FLVRecorder(path: path, description: file.description, metadata: publisher)
            for packet in file.packets.prefix(100) { try recorder.write(packet) }
            try recorder.finish()
            let tags = try onMetaData(path)
            #expect(tags["a"] == nil && tags["width"] == .number(640))
            #expect(try FLVFile(path).packets == Array(file.packets.prefix(100)))
        }
    }

    @Test("MP4: dropped without finish leaves an unplayable file; finished after half the packets plays half")
    func mp4PublisherDrops() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        let half = Array(file.packets.prefix(file.packets.count / 2))
        try withTemporaryDirectory { directory in
            let dropped = directory.appendingPathComponent("dropped.mp4").path
            do {
                let recorder = try MP4Recorder(path: dropped, description: file.description)
                for packet in half { try recorder.write(packet) }
            }
            // No moov: the media is in the file, the index that makes it playable is not.
            #expect(try fileSize(dropped) > 50_000)
            let boxes = try topLevelBoxes(dropped)
            #expect(boxes.contains("mdat") && !boxes.contains("moov"), "\(boxes)")
            let probe = try runTool("ffprobe", ["-v", "error", "-show_format", dropped])
            #expect(probe.status != 0 && probe.stderr.contains("moov atom not found"), "\(probe.stderr)")

            let closed = directory.appendingPathComponent("closed.mp4").path
            let recorder = try MP4Recorder(path: closed, description: file.description)
            for packet in half { try recorder.write(packet) }
            try recorder.finish()
            let output = try RecordingProbe.run(closed)
            let expected = Double(recorder.duration) / 1000
            #expect(expected > 2.5 && expected < 3.5)
            #expect(abs(output.duration - expected) <= 0.1, "\(output.duration) s for \(expected) s written")
            #expect(output.stream("video") != nil && output.stream("audio") != nil)
            try expectDecodesCleanly(closed)
        }
    }

    @Test("FLV: dropped without finish mid-stream, what was written still plays and reads back")
    func flvPublisherDrops() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        let half = Array(file.packets.prefix(file.packets.count / 2))
        try withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("dropped.flv").path
            do {
                let recorder = try FLVRecorder(path: path, description: file.description)
                for packet in half { try recorder.write(packet) }
            }
            #expect(try FLVFile(path).packets == half)
            try expectDecodesCleanly(path)
            let probe = try runTool("ffprobe", ["-v", "error", "-show_streams", "-of", "json", path])
            #expect(probe.status == 0 && probe.stdout.contains("\"h264\"") && probe.stdout.contains("\"aac\""))
        }
    }

    @Test("an unwritable path is an error naming the path and the reason, for both recorders")
    func unwritablePath() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        try withTemporaryDirectory { directory in
            // Both hold for root too, unlike a read-only directory.
            let missing = directory.appendingPathComponent("no-such-directory/recording").path
            let regular = directory.appendingPathComponent("a-file").path
            _ = FileManager.default.createFile(atPath: regular, contents: Data([1]))
            for (path, reason) in [(missing, "No such file or directory"), (regular + "/recording", "Not a directory")] {
                let mp4Error = #expect(throws: RecordingError.self) {
                    try MP4Recorder(path: path + ".mp4", description: file.description)
                }
                #expect(mp4Error?.description.contains("opening \(path).mp4 for writing failed: \(reason)") == true,
                        "\(String(describing: mp4Error))")
                let flvError = #expect(throws: RecordingError.self) {
                    try FLVRecorder(path: path + ".flv", description: file.description)
                }
                #expect(flvError == .cannotOpen(path: path + ".flv", errno: reason == "Not a directory" ? ENOTDIR : ENOENT))
                #expect(flvError?.description == "cannot open \(path).flv for writing: \(reason)")
            }
        }
    }

    @Test("a stream that starts late is rebased to 0 in both formats")
    func rebased() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        let hour: Int64 = 3_600_000
        let late = file.packets.map { packet in
            var packet = packet
            packet.dts += hour
            packet.pts += hour
            return packet
        }
        try withTemporaryDirectory { directory in
            let mp4 = directory.appendingPathComponent("late.mp4").path
            let mp4Recorder = try MP4Recorder(path: mp4, description: file.description)
            for packet in late { try mp4Recorder.write(packet) }
            try mp4Recorder.finish()
            try expectComplete(mp4, of: "av-640x360.flv", file: file)
            let probe = try RecordingProbe.run(mp4)
            #expect((probe.format.start_time.flatMap(Double.init) ?? -1) < 0.1, "\(probe.format)")

            let flv = directory.appendingPathComponent("late.flv").path
            let flvRecorder = try FLVRecorder(path: flv, description: file.description)
            for packet in late { try flvRecorder.write(packet) }
            try flvRecorder.finish()
            #expect(try FLVFile(flv).packets == file.packets)
            #expect(flvRecorder.duration == mp4Recorder.duration)
        }
    }

    @Test("MP4: B-frames at the start keep their composition offset (edit list), A/V stays in sync")
    func mp4CompositionOffsetAtStart() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        try withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("recording.mp4").path
            let recorder = try MP4Recorder(path: path, description: file.description)
            for packet in file.packets { try recorder.write(packet) }
            try recorder.finish()
            let output = try RecordingProbe.run(path)
            let input = try RecordingProbe.run(fixtures.appendingPathComponent("av-640x360.flv").path)
            // The input: first picture at 67 ms, first audio at 46 ms; the recording keeps both.
            for type in ["video", "audio"] {
                let start = try #require(output.stream(type)?.start_time.flatMap(Double.init))
                let inputStart = try #require(input.stream(type)?.start_time.flatMap(Double.init))
                #expect(abs(start - inputStart) <= 0.002, "\(type) starts at \(start) s, input \(inputStart) s")
            }
        }
    }

    @Test("a negative composition time is recorded: FLV keeps it as sent, MP4 lowers the DTS to the PTS; both decode")
    func negativeCompositionTime() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("video-only.flv").path)
        let packets = file.packets(.video).map { packet in
            var packet = packet
            packet.dts += 1000
            packet.pts = packet.dts - 80
            return packet
        }
        try withTemporaryDirectory { directory in
            let mp4Path = directory.appendingPathComponent("early.mp4").path
            let flvPath = directory.appendingPathComponent("early.flv").path
            let mp4 = try MP4Recorder(path: mp4Path, description: file.description)
            let flv = try FLVRecorder(path: flvPath, description: file.description)
            for packet in packets {
                try mp4.write(packet)
                try flv.write(packet)
            }
            try mp4.finish()
            try flv.finish()
            try expectDecodesCleanly(mp4Path)
            try expectDecodesCleanly(flvPath)
            #expect(try FLVFile(flvPath).packets(.video).map(\.compositionTime) == packets.map { _ in -80 })
        }
    }

    @Test("bad descriptions and packets are errors, not crashes; the recording carries on")
    func badInput() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        try withTemporaryDirectory { directory in
            #expect(throws: RecordingError.noTracks(path: directory.appendingPathComponent("none.mp4").path)) {
                try MP4Recorder(path: directory.appendingPathComponent("none.mp4").path, description: StreamDescription())
            }
            #expect(throws: RecordingError.noTracks(path: directory.appendingPathComponent("none.flv").path)) {
                try FLVRecorder(path: directory.appendingPathComponent("none.flv").path, description: StreamDescription())
            }

            let mp4 = try MP4Recorder(path: directory.appendingPathComponent("bad.mp4").path, description: file.description)
            let flv = try FLVRecorder(path: directory.appendingPathComponent("bad.flv").path, description: file.description)
            let video = file.packets(.video)
            var empty = video[0]
            empty.data = []
            var overrun = video[0]
            overrun.data = [0, 0, 0, 9, 0x65, 0x88]
            for bad in [empty, overrun] {
                let errors = [#expect(throws: RecordingError.self) { try mp4.write(bad) },
                              #expect(throws: RecordingError.self) { try flv.write(bad) }]
                #expect(errors.allSatisfy { $0?.isFatal == false }, "\(errors)")
            }
            for packet in file.packets.prefix(60) {
                try mp4.write(packet)
                try flv.write(packet)
            }
            // An equal DTS is fine (MP4 moves it one tick on); a decreasing one is not.
            let same = try #require(file.packets.prefix(60).last { $0.kind == .audio })
            try mp4.write(same)
            try flv.write(same)
            var early = same
            early.dts -= 10
            early.pts -= 10
            let error = #expect(throws: RecordingError.self) { try mp4.write(early) }
            #expect(error?.description.contains("after one at") == true, "\(String(describing: error))")
            #expect(throws: RecordingError.self) { try flv.write(early) }
            try mp4.finish()
            try flv.finish()
            try expectDecodesCleanly(directory.appendingPathComponent("bad.mp4").path)
            // The FLV keeps the repeated audio frame at its time, which ffmpeg reports, but it plays.
            let decode = try runTool("ffmpeg", ["-hide_banner", "-nostdin", "-v", "error", "-i",
                                                directory.appendingPathComponent("bad.flv").path, "-f", "null", "-"])
            #expect(decode.status == 0, "\(decode.stderr)")
        }
    }

    @Test("odd codec setups: MP4 refuses what it cannot index, FLV records it; an oversized packet is refused")
    func oddDescriptions() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        // A well-formed avcC whose SPS is a NAL header and a byte of nothing: no picture size.
        let avcC = try AVCDecoderConfigurationRecord(bytes: [1, 0x64, 0, 0x1F, 0xFF, 0xE1, 0, 2, 0x67, 0xFF, 1, 0, 1, 0x68])
        // AAC-LC with an explicit (escape-coded) sampling frequency of 0 Hz, stereo.
        let config = try AudioSpecificConfig(bytes: [0x17, 0x80, 0x00, 0x00, 0x10])
        #expect(config.samplingFrequency == 0)
        try withTemporaryDirectory { directory in
            let noSize = StreamDescription(video: .init(avcC: avcC))
            let noRate = StreamDescription(audio: .init(config: config))
            for (description, reason) in [(noSize, "the picture size cannot be read"), (noRate, "an AAC sampling frequency of 0")] {
                let error = #expect(throws: RecordingError.self) {
                    try MP4Recorder(path: directory.appendingPathComponent("odd.mp4").path, description: description)
                }
                #expect(error?.description.contains(reason) == true, "\(String(describing: error))")
                #expect(error?.isFatal == true)
                let flv = try FLVRecorder(path: directory.appendingPathComponent("odd.flv").path, description: description)
                try flv.finish()
            }
            let flv = try FLVRecorder(path: directory.appendingPathComponent("big.flv").path, description: file.description)
            var huge = try #require(file.packets.first { $0.kind == .audio })
            huge.data = [UInt8](repeating: 0, count: FLVRecorder.maximumTagBodySize)
            let error = #expect(throws: RecordingError.self) { try flv.write(huge) }
            #expect(error?.isFatal == false && error?.description.contains("too big for an FLV tag") == true)
            try flv.finish()
        }
    }

    @Test("MP4: finishing without any packet neither crashes nor hangs")
    func mp4Empty() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        try withTemporaryDirectory { directory in
            let recorder = try MP4Recorder(path: directory.appendingPathComponent("empty.mp4").path, description: file.description)
            #expect(recorder.duration == 0)
            try recorder.finish()
        }
    }

    @Test("SPS picture size, cropping included", arguments: [
        ("av-640x360.flv", 640, 360), ("av-1280x720.flv", 1280, 720), ("video-only.flv", 320, 240), ("av-long.flv", 426, 240),
    ])
    func sequenceParameterSet(fixture: String, width: Int, height: Int) throws {
        let file = try FLVFile(fixtures.appendingPathComponent(fixture).path)
        let sps = try #require(file.description.video?.avcC.sequenceParameterSets.first)
        let parsed = try #require(H264SequenceParameterSet(sps))
        #expect(parsed.width == width && parsed.height == height)
        #expect(H264SequenceParameterSet(Array(sps.prefix(6))) == nil)
        #expect(H264SequenceParameterSet([0x68] + sps.dropFirst()) == nil)  // a PPS header
    }

    @Test("emulation prevention bytes are removed")
    func emulationPrevention() {
        #expect(H264SequenceParameterSet.removingEmulationPrevention([0, 0, 3, 1, 0, 0, 3, 0, 3][...]) == [0, 0, 1, 0, 0, 0, 3])
    }
}

/// The `onMetaData` ECMA array of an FLV file's first tag (numbers, booleans and strings only).
func onMetaData(_ path: String) throws -> [String: StreamMetadata.Value] {
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    try #require(bytes.count > 24 && bytes[13] == 18, "no script tag first")
    var offset = 24
    func take(_ count: Int) throws -> ArraySlice<UInt8> {
        try #require(offset + count <= bytes.count, "onMetaData runs past the end")
        defer { offset += count }
        return bytes[offset..<offset + count]
    }
    func integer(_ count: Int) throws -> Int { try take(count).reduce(0) { $0 << 8 | Int($1) } }
    func string(long: Bool = false) throws -> String {
        String(decoding: try take(try integer(long ? 4 : 2)), as: UTF8.self)
    }
    try #require(try take(1) == [0x02] && string() == "onMetaData" && take(1) == [0x08])
    let count = try integer(4)
    var values: [String: StreamMetadata.Value] = [:]
    for _ in 0..<count {
        let key = try string()
        switch try take(1).first {
        case 0x00: values[key] = .number(Double(bitPattern: UInt64(truncatingIfNeeded: try integer(8))))
        case 0x01: values[key] = .boolean(try take(1) != [0])
        case 0x02: values[key] = .string(try string())
        case 0x0C: values[key] = .string(try string(long: true))
        case let marker: Issue.record("unexpected AMF0 marker \(String(describing: marker)) for \(key)")
        }
    }
    #expect(try take(3) == [0, 0, 9], "object end")
    return values
}
