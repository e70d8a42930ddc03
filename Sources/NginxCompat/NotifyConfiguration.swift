import Foundation

/// One of nginx-rtmp's `on_*` directives: a URL for every application (set in `rtmp{}` or
/// `server{}`), and URLs for single applications (set in `application NAME {}`), which win.
public struct NotifyURL: Sendable, Equatable {
    /// For every application without a URL of its own.
    public var all: String?
    /// Application → URL.
    public var byApp: [String: String]

    public init(_ all: String? = nil, byApp: [String: String] = [:]) {
        self.all = all
        self.byApp = byApp
    }

    public var isEmpty: Bool { all == nil && byApp.isEmpty }

    /// The URL that applies to `app`, if any.
    public func url(app: String) -> String? { byApp[app] ?? all }

    /// Adds `URL` (every application) or `APP=URL`; a value that starts with `http://` or
    /// `https://` is always a URL, so a URL's own `=` is never read as an application.
    public mutating func add(_ entry: String) throws(NotifyConfiguration.Problem) {
        let trimmed = entry.trimmingCharacters(in: .whitespaces)
        if Self.isHTTP(trimmed) {
            all = trimmed
            return
        }
        guard let equals = trimmed.firstIndex(of: "=") else {
            throw .init("'\(trimmed)' is neither an http(s) URL nor APP=URL")
        }
        let app = String(trimmed[..<equals])
        let url = String(trimmed[trimmed.index(after: equals)...])
        guard !app.isEmpty, app.utf8.allSatisfy({ $0 > 0x20 && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "?") }) else {
            throw .init("'\(app)' is not an application name")
        }
        guard Self.isHTTP(url) else { throw .init("'\(url)' (for application \(app)) is not an http(s) URL") }
        byApp[app] = url
    }

    /// `http://host…` or `https://host…` with a host.
    static func isHTTP(_ url: String) -> Bool {
        let lowered = url.lowercased()
        for scheme in ["http://", "https://"] where lowered.hasPrefix(scheme) {
            let rest = url.dropFirst(scheme.count)
            return !(rest.first.map { $0 == "/" || $0 == ":" } ?? true)
                && !rest.contains(where: { $0 == " " || $0 == "\n" || $0 == "\t" })
        }
        return false
    }

    /// For logs: every URL with the application it applies to.
    public var summary: String {
        ((all.map { ["*=\($0)"] } ?? []) + byApp.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
            .joined(separator: ",")
    }
}

/// nginx-rtmp's notify module settings: which URL each event calls, how, and how long it may take.
public struct NotifyConfiguration: Sendable, Equatable {
    public struct Problem: Error, Sendable, Equatable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// `notify_method`: a form POST (the default) or a GET with the fields as the query string.
    public enum Method: String, Sendable, Equatable {
        case post, get
    }

    /// Asked on `connect`; a refusal closes the connection, a 3xx `Location` renames the application.
    public var onConnect = NotifyURL()
    /// Asked on `publish`; the publish waits for the answer.
    public var onPublish = NotifyURL()
    /// Asked on `play`; the play waits for the answer.
    public var onPlay = NotifyURL()
    /// Told when a publish ends.
    public var onPublishDone = NotifyURL()
    /// Told when a play ends.
    public var onPlayDone = NotifyURL()
    /// Told when a publish or play ends (after `on_publish_done` / `on_play_done`).
    public var onDone = NotifyURL()
    /// Asked every `updateTimeout` while a publish or play goes on; a refusal ends the session.
    public var onUpdate = NotifyURL()
    /// Told when the connection closes.
    public var onDisconnect = NotifyURL()
    /// Told of each finished recording file.
    public var onRecordDone = NotifyURL()
    public var method = Method.post
    /// How long an answer may take (connect, read); past it the call counts as refused.
    public var timeout: Duration = .seconds(10)
    /// `notify_update_timeout`: the time between `on_update` calls (from the last answer), 30 s as in nginx-rtmp.
    public var updateTimeout: Duration = .seconds(30)
    /// `notify_update_strict`: when on, a 3xx to `on_update` (or any non-2xx) also ends the session;
    /// when off, only an error status, a timeout or no connection does.
    public var updateStrict = false

    public init() {}

    /// Whether any hook is configured (the HTTP client is made only then).
    public var isEmpty: Bool {
        [onConnect, onPublish, onPlay, onPublishDone, onPlayDone, onDone, onUpdate, onDisconnect, onRecordDone]
            .allSatisfy(\.isEmpty)
    }

    /// The session hooks (everything but on_publish, on_play and on_record_done), which need the
    /// ingest server to report its connections.
    public var observesSessions: Bool {
        ![onConnect, onPublishDone, onPlayDone, onDone, onUpdate, onDisconnect].allSatisfy(\.isEmpty)
    }
}
