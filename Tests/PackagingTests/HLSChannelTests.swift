import Foundation
import Logging
import MediaCore
import NIOCore
import Testing

@testable import Packaging

/// Drives an `HLSChannel` with packets and records the playlist after every segment.
private struct ChannelRun {
    let store = SegmentStore(retainedAfterWindow: 100)
    let channel: HLSChannel
    /// The playlist each time it changed, in order.
    private(set) var snapshots: [MediaPlaylist] = []

    init(segmentDuration: Double, window: Int) {
        channel = HLSChannel(name: "test", configuration: HLSConfiguration(segmentDuration: segmentDuration, windowLength: window),
                             store: store, logger: Logger(label: "hls-channel-test") { _ in SwiftLogNoOpLogHandler() })
    }

    var playlist: MediaPlaylist? { store.playlistModel(channel: "test") }

    mutating func publish(_ description: StreamDescription, _ packets: [MediaPacket]) throws {
        channel.beginPublish()
        try channel.setDescription(description)
        for packet in packets {
            try channel.write(packet)
            record()
        }
        try channel.endPublish()
        record()
    }

    private mutating func record() {
        guard let playlist, playlist != snapshots.last else { return }
        snapshots.append(playlist)
    }

    /// Every entry that was ever listed, in order (the window drops the oldest).
    var allEntries: [MediaPlaylist.Entry] {
        var seen: [Int: MediaPlaylist.Entry] = [:]
        for snapshot in snapshots { for entry in snapshot.entries { seen[entry.sequence] = entry } }
        return seen.keys.sorted().compactMap { seen[$0] }
    }

    /// RFC 8216 rules every snapshot must keep: TARGETDURATION ≥ each rounded EXTINF, the window
    /// length, and MEDIA-SEQUENCE = the first entry's number, advanced by exactly the segments dropped.
    func expectWellFormed(window: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        guard let first = allEntries.first?.sequence else {
            Issue.record("no segments", sourceLocation: sourceLocation)
            return
        }
        for (index, snapshot) in snapshots.enumerated() {
            for entry in snapshot.entries {
                #expect(Int(entry.duration.rounded()) <= snapshot.targetDuration,
                        "EXTINF \(entry.duration) over TARGETDURATION \(snapshot.targetDuration)", sourceLocation: sourceLocation)
            }
            #expect(snapshot.entries.count <= window, sourceLocation: sourceLocation)
            #expect(snapshot.mediaSequence == snapshot.entries.first?.sequence, sourceLocation: sourceLocation)
            let published = snapshot.entries.last.map { $0.sequence - first + 1 } ?? 0
            #expect(snapshot.mediaSequence == first + max(0, published - window), "snapshot \(index)",
                    sourceLocation: sourceLocation)
            #expect(snapshot.entries.map(\.sequence) == Array(snapshot.mediaSequence..<(snapshot.mediaSequence + snapshot.entries.count)),
                    sourceLocation: sourceLocation)
        }
    }
}

/// `count` packets cycled from `source`, re-timed every `interval` ms from 0; keyframes only where `keyframe` says.
private func retimed(_ source: [MediaPacket], count: Int, interval: Int64, keyframe: (Int) -> Bool) -> [MediaPacket] {
    (0..<count).map { index in
        var packet = source[index % source.count]
        packet.dts = Int64(index) * interval
        packet.pts = packet.dts
        packet.isKeyframe = keyframe(index)
        return packet
    }
}

/// The PTS (90 kHz) of the first PES packet on `pid` in a segment.
private func firstPTS(_ segment: [UInt8], pid: Int) -> Int64? {
    for start in stride(from: 0, to: segment.count - 187, by: 188) {
        guard Int(segment[start + 1] & 0x1F) << 8 | Int(segment[start + 2]) == pid, segment[start + 1] & 0x40 != 0 else { continue }
        var offset = start + 4
        if segment[start + 3] & 0x20 != 0 { offset += 1 + Int(segment[start + 4]) }
        guard offset + 14 <= start + 188, segment[offset..<offset + 3] == [0, 0, 1], segment[offset + 7] & 0x80 != 0 else {
            return nil
        }
        let field = segment[(offset + 9)...(offset + 13)].map(Int64.init)
        return (field[0] >> 1 & 7) << 30 | field[1] << 22 | (field[2] >> 1) << 15 | field[3] << 7 | field[4] >> 1
    }
    return nil
}

