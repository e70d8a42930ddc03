import RTMP

/// An upstream RTMP address, `rtmp://host[:port]/app/streamKey`.
///
/// The first path element is the application; everything after it (slashes
/// and `?query` included) is the publishing name, which for YouTube, Twitch
/// and the like is the stream key. `description` masks the key: it is the
/// form for logs and APIs. Only `rtmp://` is accepted (no RTMPS client yet).
public struct RTMPURL: Sendable, Equatable, CustomStringConvertible {
    public static let defaultPort = 1935

    public var host: String
    public var port: Int
    public var app: String
    /// The publishing name. Never log it; log the URL's `description`.
    public var streamKey: String

    public init?(_ string: String) {
        let prefix = "rtmp://"
        guard string.count > prefix.count, string.prefix(prefix.count).lowercased() == prefix,
              !string.contains(where: { $0.isWhitespace || $0.asciiValue.map { $0 < 0x20 || $0 == 0x7F } == true })
        else { return nil }
        let rest = string.dropFirst(prefix.count)
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let authority = rest[..<slash]
        let path = rest[rest.index(after: slash)...]
        guard !authority.contains("@") else { return nil }

        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                portText = after.dropFirst()
            }
        } else if let colon = authority.firstIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else { return nil }
        var port = Self.defaultPort
        if let portText {
            guard let parsed = Int(portText), (1...65535).contains(parsed) else { return nil }
            port = parsed
        }
        guard let appEnd = path.firstIndex(of: "/") else { return nil }
        let app = path[..<appEnd]
        let key = path[path.index(after: appEnd)...]
        guard !app.isEmpty, !key.isEmpty else { return nil }
        self.host = String(host)
        self.port = port
        self.app = String(app)
        self.streamKey = String(key)
    }

    private var authority: String {
        let host = host.contains(":") ? "[\(host)]" : host
        return port == Self.defaultPort ? host : "\(host):\(port)"
    }

    /// `rtmp://host[:port]/app`: the `tcUrl` of `connect`.
    public var tcURL: String { "rtmp://\(authority)/\(app)" }

    /// The URL with the key replaced by a short fingerprint (the same one the server logs).
    public var description: String { "\(tcURL)/\(ServerSession.masked(streamKey))" }

    /// `text` with every occurrence of the key replaced by its fingerprint: servers echo
    /// the publishing name in status descriptions, and those end up in logs and the API.
    public func redacting(_ text: String) -> String {
        var text = text
        let name = streamKey.split(separator: "?", maxSplits: 1).first.map(String.init) ?? streamKey
        for secret in Set([streamKey, name]).sorted(by: { $0.count > $1.count }) where !secret.isEmpty {
            text = text.replacingOccurrences(of: secret, with: ServerSession.masked(streamKey))
        }
        return text
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = self[...]
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
