public import AsyncHTTPClient
import Foundation
public import Logging
public import NIOCore
import NIOHTTP1
public import ServiceLifecycle

/// nginx-rtmp's notify calls (`on_play`, `on_publish`, `on_record_done` …): an HTTP POST of
/// `application/x-www-form-urlencoded` fields (or a GET with them as the query string, nginx's
/// `notify_method get`). A 2xx answer allows, a 3xx redirects to its `Location`, anything else —
/// an error status, a timeout, no connection — refuses.
/// Runs as a service so its HTTP client is shut down after everything that calls it.
public final class NotifyClient: Service, Sendable {
    public enum Outcome: Sendable, Equatable {
        case allow
        case redirect(location: String)
        case deny(reason: String)
    }

    private let http: HTTPClient
    private let timeout: TimeAmount
    private let method: NotifyConfiguration.Method
    private let logger: Logger

    public init(timeout: TimeAmount = .seconds(10), method: NotifyConfiguration.Method = .post, logger: Logger) {
        // A 3xx is an answer (nginx-rtmp's redirect), not something to follow.
        var configuration = HTTPClient.Configuration(redirectConfiguration: .disallow)
        configuration.timeout = .init(connect: timeout, read: timeout)
        http = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        self.timeout = timeout
        self.method = method
        self.logger = logger
    }

    /// A client with `configuration`'s method and timeout.
    public convenience init(configuration: NotifyConfiguration, logger: Logger) {
        let (seconds, attoseconds) = configuration.timeout.components
        self.init(timeout: .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000),
                  method: configuration.method, logger: logger)
    }

    public func run() async throws {
        // Cancelled or shut down gracefully: either way the client closes its connections.
        do {
            try await gracefulShutdown()
        } catch is CancellationError {}
        try await http.shutdown()
    }

    /// Sends `fields` (then the client's own query string, as nginx-rtmp appends it) to `url`.
    public func call(_ url: String, fields: [(String, String)], clientQuery: String? = nil) async -> Outcome {
        let form = Self.formBody(fields, clientQuery: clientQuery)
        var request: HTTPClientRequest
        switch method {
        case .post:
            request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            request.body = .bytes(ByteBuffer(string: form))
        case .get:
            request = HTTPClientRequest(url: Self.getURL(url, form: form))
            request.method = .GET
        }
        request.headers.add(name: "User-Agent", value: "Estuary")
        let call = fields.first { $0.0 == "call" }?.1 ?? "notify"
        do {
            let response = try await http.execute(request, timeout: timeout)
            // The body is not used; read a little of it so the connection can be reused.
            _ = try? await response.body.collect(upTo: 64 << 10)
            switch response.status.code {
            case 200..<300:
                return .allow
            case 300..<400:
                guard let location = response.headers.first(name: "Location"), !location.isEmpty else {
                    return .deny(reason: "\(call) hook answered \(response.status.code) without a Location")
                }
                return .redirect(location: location)
            default:
                return .deny(reason: "\(call) hook answered \(response.status.code)")
            }
        } catch {
            logger.warning("notify hook failed", metadata: ["call": "\(call)", "error": "\(error)"])
            return .deny(reason: "\(call) hook unreachable: \(error)")
        }
    }

    /// nginx-rtmp puts the fields after a `?`; a URL with a query of its own gets them after a `&`.
    static func getURL(_ url: String, form: String) -> String {
        url + (url.contains("?") ? "&" : "?") + form
    }

    /// `name=value&…`, percent-encoded; the client's query is appended as sent.
    static func formBody(_ fields: [(String, String)], clientQuery: String?) -> String {
        var body = fields.map { "\($0.0)=\(formEncoded($0.1))" }.joined(separator: "&")
        if let clientQuery, !clientQuery.isEmpty { body += "&" + clientQuery }
        return body
    }

    static func formEncoded(_ value: String) -> String {
        var out = ""
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."),
                 UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        return out
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
