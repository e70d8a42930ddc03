import HTTPTypes
public import NIOCore
public import Packaging

/// The HLS fast path below the HTTP codec: at the head of the pipeline, it reads the bytes of the
/// plain requests a player repeats all the time (`GET`/`HEAD` of an open channel's playlist or a
/// whole segment, HTTP/1.1, no body, nothing but ordinary headers) and writes the answer's bytes
/// itself. Parsing, converting and encoding through NIO's codec and HTTPTypes cost more than
/// serving such a request from memory.
///
/// Anything else — another method or version, a query, `Range`, `Origin`, `Connection` other than
/// `keep-alive`, a body, `Expect`, `Upgrade`, folded or bare-LF lines, a head over 8 KiB, a file
/// not in memory — turns the connection over to the codec from that request on, its bytes
/// untouched: the decoder starts at a request boundary, every later request goes the codec's way
/// (where `HLSFastPath` and the router answer it), and responses keep the requests' order.
/// The answers are `HLSFastPath`'s, byte for byte.
final class HLSRawFastPath: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let maxHead = 8 << 10

    private let store: SegmentStore
    private let isOpen: @Sendable (_ channel: String) -> Bool
    private let onPlaylist: (@Sendable (_ channel: String, _ address: SocketAddress?, _ userAgent: String?) -> Void)?
    private let serverName: String
    private var date = HTTPDate()
    /// Bytes of a request head not complete yet.
    private var pending: ByteBuffer?
    /// The codec has the connection.
    private var passing = false
    /// The last playlist head on this connection, reused while the playlist and the second are the same.
    private var lastPlaylist: (channel: String, date: String, body: ByteBuffer, head: ByteBuffer)?

    init(store: SegmentStore, serverName: String, isOpen: @escaping @Sendable (_ channel: String) -> Bool,
         onPlaylist: (@Sendable (_ channel: String, _ address: SocketAddress?, _ userAgent: String?) -> Void)?) {
        self.store = store
        self.serverName = serverName
        self.isOpen = isOpen
        self.onPlaylist = onPlaylist
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !passing else {
            context.fireChannelRead(data)
            return
        }
        var bytes = unwrapInboundIn(data)
        if var pending {
            self.pending = nil
            pending.writeBuffer(&bytes)
            bytes = pending
        }
        var answered = false
        defer { if answered { context.flush() } }
        while bytes.readableBytes > 0 {
            switch Self.parse(bytes, userAgent: onPlaylist != nil) {
            case .needMore:
                pending = bytes
                return
            case .request(let length, let isHead, let path, let userAgent):
                guard let hit = HLSFastPath.lookup(path: path, store: store, isOpen: isOpen) else { break }
                respond(hit, isHead: isHead, context: context)
                if hit.playlist, let onPlaylist { onPlaylist(hit.channel, context.channel.remoteAddress, userAgent) }
                bytes.moveReaderIndex(forwardBy: length)
                answered = true
                continue
            case .other:
                break
            }
            // Not ours: the codec takes this request and everything after it.
            passing = true
            if answered {
                answered = false
                context.flush()
            }
            context.fireChannelRead(wrapInboundOut(bytes))
            return
        }
    }

    private func respond(_ hit: HLSFastPath.Hit, isHead: Bool, context: ChannelHandlerContext) {
        let now = date.now()
        let head: ByteBuffer
        if hit.playlist, let last = lastPlaylist, last.channel == hit.channel, last.date == now, last.body == hit.body {
            head = last.head
        } else {
            var text = "HTTP/1.1 200 OK\r\n"
            for (name, value) in hit.fields { text += "\(name.rawName): \(value)\r\n" }
            text += "Content-Length: \(hit.body.readableBytes)\r\nDate: \(now)\r\nServer: \(serverName)\r\n\r\n"
            head = context.channel.allocator.buffer(string: text)
            if hit.playlist { lastPlaylist = (hit.channel, now, hit.body, head) }
        }
        context.write(wrapOutboundOut(head), promise: nil)
        if !isHead { context.write(wrapOutboundOut(hit.body), promise: nil) }
    }

    enum Parsed: Equatable, Sendable {
        /// The head is not complete yet.
        case needMore
        /// A plain GET or HEAD; `length` bytes with the blank line.
        case request(length: Int, isHead: Bool, path: String, userAgent: String?)
        /// Anything the codec must see.
        case other
    }

    /// Reads the request head at the start of `buffer` (without consuming it).
    static func parse(_ buffer: ByteBuffer, userAgent wantsUserAgent: Bool = false) -> Parsed {
        buffer.withUnsafeReadableBytes { bytes in
            let isHead: Bool
            if bytes.starts(with: "GET ".utf8) {
                isHead = false
            } else if bytes.starts(with: "HEAD ".utf8) {
                isHead = true
            } else {
                // A prefix of either method may still become one.
                let prefixOfMethod = "GET ".utf8.starts(with: bytes) || "HEAD ".utf8.starts(with: bytes)
                return prefixOfMethod ? .needMore : .other
            }
            // The end of the head: the first CRLF CRLF. A bare LF is the codec's to judge.
            let limit = min(bytes.count, maxHead)
            var end = -1
            var index = 1
            while index < limit {
                if bytes[index] == 10 {
                    guard bytes[index - 1] == 13 else { return .other }
                    if index >= 3, bytes[index - 2] == 10, bytes[index - 3] == 13 {
                        end = index + 1
                        break
                    }
                }
                index += 1
            }
            guard end > 0 else { return bytes.count >= maxHead ? .other : .needMore }
            var lines = UnsafeRawBufferPointer(rebasing: bytes[..<(end - 4)]).split(separator: 10, omittingEmptySubsequences: false)
            // Request line: METHOD SP /path SP HTTP/1.1 CR
            let requestLine = lines.removeFirst()
            let parts = requestLine.split(separator: 32, omittingEmptySubsequences: false)
            guard parts.count == 3, parts[2].elementsEqual("HTTP/1.1\r".utf8) else { return .other }
            let target = parts[1]
            guard target.first == UInt8(ascii: "/"),
                  !target.contains(where: { $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "#") || $0 == UInt8(ascii: "%") || $0 < 33 || $0 > 126 })
            else { return .other }
            var host = false
            var userAgent: String?
            for (number, line) in lines.enumerated() {
                // Every line but the last still ends in CR (the last one's CRLF was cut with the blank line).
                let body = number == lines.count - 1 ? line[...] : line.dropLast()
                guard number == lines.count - 1 || line.last == 13, let first = body.first, first != 32, first != 9,
                      !body.contains(13), let colon = body.firstIndex(of: UInt8(ascii: ":"))
                else { return .other }
                let name = body[..<colon]
                let value = body[(colon + 1)...].drop { $0 == 32 || $0 == 9 }
                if equalsIgnoringCase(name, "host") {
                    host = true
                } else if equalsIgnoringCase(name, "user-agent") {
                    if wantsUserAgent { userAgent = String(decoding: value, as: UTF8.self) }
                } else if equalsIgnoringCase(name, "connection") {
                    guard equalsIgnoringCase(value, "keep-alive") else { return .other }
                } else if equalsIgnoringCase(name, "content-length") {
                    guard value.elementsEqual("0".utf8) else { return .other }
                } else if passedHeaders.contains(where: { equalsIgnoringCase(name, $0) }) {
                    return .other
                }
            }
            guard host else { return .other }
            return .request(length: end, isHead: isHead, path: String(decoding: target, as: UTF8.self), userAgent: userAgent)
        }
    }

    /// A request with any of these is the codec's (and the router's).
    private static let passedHeaders = ["range", "origin", "transfer-encoding", "expect", "upgrade"]

    private static func equalsIgnoringCase(_ bytes: some Collection<UInt8>, _ lowercase: String) -> Bool {
        bytes.count == lowercase.utf8.count
            && zip(bytes, lowercase.utf8).allSatisfy { ($0 >= 65 && $0 <= 90 ? $0 | 0x20 : $0) == $1 }
    }
}
