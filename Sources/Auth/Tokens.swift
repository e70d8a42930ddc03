import Crypto
public import Foundation
import JWTKit

/// What an access token says: who, with which role, until when.
public struct Identity: Sendable, Equatable {
    public let userID: UUID
    public let role: User.Role

    public var isAdmin: Bool { role == .admin }

    public init(userID: UUID, role: User.Role) {
        self.userID = userID
        self.role = role
    }
}

/// Access tokens: HS256 JWTs, short-lived (15 min by default) and never stored.
public struct AccessTokens: Sendable {
    struct Payload: JWTPayload {
        var sub: SubjectClaim
        var exp: ExpirationClaim
        var iat: IssuedAtClaim
        var role: String

        func verify(using algorithm: some JWTAlgorithm) async throws {
            try exp.verifyNotExpired()
        }
    }

    public let lifetime: TimeInterval
    private let keys: JWTKeyCollection

    /// `secret` signs and verifies; at least 32 bytes.
    public init(secret: [UInt8], lifetime: TimeInterval) async {
        let keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(key: SymmetricKey(data: secret)), digestAlgorithm: .sha256)
        self.keys = keys
        self.lifetime = lifetime
    }

    public func issue(for identity: Identity, now: Date = Date()) async throws -> String {
        try await keys.sign(Payload(sub: .init(value: identity.userID.uuidString), exp: .init(value: now + lifetime),
                                    iat: .init(value: now), role: identity.role.rawValue))
    }

    /// The identity a valid, unexpired token carries; nil for anything else.
    public func verify(_ token: String) async -> Identity? {
        // A JWT is three base64url parts; refuse oversized input before parsing it.
        guard token.utf8.count <= 4096, let payload = try? await keys.verify(token, as: Payload.self),
              let userID = UUID(uuidString: payload.sub.value), let role = User.Role(rawValue: payload.role)
        else { return nil }
        return Identity(userID: userID, role: role)
    }
}

/// The JWT secret: `--jwt-secret`, or 32 random bytes generated on first start and kept in the
/// data directory (mode 0600), so tokens survive restarts.
public enum JWTSecret {
    public struct Unusable: Error, CustomStringConvertible {
        public let description: String
    }

    public static func load(configured: String?, dataDirectory: String) throws -> [UInt8] {
        if let configured {
            guard configured.utf8.count >= 32 else {
                throw Unusable(description: "the JWT secret must be at least 32 bytes")
            }
            return Array(configured.utf8)
        }
        let path = (dataDirectory as NSString).appendingPathComponent("jwt-secret")
        if let existing = FileManager.default.contents(atPath: path) {
            guard existing.count >= 32 else { throw Unusable(description: "\(path) holds fewer than 32 bytes") }
            return Array(existing)
        }
        let secret = Array(Credentials.randomToken(bytes: 32).utf8)
        guard FileManager.default.createFile(atPath: path, contents: Data(secret), attributes: [.posixPermissions: 0o600])
        else { throw Unusable(description: "cannot write \(path)") }
        return secret
    }
}
