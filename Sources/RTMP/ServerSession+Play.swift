import MediaCore
import NIOCore

extension ServerSession {
    /// A player asking for `streamName` (a channel name, never a key) in `app`.
    public struct PlayRequest: Sendable, Equatable {
        public var app: String
        public var tcURL: String?
        public var streamName: String
        public var query: String?
        public var messageStreamID: MessageStreamID
        /// `start` as sent: −2 live-or-recorded (the default), −1 live only, ≥0 a recorded position.
        public var start: Double
        /// `duration` as sent: −1 until the end (the default).
        public var duration: Double
        /// Whether to send NetStream.Play.Reset before Play.Start.
        public var reset: Bool
    }

    mutating func play(_ messageStreamID: MessageStreamID, arguments: [AMF0Value]) -> [Action] {
        guard messageStreams.contains(messageStreamID) else {
            return close("play on message stream \(messageStreamID) that createStream did not return")
        }
        guard state == .connected else { return close("play while \(state)") }
        guard let fullName = arguments.first?.stringValue, !fullName.isEmpty else {
            return [.send(Self.onStatus(.error, "NetStream.Play.StreamNotFound", "missing stream name",
                                        messageStreamID: messageStreamID))] + close("play without a stream name")
        }
        // Arguments after the name: start, duration, reset (librtmp and ffmpeg send start only, or nothing).
        let start = arguments.count > 1 ? arguments[1].numberValue ?? -2 : -2
        let duration = arguments.count > 2 ? arguments[2].numberValue ?? -1 : -1
        let reset = arguments.count > 3 ? arguments[3].booleanValue ?? (arguments[3].numberValue.map { $0 != 0 } ?? true) : true
        let query = fullName.firstIndex(of: "?").map { String(fullName[fullName.index(after: $0)...]) }
        let request = PlayRequest(app: app, tcURL: tcURL, streamName: Self.withoutQuery(fullName), query: query,
                                  messageStreamID: messageStreamID, start: start, duration: duration,
                                  reset: reset)
        state = .authorizingPlay(request)
        return [.authorizePlay(request)]
    }

    /// The owner allowed the play requested by `.authorizePlay` of `channel`.
    public mutating func playAllowed(channel: String) -> [Action] {
        guard case .authorizingPlay(let request) = state else { return [] }
        let id = request.messageStreamID
        state = .playing(channel: channel, messageStreamID: id)
        var actions: [Action] = [.send(ControlMessage.userControl(.streamBegin(id)))]
        if request.reset {
            actions.append(.send(Self.onStatus(.status, "NetStream.Play.Reset", "Playing and resetting \(channel).",
                                               messageStreamID: id)))
        }
        actions.append(.send(Self.onStatus(.status, "NetStream.Play.Start", "Started playing \(channel).",
                                           messageStreamID: id)))
        // Flash's permission to read the raw samples; players expect it before media.
        var access = ByteBuffer()
        AMF0Encoder.encode([.string("|RtmpSampleAccess"), .boolean(true), .boolean(true)], into: &access)
        actions.append(.send(RTMPMessage(type: .dataAMF0, messageStreamID: id, chunkStreamID: Self.statusChunkStream,
                                         payload: access)))
        actions.append(.startPlayback(channel: channel, messageStreamID: id))
        return actions
    }

    /// The owner refused the play; the session answers and closes.
    public mutating func playRejected(code: String = "NetStream.Play.Failed", _ description: String) -> [Action] {
        guard case .authorizingPlay(let request) = state else { return [] }
        return [.send(Self.onStatus(.error, code, description, messageStreamID: request.messageStreamID))]
            + close("play refused: \(code): \(description)")
    }

    /// Live streams cannot seek: pause stops the flow and resume restarts it at the next keyframe.
    mutating func pause(_ messageStreamID: MessageStreamID, arguments: [AMF0Value]) -> [Action] {
        guard case .playing(let channel, let id) = state, id == messageStreamID else { return [] }
        let pausing = arguments.first?.booleanValue ?? true
        let (code, text) = pausing ? ("NetStream.Pause.Notify", "Paused \(channel).") : ("NetStream.Unpause.Notify", "Unpaused \(channel).")
        return [.pausePlayback(pausing), .send(Self.onStatus(.status, code, text, messageStreamID: id))]
    }
}
