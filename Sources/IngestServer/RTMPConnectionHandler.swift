import Logging
import MediaCore
import NIOCore
import RTMP
import StreamHub

/// Runs one RTMP connection: bytes in → handshake → chunk decoder → session
/// state machine; performs the session's actions. The protocol logic lives in
/// the pure `RTMP` target; this handler only moves bytes and calls services.
final class RTMPConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let configuration: RTMPServer.Configuration
    private let hub: StreamHub
    private let authorizer: any PublishAuthorizer
    private let playAuthorizer: any PlayAuthorizer
    /// nginx-rtmp's notify hooks; nil when none is configured.
    private let observer: (any RTMPSessionObserver)?
    /// Counts what the connection sends (players write past this handler), for `disconnected`.
    private let bytesSent: OutboundByteCounter?
    private let connectionID: UInt64
    /// The handshake's time field (nginx-rtmp's session epoch, ms).
    private let epoch: UInt32
    private let readPacer: ReadPacer?
    private var logger: Logger

    private var handshake: ServerHandshake
    private var decoder: ChunkDecoder
    private var encoder = ChunkEncoder()
    private var session: ServerSession
    private var buffer = ByteBuffer()
    private var bytesReceived: UInt64 = 0
    /// Until the handshake completes, then until a publish or play is accepted.
    private var setupTimeout: Scheduled<Void>?
    /// While a publish is being authorized, decoding pauses so nothing overtakes the decision.
    private var awaitingAuthorization = false
    private var publisher: Publisher?
    private var player: RTMPPlayer?
    private var closing = false
    /// The accepted publish or play, for the observer: since when, and the timer of its next update.
    private var activeStream: ActiveStream?
    private var streamGeneration = 0
    private var updateTimer: Scheduled<Void>?
    /// The publisher's last media timestamp (ms), for `on_update`.
    private var lastTimestamp: Int64 = 0
    /// The play being answered with `playAllowed`, until its playback starts.
    private var pendingPlay: ServerSession.PlayRequest?
    /// The peer's IP, kept for the notifications sent after the socket is gone.
    private var address = ""

    init(configuration: RTMPServer.Configuration, hub: StreamHub, authorizer: any PublishAuthorizer,
         playAuthorizer: any PlayAuthorizer, observer: (any RTMPSessionObserver)? = nil,
         bytesSent: OutboundByteCounter? = nil, readPacer: ReadPacer? = nil, connectionID: UInt64, logger: Logger) {
        self.readPacer = readPacer
        self.observer = observer
        self.bytesSent = bytesSent
        // nginx-rtmp's epoch is its millisecond clock when the session starts; S1 carries it.
        epoch = UInt32(truncatingIfNeeded: NIODeadline.now().uptimeNanoseconds / 1_000_000)
        handshake = ServerHandshake(epoch: epoch)
        self.configuration = configuration
        self.hub = hub
        self.authorizer = authorizer
        self.playAuthorizer = playAuthorizer
        self.connectionID = connectionID
        self.logger = logger
        self.decoder = ChunkDecoder(limits: configuration.chunkLimits)
        var sessionConfiguration = configuration.session
        sessionConfiguration.authorizesConnect = observer?.holdsConnect ?? false
        self.session = ServerSession(configuration: sessionConfiguration)
    }

    func channelActive(context: ChannelHandlerContext) {
        address = context.remoteAddress?.ipAddress ?? ""
        logger.debug("connection opened", metadata: ["peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")"])
        armSetupTimeout(context: context, after: configuration.handshakeTimeout, reason: "handshake not completed")
        context.fireChannelActive()
    }

    private func armSetupTimeout(context: ChannelHandlerContext, after delay: TimeAmount, reason: String) {
        setupTimeout?.cancel()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        setupTimeout = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = loopBound.value
            handler.close(context: context, reason: "\(reason) within \(delay)")
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        setupTimeout?.cancel()
        finishPublishing()
        stopPlaying()
        if let observer, session.isConnected {
            observer.disconnected(sessionInfo(), bytesReceived: bytesReceived,
                                  bytesSent: bytesSent?.bytes ?? 0)
        }
        logger.debug("connection closed")
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            // A player only receives (an acknowledgement every 2.5 MB at most): its liveness is
            // judged by whether it reads, through the player's lag limit, not by what it sends.
            guard player == nil else { return }
            close(context: context, reason: "no data for \(configuration.idleTimeout)")
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, !closing { process(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        close(context: context, reason: "connection error: \(error)")
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        var incoming = unwrapInboundIn(data)
        bytesReceived += UInt64(incoming.readableBytes)
        if buffer.readableBytes == 0 {
            // Nothing left over from the last read (the usual case): decode the read's own buffer.
            buffer = incoming
        } else {
            buffer.writeBuffer(&incoming)
        }
        guard buffer.readableBytes <= configuration.chunkLimits.maxBufferedBytes else {
            close(context: context, reason: "more than \(configuration.chunkLimits.maxBufferedBytes) bytes buffered")
            return
        }
        process(context: context)
        perform(session.bytesReceived(total: bytesReceived), context: context)
    }

    private func process(context: ChannelHandlerContext) {
        do {
            while handshake.state != .done {
                guard let action = try handshake.feed(&buffer) else { return }
                switch action {
                case .send(let reply):
                    context.writeAndFlush(wrapOutboundOut(reply), promise: nil)
                case .complete:
                    armSetupTimeout(context: context, after: configuration.sessionSetupTimeout, reason: "no publish or play")
                    logger.debug("handshake complete", metadata: ["digest": "\(handshake.usedDigest)"])
                }
            }
            // Replies wait for a peer that does not read: decoding stops while the socket is full,
            // so the unread input piles up against the buffer limit instead of our output growing.
            while !closing, !awaitingAuthorization, context.channel.isWritable, let message = try decoder.decode(&buffer) {
                perform(session.receive(message), context: context)
            }
            buffer.discardReadBytes()
        } catch {
            close(context: context, reason: "\(error)")
        }
    }

    private func perform(_ actions: [ServerSession.Action], context: ChannelHandlerContext) {
        var out = ByteBuffer()
        defer {
            if out.readableBytes > 0, context.channel.isActive {
                context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            }
        }
        for action in actions {
            switch action {
            case .send(let message):
                encoder.encode(message, into: &out)
            case .setOutgoingChunkSize(let size):
                encoder.setChunkSize(size)
            case .authorizeConnect(let request):
                authorizeConnect(request, context: context)
            case .authorizePublish(let request):
                authorize(request, context: context)
            case .streamDescription(let description):
                logDescription(description)
                publisher?.setDescription(description)
            case .media(let packet):
                lastTimestamp = packet.dts
                publisher?.send(packet)
            case .metadata(let properties):
                publisher?.setMetadata(StreamMetadata(amf0: properties))
            case .unpublish:
                logger.info("publisher stopped")
                finishPublishing()
            case .authorizePlay(let request):
                authorizePlay(request, context: context)
            case .startPlayback(let channel, let messageStreamID):
                // The replies queued so far (Play.Start …) must reach the player before any media.
                if out.readableBytes > 0 {
                    context.writeAndFlush(wrapOutboundOut(out), promise: nil)
                    out.clear()
                }
                logger[metadataKey: "channel"] = "\(channel)"
                logger.info("playing")
                setupTimeout?.cancel()
                let player = RTMPPlayer(channel: context.channel, hub: hub, streamName: channel,
                                        messageStreamID: messageStreamID, chunkSize: encoder.chunkSize,
                                        limits: configuration.playerQueue, maxLag: configuration.playerMaxLag,
                                        mergedWrite: configuration.mergedWrite,
                                        logger: logger)
                self.player = player
                player.start()
                if let request = pendingPlay {
                    pendingPlay = nil
                    streamStarted(RTMPStreamInfo(kind: .play, name: request.streamName, args: request.query,
                                                 channel: channel), context: context)
                }
            case .stopPlayback:
                logger.info("player stopped")
                stopPlaying()
            case .receive(let kind, let enabled):
                player?.update { kind == .audio ? ($0.receivesAudio = enabled) : ($0.receivesVideo = enabled) }
            case .pausePlayback(let paused):
                player?.update { $0.paused = paused }
            case .close(let reason):
                if out.readableBytes > 0 {
                    context.writeAndFlush(wrapOutboundOut(out), promise: nil)
                    out.clear()
                }
                close(context: context, reason: reason)
                return
            }
        }
    }

    private func authorize(_ request: ServerSession.PublishRequest, context: ChannelHandlerContext) {
        awaitingAuthorization = true
        let masked = ServerSession.masked(request.streamName)
        logger.info("publish requested", metadata: ["app": "\(request.app)", "key": "\(masked)"])
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let hub = self.hub
        let authorizer = self.authorizer
        let nodeID = configuration.nodeID
        let publish = PublishRequest(
            app: request.app, streamKey: request.streamName, query: request.query, publishType: request.publishType,
            tcURL: request.tcURL, flashVer: session.flashVer, swfURL: session.swfURL, pageURL: session.pageURL,
            address: context.remoteAddress?.ipAddress ?? "", clientID: connectionID)
        context.eventLoop.makeFutureWithTask { () async -> Result<Publisher, ServerSession.Rejection> in
            switch await authorizer.authorize(publish) {
            case .deny(let reason):
                return .failure(.denied(reason))
            case .allow(let channel):
                do {
                    return .success(try await hub.startPublishing(channel: channel, app: request.app, nodeID: nodeID))
                } catch {
                    return .failure(.badName("\(error)"))
                }
            }
        }.whenSuccess { result in
            let (handler, context) = loopBound.value
            handler.authorized(result, request: request, context: context)
        }
    }

    private func authorizePlay(_ request: ServerSession.PlayRequest, context: ChannelHandlerContext) {
        guard StaticKeyAuthorizer.isValidChannelName(request.streamName) else {
            perform(session.playRejected(code: "NetStream.Play.StreamNotFound", "not a channel name"), context: context)
            return
        }
        awaitingAuthorization = true
        let play = PlayRequest(
            app: request.app, channel: request.streamName, query: request.query, tcURL: request.tcURL,
            flashVer: session.flashVer, swfURL: session.swfURL, pageURL: session.pageURL,
            address: context.remoteAddress?.ipAddress ?? "", clientID: connectionID,
            start: request.start, duration: request.duration, reset: request.reset)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let authorizer = playAuthorizer
        context.eventLoop.makeFutureWithTask { await authorizer.authorize(play) }.whenSuccess { decision in
            let (handler, context) = loopBound.value
            handler.awaitingAuthorization = false
            guard !handler.closing, context.channel.isActive else { return }
            switch decision {
            case .allow(let channel):
                handler.pendingPlay = request
                handler.perform(handler.session.playAllowed(channel: channel), context: context)
            case .deny(let reason):
                handler.logger.warning("play refused", metadata: ["channel": "\(request.streamName)", "reason": "\(reason)"])
                handler.perform(handler.session.playRejected(reason), context: context)
            }
            if !handler.closing { handler.process(context: context) }
        }
    }

    private func authorized(_ result: Result<Publisher, ServerSession.Rejection>, request: ServerSession.PublishRequest,
                            context: ChannelHandlerContext) {
        awaitingAuthorization = false
        switch result {
        case .success(let publisher):
            guard !closing, context.channel.isActive else {
                // The publisher left while we were deciding: release the channel at once.
                Task { await publisher.finish() }
                return
            }
            self.publisher = publisher
            let stopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            publisher.stream.onStopRequested { [eventLoop = context.eventLoop] reason in
                eventLoop.execute {
                    let (handler, context) = stopBound.value
                    handler.close(context: context, reason: reason)
                }
            }
            setupTimeout?.cancel()
            logger[metadataKey: "channel"] = "\(publisher.stream.channel)"
            logger.info("publishing")
            readPacer?.startPacing(after: configuration.mergedReadStartsAfter)
            perform(session.publishAllowed(channel: publisher.stream.channel), context: context)
            streamStarted(RTMPStreamInfo(kind: .publish, name: request.streamName, args: request.query,
                                         channel: publisher.stream.channel), context: context)
        case .failure(let rejection):
            perform(session.publishRejected(rejection), context: context)
        }
        if !closing { process(context: context) }
    }

    // MARK: Notify (nginx-rtmp's on_connect, on_update, on_*_done, on_disconnect)

    private func sessionInfo() -> RTMPSessionInfo {
        RTMPSessionInfo(app: session.app, args: session.connectArgs, flashVer: session.flashVer, swfURL: session.swfURL,
                        tcURL: session.tcURL, pageURL: session.pageURL, address: address, clientID: connectionID,
                        epoch: epoch)
    }

    /// Holds the connection's processing (as a publish authorization does) until the observer answers.
    private func authorizeConnect(_ request: ServerSession.ConnectRequest, context: ChannelHandlerContext) {
        guard let observer else {
            perform(session.connectAllowed(), context: context)
            return
        }
        awaitingAuthorization = true
        let info = sessionInfo()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.makeFutureWithTask { await observer.connect(info) }.whenSuccess { decision in
            let (handler, context) = loopBound.value
            handler.awaitingAuthorization = false
            guard !handler.closing, context.channel.isActive else { return }
            switch decision {
            case .allow(let app):
                if app != request.app { handler.logger.info("connect redirected", metadata: ["app": "\(app)"]) }
                handler.perform(handler.session.connectAllowed(app: app), context: context)
            case .deny(let reason):
                handler.logger.warning("connect refused", metadata: ["app": "\(request.app)", "reason": "\(reason)"])
                handler.perform(handler.session.connectRejected(reason), context: context)
            }
            if !handler.closing { handler.process(context: context) }
        }
    }

    /// A publish or play under way, for the observer.
    private struct ActiveStream {
        var info: RTMPStreamInfo
        var since: NIODeadline
        /// Tells this stream's update answers from a later stream's on the same connection.
        var generation: Int
    }

    private func streamStarted(_ stream: RTMPStreamInfo, context: ChannelHandlerContext) {
        guard let observer else { return }
        streamGeneration += 1
        activeStream = ActiveStream(info: stream, since: .now(), generation: streamGeneration)
        let info = sessionInfo()
        observer.streamStarted(info, stream: stream)
        if let interval = observer.updateInterval(app: info.app) {
            scheduleUpdate(in: interval, context: context)
        }
    }

    /// nginx-rtmp's `on_update` timer: the next call is due one interval after the last answer.
    private func scheduleUpdate(in interval: Duration, context: ChannelHandlerContext) {
        guard let observer, let active = activeStream else { return }
        let stream = active.info
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let nanoseconds = interval.components.seconds * 1_000_000_000 + interval.components.attoseconds / 1_000_000_000
        updateTimer = context.eventLoop.scheduleTask(in: .nanoseconds(nanoseconds)) {
            let (handler, context) = loopBound.value
            guard !handler.closing, handler.activeStream?.generation == active.generation else { return }
            let info = handler.sessionInfo()
            let elapsed = Int64((NIODeadline.now() - active.since).nanoseconds / 1_000_000_000)
            let timestamp = UInt32(truncatingIfNeeded: handler.lastTimestamp)
            context.eventLoop.makeFutureWithTask {
                await observer.update(info, stream: stream, elapsed: elapsed, timestamp: timestamp)
            }.whenSuccess { decision in
                let (handler, context) = loopBound.value
                guard !handler.closing, handler.activeStream?.generation == active.generation else { return }
                switch decision {
                case .continue:
                    handler.scheduleUpdate(in: interval, context: context)
                case .end(let reason):
                    handler.close(context: context, reason: "on_update: \(reason)")
                }
            }
        }
    }

    private func streamEnded() {
        guard let stream = activeStream?.info else { return }
        activeStream = nil
        updateTimer?.cancel()
        updateTimer = nil
        guard let observer else { return }
        observer.streamEnded(sessionInfo(), stream: stream)
    }

    private func logDescription(_ description: StreamDescription) {
        var metadata: Logger.Metadata = [:]
        if let video = description.video {
            metadata["video"] = "\(video.codec) profile \(video.avcC.profileIndication) level \(video.avcC.levelIndication)"
        }
        if let audio = description.audio {
            metadata["audio"] = "\(audio.codec) \(audio.config.samplingFrequency) Hz \(audio.config.channelConfiguration) ch"
        }
        logger.info("stream codecs", metadata: metadata)
    }

    private func stopPlaying() {
        guard let player else { return }
        player.stop()
        self.player = nil
        streamEnded()
    }

    private func finishPublishing() {
        guard let publisher else { return }
        self.publisher = nil
        Task { await publisher.finish() }
        streamEnded()
    }

    private func close(context: ChannelHandlerContext, reason: String) {
        guard !closing else { return }
        closing = true
        setupTimeout?.cancel()
        logger.warning("closing connection", metadata: ["reason": "\(reason)"])
        finishPublishing()
        stopPlaying()
        context.close(promise: nil)
    }
}

/// Counts the bytes written to a connection (sits next to the socket, so players' writes pass it too).
final class OutboundByteCounter: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private(set) var bytes: UInt64 = 0

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        bytes += UInt64(unwrapOutboundIn(data).readableBytes)
        context.write(data, promise: promise)
    }
}

extension StreamMetadata {
    /// Keeps the scalar properties of an AMF0 `onMetaData` object.
    init(amf0 properties: [AMF0Property]) {
        self.init(properties: properties.compactMap { property in
            switch property.value {
            case .number(let number): Property(property.key, .number(number))
            case .boolean(let flag): Property(property.key, .boolean(flag))
            case .string(let string), .longString(let string): Property(property.key, .string(string))
            default: nil
            }
        })
    }
}
