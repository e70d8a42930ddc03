import App
import Foundation
import MediaCore
import NIOCore
import RTMP
import StreamHub
import Testing

/// What a player asks of a live stream once it plays — receiveAudio/receiveVideo, pause,
/// closeStream/deleteStream — and the order of what it receives, driven with `RTMPTestPlayer`.
extension EndToEnd.Playback {
    /// A server with ffmpeg publishing av-long.flv (20 s, a keyframe a second) on `channel`, once
    /// the first HLS segment is out (so the stream has metadata, codec setup and a cached GOP).
    static func liveServer(_ channel: String) async throws -> (TestServer, ChildProcess) {
        let server = try await TestServer()
        let publisher = try publish("av-long.flv", to: server.rtmpURL(channel))
        _ = try await server.waitForPlaylist(channel) { !$0.segments.isEmpty }
        return (server, publisher)
    }

    /// A player of `channel` on a new message stream, once its first frame has arrived.
    static func play(_ server: TestServer, _ channel: String) async throws -> (RTMPTestPlayer, MessageStreamID) {
        let player = try await RTMPTestPlayer.connect(port: server.rtmpPort)
        let id = try await player.createStream()
        try await player.streamCommand("play", [.string(channel), .number(-2000)], on: id)
        _ = try await player.read(until: "the first frame") { $0.isFrame }
        return (player, id)
    }

    /// Returns once the publisher has sent `count` more video frames to the server than now.
    static func waitForPublisher(_ server: TestServer, _ channel: String, videoFrames count: Int) async throws {
        let stream = try #require(server.app.hub.stream(channel: channel))
        let target = stream.statistics.videoPackets + count
        try await EndToEnd.Relay.waitUntil("\(count) more video frames on \(channel)") {
            stream.statistics.videoPackets >= target
        }
    }

    static func stop(_ server: TestServer, _ publisher: ChildProcess, players: [RTMPTestPlayer]) async throws {
        for player in players { try await player.close() }
        publisher.kill()
        _ = try await publisher.wait()
        try await server.stop()
    }

