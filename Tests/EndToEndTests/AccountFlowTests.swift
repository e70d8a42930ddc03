import App
import Auth
import Foundation
import FoundationNetworking
import Logging
import TestSupport
import Testing

/// JSON over HTTP against a test server.
struct APIClient {
    let server: TestServer
    var token: String?

    struct Reply {
        var status: Int
        var headers: [String: String]
        var body: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
        var errorMessage: String { ((json["error"] as? [String: Any])?["message"] as? String) ?? "" }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    func call(_ method: String, _ path: String, json: [String: Any]? = nil, raw: Data? = nil) async throws -> Reply {
        var request = URLRequest(url: server.httpURL(path))
        request.httpMethod = method
        if let json {
            request.httpBody = try JSONSerialization.data(withJSONObject: json)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        } else if let raw {
            request.httpBody = raw
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (body, response) = try await URLSession.shared.data(for: request)
        let http = try #require(response as? HTTPURLResponse)
        var headers: [String: String] = [:]
        for (name, value) in http.allHeaderFields {
            if let name = name as? String, let value = value as? String { headers[name.lowercased()] = value }
        }
        return Reply(status: http.statusCode, headers: headers, body: body)
    }

    /// Registers and logs in; returns a client carrying the access token.
    func signUp(_ name: String) async throws -> APIClient {
        let password = "correct horse battery"
        let registered = try await call("POST", "/api/v1/auth/register",
                                        json: ["email": "\(name)@example.com", "username": name, "password": password])
        #expect(registered.status == 201, "\(registered.text)")
        let login = try await call("POST", "/api/v1/auth/login", json: ["email": "\(name)@example.com", "password": password])
        #expect(login.status == 200, "\(login.text)")
        var client = self
        client.token = try #require(login.json["accessToken"] as? String)
        return client
    }
}

/// ffmpeg publishing a fixture in a loop until stopped.
func publishLooping(_ fixture: String, to url: String) throws -> ChildProcess {
    try ChildProcess("ffmpeg", ["-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", fixturePath(fixture),
                                "-c", "copy", "-f", "flv", url])
}

extension EndToEnd {
    @Suite("Accounts, channels and stream keys over HTTP and RTMP", .postgres)
    struct AccountFlow {
        @Test("register → login → channel → key → ffmpeg publishes with the key → HLS under the channel name → revoke ends it → the key is denied",
              arguments: ["sqlite", "postgres"])
        func fullFlow(database: String) async throws {
            let databaseURL = try database == "postgres"
                ? #require(PostgresServer.current).url(database: #require(PostgresServer.current).createDatabase()) : nil
            let server = try await TestServer {
                $0.databaseURL = databaseURL
                $0.bcryptCost = 10
            }
            let api = try await APIClient(server: server).signUp("streamer")

            let me = try await api.call("GET", "/api/v1/auth/me")
            #expect(me.status == 200 && me.json["username"] as? String == "streamer" && me.json["role"] as? String == "user")

            let channel = try await api.call("POST", "/api/v1/channels",
                                             json: ["name": "gaming", "title": "Gaming", "tags": ["games"]])
            #expect(channel.status == 201, "\(channel.text)")
            let created = try await api.call("POST", "/api/v1/channels/gaming/keys")
            #expect(created.status == 201 && created.headers["cache-control"] == "no-store")
            let key = try #require(created.json["key"] as? String)
            let keyID = try #require(created.json["id"] as? String)
            let listed = try await api.call("GET", "/api/v1/channels/gaming/keys")
            #expect(listed.status == 200 && !listed.text.contains(key), "\(listed.text)")

            // The key publishes; the stream is the channel's, and the key shows nowhere.
            let publisher = try publishLooping("av-640x360.flv", to: server.rtmpURL(key))
            _ = try await server.waitForPlaylist("gaming") { !$0.segments.isEmpty }
            #expect(try await server.get("/live/\(key)/index.m3u8").status == 404)
            let status = try await APIClient(server: server).call("GET", "/api/v1/channels/gaming")
            #expect(status.json["live"] as? Bool == true && status.json["owner"] as? String == "streamer")
            let streams = try await server.get("/api/v1/streams")
            #expect(!String(decoding: streams.body, as: UTF8.self).contains(key))

            // Revoking the key ends the publish within a second.
            let revokedAt = ContinuousClock.now
            #expect(try await api.call("DELETE", "/api/v1/channels/gaming/keys/\(keyID)").status == 204)
            _ = try await publisher.wait()
            #expect(ContinuousClock.now - revokedAt < .seconds(1))
            #expect(server.logs.contains("stream key revoked"))

            let denied = try await publish("video-only.flv", to: server.rtmpURL(key)).wait()
            #expect(denied.status != 0)
            #expect(denied.stderr.contains("unknown stream key"), "\(denied.stderr)")
            // Once keys exist, a bare name is no longer published (the server is no longer open).
            let bare = try await publish("video-only.flv", to: server.rtmpURL("gaming")).wait()
            #expect(bare.status != 0)

            for line in server.logs.all {
                #expect(!line.contains(key), "key in log: \(line)")
            }
            let metrics = try await server.get("/metrics")
            let text = String(decoding: metrics.body, as: UTF8.self)
            #expect(text.contains(#"estuary_publish_total{result="allow"} 1"#), "\(text)")
            #expect(text.contains(#"estuary_publish_total{result="deny"} 2"#), "\(text)")
            #expect(text.contains(#"estuary_auth_logins_total{result="success"} 1"#), "\(text)")
            try await server.stop()
        }
    }

