import Foundation
public import MediaCore
import NIOCore
import RTMP

/// A fixture FLV as a publisher replays it: the codec setup and the media packets, looped
/// forever with timestamps that keep increasing (loop k is shifted by k × the file's length).
public struct FLVSource: Sendable {
    public enum LoadError: Error, CustomStringConvertible {
        case unreadable(String)
        case notFLV(String)
        case noMedia(String)

        public var description: String {
            switch self {
            case .unreadable(let path): "cannot read \(path)"
            case .notFLV(let path): "\(path) is not an FLV file"
            case .noMedia(let path): "\(path) has no H.264/AAC media"
            }
        }
    }

    public let description: StreamDescription
    public let packets: [MediaPacket]
    /// One loop, in ms: the last packet's time plus one frame.
    public let loopDuration: Int64
    /// Media bits per second.
    public var bitrate: Double { Double(packets.reduce(0) { $0 + $1.data.count } * 8) / (Double(loopDuration) / 1000) }

    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw LoadError.unreadable(path) }
        let bytes = [UInt8](data)
        guard bytes.count >= 13, bytes[0] == 0x46, bytes[1] == 0x4C, bytes[2] == 0x56 else { throw LoadError.notFLV(path) }
        var demuxer = MediaDemuxer()
        var packets: [MediaPacket] = []
        var offset = Int(UInt32(bytes[5]) << 24 | UInt32(bytes[6]) << 16 | UInt32(bytes[7]) << 8 | UInt32(bytes[8])) + 4
        while offset + 11 <= bytes.count {
            let type = bytes[offset]
            let size = Int(bytes[offset + 1]) << 16 | Int(bytes[offset + 2]) << 8 | Int(bytes[offset + 3])
            let timestamp = UInt32(bytes[offset + 7]) << 24 | UInt32(bytes[offset + 4]) << 16
                | UInt32(bytes[offset + 5]) << 8 | UInt32(bytes[offset + 6])
            let start = offset + 11
            guard start + size <= bytes.count else { break }
            let body = ByteBuffer(bytes: bytes[start..<(start + size)])
            let output: MediaDemuxer.Output? = switch type {
            case 8: try? demuxer.audio(timestamp: timestamp, body: body)
            case 9: try? demuxer.video(timestamp: timestamp, body: body)
            default: nil
            }
            if case .packet(let packet) = output { packets.append(packet) }
            offset = start + size + 4
        }
        guard !packets.isEmpty, demuxer.description.video != nil || demuxer.description.audio != nil else {
            throw LoadError.noMedia(path)
        }
        self.init(description: demuxer.description, packets: packets)
    }

    public init(description: StreamDescription, packets: [MediaPacket]) {
        self.description = description
        self.packets = packets.sorted { $0.dts < $1.dts }
        let videoTimes = packets.filter { $0.kind == .video }.map(\.dts)
        let step = zip(videoTimes, videoTimes.dropFirst()).map { $1 - $0 }.min() ?? 33
        loopDuration = (self.packets.last?.dts ?? 0) + max(step, 1)
    }

    /// Packet `index` of the endless replay.
    public func packet(at index: Int) -> MediaPacket {
        var packet = packets[index % packets.count]
        let shift = Int64(index / packets.count) * loopDuration
        packet.dts += shift
        packet.pts += shift
        return packet
    }
}
