import Foundation
import MediaCore
import Testing

@testable import Packaging

/// The packets ffprobe lists for a file: which stream, times, keyframe flag.
private struct ProbedPackets: Decodable {
    struct Packet: Decodable {
        var stream_index: Int
        var dts_time: String?
        var flags: String
    }

    struct Stream: Decodable {
        var index: Int
        var codec_type: String
    }

    var packets: [Packet]
    var streams: [Stream]

    static func run(_ path: String) throws -> ProbedPackets {
        let result = try runTool("ffprobe", ["-v", "error", "-show_entries",
                                             "packet=stream_index,dts_time,flags:stream=index,codec_type", "-of", "json", path])
        #expect(result.status == 0 && result.stderr.isEmpty, "\(path): \(result.stderr)")
        return try JSONDecoder().decode(ProbedPackets.self, from: Data(result.stdout.utf8))
    }

    var video: [Packet] {
        let indices = Set(streams.filter { $0.codec_type == "video" }.map(\.index))
        return packets.filter { indices.contains($0.stream_index) }
    }
}

/// 2024-01-02 03:04:05 UTC.
private let fixedDate = Date(timeIntervalSince1970: 1_704_164_645)

@Suite("Splitting recorder")
struct SplittingRecorderTests {
    private func record(_ fixture: String, format: RecordingFormat, limits: RecordingLimits, in directory: URL,
                        packets: (([MediaPacket]) -> [MediaPacket])? = nil) throws -> [SplittingRecorder.Event] {
        let file = try FLVFile(fixtures.appendingPathComponent(fixture).path)
        let recorder = SplittingRecorder(directory: directory.path, channel: "cam", format: format, limits: limits,
                                         now: { fixedDate })
        recorder.setDescription(file.description)
        for packet in packets?(file.packets) ?? file.packets { try recorder.write(packet) }
        recorder.finish(reason: .publishEnded)
        recorder.finish(reason: .stopped)  // idempotent
        #expect(throws: RecordingError.self) { try recorder.write(file.packets[0]) }
        return recorder.takeEvents()
    }

    private func closed(_ events: [SplittingRecorder.Event]) -> [(file: RecordingFile, reason: RecordingEndReason)] {
        events.compactMap { event in
            guard case .closed(let file, let reason, let failure) = event else { return nil }
            #expect(failure == nil, "\(file.path): \(String(describing: failure))")
            return (file, reason)
        }
    }

    @Test("max duration: files start on keyframes, each plays on its own, names are unique", arguments: RecordingFormat.allCases)
    func splitByDuration(format: RecordingFormat) throws {
        try withTemporaryDirectory { directory in
            let events = try record("av-long.flv", format: format, limits: .init(maxDuration: 3000), in: directory)
            let files = closed(events)
            // 20 s with a keyframe every second: 0–3, 3–6, … 18–20.
            #expect(files.count == 7, "\(files.map(\.file.path))")
            #expect(files.map(\.reason) == Array(repeating: .maxDuration, count: 6) + [.publishEnded])
            let opened = events.compactMap { if case .opened(let file) = $0 { file.path } else { nil } }
            #expect(opened == files.map(\.file.path), "every file opened is closed, in order")
            let ext = format.fileExtension
            let base = directory.path + "/cam-20240102-030405"
            #expect(files.map(\.file.path) == ["\(base).\(ext)"] + (2...7).map { "\(base)-\($0).\(ext)" })
            for (index, (file, _)) in files.enumerated() {
                let probe = try RecordingProbe.run(file.path)
                let expected = index < 6 ? 3.0 : 2.0
                #expect(abs(probe.duration - expected) < 0.1, "\(file.path): \(probe.duration) s")
                #expect(abs(Double(file.duration) / 1000 - expected) < 0.1)
                #expect(file.bytes == (try fileSize(file.path)))
                #expect(try ProbedPackets.run(file.path).video.first?.flags.hasPrefix("K") == true, "\(file.path) starts on a keyframe")
                try expectDecodesCleanly(file.path)
            }
        }
    }