    @Suite("Account API")
    struct AccountAPI {
        @Test("refresh rotates over HTTP; logout revokes; errors are JSON with the right status and name the field")
        func httpErrors() async throws {
            let server = try await TestServer { $0.bcryptCost = 10 }
            let anonymous = APIClient(server: server)
            _ = try await anonymous.signUp("errors")
            let login = try await anonymous.call("POST", "/api/v1/auth/login",
                                                 json: ["email": "errors@example.com", "password": "correct horse battery"])
            let refresh = try #require(login.json["refreshToken"] as? String)
            let rotated = try await anonymous.call("POST", "/api/v1/auth/refresh", json: ["refreshToken": refresh])
            #expect(rotated.status == 200)
            let reused = try await anonymous.call("POST", "/api/v1/auth/refresh", json: ["refreshToken": refresh])
            #expect(reused.status == 401 && reused.json["error"] != nil)
            #expect(try await anonymous.call("POST", "/api/v1/auth/logout", json: ["refreshToken": refresh]).status == 204)

            let cases: [(String, String, [String: Any]?, Data?, Int, String)] = [
                ("POST", "/api/v1/auth/register", nil, Data("{not json".utf8), 400, "malformed JSON"),
                ("POST", "/api/v1/auth/register", ["email": "a@example.com", "password": "correct horse battery"], nil, 400, "username"),
                ("POST", "/api/v1/auth/register", ["email": 7, "username": "abc", "password": "x"], nil, 400, "email"),
                ("POST", "/api/v1/auth/register", ["email": "errors@example.com", "username": "other", "password": "correct horse battery"], nil, 409, "email"),
                ("POST", "/api/v1/auth/login", ["email": "errors@example.com", "password": "wrong password!!"], nil, 401, "wrong email or password"),
                ("POST", "/api/v1/auth/register", nil, Data(repeating: 0x20, count: 70_000), 413, "larger than"),
                ("GET", "/api/v1/auth/me", nil, nil, 401, "access token"),
                ("POST", "/api/v1/channels", ["name": "nope"], nil, 401, "access token"),
                ("GET", "/api/v1/channels/missing-one", nil, nil, 404, "no channel"),
                ("GET", "/api/v1/no-such-route", nil, nil, 404, "no route for GET /api/v1/no-such-route"),
                ("PUT", "/api/v1/channels", ["name": "x"], nil, 404, "no route for PUT /api/v1/channels"),
            ]
            for (method, path, json, raw, expected, fragment) in cases {
                let reply = try await anonymous.call(method, path, json: json, raw: raw)
                #expect(reply.status == expected, "\(method) \(path): \(reply.status) \(reply.text)")
                #expect(reply.headers["content-type"] == "application/json", "\(method) \(path)")
                #expect(reply.errorMessage.contains(fragment), "\(method) \(path): \(reply.text)")
            }
            try await server.stop()
        }

        @Test("admin-only routes: 403 to a user's token, open to an admin's (made by `estuary users create --admin`)")
        func admin() async throws {
            let server = try await TestServer { $0.bcryptCost = 10 }
            let user = try await APIClient(server: server).signUp("plainuser")
            let forbidden = try await user.call("GET", "/api/v1/users")
            #expect(forbidden.status == 403 && forbidden.errorMessage.contains("administrators"))
            #expect(try await user.call("GET", "/api/v1/streams").status == 403)

            var configuration = server.app.configuration
            configuration.bcryptCost = 10
            _ = try await Operator.createUser(configuration, email: "root@example.com", username: "root",
                                              password: "correct horse battery", admin: true, logger: .init(label: "cli"))
            let login = try await APIClient(server: server).call("POST", "/api/v1/auth/login",
                                                                 json: ["email": "root@example.com", "password": "correct horse battery"])
            let admin = APIClient(server: server, token: try #require(login.json["accessToken"] as? String))
            let users = try await admin.call("GET", "/api/v1/users")
            #expect(users.status == 200)
            #expect(Set(((users.json["users"] as? [[String: Any]]) ?? []).compactMap { $0["username"] as? String }) == ["plainuser", "root"])
            #expect(try await admin.call("GET", "/api/v1/streams").status == 200)
            try await server.stop()
        }
    }
}

extension EndToEnd {
    @Suite("Operator commands")
    struct OperatorCommands {
        @Test("`estuary users create --admin` and `estuary keys create` work on the server's database; bad input exits non-zero with the reason")
        func commands() async throws {
            let data = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-cli-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: data) }
            let binary = try estuaryBinary()
            let admin = try await ChildProcess.run(binary, [
                "users", "create", "--admin", "--email", "ops@example.com", "--username", "ops",
                "--password", "correct horse battery", "--data-dir", data,
            ])
            #expect(admin.status == 0, "\(admin.stderr)")
            #expect(admin.stdout.hasPrefix("created admin ops ("), "\(admin.stdout)")
            let again = try await ChildProcess.run(binary, [
                "users", "create", "--email", "ops@example.com", "--username", "ops2",
                "--password", "correct horse battery", "--data-dir", data,
            ])
            #expect(again.status != 0 && again.stderr.contains("already exists"), "\(again.stderr)")
            let weak = try await ChildProcess.run(binary, [
                "users", "create", "--email", "w@example.com", "--username", "weak", "--password", "short", "--data-dir", data,
            ])
            #expect(weak.status != 0 && weak.stderr.contains("'password'"), "\(weak.stderr)")

