#if canImport(Glibc)
import Glibc
#endif
public import HTTPTypes
public import NIOCore
public import NIOHTTPTypes
public import Packaging

/// Answers the requests an HLS audience makes all the time — `GET`/`HEAD` of an open channel's
/// playlist or a whole segment held in memory — on the event loop, from the `SegmentStore`,
/// without going through the router and its per-request task. Everything else passes through to
/// Hummingbird unchanged: query strings (signed URLs), `Range`, `Origin` (CORS), `Connection: close`,
/// private channels, misses (the router's 404 and 403 say why). The answers are the router's
/// answers, byte for byte in status, headers and body.
///
/// HTTP/1.1 pipelining keeps its order: while a request passed to Hummingbird has not been
/// answered (its response `.end` has not gone out through this handler), later requests pass
/// through too.
public final class HLSFastPath: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = HTTPRequestPart
    public typealias InboundOut = HTTPRequestPart
    public typealias OutboundIn = HTTPResponsePart
    public typealias OutboundOut = HTTPResponsePart

    private let store: SegmentStore
    private let isOpen: @Sendable (_ channel: String) -> Bool
    /// Told of each playlist answered here (viewer counting), as `HLSRoutes` tells of its own;
    /// nil when nobody counts (no address or header is looked at then).
    private let onPlaylist: (@Sendable (_ channel: String, _ address: SocketAddress?, _ userAgent: String?) -> Void)?
    private let serverName: String
    /// Requests handed to Hummingbird whose response has not ended yet.
    private var inFlight = 0
    /// The current request is Hummingbird's (its body and end follow it there).
    private var passing = false
    /// The answer to the current request, sent when its `.end` arrives.
    private var answer: Answer?

    struct Answer {
        var head: HTTPResponse
        var body: ByteBuffer?
        var channel: String?
        var playlist = false
    }
    private var date = HTTPDate()
    /// The last playlist answer on this connection: a player (or a load tester) asking again
    /// within the same second for an unchanged playlist gets the same head, not a rebuilt one.
    private var lastPlaylist: (channel: String, date: String, answer: Answer)?

    /// The byte-level companion this handler puts at the head of the pipeline, if any.
    private let rawPath: HLSRawFastPath?

    /// - Parameters:
    ///   - isOpen: whether a channel may be read without a signed URL.
    ///   - rawRequests: also answer plain requests from their bytes, before the HTTP codec
    ///     (`HLSRawFastPath`); for a server's pipeline, where this handler sits after the codec.
    public init(store: SegmentStore, serverName: String, isOpen: @escaping @Sendable (_ channel: String) -> Bool,
                onPlaylist: (@Sendable (_ channel: String, _ address: SocketAddress?, _ userAgent: String?) -> Void)? = nil,
                rawRequests: Bool = false) {
        self.store = store
        self.serverName = serverName
        self.isOpen = isOpen
        self.onPlaylist = onPlaylist
        rawPath = rawRequests ? HLSRawFastPath(store: store, serverName: serverName, isOpen: isOpen, onPlaylist: onPlaylist) : nil
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        guard let rawPath else { return }
        do {
            try context.pipeline.syncOperations.addHandler(rawPath, position: .first)
        } catch {
            // Without it every request takes the codec's way, which answers them all the same.
            context.fireErrorCaught(error)
        }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            if inFlight == 0, !passing, let answer = answer(request) {
                self.answer = answer
                if answer.playlist, let channel = answer.channel, let onPlaylist {
                    onPlaylist(channel, context.channel.remoteAddress, request.headerFields[.userAgent])
                }
            } else {
                passing = true
                inFlight += 1
                context.fireChannelRead(data)
            }
        case .body:
            if answer == nil { context.fireChannelRead(data) }
        case .end:
            guard let answer else {
                passing = false
                context.fireChannelRead(data)
                return
            }
            self.answer = nil
            context.write(wrapOutboundOut(.head(answer.head)), promise: nil)
            if let body = answer.body { context.write(wrapOutboundOut(.body(body)), promise: nil) }
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { inFlight = max(0, inFlight - 1) }
        context.write(data, promise: promise)
    }

    /// The response to `request` if it is one this handler answers.
    func answer(_ request: HTTPRequest) -> Answer? {
        let isHead = request.method == .head
        guard request.method == .get || isHead, let path = request.path,
              request.headerFields[.range] == nil, request.headerFields[.origin] == nil,
              request.headerFields[.connection]?.lowercased() != "close",
              let hit = Self.lookup(path: path, store: store, isOpen: isOpen)
        else { return nil }
        let now = date.now()
        if hit.playlist, let last = lastPlaylist, last.channel == hit.channel, last.date == now, last.answer.body == hit.body {
            var answer = last.answer
            if isHead { answer.body = nil }
            return answer
        }
        var fields = HTTPFields()
        for (name, value) in hit.fields { fields[name] = value }
        fields[.contentLength] = String(hit.body.readableBytes)
        fields[.date] = now
        fields[.server] = serverName
        let answer = Answer(head: HTTPResponse(status: .ok, headerFields: fields), body: hit.body, channel: hit.channel,
                            playlist: hit.playlist)
        if hit.playlist { lastPlaylist = (hit.channel, now, answer) }
        guard !isHead else { return Answer(head: answer.head, body: nil, channel: hit.channel, playlist: hit.playlist) }
        return answer
    }

    /// What the fast path serves at `path`: an open channel's playlist or one of its segments.
    struct Hit {
        var channel: String
        var playlist: Bool
        var body: ByteBuffer
        /// The fields that depend on the file, in the router's order; then come Content-Length, Date, Server.
        var fields: [(HTTPField.Name, String)] { playlist ? Self.playlistFields : Self.segmentFields }

        static let playlistFields: [(HTTPField.Name, String)] = [
            (.contentType, "application/vnd.apple.mpegurl"), (.cacheControl, "no-cache"),
        ]
        static let segmentFields: [(HTTPField.Name, String)] = [
            (.contentType, "video/mp2t"), (.cacheControl, "public, max-age=86400, immutable"), (.acceptRanges, "bytes"),
        ]
    }

    /// `/live/<channel>/index.m3u8` or `/live/<channel>/<sequence>.ts`, nothing more (no query, no
    /// further segments), of an open channel whose file is in memory.
    static func lookup(path: String, store: SegmentStore, isOpen: (String) -> Bool) -> Hit? {
        guard path.hasPrefix("/live/") else { return nil }
        let rest = path.utf8.dropFirst(6)
        guard let slash = rest.firstIndex(of: UInt8(ascii: "/")) else { return nil }
        let channel = String(Substring(rest[..<slash]))
        let file = Substring(rest[rest.index(after: slash)...])
        guard !channel.isEmpty, !file.isEmpty, !file.utf8.contains(UInt8(ascii: "/")),
              !file.utf8.contains(UInt8(ascii: "?")), isOpen(channel)
        else { return nil }
        if file == "index.m3u8" {
            return store.playlistBytes(channel: channel).map { Hit(channel: channel, playlist: true, body: $0) }
        }
        guard file.hasSuffix(".ts"), let sequence = Int(file.dropLast(3)), sequence >= 0,
              let segment = store.segment(channel: channel, sequence: sequence)
        else { return nil }
        return Hit(channel: channel, playlist: false, body: segment)
    }
}

/// The `Date` header (IMF-fixdate), formatted once per second.
struct HTTPDate {
    private var second = -1
    private var text = ""

    mutating func now() -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        guard spec.tv_sec != second else { return text }
        second = spec.tv_sec
        var seconds = spec.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        text = "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
        return text
    }
}