    @Test("max size: a file ends at the first keyframe past the size", arguments: RecordingFormat.allCases)
    func splitBySize(format: RecordingFormat) throws {
        try withTemporaryDirectory { directory in
            let limit: Int64 = 60_000
            let files = closed(try record("av-640x360.flv", format: format, limits: .init(maxBytes: limit), in: directory))
            #expect(files.count >= 3, "\(files.map(\.file.bytes))")
            #expect(files.dropLast().allSatisfy { $0.reason == .maxSize })
            // Past the limit, but by less than one GOP (about 40 kB in this fixture).
            #expect(files.dropLast().allSatisfy { $0.file.bytes >= limit && $0.file.bytes < limit + 60_000 },
                    "\(files.map(\.file.bytes))")
            // Audio a few ms past a keyframe can arrive before it and go in the earlier file.
            let total = files.reduce(0.0) { $0 + Double($1.file.duration) / 1000 }
            #expect(abs(total - 6.0) < 0.2, "\(total) s in all")
            for (file, _) in files {
                #expect(try ProbedPackets.run(file.path).video.first?.flags.hasPrefix("K") == true)
                try expectDecodesCleanly(file.path)
            }
        }
    }

    @Test("a recording joined mid-GOP starts at the next keyframe; earlier packets are skipped")
    func startsOnKeyframe() throws {
        try withTemporaryDirectory { directory in
            var skipped: [MediaPacket] = []
            let files = closed(try record("av-640x360.flv", format: .mp4, limits: .init(), in: directory) { packets in
                skipped = Array(packets.prefix(40))
                return Array(packets.dropFirst(40))
            })
            #expect(skipped.contains { $0.isKeyframe && $0.kind == .video }, "the test drops the first keyframe")
            let file = try #require(files.first?.file)
            #expect(files.count == 1)
            // The fixture's keyframes are 1 s apart: the recording is the 5 s from the second one.
            #expect(abs(Double(file.duration) / 1000 - 5.0) < 0.1, "\(file.duration) ms")
            #expect(try ProbedPackets.run(file.path).video.first?.flags.hasPrefix("K") == true)
        }
    }

    @Test("audio only: the file starts at the first audio packet and splits at any packet")
    func audioOnly() throws {
        try withTemporaryDirectory { directory in
            let files = closed(try record("audio-only.flv", format: .flv, limits: .init(maxDuration: 2000), in: directory))
            #expect(files.count == 3, "\(files.map(\.file.duration))")
            for (file, _) in files { try expectDecodesCleanly(file.path) }
        }
    }

    @Test("a changed codec setup closes the file; the next opens at a keyframe with the new setup")
    func descriptionChange() throws {
        let small = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        let large = try FLVFile(fixtures.appendingPathComponent("av-1280x720.flv").path)
        try withTemporaryDirectory { directory in
            let recorder = SplittingRecorder(directory: directory.path, channel: "cam", format: .mp4, now: { fixedDate })
            recorder.setDescription(small.description)
            for packet in small.packets { try recorder.write(packet) }
            recorder.setDescription(small.description)  // the same again: nothing happens
            #expect(recorder.takeEvents().count == 1)
            recorder.setDescription(large.description)
            // The second publisher's timeline continues after the first one's.
            for var packet in large.packets {
                packet.dts += 10_000
                packet.pts += 10_000
                try recorder.write(packet)
            }
            recorder.finish(reason: .publishEnded)
            let files = closed(recorder.takeEvents())
            #expect(files.map(\.reason) == [.streamChanged, .publishEnded])
            #expect(try RecordingProbe.run(files[0].file.path).stream("video")?.width == 640)
            #expect(try RecordingProbe.run(files[1].file.path).stream("video")?.width == 1280)
        }
    }

    @Test("a clock that goes back starts a new file at the next keyframe; a small step back is refused")
    func timestampReset() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        try withTemporaryDirectory { directory in
            let recorder = SplittingRecorder(directory: directory.path, channel: "cam", format: .flv, now: { fixedDate })
            recorder.setDescription(file.description)
            for packet in file.packets { try recorder.write(packet) }
            var stray = try #require(file.packets.last { $0.kind == .audio })
            stray.dts -= 500
            stray.pts -= 500
            #expect(throws: RecordingError.self) { try recorder.write(stray) }
            for packet in file.packets { try recorder.write(packet) }  // the encoder restarted at 0
            recorder.finish(reason: .publishEnded)
            let files = closed(recorder.takeEvents())
            #expect(files.map(\.reason) == [.streamChanged, .publishEnded])
            for (file, _) in files {
                #expect(abs(Double(file.duration) / 1000 - 6) < 0.1)
                try expectDecodesCleanly(file.path)
            }
        }
    }

    @Test("a write failing mid-file (disk full) closes the file as failed and ends the recording")
    func diskFullMidFile() throws {
        /// An FLV recorder whose disk fills up after `capacity` packets.
        final class FillingUp: MediaRecorder {
            let inner: FLVRecorder
            var capacity: Int
            init(_ inner: FLVRecorder, capacity: Int) {
                self.inner = inner
                self.capacity = capacity
            }
            var path: String { inner.path }
            var bytesWritten: Int64 { inner.bytesWritten }
            var duration: Int64 { inner.duration }
            func write(_ media: MediaPacket) throws(RecordingError) {
                guard capacity > 0 else { throw .ioFailed(path: path, operation: "writing", errno: ENOSPC) }
                capacity -= 1
                try inner.write(media)
            }
            func finish() throws(RecordingError) { try inner.finish() }
        }
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        try withTemporaryDirectory { directory in
            let recorder = SplittingRecorder(
                directory: directory.path, channel: "cam", format: .flv, limits: .init(), now: { fixedDate },
                makeRecorder: { path, description, metadata throws(RecordingError) in
                    FillingUp(try FLVRecorder(path: path, description: description, metadata: metadata), capacity: 100)
                })
            recorder.setDescription(file.description)
            var failure: RecordingError?
            for packet in file.packets where failure == nil {
                do throws(RecordingError) { try recorder.write(packet) } catch { failure = error }
            }
            #expect(failure == .ioFailed(path: directory.path + "/cam-20240102-030405.flv", operation: "writing", errno: ENOSPC))
            let events = recorder.takeEvents()
            guard case .closed(let closed, let reason, let error) = try #require(events.last) else {
                Issue.record("no closed event: \(events)")
                return
            }
            #expect(reason == .failed && error == failure)
            #expect(closed.bytes == (try fileSize(closed.path)))
            #expect(throws: RecordingError.self) { try recorder.write(file.packets[0]) }
            recorder.finish(reason: .publishEnded)
            #expect(recorder.takeEvents().isEmpty, "closed once")
            // What was written before the disk filled up plays.
            #expect(try FLVFile(closed.path).packets.count == 100)
            try expectDecodesCleanly(closed.path)
        }
    }

    @Test("packets before any description are skipped; nothing is created")
    func noDescription() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        try withTemporaryDirectory { directory in
            let recorder = SplittingRecorder(directory: directory.appendingPathComponent("sub").path, channel: "cam", format: .flv)
            for packet in file.packets.prefix(20) { try recorder.write(packet) }
            recorder.finish(reason: .publishEnded)
            #expect(recorder.takeEvents().isEmpty && recorder.skippedPackets == 20)
            #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("sub").path))
        }
    }

    @Test("a directory that cannot be created fails the recording with the path and the reason")
    func unwritableDirectory() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        try withTemporaryDirectory { directory in
            let regular = directory.appendingPathComponent("a-file").path
            _ = FileManager.default.createFile(atPath: regular, contents: Data([1]))
            for format in RecordingFormat.allCases {
                let recorder = SplittingRecorder(directory: regular + "/recordings/deeper", channel: "cam", format: format)
                recorder.setDescription(file.description)
                let error = #expect(throws: RecordingError.self) { try recorder.write(file.packets[0]) }
                #expect(error == .cannotCreateDirectory(path: regular, errno: ENOTDIR))
                #expect(error?.description == "cannot create directory \(regular): Not a directory")
                #expect(throws: RecordingError.self) { try recorder.write(file.packets[1]) }
                #expect(recorder.takeEvents().isEmpty)
            }
        }
    }

    @Test("the directory is created with its parents; a relative path works")
    func createsDirectory() throws {
        try withTemporaryDirectory { directory in
            let nested = directory.appendingPathComponent("a/b/c").path
            try SplittingRecorder.createDirectory(nested)
            try SplittingRecorder.createDirectory(nested)  // exists: fine
            var isDirectory: ObjCBool = false
            #expect(FileManager.default.fileExists(atPath: nested, isDirectory: &isDirectory) && isDirectory.boolValue)
        }
    }

    @Test("file names: UTC timestamp, channel made safe")
    func names() {
        #expect(SplittingRecorder.timestamp(fixedDate) == "20240102-030405")
        #expect(SplittingRecorder.timestamp(Date(timeIntervalSince1970: 0.999)) == "19700101-000000")
        #expect(SplittingRecorder.fileNameSafe("cam-1_a.b") == "cam-1_a.b")
        #expect(SplittingRecorder.fileNameSafe("../etc/passwd") == "_.._etc_passwd")
        #expect(SplittingRecorder.fileNameSafe("") == "_")
        #expect(SplittingRecorder.fileNameSafe("é") == "__")
    }
}

@Suite("Recorders on a full disk")
struct FullDiskTests {
    @Test("FLV: the header write fails with ENOSPC, naming the path")
    func flvFullDisk() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        let error = #expect(throws: RecordingError.self) { try FLVRecorder(path: "/dev/full", description: file.description) }
        #expect(error == .ioFailed(path: "/dev/full", operation: "writing", errno: ENOSPC))
        #expect(error?.description == "writing /dev/full failed: No space left on device")
    }

    @Test("MP4: the header or a later write fails with ENOSPC; finishing is safe", .timeLimit(.minutes(1)))
    func mp4FullDisk() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        var failure: RecordingError?
        do {
            // libav flushes the header at once; should a build buffer it, a packet write fails instead.
            let recorder = try MP4Recorder(path: "/dev/full", description: file.description)
            for packet in file.packets where failure == nil {
                do { try recorder.write(packet) } catch { failure = error }
            }
            #expect(throws: RecordingError.self) { try recorder.finish() }
            try recorder.finish()  // finished: nothing more to do
        } catch {
            failure = error
        }
        let error = try #require(failure, "a write failed")
        #expect(error.isFatal && error.description.contains("/dev/full") && error.description.contains("No space left on device"),
                "\(error)")
    }
}
