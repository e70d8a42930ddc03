public import Hummingbird
import NIOCore
public import Packaging

/// Serves live HLS from the `SegmentStore`: `/<channel>/index.m3u8` and `/<channel>/<n>.ts`.
public struct HLSRoutes<Context: RequestContext>: Sendable {
    /// Whether a request may read a channel.
    public enum Access: Sendable, Equatable {
        case open
        /// Allowed by a signed URL: the playlist's URIs carry `query` on to the segments.
        case signed(query: String)
        case denied(String)
    }

    let store: SegmentStore
    let access: @Sendable (_ channel: String, _ query: String?) -> Access
    /// The base URL of another node that publishes the channel (several nodes sharing a registry).
    let elsewhere: (@Sendable (_ channel: String) async -> String?)?
    /// Told of each playlist served (viewer counting).
    let onPlaylist: @Sendable (_ channel: String, _ request: Request, _ context: Context) -> Void

    public init(store: SegmentStore, access: @escaping @Sendable (_ channel: String, _ query: String?) -> Access = { _, _ in .open },
                elsewhere: (@Sendable (_ channel: String) async -> String?)? = nil,
                onPlaylist: @escaping @Sendable (_ channel: String, _ request: Request, _ context: Context) -> Void = { _, _, _ in }) {
        self.store = store
        self.access = access
        self.elsewhere = elsewhere
        self.onPlaylist = onPlaylist
    }

    /// A channel live on another node: a 302 to the same path and query there. The player then
    /// reads the playlist from that node and resolves relative segment URIs against it, so it
    /// sees one continuous playlist whichever node it asked first.
    private func redirect(_ channel: String, _ request: Request) async -> Response? {
        guard let elsewhere, let base = await elsewhere(channel) else { return nil }
        let query = request.uri.query.map { "?\($0)" } ?? ""
        return Response(status: .found, headers: [.location: base + request.uri.path + query, .cacheControl: "no-cache"])
    }

    /// Throws 403 when the channel is private and the query does not sign for it.
    private func check(_ channel: String, _ request: Request) throws -> Access {
        let verdict = access(channel, request.uri.query)
        if case .denied(let reason) = verdict { throw HTTPError(.forbidden, message: reason) }
        return verdict
    }

    public var routes: RouteCollection<Context> {
        let routes = RouteCollection(context: Context.self)
        let playlist: @Sendable (Request, Context) async throws -> Response = { request, context in
            let channel = try context.parameters.require("channel")
            let access = try check(channel, request)
            if let moved = await redirect(channel, request) { return moved }
            guard var playlist = store.playlist(channel: channel) else {
                throw HTTPError(.notFound, message: "no live stream on channel \(channel)")
            }
            if case .signed(let query) = access { playlist = Self.carrying(query, in: playlist) }
            onPlaylist(channel, request, context)
            return Response(
                status: .ok,
                headers: [.contentType: "application/vnd.apple.mpegurl", .cacheControl: "no-cache"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: playlist)))
        }
        let segment: @Sendable (Request, Context) async throws -> Response = { request, context in
            let channel = try context.parameters.require("channel")
            let name = try context.parameters.require("segment")
            _ = try check(channel, request)
            if let moved = await redirect(channel, request) { return moved }
            guard name.hasSuffix(".ts"), let sequence = Int(name.dropLast(3)), sequence >= 0,
                  let data = store.segment(channel: channel, sequence: sequence)
            else {
                throw HTTPError(.notFound, message: "no segment \(name) on channel \(channel)")
            }
            return ByteRange.respond(
                to: request, data: data,
                headers: [.contentType: "video/mp2t", .cacheControl: "public, max-age=86400, immutable"])
        }
        routes.get("{channel}/index.m3u8", use: playlist)
        routes.get("{channel}/{segment}", use: segment)
        // HEAD: the GET response's headers (Content-Length included) without its body.
        routes.head("{channel}/index.m3u8") { try await playlist($0, $1).createHeadResponse() }
        routes.head("{channel}/{segment}") { try await segment($0, $1).createHeadResponse() }
        return routes
    }
}

extension HLSRoutes {
    /// Appends `?query` to every URI line of a playlist, so a signed playlist's segments are signed too.
    static func carrying(_ query: String, in playlist: String) -> String {
        playlist.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.isEmpty || line.hasPrefix("#") ? String(line) : "\(line)?\(query)"
        }.joined(separator: "\n")
    }
}

/// Single-range `Range: bytes=…` support (RFC 9110 §14) for in-memory bodies.
enum ByteRange {
    static func respond(to request: Request, data: ByteBuffer, headers: HTTPFields) -> Response {
        var headers = headers
        headers[.acceptRanges] = "bytes"
        guard let header = request.headers[.range] else {
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: data))
        }
        let length = data.readableBytes
        guard let range = parse(header, length: length),
              let slice = data.getSlice(at: data.readerIndex + range.lowerBound, length: range.count) else {
            headers[.contentRange] = "bytes */\(length)"
            return Response(status: .rangeNotSatisfiable, headers: headers)
        }
        headers[.contentRange] = "bytes \(range.lowerBound)-\(range.upperBound - 1)/\(length)"
        return Response(status: .partialContent, headers: headers, body: ResponseBody(byteBuffer: slice))
    }

    /// `bytes=a-b`, `bytes=a-` or `bytes=-n`; nil when unsatisfiable or not a single range.
    static func parse(_ header: String, length: Int) -> Range<Int>? {
        guard header.hasPrefix("bytes="), length > 0 else { return nil }
        let spec = header.dropFirst(6)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { return nil }
        let first = spec[..<dash].trimmingSpaces
        let last = spec[spec.index(after: dash)...].trimmingSpaces
        if first.isEmpty {
            guard let suffix = Int(last), suffix > 0 else { return nil }
            return max(0, length - suffix)..<length
        }
        guard let start = Int(first), start >= 0, start < length else { return nil }
        if last.isEmpty { return start..<length }
        guard let end = Int(last), end >= start else { return nil }
        return start..<(end >= length - 1 ? length : end + 1)
    }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var result = self
        while result.first == " " { result.removeFirst() }
        while result.last == " " { result.removeLast() }
        return result
    }
}
