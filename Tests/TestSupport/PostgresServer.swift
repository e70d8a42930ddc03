public import Foundation
public import Testing

/// A real PostgreSQL server for the tests: Debian's `postgresql` binaries, a throwaway data
/// directory, loopback on a free port, trust authentication, stopped by its PID. A machine
/// without PostgreSQL fails the tests that need it (`make test-deps` installs it); nothing is skipped.
public final class PostgresServer: Sendable {
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    public let port: Int
    public let directory: URL
    private let binaries: URL
    private let process: Process
    private let runAs: [String]

    /// The server of the suite running now (see `PostgresTrait`).
    @TaskLocal public static var current: PostgresServer?

    private init(port: Int, directory: URL, binaries: URL, process: Process, runAs: [String]) {
        self.port = port
        self.directory = directory
        self.binaries = binaries
        self.process = process
        self.runAs = runAs
    }

    /// `postgres://estuary@127.0.0.1:PORT/NAME?tlsmode=disable`.
    public func url(database: String) -> String {
        "postgres://estuary@127.0.0.1:\(port)/\(database)?tlsmode=disable"
    }

    /// A new, empty database for one test.
    public func createDatabase() throws -> String {
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        try Self.run(binaries.appendingPathComponent("createdb").path,
                     ["-h", "127.0.0.1", "-p", "\(port)", "-U", "estuary", name], runAs: [])
        return name
    }

    public static func start() async throws -> PostgresServer {
        let binaries = try findBinaries()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-pg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // PostgreSQL refuses to run as root: as root, run it as the `postgres` account the package creates.
        var runAs: [String] = []
        if getuid() == 0 {
            runAs = ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
            try run("/bin/chown", ["-R", "postgres:postgres", directory.path], runAs: [])
        }
        let data = directory.appendingPathComponent("data").path
        try run(binaries.appendingPathComponent("initdb").path,
                ["-D", data, "-U", "estuary", "--auth=trust", "-E", "UTF8", "--no-sync"], runAs: runAs)
        let port = try freePort()
        let process = Process()
        let postgres = binaries.appendingPathComponent("postgres").path
        let arguments = [postgres, "-D", data, "-p", "\(port)", "-k", directory.path,
                         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                         "-c", "full_page_writes=off"]
        process.executableURL = URL(fileURLWithPath: runAs.first ?? postgres)
        process.arguments = runAs.isEmpty ? Array(arguments.dropFirst()) : Array(runAs.dropFirst()) + arguments
        let log = directory.appendingPathComponent("server.log")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: log)
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        let server = PostgresServer(port: port, directory: directory, binaries: binaries, process: process, runAs: runAs)
        // Ready when pg_isready says so (it accepts connections), or fail with the server's log.
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            guard process.isRunning else { break }
            // pg_isready exits 0 once connections are accepted, non-zero until then.
            if try status(binaries.appendingPathComponent("pg_isready").path,
                          ["-h", "127.0.0.1", "-p", "\(port)", "-U", "estuary"], runAs: []).code == 0 {
                return server
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        server.stop()
        throw Unavailable(description: "PostgreSQL did not start on port \(port): \(output.suffix(2000))")
    }

    /// Fast shutdown (SIGINT) by PID, then the data directory goes.
    public func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGINT)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: directory)
    }

    private static func findBinaries() throws -> URL {
        let root = URL(fileURLWithPath: "/usr/lib/postgresql")
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        for version in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
            let bin = root.appendingPathComponent(version).appendingPathComponent("bin")
            if FileManager.default.isExecutableFile(atPath: bin.appendingPathComponent("postgres").path) { return bin }
        }
        throw Unavailable(description: "PostgreSQL server binaries not found under /usr/lib/postgresql: run `make test-deps` (installs Debian's postgresql)")
    }

    @discardableResult
    static func run(_ executable: String, _ arguments: [String], runAs: [String]) throws -> String {
        let result = try status(executable, arguments, runAs: runAs)
        guard result.code == 0 else {
            throw Unavailable(description: "\(executable) \(arguments.joined(separator: " ")) failed: \(result.output)")
        }
        return result.output
    }

    /// Runs a command to its end: its exit status and output (a failure to start it throws).
    static func status(_ executable: String, _ arguments: [String], runAs: [String]) throws -> (code: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: runAs.first ?? executable)
        process.arguments = runAs.isEmpty ? arguments : Array(runAs.dropFirst()) + [executable] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }

    /// A port nothing listens on now (bound to 0, read, closed).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Unavailable(description: "socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw Unavailable(description: "bind() failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Runs a suite with its own PostgreSQL server, started before its first test and stopped after
/// its last: `@Suite(.postgres)`; tests read `PostgresServer.current`.
public struct PostgresTrait: SuiteTrait, TestScoping {
    public var isRecursive: Bool { false }

    public func provideScope(for test: Test, testCase: Test.Case?,
                             performing function: @Sendable () async throws -> Void) async throws {
        let server = try await PostgresServer.start()
        defer { server.stop() }
        try await PostgresServer.$current.withValue(server) { try await function() }
    }
}

extension Trait where Self == PostgresTrait {
    public static var postgres: PostgresTrait { PostgresTrait() }
}
