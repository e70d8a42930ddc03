@testable import Auth
import Testing

/// Input that PostgreSQL refuses (NUL in text) or bcrypt would cut short is a 400 naming the field,
/// never a 500 from the database. schemathesis found these (`make api-fuzz`, PostgreSQL run).
@Suite("Account rules")
struct AccountRulesTests {
    /// The field a rule refuses, or nil when it accepts.
    static func field(_ check: () throws -> Void) -> String? {
        do {
            try check()
            return nil
        } catch let error as AccountRules.Violation {
            return error.field
        } catch {
            return "unexpected \(error)"
        }
    }

    @Test("NUL and control characters are refused, by field")
    func controlCharacters() {
        #expect(Self.field { _ = try AccountRules.email("a\u{0}@example.com") } == "email")
        #expect(Self.field { _ = try AccountRules.email("a\u{7}b@example.com") } == "email")
        #expect(Self.field { try AccountRules.password("abcdefgh\u{0}ijklmn") } == "password",
                "bcrypt would stop at the NUL: the password would be 'abcdefgh'")
        #expect(Self.field { _ = try AccountRules.text("a\u{0}b", field: "title", max: 140) } == "title")
        #expect(Self.field { _ = try AccountRules.tags(["ok", "b\u{0}d"]) } == "tags")
        #expect(Self.field { _ = try AccountRules.tags(["b\u{1b}[31m"]) } == "tags")
    }

    @Test("ordinary input still passes")
    func ordinary() throws {
        #expect(try AccountRules.email(" Ada@Example.com ") == "ada@example.com")
        try AccountRules.password("correct horse battery")
        #expect(try AccountRules.text("Line one\nLine two\tand a tab", field: "description", max: 5000)
            == "Line one\nLine two\tand a tab")
        #expect(try AccountRules.tags(["Music", " music ", "live"]) == ["music", "live"])
    }
}
