import Crypto
import Foundation
import HummingbirdBcrypt
import NIOPosix

/// Secrets: passwords (bcrypt, on a thread pool: a hash takes tens of milliseconds, which an event
/// loop must never spend), and random tokens stored as SHA-256 (they carry 192 bits of entropy, so
/// a fast hash is enough and lookups stay an index probe).
public enum Credentials {
    public static let bcryptCost: UInt8 = 12
    public static let streamKeyPrefix = "live_"

    public static func hashPassword(_ password: String, cost: UInt8 = bcryptCost) async throws -> String {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    public static func verifyPassword(_ password: String, hash: String) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash) }
    }

    /// `bytes` of randomness, base64url without padding.
    public static func randomToken(bytes: Int = 24) -> String {
        var generator = SystemRandomNumberGenerator()
        let raw = (0..<bytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return Data(raw).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// A new stream key: `live_` and 192 random bits.
    public static func newStreamKey() -> String { streamKeyPrefix + randomToken(bytes: 24) }

    /// What the owner sees of a key after creation: `live_AbCd…wXyZ`.
    public static func hint(forKey key: String) -> String {
        let characters = Array(key)
        guard characters.count > 13 else { return String(repeating: "•", count: 8) }
        return String(characters.prefix(9)) + "…" + String(characters.suffix(4))
    }

    /// Lowercase hex SHA-256: how tokens and keys are stored and looked up.
    public static func digest(_ secret: String) -> String {
        SHA256.hash(data: Array(secret.utf8)).map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }

    /// Equal without an early exit, so the time does not tell how much of a secret matched.
    public static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let left = Array(a.utf8), right = Array(b.utf8)
        guard left.count == right.count else { return false }
        return zip(left, right).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// What a valid account looks like; each failure names the field and the rule.
enum AccountRules {
    struct Violation: Error {
        let field: String
        let message: String
    }

    static func email(_ raw: String) throws(Violation) -> String {
        let email = raw.trimmingCharacters(in: .whitespaces).lowercased()
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard email.utf8.count <= 254, parts.count == 2, !parts[0].isEmpty, parts[1].contains("."),
              !parts[1].hasPrefix("."), !parts[1].hasSuffix("."),
              !email.contains(where: { $0.isWhitespace || $0.isNewline || $0 == "<" || $0 == ">" || isControl($0) })
        else { throw Violation(field: "email", message: "must be an email address (name@domain.tld, at most 254 bytes)") }
        return email
    }

    static func username(_ raw: String) throws(Violation) -> String {
        let username = raw.lowercased()
        guard (3...32).contains(username.utf8.count), username.utf8.allSatisfy(isNameByte) else {
            throw Violation(field: "username", message: "must be 3–32 characters of a-z, 0-9, '-' or '_'")
        }
        return username
    }

    static func password(_ password: String) throws(Violation) {
        // bcrypt reads 72 bytes at most: a longer password would be silently truncated.
        guard (10...72).contains(password.utf8.count) else {
            throw Violation(field: "password", message: "must be 10–72 bytes long")
        }
        guard Set(password).count >= 4 else {
            throw Violation(field: "password", message: "must use at least 4 different characters")
        }
        // bcrypt stops at a NUL byte: "abcdefgh\0anything" would be the password "abcdefgh".
        guard !password.utf8.contains(0) else {
            throw Violation(field: "password", message: "must not contain NUL characters")
        }
    }

    /// Channel names are URL paths and file names: lowercase letters, digits, '-' and '_'.
    static func channelName(_ name: String) throws(Violation) -> String {
        guard (3...32).contains(name.utf8.count), name.utf8.allSatisfy(isNameByte),
              name.first != "-", name.first != "_"
        else {
            throw Violation(field: "name", message: "must be 3–32 characters of a-z, 0-9, '-' or '_', starting with a letter or digit")
        }
        return name
    }

    static func text(_ value: String, field: String, max: Int) throws(Violation) -> String {
        guard value.utf8.count <= max else { throw Violation(field: field, message: "must be at most \(max) bytes") }
        // PostgreSQL text cannot hold NUL (SQLite can): refuse it for both.
        guard !value.utf8.contains(0) else { throw Violation(field: field, message: "must not contain NUL characters") }
        return value
    }

    static func tags(_ tags: [String]) throws(Violation) -> [String] {
        guard tags.count <= 16 else { throw Violation(field: "tags", message: "at most 16 tags") }
        var seen = Set<String>()
        var result: [String] = []
        for raw in tags {
            let tag = raw.trimmingCharacters(in: .whitespaces).lowercased()
            guard (1...32).contains(tag.utf8.count), !tag.contains(where: { $0.isNewline || isControl($0) }) else {
                throw Violation(field: "tags", message: "each tag must be 1–32 bytes on one line, without control characters")
            }
            if seen.insert(tag).inserted { result.append(tag) }
        }
        return result
    }

    /// A control character (C0, DEL, C1), NUL among them.
    private static func isControl(_ character: Character) -> Bool {
        character.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }

    private static func isNameByte(_ byte: UInt8) -> Bool {
        (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x2D || byte == 0x5F
    }
}
