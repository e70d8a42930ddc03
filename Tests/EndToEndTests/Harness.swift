import App
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

let fixturesDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("fixtures")

func fixturePath(_ name: String) -> String { fixturesDirectory.appendingPathComponent(name).path }

/// Log lines the server wrote, for assertions on reasons.
final class LogCapture: Sendable {
    private let lines = Mutex<[String]>([])

    func append(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }

    func contains(_ fragment: String) -> Bool { all.contains { $0.contains(fragment) } }

    struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .debug

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let merged = metadata.merging(event.metadata ?? [:]) { $1 }
            let rendered = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
            capture.append("\(event.level) \(event.message) \(rendered)")
        }
    }
}

/// An Estuary running in this process on free loopback ports.
final class TestServer: Sendable {
    let app: EstuaryApplication
    let logs = LogCapture()
    let rtmpPort: Int
    let httpPort: Int
    let dataDirectory: URL
    private let group: ServiceGroup
    private let task: Task<Void, any Error>

    convenience init(configure: (inout EstuaryConfiguration) -> Void = { _ in }) async throws {
        try await self.init(makeRecorder: nil, configure: configure)
    }

    /// `makeRecorder` opens recording files in place of the real recorders (to make them fail).
    init(makeRecorder: RecordingService.RecorderFactory?, configure: (inout EstuaryConfiguration) -> Void) async throws {
        dataDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-test-\(UUID().uuidString)")
        var configuration = EstuaryConfiguration()
        configuration.bind = "127.0.0.1"
        configuration.rtmpPort = 0
        configuration.httpPort = 0
        configuration.dataDirectory = dataDirectory.path
        configuration.publishGrace = 2
        configure(&configuration)
        let capture = logs
        let logger = Logger(label: "estuary-test") { _ in LogCapture.Handler(capture: capture) }
        app = try await buildApplication(configuration, logger: logger, onRecordDone: { _ in }, makeRecorder: makeRecorder)
        let group = ServiceGroup(configuration: .init(services: [.init(service: app)], logger: logger))
        self.group = group
        task = Task { try await group.run() }
        rtmpPort = try await app.rtmpPort.value
        httpPort = try await app.httpPort.value
    }

    func rtmpURL(_ name: String, app: String = "live") -> String { "rtmp://127.0.0.1:\(rtmpPort)/\(app)/\(name)" }
    func httpURL(_ path: String) -> URL { URL(string: "http://127.0.0.1:\(httpPort)\(path)")! }

    /// Graceful shutdown, as on SIGTERM; returns when every service has stopped.
    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
        try FileManager.default.removeItem(at: dataDirectory)
    }

    func get(_ path: String, headers: [String: String] = [:], method: String = "GET") async throws
        -> (status: Int, headers: [String: String], body: Data)
    {
        var request = URLRequest(url: httpURL(path))
        request.httpMethod = method
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (body, response) = try await URLSession.shared.data(for: request)
        let http = try #require(response as? HTTPURLResponse)
        var fields: [String: String] = [:]
        for (name, value) in http.allHeaderFields {
            if let name = name as? String, let value = value as? String { fields[name.lowercased()] = value }
        }
        return (http.statusCode, fields, body)
    }

    /// Fetches the playlist until `condition` holds (segments appear as media arrives in real time).
    func waitForPlaylist(_ channel: String, timeout: Duration = .seconds(30),
                         until condition: (Playlist) -> Bool) async throws -> Playlist {
        let deadline = ContinuousClock.now + timeout
        var last: Playlist?
        while ContinuousClock.now < deadline {
            let response = try await get("/live/\(channel)/index.m3u8")
            if response.status == 200 {
                let playlist = try Playlist(String(decoding: response.body, as: UTF8.self))
                if condition(playlist) { return playlist }
                last = playlist
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("playlist condition not met in \(timeout); last: \(last?.text ?? "none")")
        throw TestFailure.timeout
    }
}

enum TestFailure: Error { case timeout, parse(String) }

/// A parsed media playlist, strictly: unknown lines fail the test.
struct Playlist {
    struct Segment {
        var uri: String
        var duration: Double
        var discontinuity: Bool
    }

    var text: String
    var targetDuration = 0
    var mediaSequence = 0
    var segments: [Segment] = []
    var ended = false

    init(_ text: String) throws {
        self.text = text
        let lines = text.split(separator: "\n").map(String.init)
        guard lines.first == "#EXTM3U" else { throw TestFailure.parse("no #EXTM3U") }
        var duration: Double?
        var discontinuity = false
        for line in lines.dropFirst() {
            if line.hasPrefix("#EXT-X-TARGETDURATION:") {
                targetDuration = Int(line.dropFirst(22)) ?? -1
            } else if line.hasPrefix("#EXT-X-MEDIA-SEQUENCE:") {
                mediaSequence = Int(line.dropFirst(22)) ?? -1
            } else if line.hasPrefix("#EXTINF:") {
                duration = Double(line.dropFirst(8).split(separator: ",").first ?? "")
            } else if line == "#EXT-X-DISCONTINUITY" {
                discontinuity = true
            } else if line == "#EXT-X-ENDLIST" {
                ended = true
            } else if line.hasPrefix("#EXT-X-VERSION:") || line.hasPrefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
                continue
            } else if !line.hasPrefix("#") {
                guard let duration else { throw TestFailure.parse("URI without EXTINF: \(line)") }
                segments.append(Segment(uri: line, duration: duration, discontinuity: discontinuity))
                discontinuity = false
            } else {
                throw TestFailure.parse("unexpected line \(line)")
            }
        }
    }

    var totalDuration: Double { segments.reduce(0) { $0 + $1.duration } }
}

