import Foundation
public import Logging
public import MediaCore
import NIOCore

/// Cuts one channel's live media into MPEG-TS segments and keeps its playlist.
///
/// A channel outlives a publish: a publisher that comes back within the grace
/// period continues the same playlist after an `EXT-X-DISCONTINUITY`, with the
/// timeline shifted so media time keeps increasing. Not thread-safe: one task
/// drives it.
public final class HLSChannel {
    public let name: String
    private let configuration: HLSConfiguration
    private let store: SegmentStore
    private let directory: HLSDirectoryWriter?
    private var logger: Logger

    private var description: StreamDescription?
    private var muxer: TSMuxer?
    /// The codec setup the current muxer was made for.
    private var muxerDescription: StreamDescription?
    /// Starts at the clock's seconds so segment URIs never repeat across restarts (they are cached for long).
    private var nextSequence = Int(Date().timeIntervalSince1970)
    private var publishedSegments = 0
    private var discontinuityPending = false
    /// Added to this publish's timestamps so the channel timeline never goes back.
    private var offset: Int64 = 0
    private var offsetChosen = false
    /// End of the media written so far on the channel timeline (ms).
    private var timelineEnd: Int64 = 0
    private var segmentStart: Int64 = 0
    private var lastDTS: [MediaKind: Int64] = [:]
    private var lastVideoPTS: Int64 = 0
    private var frameInterval: Int64 = 33
    private var segmentHasMedia = false
    public private(set) var droppedPackets = 0

    public init(name: String, configuration: HLSConfiguration, store: SegmentStore, logger: Logger) {
        self.name = name
        self.configuration = configuration
        self.store = store
        var logger = logger
        logger[metadataKey: "channel"] = "\(name)"
        self.logger = logger
        self.directory = configuration.directory.map { HLSDirectoryWriter(root: $0, channel: name, logger: logger) }
    }

    /// A publish begins on this channel.
    public func beginPublish() {
        offsetChosen = false
        lastDTS = [:]
        if publishedSegments > 0 { discontinuityPending = true }
    }

    /// The stream's codec setup; a change mid-publish starts a new segment.
    public func setDescription(_ newDescription: StreamDescription) throws {
        guard newDescription != description else { return }
        description = newDescription
        if muxer != nil {
            discontinuityPending = true
            try closeSegment()
        }
    }

    public func write(_ packet: MediaPacket) throws {
        guard let description else { return }
        let hasVideo = description.video != nil
        if muxer == nil {
            // A segment starts with a keyframe (or any audio frame when there is no video).
            let canStart = hasVideo ? (packet.kind == .video && packet.isKeyframe) : packet.kind == .audio
            guard canStart else { return }
            if !offsetChosen {
                // The channel's timeline starts at 0 and never goes back, also for a first frame
                // presented before its decode time (a negative composition time).
                let start = min(packet.dts, packet.pts)
                offset = publishedSegments == 0 ? max(0, -start) : timelineEnd - start
                offsetChosen = true
            }
            muxer = try TSMuxer(description: description)
            muxerDescription = description
            segmentStart = packet.pts + offset
            segmentHasMedia = false
        }
        guard let muxer else { return }
        var packet = packet
        packet.dts += offset
        packet.pts += offset
        if let last = lastDTS[packet.kind], packet.dts < last {
            // The TS muxer refuses time going backwards on a track; such a packet cannot be placed.
            droppedPackets += 1
            logger.debug("dropped out-of-order packet", metadata: ["kind": "\(packet.kind)", "dts": "\(packet.dts)"])
            return
        }
        let isBoundary = hasVideo ? (packet.kind == .video && packet.isKeyframe) : packet.kind == .audio
        let boundaryTime = packet.kind == .video ? packet.pts : packet.dts
        let length = Double(boundaryTime - segmentStart)
        if segmentHasMedia, isBoundary && length >= configuration.segmentDuration * 1000 - 0.5 || length >= maxSegmentLength {
            if !isBoundary {
                logger.warning("no keyframe for too long; segment cut without one",
                               metadata: ["seconds": "\(length / 1000)"])
            }
            publish(data: try muxer.takeSegment(), until: boundaryTime)
        }
        do {
            try muxer.write(packet)
        } catch {
            // One bad packet costs that packet, not the segment.
            droppedPackets += 1
            logger.warning("packet not muxed", metadata: ["kind": "\(packet.kind)", "dts": "\(packet.dts)",
                                                          "error": "\(error)"])
            return
        }
        segmentHasMedia = true
        if packet.kind == .video {
            if let last = lastDTS[.video], packet.dts > last { frameInterval = packet.dts - last }
            lastVideoPTS = max(lastVideoPTS, packet.pts)
        }
        lastDTS[packet.kind] = packet.dts
    }

    /// The publisher stopped: the segment in progress is completed and listed.
    public func endPublish() throws {
        try closeSegment()
    }

    /// A GOP longer than this is cut anyway, so a stream without keyframes cannot grow a segment without bound.
    private var maxSegmentLength: Double { max(configuration.segmentDuration * 10, 20) * 1000 }

    /// After a muxing error: drop the segment in progress; the next keyframe starts a new one.
    public func abandonSegment() {
        muxer = nil
        segmentHasMedia = false
        discontinuityPending = true
        offsetChosen = true
    }

    /// Frees the channel's playlist and segments (long after it ended).
    public func retire() {
        store.remove(channel: name)
        logger.debug("channel retired from memory")
    }

    /// The grace period passed without a new publish: the playlist ends.
    public func endPlaylist() {
        guard let playlist = store.end(channel: name) else { return }
        directory?.write(playlist: playlist)
        logger.info("playlist ended")
    }

    private func closeSegment() throws {
        guard let muxer else { return }
        self.muxer = nil
        let data = try muxer.finish()
        guard segmentHasMedia else { return }
        let end: Int64
        if muxerDescription?.video != nil {
            end = lastVideoPTS + frameInterval
        } else {
            let sampleRate = Int64(muxerDescription?.audio?.config.samplingFrequency ?? 44100)
            end = (lastDTS[.audio] ?? segmentStart) + 1024 * 1000 / max(sampleRate, 1)
        }
        publish(data: data, until: end)
    }

    private func publish(data: ByteBuffer, until end: Int64) {
        let entry = MediaPlaylist.Entry(
            sequence: nextSequence, duration: Double(max(end - segmentStart, 1)) / 1000,
            discontinuity: discontinuityPending, uri: "\(nextSequence).ts")
        nextSequence += 1
        publishedSegments += 1
        discontinuityPending = false
        timelineEnd = end
        segmentStart = end
        segmentHasMedia = false
        let (playlist, evicted) = store.add(
            channel: name, entry: entry, data: data,
            newPlaylist: MediaPlaylist(targetDuration: configuration.segmentDuration,
                                       windowLength: configuration.windowLength))
        if let directory {
            directory.write(segment: entry.uri, data: data)
            directory.write(playlist: playlist)
            directory.remove(segments: evicted.map { "\($0).ts" })
        }
        logger.debug("segment", metadata: ["sequence": "\(entry.sequence)", "duration": "\(entry.duration)",
                                           "bytes": "\(data.readableBytes)"])
    }
}
