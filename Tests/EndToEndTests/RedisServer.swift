import Foundation
import Testing

/// A real `redis-server` on a free loopback port, with a throwaway directory and no persistence
/// (a restart comes back empty, as a replaced Redis would). Stopped by its pid.
final class RedisServer: Sendable {
    let port: Int
    let directory: URL
    let password: String?
    let process: ChildProcess

    private init(port: Int, directory: URL, password: String?, process: ChildProcess) {
        self.port = port
        self.directory = directory
        self.password = password
        self.process = process
    }

    static func start(port: Int? = nil, password: String? = nil) async throws -> RedisServer {
        let port = try port ?? EndToEnd.Relay.Nginx.freePort()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--dir", directory.path, "--save", "",
                         "--appendonly", "no", "--daemonize", "no", "--logfile", directory.appendingPathComponent("redis.log").path]
        if let password { arguments += ["--requirepass", password] }
        let process = try ChildProcess("redis-server", arguments)
        let server = RedisServer(port: port, directory: directory, password: password, process: process)
        try await EndToEnd.Relay.waitUntil("redis-server to answer on port \(port)", timeout: .seconds(10)) {
            guard process.isRunning else { return false }
            // redis-cli prints the refusal while the server starts; only a missing redis-cli throws.
            return try await server.cli("PING") == "PONG"
        }
        return server
    }

    var url: String { "redis://\(password.map { ":\($0)@" } ?? "")127.0.0.1:\(port)/0" }

    /// `redis-cli COMMAND…` against this server; its raw output, trimmed.
    func cli(_ arguments: String...) async throws -> String {
        try await cli(arguments)
    }

    func cli(_ arguments: [String]) async throws -> String {
        let auth = password.map { ["-a", $0, "--no-auth-warning"] } ?? []
        let result = try await ChildProcess.run("redis-cli", ["-h", "127.0.0.1", "-p", "\(port)"] + auth + arguments)
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A hash as a dictionary (empty when the key does not exist).
    func hash(_ key: String) async throws -> [String: String] {
        let lines = try await cli("HGETALL", key).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var fields: [String: String] = [:]
        var index = 0
        while index + 1 < lines.count {
            fields[lines[index]] = lines[index + 1]
            index += 2
        }
        return fields
    }

    /// Every key and value in the database, for checks that something (a stream key) is nowhere.
    func dump() async throws -> String {
        var text = ""
        for key in try await cli("KEYS", "*").split(separator: "\n").sorted() {
            let type = try await cli("TYPE", String(key))
            text += "\(key) (\(type)): "
            switch type {
            case "hash": text += try await hash(String(key)).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            case "string": text += try await cli("GET", String(key))
            case "zset": text += try await cli("ZRANGE", String(key), "0", "-1", "WITHSCORES").split(separator: "\n").joined(separator: " ")
            default: break
            }
            text += "\n"
        }
        return text
    }

    /// `SUBSCRIBE channel` through redis-cli, line-buffered; `stop()` returns what it printed.
    func subscribe(_ channel: String) async throws -> Subscriber {
        let auth = password.map { ["-a", $0, "--no-auth-warning"] } ?? []
        let process = try ChildProcess("stdbuf", ["-oL", "redis-cli", "-h", "127.0.0.1", "-p", "\(port)"] + auth + ["SUBSCRIBE", channel])
        // The subscription is in place once Redis counts a subscriber on the channel.
        try await EndToEnd.Relay.waitUntil("redis-cli to subscribe", timeout: .seconds(10)) {
            try await cli("PUBSUB", "NUMSUB", channel).hasSuffix("1")
        }
        return Subscriber(process: process)
    }

    struct Subscriber {
        let process: ChildProcess

        /// The JSON messages received, decoded.
        func stop() async throws -> [[String: Any]] {
            process.kill()
            let output = try await process.wait().stdout
            return output.split(separator: "\n").filter { $0.hasPrefix("{") }.compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
            }
        }
    }

    func pause() { process.kill(SIGSTOP) }
    func resume() { process.kill(SIGCONT) }

    /// SIGKILL, as a crash.
    func kill() async throws {
        process.kill(SIGKILL)
        _ = try await process.wait()
        try? FileManager.default.removeItem(at: directory)
    }

    /// A test that failed before `stop()` leaves no server behind.
    deinit {
        if process.isRunning {
            process.kill(SIGCONT)
            process.kill(SIGKILL)
        }
        try? FileManager.default.removeItem(at: directory)
    }

    func stop() async throws {
        process.kill(SIGCONT)
        process.kill(SIGTERM)
        _ = try await process.wait()
        try? FileManager.default.removeItem(at: directory)
    }

    /// A new server on the same port (and password), empty.
    func restart() async throws -> RedisServer {
        try await Self.start(port: port, password: password)
    }
}
