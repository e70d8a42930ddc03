import Auth
import FluentKit
import Foundation
import Hummingbird
import Logging
import Metrics
import NIOPosix
import Storage
import StreamHub
import TestSupport
import Testing

/// The database a test runs on: each test gets a fresh one.
enum Backend: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres

    var testDescription: String { rawValue }

    func location() throws -> DatabaseLocation {
        switch self {
        case .sqlite:
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-auth-\(UUID().uuidString).sqlite").path
            return .sqlite(path: path)
        case .postgres:
            let server = try #require(PostgresServer.current, "the suite starts a PostgreSQL server")
            return .postgres(url: server.url(database: try server.createDatabase()))
        }
    }
}

/// The services over one database, as the server wires them.
struct Services {
    let storage: Storage
    let accounts: AccountService
    let channels: ChannelService
    let hub: StreamHub

    static func open(_ backend: Backend, limits: AccountService.Limits = .init()) async throws -> Services {
        let logger = Logger(label: "auth-test")
        let storage = try await Storage.open(try backend.location(), migrations: AuthMigrations.all,
                                             eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger)
        let tokens = await AccessTokens(secret: Array("a test secret of at least thirty-two bytes".utf8), lifetime: 900)
        let hub = StreamHub(logger: logger)
        return Services(
            storage: storage,
            accounts: AccountService(storage: storage, accessTokens: tokens, limits: limits, bcryptCost: 10,
                                     metrics: NOOPMetricsHandler.instance, logger: logger),
            channels: ChannelService(storage: storage, hub: hub, logger: logger), hub: hub)
    }

    func close() async { await storage.close() }
}

/// The HTTP status a service call failed with.
func status(_ call: () async throws -> some Any) async -> HTTPResponse.Status? {
    do {
        _ = try await call()
        return nil
    } catch let error as HTTPError {
        return error.status
    } catch {
        Issue.record("not an HTTPError: \(error)")
        return nil
    }
}

@Suite("Accounts, channels and keys on SQLite and PostgreSQL", .postgres, .serialized)
struct StorageSuite {
    @Test("migrations are versioned and idempotent: a second start applies nothing and keeps the data",
          arguments: Backend.allCases)
    func migrations(backend: Backend) async throws {
        let location = try backend.location()
        let logger = Logger(label: "auth-test")
        let first = try await Storage.open(location, migrations: AuthMigrations.all,
                                           eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger)
        let tokens = await AccessTokens(secret: Array("a test secret of at least thirty-two bytes".utf8), lifetime: 900)
        let accounts = AccountService(storage: first, accessTokens: tokens, bcryptCost: 10,
                                      metrics: NOOPMetricsHandler.instance, logger: logger)
        _ = try await accounts.register(email: "keep@example.com", username: "keep", password: "correct horse battery")
        await first.close()

        let second = try await Storage.open(location, migrations: AuthMigrations.all,
                                            eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger)
        let applied = try await MigrationLog.query(on: second.database).all().map(\.name).sorted()
        #expect(applied == ["estuary.v1.channels", "estuary.v1.refresh_tokens", "estuary.v1.stream_keys", "estuary.v1.users"])
        #expect(try await User.query(on: second.database).count() == 1)
        await second.close()
    }

    @Test("register validates each field by name; email and username are unique (409)", arguments: Backend.allCases)
    func register(backend: Backend) async throws {
        let services = try await Services.open(backend)
        let accounts = services.accounts
        let user = try await accounts.register(email: " Ann@Example.com", username: "Ann_1", password: "correct horse battery")
        #expect(user.email == "ann@example.com")
        #expect(user.username == "ann_1")
        #expect(user.role == .user)

        let cases: [(String, String, String, String)] = [
            ("not-an-email", "bob", "correct horse battery", "email"),
            ("bob@example.com", "b", "correct horse battery", "username"),
            ("bob@example.com", "bob/../x", "correct horse battery", "username"),
            ("bob@example.com", "bob", "short", "password"),
            ("bob@example.com", "bob", "aaaaaaaaaaaaaa", "password"),
            ("bob@example.com", "bob", String(repeating: "ab", count: 40), "password"),
        ]
        for (email, username, password, field) in cases {
            do {
                _ = try await accounts.register(email: email, username: username, password: password)
                Issue.record("accepted \(email) \(username)")
            } catch let error as HTTPError {
                #expect(error.status == .badRequest)
                #expect(error.body?.contains("'\(field)'") == true, "\(error.body ?? "")")
            }
        }
        #expect(await status { try await accounts.register(email: "ANN@example.com", username: "other", password: "correct horse battery") } == .conflict)
        #expect(await status { try await accounts.register(email: "new@example.com", username: "ANN_1", password: "correct horse battery") } == .conflict)
        await services.close()
    }

