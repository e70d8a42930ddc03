import FluentKit
import FluentSQL
public import Foundation
import Hummingbird
public import Logging
public import Metrics
public import Storage
import Synchronization

/// Registration, login, token refresh (rotating) and logout.
public final class AccountService: Sendable {
    public struct Limits: Sendable {
        /// Login attempts per client address per window.
        public var loginsPerAddress: Int = 20
        /// Failed logins per account per window.
        public var failuresPerAccount: Int = 5
        public var loginWindow: TimeInterval = 300
        /// Registrations per client address per hour.
        public var registrationsPerAddress: Int = 20

        public init() {}
    }

    public struct TokenPair: Codable, Sendable, Equatable {
        public var accessToken: String
        public var refreshToken: String
        public var tokenType: String
        /// Seconds until the access token expires.
        public var expiresIn: Int
    }

    public let storage: Storage
    public let accessTokens: AccessTokens
    public let refreshLifetime: TimeInterval
    private let addressLogins: RateLimiter
    private let accountFailures: RateLimiter
    private let registrations: RateLimiter
    private let loginSuccess: Counter
    private let loginFailure: Counter
    private let loginThrottled: Counter
    private let logger: Logger

    public let bcryptCost: UInt8
    /// A hash to verify against when the account does not exist, so an unknown email costs the
    /// same time as a wrong password. Made on first use, at this service's cost.
    private let decoyHash = Mutex<String?>(nil)

    public init(storage: Storage, accessTokens: AccessTokens, refreshLifetime: TimeInterval = 30 * 86_400,
                limits: Limits = .init(), bcryptCost: UInt8 = Credentials.bcryptCost, metrics: any MetricsFactory,
                logger: Logger) {
        self.bcryptCost = max(10, bcryptCost)
        self.storage = storage
        self.accessTokens = accessTokens
        self.refreshLifetime = refreshLifetime
        addressLogins = RateLimiter(limit: limits.loginsPerAddress, window: limits.loginWindow)
        accountFailures = RateLimiter(limit: limits.failuresPerAccount, window: limits.loginWindow)
        registrations = RateLimiter(limit: limits.registrationsPerAddress, window: 3600)
        loginSuccess = Counter(label: "estuary_auth_logins_total", dimensions: [("result", "success")], factory: metrics)
        loginFailure = Counter(label: "estuary_auth_logins_total", dimensions: [("result", "failure")], factory: metrics)
        loginThrottled = Counter(label: "estuary_auth_logins_total", dimensions: [("result", "throttled")], factory: metrics)
        self.logger = logger
    }

    /// Creates an account; `address` is throttled (nil: the CLI, not throttled).
    public func register(email: String, username: String, password: String, role: User.Role = .user,
                         address: String? = nil) async throws -> User {
        if let address {
            if let wait = registrations.retryAfter(address) { throw tooManyRequests(wait, "registrations") }
            registrations.record(address)
        }
        let email = try rule { () throws(AccountRules.Violation) in try AccountRules.email(email) }
        let username = try rule { () throws(AccountRules.Violation) in try AccountRules.username(username) }
        try rule { () throws(AccountRules.Violation) in try AccountRules.password(password) }
        let database = storage.database
        if try await User.query(on: database).filter(\.$email == email).first() != nil {
            throw HTTPError(.conflict, message: "an account with this email already exists")
        }
        if try await User.query(on: database).filter(\.$username == username).first() != nil {
            throw HTTPError(.conflict, message: "the username '\(username)' is taken")
        }
        let user = User(email: email, username: username,
                        passwordHash: try await Credentials.hashPassword(password, cost: bcryptCost), role: role)
        do {
            try await user.create(on: database)
        } catch let error as any DatabaseError where error.isConstraintFailure {
            // Another registration took the email or username between the check and the insert.
            throw HTTPError(.conflict, message: "an account with this email or username already exists")
        }
        logger.info("account created", metadata: ["user": "\(username)", "role": "\(role.rawValue)"])
        return user
    }

    /// Checks the password and opens a session: an access token and the first refresh token of a
    /// new family. Unknown email and wrong password answer alike.
    public func login(email: String, password: String, address: String) async throws -> TokenPair {
        let email = email.trimmingCharacters(in: .whitespaces).lowercased()
        if let wait = addressLogins.retryAfter(address) { throw tooManyRequests(wait, "login attempts") }
        if let wait = accountFailures.retryAfter(email) { throw tooManyRequests(wait, "failed logins for this account") }
        addressLogins.record(address)
        // No account has such an email or password (and PostgreSQL would refuse a NUL in the query).
        guard email.utf8.count <= 254, password.utf8.count <= 1024, !email.utf8.contains(0), !password.utf8.contains(0)
        else { throw loginFailed(email) }
        let user = try await User.query(on: storage.database).filter(\.$email == email).first()
        // Hash even when there is no such account, so timing does not reveal which emails exist.
        let hash: String
        if let user { hash = user.passwordHash } else { hash = try await decoy() }
        let valid = try await Credentials.verifyPassword(password, hash: hash)
        guard let user, valid, let userID = user.id else { throw loginFailed(email) }
        accountFailures.reset(email)
        loginSuccess.increment()
        return try await issue(for: Identity(userID: userID, role: user.role), family: UUID())
    }

