import MediaCore
import NIOCore

extension ClientSession {
    /// How long the server should buffer for us (ms); ffmpeg asks for 3 s.
    static let playBufferLength: UInt32 = 3000

    /// `play` on the new message stream, as ffmpeg sends it (start −2000: live, or recorded if not live),
    /// then Set Buffer Length.
    mutating func requestPlay(on id: MessageStreamID) -> [Action] {
        state = .requestingPlay(messageStreamID: id)
        demuxer = MediaDemuxer()
        return [
            .send(command("play", .play, [.string(configuration.streamName), .number(-2000)],
                          chunkStreamID: Self.streamCommandChunkStream, messageStreamID: id)),
            .send(ControlMessage.userControl(.setBufferLength(id, milliseconds: Self.playBufferLength))),
        ]
    }

    /// The play-side `onStatus` codes (errors were handled before).
    mutating func playStatus(_ status: NetStatus) -> [Action] {
        switch status.code {
        case "NetStream.Play.Start":
            guard case .requestingPlay(let id) = state else { return [] }
            state = .playing(messageStreamID: id)
            return [.playing(messageStreamID: id)]
        case "NetStream.Play.UnpublishNotify", "NetStream.Play.Stop":
            guard case .playing(let id) = state else { return [] }
            return playedStreamEnded(id)
        default:
            // Play.Reset, Play.PublishNotify (media follows), Data.Start and the rest need nothing.
            return []
        }
    }

    /// The server's publisher went away: the next media is a new stream with its own sequence headers.
    mutating func playedStreamEnded(_ id: MessageStreamID) -> [Action] {
        guard case .playing(let playingID) = state, playingID == id else { return [] }
        demuxer = MediaDemuxer()
        return [.sourceEnded]
    }

    mutating func playedMedia(_ message: RTMPMessage) -> [Action] {
        // Media before Play.Start (some servers send sequence headers first) is early, not wrong.
        let id: MessageStreamID
        switch state {
        case .playing(let playingID), .requestingPlay(let playingID): id = playingID
        default: return []
        }
        guard message.messageStreamID == id else { return [] }
        do {
            let output = message.type == .video
                ? try demuxer.video(timestamp: message.timestamp, body: message.payload)
                : try demuxer.audio(timestamp: message.timestamp, body: message.payload)
            switch output {
            case .description(let description): return [.streamDescription(description)]
            case .packet(let packet): return [.media(packet)]
            case nil: return []
            }
        } catch {
            return close("unusable media from the server: \(error)")
        }
    }

    /// `onMetaData` (bare, or after `@setDataFrame`); `|RtmpSampleAccess` and the rest are ignored.
    mutating func playedData(_ message: RTMPMessage) -> [Action] {
        switch state {
        case .playing, .requestingPlay: break
        default: return []
        }
        guard message.payload.readableBytes <= configuration.maxCommandLength else {
            return close("data message of \(message.payload.readableBytes) bytes exceeds \(configuration.maxCommandLength)")
        }
        guard let values = try? amf.decodeAll(message.payload) else {
            // A data message we cannot read is not worth ending the stream for.
            return []
        }
        var rest = values[...]
        if rest.first?.stringValue == "@setDataFrame" { rest = rest.dropFirst() }
        guard rest.first?.stringValue == "onMetaData", rest.count >= 2 else { return [] }
        switch rest[rest.startIndex + 1] {
        case .object(let properties), .ecmaArray(let properties): return [.metadata(properties)]
        default: return []
        }
    }
}