    @Test("login: unknown email and wrong password answer alike; refresh rotates; a reused token revokes the family; logout revokes",
          arguments: Backend.allCases)
    func tokens(backend: Backend) async throws {
        let services = try await Services.open(backend)
        let accounts = services.accounts
        let user = try await accounts.register(email: "cat@example.com", username: "cat", password: "correct horse battery")

        var messages: [String] = []
        for (email, password) in [("cat@example.com", "wrong password!!"), ("nobody@example.com", "correct horse battery")] {
            do {
                _ = try await accounts.login(email: email, password: password, address: "10.0.0.1")
                Issue.record("login accepted")
            } catch let error as HTTPError {
                #expect(error.status == .unauthorized)
                messages.append(error.body ?? "")
            }
        }
        #expect(messages.count == 2 && messages[0] == messages[1])

        let session = try await accounts.login(email: "CAT@example.com", password: "correct horse battery", address: "10.0.0.1")
        #expect(session.tokenType == "Bearer" && session.expiresIn == 900)
        let identity = try #require(await accounts.accessTokens.verify(session.accessToken))
        #expect(identity.userID == user.id && identity.role == .user)
        #expect(await accounts.accessTokens.verify(session.accessToken + "x") == nil)
        // Only the hash is stored.
        #expect(try await RefreshTokenProbe.storedHashes(services.storage).allSatisfy { $0 != session.refreshToken })

        let rotated = try await accounts.refresh(session.refreshToken)
        #expect(rotated.refreshToken != session.refreshToken)
        // The old token is spent; presenting it again is theft: the new one dies with it.
        #expect(await status { try await accounts.refresh(session.refreshToken) } == .unauthorized)
        #expect(await status { try await accounts.refresh(rotated.refreshToken) } == .unauthorized)

        let other = try await accounts.login(email: "cat@example.com", password: "correct horse battery", address: "10.0.0.1")
        try await accounts.logout(other.refreshToken)
        #expect(await status { try await accounts.refresh(other.refreshToken) } == .unauthorized)
        try await accounts.logout("never-issued")
        #expect(await status { try await accounts.refresh("never-issued") } == .unauthorized)
        await services.close()
    }

    @Test("two refreshes racing with one token: exactly one wins", arguments: Backend.allCases)
    func refreshRace(backend: Backend) async throws {
        let services = try await Services.open(backend)
        _ = try await services.accounts.register(email: "race@example.com", username: "race", password: "correct horse battery")
        let session = try await services.accounts.login(email: "race@example.com", password: "correct horse battery", address: "10.0.0.2")
        let accounts = services.accounts
        let results = await withTaskGroup(of: HTTPResponse.Status?.self) { group in
            // nil: this refresh won; a status: how it lost.
            for _ in 0..<2 { group.addTask { await status { try await accounts.refresh(session.refreshToken) } } }
            return await group.reduce(into: [HTTPResponse.Status?]()) { $0.append($1) }
        }
        #expect(results.filter { $0 == nil }.count == 1, "\(results)")
        #expect(results.filter { $0 == .unauthorized }.count == 1, "\(results)")
        await services.close()
    }

