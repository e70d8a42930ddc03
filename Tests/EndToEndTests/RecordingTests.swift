import App
import Foundation
import Logging
import MediaCore
import NIOCore
import Packaging
import RTMP
import ServiceLifecycle
import StreamHub
import Synchronization
import Testing

/// `GET /api/v1/streams/{channel}/recordings`.
struct RecordingList: Decodable {
    var channel: String
    var recording: Bool
    var recordings: [RecordingStatus]

    static func decode(_ body: Data) throws -> RecordingList {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(RecordingList.self, from: body)
    }
}

extension TestServer {
    func recordings(_ channel: String) async throws -> RecordingList {
        let response = try await get("/api/v1/streams/\(channel)/recordings")
        #expect(response.status == 200 && response.headers["content-type"] == "application/json")
        return try RecordingList.decode(response.body)
    }

    /// Polls the channel's recordings until `condition` holds.
    func waitForRecordings(_ channel: String, timeout: Duration = .seconds(30),
                           until condition: ([RecordingStatus]) -> Bool) async throws -> [RecordingStatus] {
        let deadline = ContinuousClock.now + timeout
        var last: [RecordingStatus] = []
        while ContinuousClock.now < deadline {
            last = try await recordings(channel).recordings
            if condition(last) { return last }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("recordings condition not met in \(timeout); last: \(last)")
        throw TestFailure.timeout
    }

    /// `method` on `path`: status and the body as JSON text.
    func call(_ method: String, _ path: String) async throws -> (status: Int, body: String) {
        let response = try await get(path, method: method)
        return (response.status, String(decoding: response.body, as: UTF8.self))
    }
}

/// The types of an MP4 file's top-level boxes, in order.
func topLevelBoxes(_ path: String) throws -> [String] {
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    var boxes: [String] = []
    var offset = 0
    while offset + 8 <= bytes.count {
        var size = bytes[offset..<offset + 4].reduce(0) { $0 << 8 | Int($1) }
        boxes.append(String(decoding: bytes[offset + 4..<offset + 8], as: UTF8.self))
        if size == 1, offset + 16 <= bytes.count { size = bytes[offset + 8..<offset + 16].reduce(0) { $0 << 8 | Int($1) } }
        guard size >= 8 else { break }
        offset += size
    }
    return boxes
}

/// ffprobe's codecs and duration (seconds) of a file, expecting no complaint.
func probeRecording(_ path: String) async throws -> (codecs: Set<String>, duration: Double) {
    let result = try await ChildProcess.run("ffprobe", ["-v", "error", "-show_entries", "stream=codec_name:format=duration",
                                                        "-of", "json", path])
    #expect(result.status == 0 && result.stderr.isEmpty, "ffprobe \(path): \(result.stderr)")
    struct Output: Decodable {
        struct Stream: Decodable { var codec_name: String }
        struct Format: Decodable { var duration: String? }
        var streams: [Stream]
        var format: Format
    }
    let output = try JSONDecoder().decode(Output.self, from: Data(result.stdout.utf8))
    return (Set(output.streams.map(\.codec_name)), output.format.duration.flatMap(Double.init) ?? -1)
}

extension EndToEnd {
    @Suite("Recording")
    struct Recording {
        @Test("record all: the publisher is SIGKILLed mid-stream; FLV and MP4 are closed, play, and hold what was published")
        func publisherKilled() async throws {
            let server = try await TestServer { $0.recordMode = .all }
            let publisher = try publish("av-long.flv", to: server.rtmpURL("rec"))
            let recording = try await server.waitForRecordings("rec") { list in
                list.count == 2 && list.allSatisfy { $0.state == .recording && $0.duration >= 6 }
            }
            #expect(Set(recording.map(\.format)) == [.flv, .mp4])
            let stream = try #require(server.app.hub.stream(channel: "rec"))
            publisher.kill(SIGKILL)
            _ = try await publisher.wait()
            let finished = try await server.waitForRecordings("rec") { list in list.allSatisfy { $0.state != .recording } }
            // Everything that reached the server before the kill: 30 fps, recorded from the first keyframe.
            let published = Double(stream.statistics.videoPackets) / 30
            #expect(published > 5.5 && published < 19, "killed midway: \(published) s published")

            #expect(finished.count == 2)
            for status in finished {
                let path = try #require(status.path)
                #expect(status.state == .finished && status.reason == .publishEnded && status.lastError == nil, "\(status)")
                #expect(path.hasPrefix(server.dataDirectory.path + "/recordings/rec-") && path.hasSuffix(".\(status.format)"))
                let probe = try await probeRecording(path)
                #expect(probe.codecs == ["h264", "aac"], "\(path)")
                #expect(abs(probe.duration - published) <= 1, "\(path): \(probe.duration) s, published \(published) s")
                #expect(abs(status.duration - published) <= 1, "status: \(status.duration) s")
                #expect(try await ProbedSegment.decodeErrors(path) == "", "\(path) decodes cleanly")
                let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int
                #expect(Int64(size ?? -1) == status.bytes)
                if status.format == .mp4 {
                    let boxes = try topLevelBoxes(path)
                    let moov = try #require(boxes.firstIndex(of: "moov"), "\(boxes)")
                    let mdat = try #require(boxes.firstIndex(of: "mdat"), "\(boxes)")
                    #expect(moov < mdat, "faststart: \(boxes)")
                }
            }
            #expect(server.logs.all.filter { $0.contains("recording finished") && $0.contains("reason=publish-ended") }.count == 2)
            try await server.stop()
        }