/// A child process (ffmpeg, ffprobe) with its output collected.
struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

final class ChildProcess: Sendable {
    private let process: Process
    private let stdoutPipe = Pipe()
    private let stderrPipe = Pipe()
    private let exit: Task<Int32, Never>
    private let stdoutData: Task<Data, any Error>
    private let stderrData: Task<Data, any Error>

    init(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [executable] + arguments
        process.standardOutput = stdoutPipe
        process.standardError = stderrPipe
        process.standardInput = FileHandle.nullDevice
        let (stream, continuation) = AsyncStream<Int32>.makeStream()
        process.terminationHandler = { continuation.yield($0.terminationStatus); continuation.finish() }
        try Self.spawn(process)
        self.process = process
        exit = Task { for await status in stream { return status }; return -1 }
        stdoutData = Self.readAll(stdoutPipe.fileHandleForReading)
        stderrData = Self.readAll(stderrPipe.fileHandleForReading)
    }

    /// Starts the process from a thread with no signals blocked: a child inherits its parent
    /// thread's signal mask, and Dispatch and cooperative threads block SIGTERM — an ffmpeg
    /// started from one would ignore the polite stop the tests send it.
    private static func spawn(_ process: Process) throws {
        let started = DispatchSemaphore(value: 0)
        let outcome = Mutex<Result<Void, any Error>>(.success(()))
        let thread = Thread {
            var none = sigset_t()
            sigemptyset(&none)
            pthread_sigmask(SIG_SETMASK, &none, nil)
            let result = Result { try process.run() }
            outcome.withLock { $0 = result }
            started.signal()
        }
        thread.start()
        started.wait()
        try outcome.withLock { $0 }.get()
    }

    /// Reads on a thread of its own: a blocking read must hold neither one of the (two) cooperative
    /// threads nor a Dispatch worker (50 players would exhaust the pool Process itself relies on).
    private static func readAll(_ handle: FileHandle) -> Task<Data, any Error> {
        Task {
            try await withCheckedThrowingContinuation { continuation in
                let thread = Thread {
                    continuation.resume(with: Result { try handle.readToEnd() ?? Data() })
                }
                thread.stackSize = 256 << 10
                thread.start()
            }
        }
    }

    var pid: Int32 { process.processIdentifier }

    var isRunning: Bool { process.isRunning }

    func kill(_ signal: Int32 = SIGTERM) { Foundation.kill(process.processIdentifier, signal) }

    func wait() async throws -> ProcessResult {
        let status = await exit.value
        let out = try await stdoutData.value
        let err = try await stderrData.value
        return ProcessResult(status: status, stdout: String(decoding: out, as: UTF8.self),
                             stderr: String(decoding: err, as: UTF8.self))
    }

    static func run(_ executable: String, _ arguments: [String]) async throws -> ProcessResult {
        try await ChildProcess(executable, arguments).wait()
    }
}

/// `ffmpeg -re -i <fixture> -c copy -f flv <url>`: a real publisher.
func publish(_ fixture: String, to url: String, extra: [String] = []) throws -> ChildProcess {
    try ChildProcess("ffmpeg", ["-hide_banner", "-loglevel", "error", "-re", "-i", fixturePath(fixture)] + extra
        + ["-c", "copy", "-f", "flv", url])
}

/// A raw TCP client for hostile byte streams: sends the bytes, then waits for the server to close.
enum RawClient {
    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
    }

    /// Returns true when the server closed the connection within `timeout`.
    static func sendAndAwaitClose(_ bytes: [UInt8], port: Int, timeout: TimeAmount) async throws -> Bool {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { $0.pipeline.addHandler(Collector()) }
            .connect(host: "127.0.0.1", port: port).get()
        // Write in pieces so a server that closes early stops the rest; a failed write means it did.
        var offset = 0
        while offset < bytes.count, channel.isActive {
            let end = min(bytes.count, offset + 16384)
            do {
                try await channel.writeAndFlush(ByteBuffer(bytes: bytes[offset..<end])).get()
            } catch {
                break
            }
            offset = end
        }
        let timer = channel.eventLoop.scheduleTask(in: timeout) { channel.close(promise: nil) }
        let start = NIODeadline.now()
        try await channel.closeFuture.get()
        timer.cancel()
        return NIODeadline.now() - start < timeout
    }
}

/// Resident memory of this process, from /proc.
func residentMemoryBytes() throws -> Int {
    let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
    let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") })
    let kilobytes = try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
    return kilobytes * 1024
}
