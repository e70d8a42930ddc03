import App
import Foundation
import MediaCore
import Packaging
import Testing

/// An FLV recorder on a disk that fills up after `capacity` packets: every later write fails with ENOSPC.
final class FillingUpRecorder: MediaRecorder {
    private let inner: FLVRecorder
    private var capacity: Int

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

extension EndToEnd.Recording {
    @Test("the disk fills up mid-recording: the API shows the file failed with the error; HLS and RTMP playback carry on")
    func diskFullMidRecording() async throws {
        // About 2 s of media (30 video and 47 audio packets a second) fit on this disk.
        let server = try await TestServer(makeRecorder: { path, description, metadata throws(RecordingError) in
            FillingUpRecorder(try FLVRecorder(path: path, description: description, metadata: metadata), capacity: 150)
        }) {
            $0.recordMode = .all
            $0.recordFormats = [.flv]
        }
        let publisher = try publish("av-long.flv", to: server.rtmpURL("full"))
        let failed = try await server.waitForRecordings("full") { $0.first?.state == .failed }
        #expect(failed.count == 1, "one file, failed: \(failed)")
        let status = try #require(failed.first)
        let path = try #require(status.path)
        let error = "writing \(path) failed: No space left on device"
        #expect(status.lastError == error)
        #expect(status.reason == .failed)
        #expect(status.duration > 1 && status.duration < 3, "about 2 s were written: \(status.duration)")
        let size = try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int
        #expect(Int64(size ?? -1) == status.bytes, "the status counts the bytes in the file")
        // What was written before the disk filled up plays.
        #expect(try await probeRecording(path).codecs == ["h264", "aac"])
        #expect(server.logs.all.contains { $0.contains("recording failed") && $0.contains("No space left on device") })

        // The channel's status document says the same; the channel is no longer being recorded.
        let document = try EndToEnd.StreamsAPI.json(try await server.get("/api/v1/streams/full").body)
        #expect(document["live"] as? Bool == true)
        let recordings = try #require(document["recordings"] as? [[String: Any]], "\(document)")
        #expect(recordings.count == 1)
        #expect(recordings.first?["state"] as? String == "failed")
        #expect(recordings.first?["lastError"] as? String == error)
        try await EndToEnd.Relay.waitUntil("the recording to end") { try await server.recordings("full").recording == false }

        // The live stream is unaffected: HLS goes on two more segments, and an RTMP player plays.
        let now = try await server.waitForPlaylist("full") { _ in true }
        let next = now.mediaSequence + now.segments.count
        _ = try await server.waitForPlaylist("full") { $0.mediaSequence + $0.segments.count >= next + 2 }
        let played = try await EndToEnd.Relay.play(server.rtmpURL("full"), seconds: 2)
        #expect(Set(played.streams.map(\.codec_name)) == ["h264", "aac"])
        #expect(try await server.recordings("full").recordings.count == 1, "no new file was started")
        publisher.kill()
        _ = try await publisher.wait()
        try await server.stop()
    }
}