        @Test("manual: the API starts and stops a recording; errors say why")
        func manualThroughAPI() async throws {
            let server = try await TestServer { $0.recordMode = .manual }
            let base = "/api/v1/streams/cam/recordings"
            let notLive = try await server.call("POST", base)
            #expect(notLive.status == 404 && notLive.body == #"{"error":{"code":"not_found","message":"channel cam is not live"}}"#)
            let invalid = try await server.call("POST", "/api/v1/streams/.hidden/recordings")
            #expect(invalid.status == 400 && invalid.body.contains("is not a channel name"), "\(invalid)")

            let publisher = try publish("av-long.flv", to: server.rtmpURL("cam"))
            _ = try await server.waitForPlaylist("cam") { !$0.segments.isEmpty }
            #expect(try await server.recordings("cam").recordings.isEmpty, "manual: nothing recorded unasked")
            let notRecording = try await server.call("DELETE", base)
            #expect(notRecording.status == 409 && notRecording.body == #"{"error":{"code":"conflict","message":"channel cam is not being recorded"}}"#)

            let started = try await server.call("POST", base)
            #expect(started.status == 201, "\(started)")
            let list = try RecordingList.decode(Data(started.body.utf8))
            #expect(list.recording && list.channel == "cam")
            let again = try await server.call("POST", base)
            #expect(again.status == 409 && again.body == #"{"error":{"code":"conflict","message":"channel cam is already being recorded"}}"#)

            _ = try await server.waitForRecordings("cam") { list in list.count == 2 && list.allSatisfy { $0.duration >= 3 } }
            let stopped = try await server.call("DELETE", base)
            #expect(stopped.status == 200, "\(stopped)")
            let final = try RecordingList.decode(Data(stopped.body.utf8))
            #expect(!final.recording && final.recordings.count == 2)
            for status in final.recordings {
                #expect(status.state == .finished && status.reason == .stopped, "\(status)")
                let probe = try await probeRecording(try #require(status.path))
                #expect(probe.codecs == ["h264", "aac"] && probe.duration >= 3 && abs(probe.duration - status.duration) < 0.5,
                        "\(status): \(probe)")
            }
            // The publish goes on unrecorded, and can be recorded again.
            #expect(try await server.call("POST", base).status == 201)
            publisher.kill(SIGKILL)
            _ = try await publisher.wait()
            let all = try await server.waitForRecordings("cam") { list in list.count == 4 && list.allSatisfy { $0.state == .finished } }
            #expect(all.suffix(2).allSatisfy { $0.reason == .publishEnded })
            try await server.stop()
        }

