import MediaCore
import NIOCore
import Testing

@testable import RTMP

/// Replays the bytes a real OBS Studio 29 sent (fixtures/obs) through the
/// handshake, the chunk decoder and the session, and compares our replies with
/// what nginx-rtmp answered in the same capture.
@Suite("OBS 29 capture replay")
struct OBSCaptureReplayTests {
    struct Replay {
        var commands: [String] = []
        var replies: [RTMPMessage] = []
        var packets: [MediaPacket] = []
        var descriptions: [StreamDescription] = []
        var metadata: [AMF0Property]?
        var request: ServerSession.PublishRequest?
        var closed: String?
        var leftover = 0
    }

    static func replay(_ input: [UInt8], pieceSize: Int) throws -> Replay {
        var handshake = ServerHandshake()
        var decoder = ChunkDecoder()
        var session = ServerSession()
        var replay = Replay()
        var accumulated = ByteBuffer()
        func perform(_ actions: [ServerSession.Action]) {
            for action in actions {
                switch action {
                case .send(let message): replay.replies.append(message)
                case .authorizePublish(let request):
                    replay.request = request
                    perform(session.publishAllowed(channel: "obs"))
                case .media(let packet): replay.packets.append(packet)
                case .streamDescription(let description): replay.descriptions.append(description)
                case .metadata(let properties): replay.metadata = properties
                case .close(let reason): replay.closed = reason
                case .setOutgoingChunkSize, .unpublish, .authorizePlay, .startPlayback, .stopPlayback, .receive, .pausePlayback,
                     .authorizeConnect:
                    break
                }
            }
        }
        for start in stride(from: 0, to: input.count, by: pieceSize) {
            accumulated.writeBytes(input[start..<min(start + pieceSize, input.count)])
            while handshake.state != .done {
                guard try handshake.feed(&accumulated) != nil else { break }
            }
            guard handshake.state == .done else { continue }
            while let message = try decoder.decode(&accumulated) {
                if message.type == .commandAMF0, let name = try AMF0Decoder().decodeAll(message.payload).first?.stringValue {
                    replay.commands.append(name)
                }
                perform(session.receive(message))
            }
        }
        replay.leftover = accumulated.readableBytes
        #expect(decoder.chunkSize == 4096)
        return replay
    }

    @Test("the publish decodes into the commands, metadata and media OBS sent", arguments: [300_000, 1500, 1])
    func publish(pieceSize: Int) throws {
        let replay = try Self.replay(try fixture("obs/obs-publish-c2s.bin"), pieceSize: pieceSize)
        #expect(replay.closed == nil)
        #expect(replay.commands == ["connect", "releaseStream", "FCPublish", "createStream", "publish"])
        #expect(replay.request?.streamName == "obs-test-key")
        #expect(replay.request?.app == "live")

        let metadata = try #require(replay.metadata)
        #expect(metadata.first { $0.key == "width" }?.value == .number(1280))
        #expect(metadata.first { $0.key == "encoder" }?.value == .string("obs-output module (libobs version 29.0.2.1-1+b1)"))

        let description = try #require(replay.descriptions.last)
        // OBS's AAC sequence header is a 5-byte AudioSpecificConfig with an SBR sync extension.
        #expect(description.audio?.config.bytes.count == 5)
        #expect(description.audio?.config.samplingFrequency == 48000)
        #expect(description.audio?.config.channelConfiguration == 2)
        #expect(description.video?.avcC.sequenceParameterSets.count == 1)

        // @3974: the first keyframe, ts 0 with a 66 ms composition offset (B-frames); @48251: ts 33, cts 166.
        let video = replay.packets.filter { $0.kind == .video }
        #expect(video.first == MediaPacket(kind: .video, dts: 0, pts: 66, isKeyframe: true, data: video.first?.data ?? []))
        #expect(video.first?.data.count == 44255 - 5)
        #expect(video.dropFirst().first.map { ($0.dts, $0.pts, $0.isKeyframe) } ?? (0, 0, true) == (33, 199, false))
        // @48364: the first raw AAC frame, 379 bytes with its 2-byte tag header.
        let audio = replay.packets.filter { $0.kind == .audio }
        #expect(audio.first.map { ($0.dts, $0.data.count) } ?? (0, 0) == (66, 377))
        #expect(video.allSatisfy { $0.pts >= $0.dts })
        #expect(zip(video, video.dropFirst()).allSatisfy { $0.dts <= $1.dts })
        // The capture is cut mid-message: what is left is less than one chunk.
        #expect(replay.leftover < 4096 + 18)
    }

    @Test("our replies include everything nginx-rtmp answered, in the same order")
    func repliesMatchNginx() throws {
        let replay = try Self.replay(try fixture("obs/obs-publish-c2s.bin"), pieceSize: 65536)
        var serverBytes = ByteBuffer(bytes: try fixture("obs/obs-publish-s2c.bin"))
        serverBytes.moveReaderIndex(forwardBy: 1 + 2 * 1536)
        var decoder = ChunkDecoder()
        var nginx: [RTMPMessage] = []
        while let message = try decoder.decode(&serverBytes) { nginx.append(message) }
        #expect(nginx.count == 6)

        func signature(_ message: RTMPMessage) throws -> String {
            guard message.type == .commandAMF0 else {
                return "type \(message.typeID) \(Array(message.payload.readableBytesView))"
            }
            let values = try AMF0Decoder().decodeAll(message.payload)
            let code = values.last?["code"]?.stringValue ?? ""
            return "\(values[0].stringValue ?? "?") \(values[1].numberValue ?? -1) \(code)"
        }
        let ours = try replay.replies.map(signature)
        var remaining = ours[...]
        for expected in try nginx.map(signature) {
            guard let index = remaining.firstIndex(of: expected) else {
                Issue.record("nginx-rtmp sent '\(expected)'; we did not (in order). Ours: \(ours)")
                return
            }
            remaining = remaining[(index + 1)...]
        }
    }
}
