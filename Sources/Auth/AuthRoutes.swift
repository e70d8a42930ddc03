import FluentKit
import Foundation
public import Hummingbird
import NIOCore

/// A request context that carries who is calling (from a bearer access token).
public protocol IdentityRequestContext: RemoteAddressRequestContext {
    var identity: Identity? { get set }
}

extension IdentityRequestContext {
    /// The caller, or 401 when the request has no valid access token.
    func requireIdentity() throws -> Identity {
        guard let identity else {
            throw HTTPError(.unauthorized, headers: [.wwwAuthenticate: "Bearer"],
                            message: "a valid access token is required (Authorization: Bearer …)")
        }
        return identity
    }

    func requireAdmin() throws -> Identity {
        let identity = try requireIdentity()
        guard identity.isAdmin else { throw HTTPError(.forbidden, message: "this route is for administrators") }
        return identity
    }

    /// The client's IP, the key of per-address limits.
    var clientAddress: String { remoteAddress?.ipAddress ?? "unknown" }
}

/// Reads `Authorization: Bearer <jwt>` into `context.identity`. A request without one, or with
/// a token that is not ours, goes on anonymous: each route decides whether that is enough.
public struct IdentityMiddleware<Context: IdentityRequestContext>: RouterMiddleware {
    let tokens: AccessTokens

    public init(tokens: AccessTokens) {
        self.tokens = tokens
    }

    public func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response)
        async throws -> Response {
        var context = context
        if let header = request.headers[.authorization], header.hasPrefix("Bearer ") {
            context.identity = await tokens.verify(String(header.dropFirst(7)))
        }
        return try await next(request, context)
    }
}

/// JSON in and out for the sidecar routes.
enum JSONBody {
    /// Request bodies of the account and channel routes are small documents.
    static let limit = 64 << 10

    static func decode<T: Decodable>(_ type: T.Type, from request: Request) async throws -> T {
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw HTTPError(.contentTooLarge, message: "the request body is larger than \(limit) bytes")
        }
        guard body.readableBytes > 0 else { throw HTTPError(.badRequest, message: "a JSON body is required") }
        return try JSONDecoder().decode(T.self, from: Data(body.readableBytesView))
    }

    static func response(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return Response(status: status, headers: [.contentType: "application/json"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }

    static var noContent: Response { Response(status: .noContent) }
}

/// `/auth/register`, `/auth/login`, `/auth/refresh`, `/auth/logout`, `/auth/me`, and the admin's `/users`.
public struct AuthRoutes<Context: IdentityRequestContext>: Sendable {
    struct Registration: Decodable {
        var email: String
        var username: String
        var password: String
    }

    struct Login: Decodable {
        var email: String
        var password: String
    }

    struct RefreshRequest: Decodable {
        var refreshToken: String
    }

    struct Account: Encodable {
        var id: UUID
        var email: String
        var username: String
        var role: String
        var createdAt: Date?

        init(_ user: User) throws {
            id = try user.requireID()
            email = user.email
            username = user.username
            role = user.role.rawValue
            createdAt = user.createdAt
        }
    }

    let accounts: AccountService

    public init(accounts: AccountService) {
        self.accounts = accounts
    }

    public func add(to group: RouterGroup<Context>) {
        group.post("/auth/register") { request, context -> Response in
            let body = try await JSONBody.decode(Registration.self, from: request)
            let user = try await accounts.register(email: body.email, username: body.username, password: body.password,
                                                   address: context.clientAddress)
            return try JSONBody.response(Account(user), status: .created)
        }
        group.post("/auth/login") { request, context -> Response in
            let body = try await JSONBody.decode(Login.self, from: request)
            return try JSONBody.response(try await accounts.login(email: body.email, password: body.password,
                                                                  address: context.clientAddress))
        }
        group.post("/auth/refresh") { request, _ -> Response in
            let body = try await JSONBody.decode(RefreshRequest.self, from: request)
            return try JSONBody.response(try await accounts.refresh(body.refreshToken))
        }
        group.post("/auth/logout") { request, _ -> Response in
            let body = try await JSONBody.decode(RefreshRequest.self, from: request)
            try await accounts.logout(body.refreshToken)
            return JSONBody.noContent
        }
        group.get("/auth/me") { _, context -> Response in
            let identity = try context.requireIdentity()
            guard let user = try await accounts.user(id: identity.userID) else {
                throw HTTPError(.unauthorized, message: "the account of this token no longer exists")
            }
            return try JSONBody.response(try Account(user))
        }
        group.get("/users") { _, context -> Response in
            _ = try context.requireAdmin()
            return try JSONBody.response(["users": try await accounts.users().map(Account.init)])
        }
    }
}

/// `/channels` and `/channels/{name}/keys`.
public struct ChannelRoutes<Context: IdentityRequestContext>: Sendable {
    struct NewChannel: Decodable {
        var name: String
        var title: String?
        var description: String?
        var tags: [String]?
    }

    struct ChannelChanges: Decodable {
        var title: String?
        var description: String?
        var tags: [String]?
    }

    let channels: ChannelService

    public init(channels: ChannelService) {
        self.channels = channels
    }

    public func add(to group: RouterGroup<Context>) {
        group.post("/channels") { request, context -> Response in
            let identity = try context.requireIdentity()
            let body = try await JSONBody.decode(NewChannel.self, from: request)
            let channel = try await channels.create(owner: identity, name: body.name, title: body.title,
                                                    description: body.description, tags: body.tags)
            return try JSONBody.response(channel, status: .created)
        }
        group.get("/channels") { _, context -> Response in
            let identity = try context.requireIdentity()
            return try JSONBody.response(["channels": try await channels.channels(of: identity)])
        }
        group.get("/channels/{name}") { _, context -> Response in
            try JSONBody.response(try await channels.channel(named: try context.parameters.require("name")))
        }
        group.patch("/channels/{name}") { request, context -> Response in
            let identity = try context.requireIdentity()
            let body = try await JSONBody.decode(ChannelChanges.self, from: request)
            return try JSONBody.response(try await channels.update(
                try context.parameters.require("name"), by: identity,
                changes: .init(title: body.title, description: body.description, tags: body.tags)))
        }
        group.delete("/channels/{name}") { _, context -> Response in
            let identity = try context.requireIdentity()
            try await channels.delete(try context.parameters.require("name"), by: identity)
            return JSONBody.noContent
        }
        group.post("/channels/{name}/keys") { _, context -> Response in
            let identity = try context.requireIdentity()
            let key = try await channels.createKey(for: try context.parameters.require("name"), by: identity)
            var response = try JSONBody.response(key, status: .created)
            // Shown once: nothing on the way may keep a copy.
            response.headers[.cacheControl] = "no-store"
            return response
        }
        group.get("/channels/{name}/keys") { _, context -> Response in
            let identity = try context.requireIdentity()
            return try JSONBody.response(["keys": try await channels.keys(of: try context.parameters.require("name"), by: identity)])
        }
        group.delete("/channels/{name}/keys/{id}") { _, context -> Response in
            let identity = try context.requireIdentity()
            guard let id = UUID(uuidString: try context.parameters.require("id")) else {
                throw HTTPError(.notFound, message: "no such key")
            }
            try await channels.revokeKey(id, of: try context.parameters.require("name"), by: identity)
            return JSONBody.noContent
        }
    }
}