        @Test("record off: the API refuses to start")
        func off() async throws {
            let server = try await TestServer()
            let refused = try await server.call("POST", "/api/v1/streams/any/recordings")
            #expect(refused.status == 409 && refused.body.contains("recording is off on this server"), "\(refused)")
            try await server.stop()
        }

        @Test("an unwritable recordings directory: the recording fails with the reason in the API, HLS goes on")
        func unwritableDirectory() async throws {
            // A path under a regular file: unwritable for root too, unlike a chmod'ed directory.
            let server = try await TestServer { configuration in
                configuration.recordMode = .all
                configuration.recordPath = configuration.dataDirectory + "/blocker/recordings"
            }
            let blocker = server.dataDirectory.appendingPathComponent("blocker").path
            #expect(FileManager.default.createFile(atPath: blocker, contents: Data("not a directory".utf8)))
            let publisher = try publish("av-long.flv", to: server.rtmpURL("blocked"))
            let failed = try await server.waitForRecordings("blocked") { list in
                list.count == 2 && list.allSatisfy { $0.state == .failed }
            }
            for status in failed {
                #expect(status.lastError == "cannot create directory \(blocker): Not a directory", "\(status)")
                #expect(status.path == nil && status.reason == .failed)
            }
            #expect(server.logs.contains("recording failed"))
            #expect(try await server.recordings("blocked").recording == false)
            // The live stream is untouched: the playlist keeps advancing.
            let before = try await server.waitForPlaylist("blocked") { !$0.segments.isEmpty }
            let next = before.mediaSequence + before.segments.count
            _ = try await server.waitForPlaylist("blocked") { $0.mediaSequence + $0.segments.count >= next + 2 }
            // SIGKILL: ffmpeg (5.1) -re goes on publishing to the end of the file after a SIGTERM.
            publisher.kill(SIGKILL)
            _ = try await publisher.wait()
            try await server.stop()
        }

        @Test("max duration: the recording is split into several files, each playable")
        func splitByDuration() async throws {
            let server = try await TestServer { configuration in
                configuration.recordMode = .all
                configuration.recordMaxDuration = 2
            }
            #expect(try await publish("av-640x360.flv", to: server.rtmpURL("split")).wait().status == 0)
            let files = try await server.waitForRecordings("split") { list in
                !list.isEmpty && list.allSatisfy { $0.state == .finished } && list.contains { $0.reason == .publishEnded }
                    && list.filter { $0.reason == .publishEnded }.count == 2
            }
            for format in [RecordingFormat.flv, .mp4] {
                let mine = files.filter { $0.format == format }
                // 6 s, keyframes every second: 0–2, 2–4, 4–6.
                #expect(mine.map(\.reason) == [.maxDuration, .maxDuration, .publishEnded], "\(mine)")
                #expect(Set(mine.compactMap(\.path)).count == mine.count, "distinct names")
                for status in mine {
                    let probe = try await probeRecording(try #require(status.path))
                    #expect(probe.codecs == ["h264", "aac"] && abs(probe.duration - 2) < 0.2, "\(status): \(probe)")
                    #expect(try await ProbedSegment.decodeErrors(try #require(status.path)) == "")
                }
            }
            #expect(server.logs.all.filter { $0.contains("recording finished") && $0.contains("reason=max-duration") }.count == 4)
            try await server.stop()
        }
    }
}

/// A fixture's description and packets as the RTMP session would hand them to the hub.
private func demux(_ fixture: String) throws -> [MediaDemuxer.Output] {
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: fixturePath(fixture))))
    var demuxer = MediaDemuxer()
    var outputs: [MediaDemuxer.Output] = []
    var offset = 13
    while offset + 11 <= bytes.count {
        let size = Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
        let time = UInt32(bytes[offset + 4]) << 16 | UInt32(bytes[offset + 5]) << 8 | UInt32(bytes[offset + 6])
            | UInt32(bytes[offset + 7]) << 24
        guard offset + 11 + size <= bytes.count else { break }
        let body = ByteBuffer(bytes: bytes[(offset + 11)..<(offset + 11 + size)])
        let output = switch bytes[offset] {
        case 9: try demuxer.video(timestamp: time, body: body)
        case 8: try demuxer.audio(timestamp: time, body: body)
        default: MediaDemuxer.Output?.none
        }
        if let output { outputs.append(output) }
        offset += 11 + size + 4
    }
    return outputs
}