    @Test("login throttles: per account after repeated failures, per address; 429 says when to retry")
    func throttles() async throws {
        var limits = AccountService.Limits()
        limits.failuresPerAccount = 3
        limits.loginsPerAddress = 6
        let services = try await Services.open(.sqlite, limits: limits)
        let accounts = services.accounts
        _ = try await accounts.register(email: "dog@example.com", username: "dog", password: "correct horse battery")
        for _ in 0..<3 {
            #expect(await status { try await accounts.login(email: "dog@example.com", password: "wrong password!!", address: "10.0.0.3") } == .unauthorized)
        }
        do {
            _ = try await accounts.login(email: "dog@example.com", password: "correct horse battery", address: "10.0.0.4")
            Issue.record("the account was not throttled")
        } catch let error as HTTPError {
            #expect(error.status == .tooManyRequests)
            let retry = try #require(error.headers[.retryAfter].flatMap { Int($0) })
            #expect((1...300).contains(retry))
        }
        // 10.0.0.3 has used 3 of its 6; three more and the address is throttled whatever the account.
        for _ in 0..<3 {
            #expect(await status { try await accounts.login(email: "x@example.com", password: "wrong password!!", address: "10.0.0.3") } == .unauthorized)
        }
        #expect(await status { try await accounts.login(email: "y@example.com", password: "wrong password!!", address: "10.0.0.3") } == .tooManyRequests)
        await services.close()
    }

    @Test("channels: owner-only changes (403), unique names (409), field errors by name, public view with live status",
          arguments: Backend.allCases)
    func channels(backend: Backend) async throws {
        let services = try await Services.open(backend)
        let owner = try await identity(services, "owner")
        let stranger = try await identity(services, "stranger")
        let channels = services.channels
        let created = try await channels.create(owner: owner, name: "my-show", title: "My show", description: "Live coding",
                                                tags: ["Swift", "swift", "code"])
        #expect(created.tags == ["swift", "code"])
        #expect(created.owner == "owner" && !created.live)
        #expect(await status { try await channels.create(owner: stranger, name: "my-show", title: nil, description: nil, tags: nil) } == .conflict)
        for name in ["ab", "My-Show", "-lead", "a/b", String(repeating: "x", count: 33)] {
            #expect(await status { try await channels.create(owner: owner, name: name, title: nil, description: nil, tags: nil) } == .badRequest)
        }
        #expect(await status { try await channels.update("my-show", by: stranger, changes: .init(title: "Mine now")) } == .forbidden)
        #expect(await status { try await channels.delete("my-show", by: stranger) } == .forbidden)
        #expect(await status { try await channels.channel(named: "nope") } == .notFound)
        let updated = try await channels.update("my-show", by: owner, changes: .init(title: "New title", tags: ["music"]))
        #expect(updated.title == "New title" && updated.tags == ["music"] && updated.description == "Live coding")

        let publisher = try await services.hub.startPublishing(channel: "my-show", app: "live")
        #expect(try await channels.channel(named: "my-show").live)
        await publisher.finish()
        #expect(try await channels.channels(of: owner).map(\.name) == ["my-show"])
        #expect(try await channels.channels(of: stranger).isEmpty)
        try await channels.delete("my-show", by: owner)
        #expect(await status { try await channels.channel(named: "my-show") } == .notFound)
        await services.close()
    }