    /// Rotates a refresh token: the presented one stops working, a new one of the same family is
    /// returned. A token that was already rotated is a stolen one: its whole family is revoked.
    public func refresh(_ token: String) async throws -> TokenPair {
        guard token.utf8.count <= 256 else { throw invalidRefreshToken }
        let hash = Credentials.digest(token)
        let database = storage.database
        guard let stored = try await RefreshToken.query(on: database).filter(\.$tokenHash == hash).first(),
              let storedID = stored.id
        else { throw invalidRefreshToken }
        let now = Date()
        if stored.revokedAt != nil {
            try await revokeFamily(stored.familyID, on: database)
            logger.warning("rotated refresh token reused: session revoked", metadata: ["family": "\(stored.familyID)"])
            throw invalidRefreshToken
        }
        guard stored.expiresAt > now else { throw invalidRefreshToken }
        // Only one of two concurrent refreshes with the same token may win.
        guard try await claim(storedID, at: now, on: database) else {
            try await revokeFamily(stored.familyID, on: database)
            throw invalidRefreshToken
        }
        guard let user = try await User.find(stored.$user.id, on: database), let userID = user.id else {
            throw invalidRefreshToken
        }
        return try await issue(for: Identity(userID: userID, role: user.role), family: stored.familyID)
    }

    /// Ends the session the refresh token belongs to. Unknown tokens are ignored (idempotent).
    public func logout(_ token: String) async throws {
        guard token.utf8.count <= 256 else { return }
        let database = storage.database
        guard let stored = try await RefreshToken.query(on: database)
            .filter(\.$tokenHash == Credentials.digest(token)).first()
        else { return }
        try await revokeFamily(stored.familyID, on: database)
    }

    public func user(id: UUID) async throws -> User? {
        try await User.find(id, on: storage.database)
    }

    public func users() async throws -> [User] {
        try await User.query(on: storage.database).sort(\.$createdAt).all()
    }

    private func decoy() async throws -> String {
        if let hash = decoyHash.withLock({ $0 }) { return hash }
        let hash = try await Credentials.hashPassword("estuary decoy password", cost: bcryptCost)
        decoyHash.withLock { $0 = hash }
        return hash
    }

    private func issue(for identity: Identity, family: UUID) async throws -> TokenPair {
        let refresh = Credentials.randomToken(bytes: 32)
        try await RefreshToken(userID: identity.userID, tokenHash: Credentials.digest(refresh), familyID: family,
                               expiresAt: Date() + refreshLifetime).create(on: storage.database)
        return TokenPair(accessToken: try await accessTokens.issue(for: identity), refreshToken: refresh,
                         tokenType: "Bearer", expiresIn: Int(accessTokens.lifetime))
    }

    /// Marks the token rotated if nobody did first; true when this call did.
    private func claim(_ id: UUID, at now: Date, on database: any Database) async throws -> Bool {
        guard let sql = database as? any SQLDatabase else { return true }
        let rows = try await sql.update(RefreshToken.schema)
            .set("revoked_at", to: SQLBind(now))
            .where("id", .equal, SQLBind(id))
            .where("revoked_at", .is, SQLLiteral.null)
            .returning("id")
            .all()
        return rows.count == 1
    }

    private func revokeFamily(_ family: UUID, on database: any Database) async throws {
        try await RefreshToken.query(on: database)
            .filter(\.$familyID == family).filter(\.$revokedAt == nil)
            .set(\.$revokedAt, to: Date())
            .update()
    }

    private var invalidRefreshToken: HTTPError {
        HTTPError(.unauthorized, message: "the refresh token is invalid, expired or revoked")
    }

    private func loginFailed(_ email: String) -> HTTPError {
        accountFailures.record(email)
        loginFailure.increment()
        return HTTPError(.unauthorized, message: "wrong email or password")
    }

    private func tooManyRequests(_ wait: Int, _ what: String) -> HTTPError {
        loginThrottled.increment()
        return HTTPError(.tooManyRequests, headers: [.retryAfter: "\(wait)"],
                         message: "too many \(what); retry in \(wait) s")
    }
}

/// Runs a validation rule, turning its violation into a 400 that names the field.
func rule<T>(_ check: () throws(AccountRules.Violation) -> T) throws(HTTPError) -> T {
    do {
        return try check()
    } catch {
        throw HTTPError(.badRequest, message: "field '\(error.field)': \(error.message)")
    }
}
