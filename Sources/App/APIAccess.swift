import Auth
import Crypto
import Foundation
import Hummingbird
import Logging
import Storage
import NIOCore

/// Guards the operator's routes (streams, recordings, relays): an administrator's access token
/// opens them; so does `Authorization: Bearer <api token>` with `--api-token`; without an API
/// token, loopback clients are answered too (a laptop's own tools, nothing from the network).
/// Any other account's token gets 403.
struct APIAccessMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let token: String?

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let identity = context.identity {
            guard identity.isAdmin else { throw HTTPError(.forbidden, message: "this route is for administrators") }
        } else if let token {
            guard let header = request.headers[.authorization], header.hasPrefix("Bearer "),
                  Self.constantTimeEqual(Array(header.utf8.dropFirst(7)), Array(token.utf8))
            else {
                throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer"], message: "a valid API token is required")
            }
        } else {
            guard Self.isLoopback(context.remoteAddress) else {
                throw HTTPError(.forbidden, message: "the API answers loopback clients only until --api-token is set")
            }
        }
        return try await next(request, context)
    }

    static func isLoopback(_ address: SocketAddress?) -> Bool {
        guard let ip = address?.ipAddress else { return false }
        return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        // Compare digests so the time does not depend on where (or whether) lengths differ.
        let left = SHA256.hash(data: a), right = SHA256.hash(data: b)
        return zip(left, right).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// JSON errors for the API: `{"error": {"code": "not_found", "message": "…"}}` with the status.
/// Whatever else goes wrong is logged and answered 500 with no detail.
struct APIErrorMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError {
            return Self.json(error.status, error.body ?? error.status.reasonPhrase, headers: error.headers)
        } catch let error as DecodingError {
            return Self.json(.badRequest, "malformed JSON body: \(Self.describe(error))")
        } catch let error as any HTTPResponseError {
            return Self.json(error.status, error.status.reasonPhrase)
        } catch where Storage.isUnavailable(error) {
            logger.error("API request failed: database unavailable", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return Self.json(.serviceUnavailable, "the database is unavailable; retry later", headers: [.retryAfter: "5"])
        } catch {
            logger.error("API request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return Self.json(.internalServerError, "internal error")
        }
    }

    static func json(_ status: HTTPResponse.Status, _ message: String, headers: HTTPFields = [:]) -> Response {
        var headers = headers
        headers[.contentType] = "application/json"
        let document = ["error": ["code": code(status), "message": message]]
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let body = (try? encoder.encode(document)) ?? Data(#"{"error":{"code":"internal","message":"?"}}"#.utf8)
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// The status's reason phrase as a machine-readable code: 404 → `not_found`.
    static func code(_ status: HTTPResponse.Status) -> String {
        status.reasonPhrase.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "_" }.reduce(into: "") { $0.append($1) }
    }

    static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): "missing field '\(key.stringValue)'"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            context.codingPath.isEmpty ? context.debugDescription
                : "field '\(context.codingPath.map(\.stringValue).joined(separator: "."))': \(context.debugDescription)"
        @unknown default: "\(error)"
        }
    }
}

/// One log line per API request: method, path (never the query: tokens may travel there), status,
/// time taken, and the account when there is one.
struct RequestLogMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            log(request, context: context, status: response.status.code, since: start)
            return response
        } catch let error as any HTTPResponseError {
            log(request, context: context, status: error.status.code, since: start)
            throw error
        } catch {
            log(request, context: context, status: 500, since: start)
            throw error
        }
    }

    private func log(_ request: Request, context: Context, status: Int, since start: ContinuousClock.Instant) {
        let elapsed = ContinuousClock.now - start
        var metadata: Logger.Metadata = [
            "method": "\(request.method)", "path": "\(request.uri.path)", "status": "\(status)",
            "ms": "\(elapsed.components.seconds * 1000 + elapsed.components.attoseconds / 1_000_000_000_000_000)",
            "client": "\(context.remoteAddress?.ipAddress ?? "?")",
        ]
        if let identity = context.identity { metadata["user"] = "\(identity.userID)" }
        logger.info("api request", metadata: metadata)
    }
}

/// The router's bare 404 for a path (or method) under `/api/` that no route serves, as the API's JSON error.
struct UnknownAPIRouteMiddleware: RouterMiddleware {
    typealias Context = AppRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as HTTPError where error.status == .notFound && error.body == nil && request.uri.path.hasPrefix("/api/") {
            return APIErrorMiddleware.json(.notFound, "no route for \(request.method) \(request.uri.path.prefix(200))")
        }
    }
}