@Suite("HLS channel segmenting")
struct HLSChannelTests {
    /// av-640x360: 6 s, a keyframe each second (PTS 67, 1067, … ms: the first frame's CTS is 67 ms).
    @Test("video streams are cut at the first keyframe past the target; window and MEDIA-SEQUENCE follow the configuration",
          arguments: [
            (target: 1.0, window: 3, durations: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], targetDuration: 1),
            (target: 2.5, window: 2, durations: [3.0, 3.0], targetDuration: 3),
            (target: 0.5, window: 1, durations: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0], targetDuration: 1),
            (target: 4.0, window: 6, durations: [4.0, 2.0], targetDuration: 4),
          ])
    func videoCuts(target: Double, window: Int, durations: [Double], targetDuration: Int) throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        var run = ChannelRun(segmentDuration: target, window: window)
        try run.publish(file.description, file.packets)
        let entries = run.allEntries
        #expect(entries.count == durations.count)
        for (entry, expected) in zip(entries, durations) {
            // The last segment ends one frame after its last picture: a frame interval is 33 or 34 ms.
            #expect(abs(entry.duration - expected) <= 0.002, "segment \(entry.sequence): \(entry.duration) s, expected \(expected)")
        }
        let final = try #require(run.playlist)
        #expect(final.entries.count == min(window, durations.count))
        #expect(final.targetDuration == targetDuration)
        run.expectWellFormed(window: window)
        // Every segment holds whole TS packets starting with PAT.
        for entry in entries {
            let data = Array(try #require(run.store.segment(channel: "test", sequence: entry.sequence)).readableBytesView)
            #expect(data.count.isMultiple(of: 188) && data.first == 0x47 && packetIdentifiers(data).first == 0)
        }
    }

    @Test("a GOP longer than ten targets (at least 20 s) is cut without a keyframe; TARGETDURATION grows to fit", arguments: [
        (target: 2.0, frames: 1250, durations: [20.0, 20.0, 10.0]),
        (target: 3.0, frames: 1500, durations: [30.0, 30.0]),
        (target: 1.0, frames: 600, durations: [20.0, 4.0]),
    ])
    func longGOP(target: Double, frames: Int, durations: [Double]) throws {
        let file = try FLVFile(fixtures.appendingPathComponent("video-only.flv").path)
        // 25 fps, one keyframe at the very start and none after.
        let packets = retimed(file.packets(.video), count: frames, interval: 40) { $0 == 0 }
        var run = ChannelRun(segmentDuration: target, window: 6)
        try run.publish(file.description, packets)
        let entries = run.allEntries
        #expect(entries.map(\.duration) == durations)
        let final = try #require(run.playlist)
        #expect(final.targetDuration == Int(durations.max()!.rounded()))
        run.expectWellFormed(window: 6)
    }

    @Test("audio-only streams are cut on time: each segment spans the target up to one frame more, and they add up", arguments: [
        (target: 2.0, window: 6), (target: 1.5, window: 2), (target: 0.5, window: 4),
    ])
    func audioOnly(target: Double, window: Int) throws {
        let file = try FLVFile(fixtures.appendingPathComponent("audio-only.flv").path)
        let audio = file.packets(.audio)
        var run = ChannelRun(segmentDuration: target, window: window)
        try run.publish(file.description, audio)
        let entries = run.allEntries
        // 44.1 kHz AAC: a frame is 1024 samples, 23.2 ms (RTMP times are whole milliseconds).
        let frame = 1024.0 / 44.1
        for entry in entries.dropLast() {
            #expect(entry.duration * 1000 >= target * 1000 - 0.5 && entry.duration * 1000 < target * 1000 + frame + 1,
                    "segment \(entry.sequence): \(entry.duration) s for a \(target) s target")
        }
        let last = try #require(entries.last)
        #expect(last.duration > 0 && last.duration * 1000 < target * 1000 + frame + 1)
        // Segment lengths come from the packets' times: together they span the whole stream and one frame.
        let span = Double(audio.last!.dts - audio.first!.dts) + 23
        #expect(abs(entries.reduce(0) { $0 + $1.duration } * 1000 - span) < 1, "durations add up to \(span) ms")
        run.expectWellFormed(window: window)
    }

    @Test("a first frame presented before its decode time (negative composition time) starts the timeline at 0, nothing dropped")
    func negativeCompositionTimeAtStart() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("video-only.flv").path)
        let packets = file.packets(.video).map { packet in
            var packet = packet
            packet.pts = packet.dts - 80
            return packet
        }
        var run = ChannelRun(segmentDuration: 1, window: 6)
        try run.publish(file.description, packets)
        #expect(run.channel.droppedPackets == 0)
        let entries = run.allEntries
        #expect(entries.map(\.duration) == [1.0, 1.0, 1.0, 1.0])
        let first = Array(try #require(entries.first.flatMap { run.store.segment(channel: "test", sequence: $0.sequence) }).readableBytesView)
        #expect(firstPTS(first, pid: 0x100) == 0)
        let second = Array(try #require(entries.dropFirst().first.flatMap { run.store.segment(channel: "test", sequence: $0.sequence) })
            .readableBytesView)
        #expect(firstPTS(second, pid: 0x100) == 90_000)
    }

    @Test("a second publish continues the playlist after a DISCONTINUITY, numbering and window carrying on")
    func republish() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("video-only.flv").path)
        var run = ChannelRun(segmentDuration: 1, window: 5)
        try run.publish(file.description, file.packets)
        let firstCount = run.allEntries.count
        #expect(firstCount == 4)
        try run.publish(file.description, file.packets)
        let entries = run.allEntries
        #expect(entries.count == 2 * firstCount)
        #expect(entries.map(\.discontinuity) == [Bool](repeating: false, count: firstCount) + [true]
            + [Bool](repeating: false, count: firstCount - 1))
        #expect(run.playlist?.entries.count == 5)
        run.expectWellFormed(window: 5)
    }
}
