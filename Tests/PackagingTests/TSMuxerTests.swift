import Foundation
import MediaCore
import Testing

@testable import Packaging

/// Reads an FLV file's H.264/AAC tags into packets (test-only; the server gets them over RTMP).
struct FLVFile {
    var description = StreamDescription()
    var packets: [MediaPacket] = []

    init(_ path: String) throws {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var offset = 9 + 4
        func uint24(_ at: Int) -> Int { Int(bytes[at]) << 16 | Int(bytes[at + 1]) << 8 | Int(bytes[at + 2]) }
        while offset + 11 <= bytes.count {
            let type = bytes[offset]
            let size = uint24(offset + 1)
            let time = Int64(uint24(offset + 4) | Int(bytes[offset + 7]) << 24)
            let body = Array(bytes[(offset + 11)..<(offset + 11 + size)])
            offset += 11 + size + 4
            if type == 9, body.count > 5, body[0] & 0x0F == 7 {
                let cts = Int64(Int32(bitPattern: UInt32(body[2]) << 24 | UInt32(body[3]) << 16 | UInt32(body[4]) << 8) >> 8)
                if body[1] == 0 {
                    description.video = .init(avcC: try AVCDecoderConfigurationRecord(bytes: Array(body[5...])))
                } else if body[1] == 1 {
                    packets.append(MediaPacket(kind: .video, dts: time, pts: time + cts, isKeyframe: body[0] >> 4 == 1,
                                               data: Array(body[5...])))
                }
            } else if type == 8, body.count > 2, body[0] >> 4 == 10 {
                if body[1] == 0 {
                    description.audio = .init(config: try AudioSpecificConfig(bytes: Array(body[2...])))
                } else {
                    packets.append(MediaPacket(kind: .audio, dts: time, pts: time, isKeyframe: true, data: Array(body[2...])))
                }
            }
        }
    }
}

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("fixtures")

/// The PIDs of the TS packets in `bytes`, in order.
func packetIdentifiers(_ bytes: [UInt8]) -> [Int] {
    stride(from: 0, to: bytes.count, by: 188).map { Int(bytes[$0 + 1] & 0x1F) << 8 | Int(bytes[$0 + 2]) }
}

@Suite("TS muxer")
struct TSMuxerTests {
    @Test("segments are whole TS packets and each begins with PAT and PMT before any media")
    func segments() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("av-640x360.flv").path)
        let muxer = try TSMuxer(description: file.description)
        var segments: [[UInt8]] = []
        var segmentStart: Int64?
        for packet in file.packets {
            if packet.kind == .video, packet.isKeyframe, let start = segmentStart, packet.pts - start >= 2000 {
                segments.append(try muxer.takeSegment())
                segmentStart = packet.pts
            }
            if segmentStart == nil, packet.kind == .video { segmentStart = packet.pts }
            try muxer.write(packet)
        }
        segments.append(try muxer.finish())
        #expect(segments.count == 3)
        for (index, segment) in segments.enumerated() {
            #expect(segment.count.isMultiple(of: 188), "segment \(index)")
            #expect(stride(from: 0, to: segment.count, by: 188).allSatisfy { segment[$0] == 0x47 }, "sync bytes in \(index)")
            // libav leads with its SDT (PID 0x11); PAT and PMT must precede every media packet.
            let pids = packetIdentifiers(segment).filter { $0 != 0x11 }
            #expect(Array(pids.prefix(2)) == [0, 0x1000], "segment \(index) starts with PAT, PMT: \(pids.prefix(4))")
        }
    }

    @Test("a muxer without tracks, an empty packet and a write after finish are errors, not crashes")
    func errors() throws {
        #expect(throws: LibAVError.self) { try TSMuxer(description: StreamDescription()) }
        let file = try FLVFile(fixtures.appendingPathComponent("video-only.flv").path)
        let muxer = try TSMuxer(description: file.description)
        #expect(throws: LibAVError.self) {
            try muxer.write(MediaPacket(kind: .video, dts: 0, pts: 0, isKeyframe: true, data: []))
        }
        try muxer.write(file.packets[0])
        #expect(try !muxer.finish().isEmpty)
        #expect(throws: LibAVError.self) { try muxer.write(file.packets[1]) }
    }

    @Test("a decreasing timestamp on a track is refused with libav's reason")
    func nonMonotonic() throws {
        let file = try FLVFile(fixtures.appendingPathComponent("video-only.flv").path)
        let muxer = try TSMuxer(description: file.description)
        try muxer.write(file.packets[1])
        var early = file.packets[0]
        early.dts = file.packets[1].dts - 40
        early.pts = early.dts
        #expect(throws: LibAVError.self) { try muxer.write(early) }
    }
}