    @Test("play is answered Stream Begin, Play.Reset, Play.Start, |RtmpSampleAccess, then onMetaData, the sequence headers, media from a keyframe")
    func replyOrder() async throws {
        let (server, publisher) = try await Self.liveServer("order")
        let player = try await RTMPTestPlayer.connect(port: server.rtmpPort)
        let id = try await player.createStream()
        try await player.streamCommand("play", [.string("order"), .number(-2000)], on: id)
        let (before, first) = try await player.read(until: "the first frame") { $0.isFrame }
        #expect(before.map(\.label) + [first.label] == [
            "streamBegin", "NetStream.Play.Reset", "NetStream.Play.Start", "|RtmpSampleAccess",
            "onMetaData", "video header", "audio header", "keyframe",
        ])
        #expect(before.allSatisfy { $0.type == .userControl || $0.messageStreamID == id })
        let metadata = try #require(before.first { $0.label == "onMetaData" }?.amf)
        #expect(metadata.count == 2 && metadata[1]["width"] == .number(426), "the publisher's metadata: \(metadata)")
        // The player's clock starts at zero, on the cached GOP's keyframe.
        #expect(first.timestamp == 0)

        // reset false: no Play.Reset (start and duration change nothing on a live stream).
        let quiet = try await RTMPTestPlayer.connect(port: server.rtmpPort)
        let quietID = try await quiet.createStream()
        try await quiet.streamCommand("play", [.string("order"), .number(5000), .number(1000), .boolean(false)], on: quietID)
        let (quietBefore, quietFirst) = try await quiet.read(until: "the first frame") { $0.isFrame }
        #expect(quietBefore.map(\.label) + [quietFirst.label] == [
            "streamBegin", "NetStream.Play.Start", "|RtmpSampleAccess", "onMetaData", "video header", "audio header", "keyframe",
        ])
        try await Self.stop(server, publisher, players: [player, quiet])
    }

    @Test("receiveVideo false: only audio arrives; true again: video resumes on a keyframe; receiveAudio false: only video")
    func receiveAudioVideo() async throws {
        let (server, publisher) = try await Self.liveServer("toggle")
        let (player, id) = try await Self.play(server, "toggle")

        try await player.streamCommand("receiveVideo", [.boolean(false)], on: id)
        _ = try await player.barrier()
        // More than a second of audio (about 47 frames a second), across at least one keyframe.
        var audioOnly: [RTMPMessage] = []
        while audioOnly.count(where: { $0.type == .audio }) < 60 { audioOnly.append(try await player.next()) }
        #expect(!audioOnly.contains { $0.type == .video }, "video after receiveVideo false: \(audioOnly.map(\.label))")

        try await player.streamCommand("receiveVideo", [.boolean(true)], on: id)
        let (gap, resumed) = try await player.read(until: "video again") { $0.type == .video }
        #expect(resumed.isKeyframe, "video resumes on a keyframe, got \(resumed.label)")
        #expect(gap.allSatisfy { $0.type != .video })
        var video: [RTMPMessage] = []
        while video.count < 10 {
            let message = try await player.next()
            if message.type == .video { video.append(message) }
        }
        #expect(zip([resumed] + video, video).allSatisfy { $0.timestamp <= $1.timestamp })

        try await player.streamCommand("receiveAudio", [.boolean(false)], on: id)
        _ = try await player.barrier()
        var videoOnly: [RTMPMessage] = []
        while videoOnly.count(where: { $0.type == .video }) < 45 { videoOnly.append(try await player.next()) }
        #expect(!videoOnly.contains { $0.type == .audio }, "audio after receiveAudio false: \(videoOnly.map(\.label))")
        try await Self.stop(server, publisher, players: [player])
    }

    @Test("pause: Pause.Notify and no media while paused; unpause: Unpause.Notify, then media from the next keyframe")
    func pause() async throws {
        let (server, publisher) = try await Self.liveServer("pausing")
        let (player, id) = try await Self.play(server, "pausing")

        try await player.streamCommand("pause", [.boolean(true), .number(1000)], on: id)
        let (beforePause, paused) = try await player.read(until: "Pause.Notify") { $0.statusCode != nil }
        #expect(paused.statusCode == "NetStream.Pause.Notify")
        let lastTimestamp = (beforePause + (try await player.barrier())).filter(\.isFrame).map(\.timestamp).max() ?? 0
        // The publisher goes on for 1.5 s; none of it reaches the paused player.
        try await Self.waitForPublisher(server, "pausing", videoFrames: 45)
        let whilePaused = try await player.barrier()
        #expect(!whilePaused.contains { $0.isMedia }, "media while paused: \(whilePaused.map(\.label))")

        try await player.streamCommand("pause", [.boolean(false), .number(1000)], on: id)
        let (_, unpaused) = try await player.read(until: "Unpause.Notify") { $0.statusCode != nil }
        #expect(unpaused.statusCode == "NetStream.Unpause.Notify")
        let (_, first) = try await player.read(until: "media after unpausing") { $0.isFrame }
        #expect(first.isKeyframe, "live resumes at the next keyframe (audio with it), got \(first.label)")
        #expect(first.timestamp > lastTimestamp, "the player's clock moves on: \(first.timestamp) after \(lastTimestamp)")
        try await Self.stop(server, publisher, players: [player])
    }

    @Test("closeStream/deleteStream: no media after it, the viewer is gone, and the connection can play again",
          arguments: ["closeStream", "deleteStream"])
    func stopPlaying(command: String) async throws {
        let channel = "stop-\(command)"
        let (server, publisher) = try await Self.liveServer(channel)
        let (player, id) = try await Self.play(server, channel)
        #expect(server.app.hub.viewerCount(channel: channel) == 1)

        if command == "closeStream" {
            try await player.streamCommand("closeStream", [], on: id)
        } else {
            try await player.streamCommand("deleteStream", [.number(Double(id))], on: 0)
        }
        // What was written before the command was processed may still arrive; nothing after it.
        _ = try await player.barrier()
        try await Self.waitForPublisher(server, channel, videoFrames: 45)
        let afterStop = try await player.barrier()
        #expect(!afterStop.contains { $0.isMedia }, "media after \(command): \(afterStop.map(\.label))")
        try await EndToEnd.Relay.waitUntil("the viewer to leave") { server.app.hub.viewerCount(channel: channel) == 0 }

        // The same connection plays again: on the same stream after closeStream, on a new one after deleteStream.
        let again = command == "closeStream" ? id : try await player.createStream()
        #expect(again == (command == "closeStream" ? id : id + 1))
        try await player.streamCommand("play", [.string(channel)], on: again)
        let (before, first) = try await player.read(until: "the first frame of the second play") { $0.isFrame }
        #expect(Array(before.map(\.label).prefix(3)) == ["streamBegin", "NetStream.Play.Reset", "NetStream.Play.Start"])
        #expect(first.isKeyframe && first.messageStreamID == again)
        #expect(server.app.hub.viewerCount(channel: channel) == 1)
        try await Self.stop(server, publisher, players: [player])
    }

    @Test("a player whose queue reaches more than --player-max-lag behind the newest media is disconnected")
    func tooFarBehindLive() async throws {
        let server = try await TestServer {
            $0.hls = false
            $0.playerMaxLag = 3
        }
        let avcC = try AVCDecoderConfigurationRecord(bytes: [0x01, 0x64, 0x00, 0x1F, 0xFF, 0xE1, 0x00, 0x04, 0x67, 0x64, 0x00,
                                                             0x1F, 0x01, 0x00, 0x04, 0x68, 0xEE, 0x3C, 0xB0])
        func frame(_ dts: Int64) -> MediaPacket {
            MediaPacket(kind: .video, dts: dts, pts: dts, isKeyframe: dts == 0, data: [0, 0, 0, 1, dts == 0 ? 0x65 : 0x41])
        }
        // Two channels with one GOP of 300 frames 10 ms apart in the cache, which a new player gets in one go.
        // On "ahead" the last 20 are stamped a minute later (an encoder's clock jumping): the first batch
        // a player gets is then a minute behind the newest media it has been handed.
        var publishers: [Publisher] = []
        for channel in ["steady", "ahead"] {
            let publisher = try await server.app.hub.startPublishing(channel: channel, app: "live")
            publisher.setDescription(StreamDescription(video: .init(avcC: avcC)))
            for index in 0..<300 {
                publisher.send(frame(Int64(index) * 10 + (channel == "ahead" && index >= 280 ? 60_000 : 0)))
            }
            publishers.append(publisher)
        }

        let steady = try await RTMPTestPlayer.connect(port: server.rtmpPort)
        let steadyID = try await steady.createStream()
        try await steady.streamCommand("play", [.string("steady")], on: steadyID)
        var frames = 0
        while frames < 300 { if try await steady.next().isFrame { frames += 1 } }
        _ = try await steady.barrier()
        #expect(steady.inbox.ended == nil, "a player that keeps up stays")

        let behind = try await RTMPTestPlayer.connect(port: server.rtmpPort)
        let behindID = try await behind.createStream()
        try await behind.streamCommand("play", [.string("ahead")], on: behindID)
        var received: [RTMPMessage] = []
        var ended: String?
        while ended == nil {
            do {
                received.append(try await behind.next())
            } catch RTMPTestPlayer.PlayerError.closed(let why) {
                ended = why
            }
        }
        #expect(ended == "closed by the server")
        #expect(!received.contains { $0.isFrame }, "disconnected before its first batch: \(received.map(\.label))")
        #expect(server.logs.all.contains { $0.contains("player disconnected: too far behind live") && $0.contains("channel=ahead") },
                "\(server.logs.all.filter { $0.contains("disconnected") })")
        #expect(!server.logs.all.contains { $0.contains("disconnected") && $0.contains("channel=steady") })

        try await steady.close()
        for publisher in publishers { await publisher.finish() }
        try await server.stop()
    }
}
