import Crypto
public import Foundation
public import StreamHub

/// Signed play URLs for private channels: `?expires=<unix seconds>&token=<hex>` where the token
/// is HMAC-SHA256(secret, "<channel>:<expires>"). Whoever holds the secret (the platform's
/// web backend) hands out links that stop working at `expires`.
public struct SignedPlayURL: Sendable {
    private let key: SymmetricKey

    public init(secret: String) {
        key = SymmetricKey(data: Data(secret.utf8))
    }

    /// The query string that lets `channel` be played until `expires`.
    public func query(channel: String, expires: Date) -> String {
        let seconds = Int64(expires.timeIntervalSince1970.rounded(.down))
        return "expires=\(seconds)&token=\(token(channel: channel, expires: seconds))"
    }

    public func token(channel: String, expires: Int64) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data("\(channel):\(expires)".utf8), using: key)
        return mac.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }

    public enum Verdict: Sendable, Equatable {
        case valid
        case invalid(String)
    }

    /// Checks a request's query for a valid, unexpired token for `channel`.
    public func verify(channel: String, query: String?, now: Date = Date()) -> Verdict {
        let fields = Self.fields(query ?? "")
        guard let expiresText = fields["expires"], let token = fields["token"] else {
            return .invalid("private channel: a signed URL (expires, token) is required")
        }
        guard let expires = Int64(expiresText) else { return .invalid("expires is not a number") }
        guard expires >= Int64(now.timeIntervalSince1970) else { return .invalid("signed URL expired") }
        guard token.utf8.count == 64, let mac = Self.bytes(hex: token) else { return .invalid("token is not 64 hex digits") }
        // isValidAuthenticationCode compares in constant time.
        guard HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: Data("\(channel):\(expires)".utf8), using: key)
        else { return .invalid("token does not match channel and expiry") }
        return .valid
    }

    /// `a=b&c=d` → fields; the first of a repeated name wins; at most 32 fields are read.
    static func fields(_ query: String) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in query.split(separator: "&", maxSplits: 32, omittingEmptySubsequences: true).prefix(32) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            if fields[name] == nil { fields[name] = parts.count > 1 ? String(parts[1]).removingPercentEncoding ?? "" : "" }
        }
        return fields
    }

    static func bytes(hex: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        var iterator = hex.utf8.makeIterator()
        while let high = iterator.next() {
            guard let low = iterator.next(), let h = nibble(high), let l = nibble(low) else { return nil }
            bytes.append(h << 4 | l)
        }
        return bytes
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// Private channels need a signed URL; public ones pass.
public struct SignedURLPlayAuthorizer: PlayAuthorizer {
    public let signer: SignedPlayURL
    /// Channels that need a token; `*` means all of them.
    public let privateChannels: Set<String>

    public init(signer: SignedPlayURL, privateChannels: Set<String>) {
        self.signer = signer
        self.privateChannels = privateChannels
    }

    public func isPrivate(_ channel: String) -> Bool {
        privateChannels.contains("*") || privateChannels.contains(channel)
    }

    public func authorize(_ request: PlayRequest) async -> PlayDecision {
        check(channel: request.channel, query: request.query)
    }

    /// The same check for HLS requests.
    public func check(channel: String, query: String?) -> PlayDecision {
        guard isPrivate(channel) else { return .allow(channel: channel) }
        switch signer.verify(channel: channel, query: query) {
        case .valid: return .allow(channel: channel)
        case .invalid(let reason): return .deny(reason: reason)
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