extension EndToEnd.Recording {
    @Test("the service: a burst faster than real time is recorded whole; onRecordDone hears every file, shutdown closes the rest")
    func serviceInProcess() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-recsvc-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let logs = LogCapture()
        let logger = Logger(label: "recording-test") { _ in LogCapture.Handler(capture: logs) }
        let hub = StreamHub(logger: logger)
        let (done, doneContinuation) = AsyncStream.makeStream(of: RecordingDone.self)
        let service = RecordingService(
            hub: hub, configuration: .init(mode: .all, formats: [.flv, .mp4], directory: directory.path,
                                           limits: .init(maxDuration: 3000)),
            logger: logger, onRecordDone: { doneContinuation.yield($0) })
        let group = ServiceGroup(configuration: .init(services: [.init(service: service)], logger: logger))
        let running = Task { try await group.run() }

        let outputs = try demux("av-640x360.flv")
        let publisher = try await hub.startPublishing(channel: "burst", app: "live")
        for output in outputs {
            switch output {
            case .description(let description): publisher.setDescription(description)
            case .packet(let packet): publisher.send(packet)
            }
        }
        await publisher.finish()
        var iterator = done.makeAsyncIterator()
        var finished: [RecordingDone] = []
        while finished.count < 4, let event = await iterator.next() { finished.append(event) }
        for format in [RecordingFormat.flv, .mp4] {
            let mine = finished.filter { $0.format == format }
            #expect(mine.map(\.reason) == [.maxDuration, .publishEnded], "\(mine)")
            #expect(abs(mine.reduce(0) { $0 + $1.duration } - 6) < 0.2, "all 6 s recorded: \(mine)")
            for event in mine {
                #expect(event.channel == "burst" && FileManager.default.fileExists(atPath: event.path))
                let size = try FileManager.default.attributesOfItem(atPath: event.path)[.size] as? Int
                #expect(Int64(size ?? -1) == event.bytes)
            }
        }
        #expect(service.status(channel: "burst").count == 4)
        #expect(!service.isRecording(channel: "burst"))

        // A publish still going at shutdown is closed, and reported, before the service returns.
        let late = try await hub.startPublishing(channel: "late", app: "live")
        for output in outputs.prefix(200) {
            switch output {
            case .description(let description): late.setDescription(description)
            case .packet(let packet): late.send(packet)
            }
        }
        while service.status(channel: "late").count < 2 { try await Task.sleep(for: .milliseconds(20)) }
        await group.triggerGracefulShutdown()
        try await running.value
        doneContinuation.finish()
        var atShutdown: [RecordingDone] = []
        while let event = await iterator.next() { atShutdown.append(event) }
        #expect(atShutdown.count == 2 && atShutdown.allSatisfy { $0.reason == .shutdown && $0.channel == "late" }, "\(atShutdown)")
        #expect(service.status(channel: "late").allSatisfy { $0.state == .finished })
        for event in atShutdown {
            #expect(try await probeRecording(event.path).codecs == ["h264", "aac"])
        }
    }
}