    @Test("stream keys: shown once, 128+ random bits, stored only hashed, listed masked; revoked keys stop mapping",
          arguments: Backend.allCases)
    func keys(backend: Backend) async throws {
        let services = try await Services.open(backend)
        let owner = try await identity(services, "keyowner")
        let channels = services.channels
        _ = try await channels.create(owner: owner, name: "keyed", title: nil, description: nil, tags: nil)
        let first = try await channels.createKey(for: "keyed", by: owner)
        let second = try await channels.createKey(for: "keyed", by: owner)
        #expect(first.key.hasPrefix("live_") && first.key != second.key)
        // 24 random bytes in base64url: 32 characters after the prefix.
        #expect(first.key.count == 5 + 32)
        #expect(!first.hint.contains(String(first.key.dropFirst(9).dropLast(4))))

        let listed = try await channels.keys(of: "keyed", by: owner)
        #expect(Set(listed.map(\.id)) == [first.id, second.id])
        #expect(listed.allSatisfy { $0.lastUsedAt == nil })
        let stored = try await StreamKeyProbe.storedHashes(services.storage)
        #expect(stored.count == 2 && !stored.contains(first.key) && stored.contains(Credentials.digest(first.key)))

        let found = try #require(try await channels.channel(forKey: first.key))
        #expect(found.channel == "keyed" && found.keyID == first.id)
        #expect(try await channels.keys(of: "keyed", by: owner).first { $0.id == first.id }?.lastUsedAt != nil)
        #expect(try await channels.channel(forKey: "live_" + String(first.key.dropFirst(5)).reversed()) == nil)
        #expect(try await channels.channel(forKey: "keyed") == nil)
        #expect(try await channels.hasAccounts())

        let stranger = try await identity(services, "keythief")
        #expect(await status { try await channels.createKey(for: "keyed", by: stranger) } == .forbidden)
        #expect(await status { try await channels.keys(of: "keyed", by: stranger) } == .forbidden)
        #expect(await status { try await channels.revokeKey(first.id, of: "keyed", by: stranger) } == .forbidden)

        try await channels.revokeKey(first.id, of: "keyed", by: owner)
        #expect(try await channels.channel(forKey: first.key) == nil)
        #expect(try await channels.channel(forKey: second.key)?.channel == "keyed")
        #expect(await status { try await channels.revokeKey(first.id, of: "keyed", by: owner) } == .notFound)
        await services.close()
    }

    @Test("revoking the key a channel went live with ends that publish; another key's revocation does not")
    func revokeLive() async throws {
        let services = try await Services.open(.sqlite)
        let owner = try await identity(services, "liveowner")
        let channels = services.channels
        _ = try await channels.create(owner: owner, name: "onair", title: nil, description: nil, tags: nil)
        let used = try await channels.createKey(for: "onair", by: owner)
        let spare = try await channels.createKey(for: "onair", by: owner)
        let found = try #require(try await channels.channel(forKey: used.key))
        channels.publishStarted(channel: found.channel, keyID: found.keyID)
        let publisher = try await services.hub.startPublishing(channel: "onair", app: "live")
        let stops = StopRecorder()
        publisher.stream.onStopRequested { stops.record($0) }

        try await channels.revokeKey(spare.id, of: "onair", by: owner)
        #expect(stops.reasons.isEmpty)
        try await channels.revokeKey(used.id, of: "onair", by: owner)
        #expect(stops.reasons == ["stream key revoked"])
        await publisher.finish()
        await services.close()
    }

    private func identity(_ services: Services, _ name: String) async throws -> Identity {
        let user = try await services.accounts.register(email: "\(name)@example.com", username: name, password: "correct horse battery")
        return Identity(userID: try #require(user.id), role: user.role)
    }
}

final class StopRecorder: Sendable {
    private let storage = Mutex<[String]>([])
    func record(_ reason: String) { storage.withLock { $0.append(reason) } }
    var reasons: [String] { storage.withLock { $0 } }
}

import Synchronization

/// Reads what the database holds, as an attacker with a copy of it would.
enum RefreshTokenProbe {
    static func storedHashes(_ storage: Storage) async throws -> [String] {
        try await storage.database.query(RefreshTokenRow.self).all().map(\.tokenHash)
    }
}

enum StreamKeyProbe {
    static func storedHashes(_ storage: Storage) async throws -> [String] {
        try await storage.database.query(StreamKeyRow.self).all().map(\.keyHash)
    }
}

/// Read-only views of the tables, from outside the module.
final class RefreshTokenRow: Model, @unchecked Sendable {
    static let schema = "refresh_tokens"
    @ID(key: .id) var id: UUID?
    @Field(key: "token_hash") var tokenHash: String
    init() {}
}

final class StreamKeyRow: Model, @unchecked Sendable {
    static let schema = "stream_keys"
    @ID(key: .id) var id: UUID?
    @Field(key: "key_hash") var keyHash: String
    init() {}
}