            let missing = try await ChildProcess.run(binary, ["keys", "create", "--channel", "nochannel", "--data-dir", data])
            #expect(missing.status != 0 && missing.stderr.contains("no channel named 'nochannel'"), "\(missing.stderr)")
            let key = try await ChildProcess.run(binary, ["keys", "create", "--channel", "ops-show", "--owner", "ops", "--data-dir", data])
            #expect(key.status == 0, "\(key.stderr)")
            let printed = key.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(printed.hasPrefix("live_") && printed.count == 37, "\(key.stdout)")

            // The server on that data directory takes the key and publishes under the channel name.
            let server = try await ServerProcess(["--data-dir", data])
            let publisher = try publish("av-640x360.flv", to: "rtmp://127.0.0.1:\(server.rtmpPort)/live/\(printed)")
            try await EndToEnd.Relay.waitUntil("the channel's playlist", timeout: .seconds(20)) {
                let url = URL(string: "http://127.0.0.1:\(server.httpPort)/live/ops-show/index.m3u8")!
                // The server is listening (ServerProcess waited for it): only the status says "not yet".
                let (_, response) = try await URLSession.shared.data(from: url)
                return (response as? HTTPURLResponse)?.statusCode == 200
            }
            publisher.kill()
            _ = try await publisher.wait()
            server.process.kill()
            _ = try await server.process.wait()
        }
    }
}

extension EndToEnd.AccountAPI {
    @Test("an address that keeps sending wrong keys is refused for the rest of the minute, even with a right one; API requests are logged without their query")
    func publishThrottle() async throws {
        let server = try await TestServer { $0.streamKeys = ["right-key-123": "main"] }
        for attempt in 0..<10 {
            let denied = try await publish("video-only.flv", to: server.rtmpURL("wrong-\(attempt)")).wait()
            #expect(denied.status != 0 && denied.stderr.contains("unknown stream key"), "\(denied.stderr)")
        }
        let throttled = try await publish("video-only.flv", to: server.rtmpURL("right-key-123")).wait()
        #expect(throttled.status != 0)
        #expect(throttled.stderr.contains("too many refused publishes"), "\(throttled.stderr)")

        _ = try await server.get("/api/v1/channels/nothing-here?token=secret-in-query")
        #expect(server.logs.all.contains { $0.contains("api request") && $0.contains("path=/api/v1/channels/nothing-here")
            && $0.contains("status=404") })
        #expect(!server.logs.contains("secret-in-query"))
        try await server.stop()
    }
}

extension EndToEnd {
    @Suite("PostgreSQL going away", .postgres)
    struct DatabaseDown {
        @Test("with PostgreSQL stopped: the API answers 503 as JSON, a database key is refused with the reason, a configured key still publishes")
        func databaseDown() async throws {
            let postgres = try #require(PostgresServer.current)
            let database = try postgres.createDatabase()
            let server = try await TestServer {
                $0.databaseURL = postgres.url(database: database)
                $0.bcryptCost = 10
                $0.streamKeys = ["config-key-123": "configured"]
            }
            let api = try await APIClient(server: server).signUp("survivor")
            _ = try await api.call("POST", "/api/v1/channels", json: ["name": "dbchan"])
            let key = try #require(try await api.call("POST", "/api/v1/channels/dbchan/keys").json["key"] as? String)

            postgres.stop()
            let login = try await APIClient(server: server).call(
                "POST", "/api/v1/auth/login", json: ["email": "survivor@example.com", "password": "correct horse battery"])
            #expect(login.status == 503 && login.errorMessage.contains("database is unavailable"), "\(login.status) \(login.text)")
            #expect(login.headers["retry-after"] == "5")

            let refused = try await publish("video-only.flv", to: server.rtmpURL(key)).wait()
            #expect(refused.status != 0 && refused.stderr.contains("stream keys are unavailable"), "\(refused.stderr)")
            let configured = try publish("video-only.flv", to: server.rtmpURL("config-key-123"))
            _ = try await server.waitForPlaylist("configured") { !$0.segments.isEmpty }
            #expect(try await configured.wait().status == 0)
            #expect(try await server.get("/health").status == 200)
            try await server.stop()
        }
    }
}
