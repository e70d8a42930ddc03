import CHiredis
import Dispatch
import Foundation
import Glibc
public import Logging
import Synchronization

/// A reply from Redis, copied out of hiredis's reply tree.
public enum RedisReply: Sendable, Equatable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8])
    case null
    case array([RedisReply])

    /// Bulk or status text as a string.
    public var string: String? {
        switch self {
        case .bulk(let bytes): String(decoding: bytes, as: UTF8.self)
        case .status(let text): text
        default: nil
        }
    }

    public var integer: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    public var array: [RedisReply]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// Limits on what we copy out of a reply: Redis is trusted, but not to send us gigabytes.
    public struct Limits: Sendable {
        public var maxDepth = 4
        public var maxElements = 100_000
        public var maxBytes = 16 << 20
        public init() {}
    }
}

public enum RedisError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Not connected (down, refused the password, or reconnecting); the reason from the last attempt.
    case unavailable(String)
    /// The connection broke or timed out while the command was in flight.
    case connectionLost(String)
    /// The command waited longer than its timeout before it could be sent.
    case timeout
    /// Redis answered with an error reply (`-ERR …`, `-OOM …`, `-NOAUTH …`).
    case reply(String)
    /// A reply over `RedisReply.Limits`.
    case replyTooLarge(String)
    case stopped

    public var description: String {
        switch self {
        case .unavailable(let why): "redis unavailable: \(why)"
        case .connectionLost(let why): "redis connection lost: \(why)"
        case .timeout: "redis command timed out before it was sent"
        case .reply(let message): "redis error reply: \(message)"
        case .replyTooLarge(let why): "redis reply too large: \(why)"
        case .stopped: "redis client stopped"
        }
    }
}

/// A blocking hiredis connection. Used by one thread at a time; never on an event loop.
package final class RedisConnection {
    private var context: UnsafeMutablePointer<redisContext>
    let limits: RedisReply.Limits

    private init(context: UnsafeMutablePointer<redisContext>, limits: RedisReply.Limits) {
        self.context = context
        self.limits = limits
    }

    /// Connects, authenticates and selects the database; throws with hiredis's or Redis's words.
    package static func connect(to endpoint: RedisEndpoint, timeout: Duration,
                                limits: RedisReply.Limits = .init()) throws(RedisError) -> RedisConnection {
        let tv = makeTimeval(timeout)
        guard let context = redisConnectWithTimeout(endpoint.host, Int32(endpoint.port), tv) else {
            throw .unavailable("cannot allocate a hiredis context")
        }
        if context.pointee.err != 0 {
            let reason = errorString(context)
            redisFree(context)
            throw .unavailable("connect to \(endpoint.host):\(endpoint.port): \(reason)")
        }
        redisSetTimeout(context, tv)
        redisEnableKeepAlive(context)
        // From here on the connection frees the context when it is released.
        let connection = RedisConnection(context: context, limits: limits)
        if let password = endpoint.password {
            let auth = endpoint.username.map { ["AUTH", $0, password] } ?? ["AUTH", password]
            if case .error(let message) = try connection.command(auth) {
                throw .unavailable("redis refused the password (\(message))")
            }
        }
        if endpoint.database != 0, case .error(let message) = try connection.command(["SELECT", "\(endpoint.database)"]) {
            throw .unavailable("SELECT \(endpoint.database): \(message)")
        }
        // A server that wants a password says NOAUTH here, not at connect.
        if case .error(let message) = try connection.command(["PING"]) {
            throw .unavailable(message)
        }
        return connection
    }

    deinit { redisFree(context) }

    /// Sends one command and reads its reply.
    package func command(_ arguments: [String]) throws(RedisError) -> RedisReply {
        try pipeline([arguments])[0].get()
    }

    /// Writes every command, then reads every reply (one round trip). A broken connection
    /// throws; error replies come back as `.error` in their slot.
    package func pipeline(_ commands: [[String]]) throws(RedisError) -> [Result<RedisReply, RedisError>] {
        for arguments in commands { append(arguments) }
        var replies: [Result<RedisReply, RedisError>] = []
        replies.reserveCapacity(commands.count)
        for _ in commands { replies.append(try readReply()) }
        return replies
    }

    /// Reads the next reply (a pub/sub message, for a subscriber).
    package func readReply() throws(RedisError) -> Result<RedisReply, RedisError> {
        var raw: UnsafeMutableRawPointer?
        guard redisGetReply(context, &raw) == REDIS_OK, let raw else {
            throw .connectionLost(Self.errorString(context))
        }
        defer { freeReplyObject(raw) }
        var budget = (elements: limits.maxElements, bytes: limits.maxBytes)
        return Result { () throws(RedisError) in
            try Self.copy(raw.assumingMemoryBound(to: redisReply.self), depth: 0, limits: limits, budget: &budget)
        }
    }

    private func append(_ arguments: [String]) {
        // One buffer for all arguments; hiredis copies them into its output buffer before returning.
        let bytes = arguments.map { Array($0.utf8) }
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.reduce(0) { $0 + $1.count }))
        defer { buffer.deallocate() }
        var pointers: [UnsafePointer<CChar>?] = []
        var lengths: [Int] = []
        var offset = 0
        for argument in bytes {
            argument.withUnsafeBytes { raw in
                UnsafeMutableRawPointer(buffer + offset).copyMemory(from: raw.baseAddress ?? UnsafeRawPointer(buffer), byteCount: raw.count)
            }
            pointers.append(UnsafePointer(buffer + offset))
            lengths.append(argument.count)
            offset += argument.count
        }
        _ = redisAppendCommandArgv(context, Int32(arguments.count), &pointers, &lengths)
    }

    private static func copy(_ reply: UnsafeMutablePointer<redisReply>, depth: Int, limits: RedisReply.Limits,
                             budget: inout (elements: Int, bytes: Int)) throws(RedisError) -> RedisReply {
        let reply = reply.pointee
        func text() throws(RedisError) -> [UInt8] {
            budget.bytes -= reply.len
            guard budget.bytes >= 0 else { throw .replyTooLarge("over \(limits.maxBytes) bytes") }
            guard let str = reply.str else { return [] }
            return Array(UnsafeRawBufferPointer(start: str, count: reply.len))
        }
        switch reply.type {
        case REDIS_REPLY_STRING: return .bulk(try text())
        case REDIS_REPLY_STATUS: return .status(String(decoding: try text(), as: UTF8.self))
        case REDIS_REPLY_ERROR: return .error(String(decoding: try text(), as: UTF8.self))
        case REDIS_REPLY_INTEGER: return .integer(Int64(reply.integer))
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_ARRAY:
            guard depth < limits.maxDepth else { throw .replyTooLarge("nested deeper than \(limits.maxDepth)") }
            budget.elements -= reply.elements
            guard budget.elements >= 0 else { throw .replyTooLarge("over \(limits.maxElements) elements") }
            var elements: [RedisReply] = []
            elements.reserveCapacity(reply.elements)
            for index in 0..<reply.elements {
                guard let element = reply.element[index] else { elements.append(.null); continue }
                elements.append(try copy(element, depth: depth + 1, limits: limits, budget: &budget))
            }
            return .array(elements)
        default: return .null
        }
    }

    private static func errorString(_ context: UnsafeMutablePointer<redisContext>) -> String {
        let text = withUnsafeBytes(of: context.pointee.errstr) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        // A socket timeout shows up as EAGAIN.
        if text.contains("Resource temporarily unavailable") { return "no reply within the timeout" }
        return text.isEmpty ? "connection closed" : text
    }

    private static func makeTimeval(_ duration: Duration) -> Glibc.timeval {
        let (seconds, attoseconds) = duration.components
        return Glibc.timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}

/// Where Redis is: `redis://[[user]:password@]host[:port][/db]`.
public struct RedisEndpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var database: Int
    public var username: String?
    public var password: String?

    public init(host: String, port: Int = 6379, database: Int = 0, username: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.database = database
        self.username = username
        self.password = password
    }

    /// Parses a `redis://` URL; the error says what is wrong. `rediss://` (TLS) is refused: the
    /// hiredis we link (Debian's 0.14) has no TLS.
    public init(url text: String) throws(RedisError) {
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased() else {
            throw .unavailable("'\(text.prefix(100))' is not a URL")
        }
        if scheme == "rediss" { throw .unavailable("rediss:// (TLS) is not supported: this hiredis has no TLS; use redis:// over a trusted network or a TLS tunnel") }
        guard scheme == "redis" else { throw .unavailable("redis URL must start with redis://") }
        guard let host = url.host, !host.isEmpty else { throw .unavailable("redis URL has no host") }
        let port = url.port ?? 6379
        guard (1...65535).contains(port) else { throw .unavailable("redis port \(port) is out of range") }
        var database = 0
        let path = url.path.trimmingCharacters(in: CharacterSet(charactersIn: "/"))
        if !path.isEmpty {
            guard let number = Int(path), (0...15_999).contains(number) else {
                throw .unavailable("redis database '\(path)' is not a number")
            }
            database = number
        }
        let user = url.user.flatMap { $0.isEmpty ? nil : $0.removingPercentEncoding ?? $0 }
        self.init(host: host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port: port, database: database,
                  username: url.password == nil ? nil : user,
                  // `redis://secret@host` is a password alone, as redis-cli reads it.
                  password: url.password.map { $0.removingPercentEncoding ?? $0 } ?? user)
    }

    /// Never the password.
    public var description: String {
        "redis://\(password == nil ? "" : "\(username ?? ""):***@")\(host):\(port)/\(database)"
    }
}

/// Runs Redis commands on a thread of its own (hiredis blocks), pipelining what callers queued
/// meanwhile, reconnecting with backoff. Callers await; no event loop ever waits on Redis.
public final class RedisClient: Sendable {
    public struct Configuration: Sendable {
        public var endpoint: RedisEndpoint
        /// Connect, and each reply: a slower Redis counts as down for that command.
        public var timeout: Duration = .seconds(1)
        /// How long a command may wait to be sent (queued behind a slow batch).
        public var queueTimeout: Duration = .seconds(2)
        public var backoffInitial: Duration = .milliseconds(100)
        /// Short: Redis back should be seen (and state re-asserted) within seconds.
        public var backoffMaximum: Duration = .seconds(2)
        /// Commands queued at most; more fail at once instead of growing memory while Redis is away.
        public var maxQueued = 10_000
        public var limits = RedisReply.Limits()

        public init(endpoint: RedisEndpoint) { self.endpoint = endpoint }
    }

    /// Connected, or not and why.
    public enum State: Sendable, Equatable {
        case connecting
        case connected
        case unavailable(String)
    }

    private struct Request {
        var commands: [[String]]
        var enqueued: ContinuousClock.Instant
        var continuation: CheckedContinuation<[Result<RedisReply, RedisError>], Never>
    }

    private struct Queue {
        var requests: [Request] = []
        var commands = 0
        var state = State.connecting
        var stopping = false
    }

    public let configuration: Configuration
    private let queue = Mutex(Queue())
    private let wakeup = DispatchSemaphore(value: 0)
    private let stopped = DispatchSemaphore(value: 0)
    private let onStateChange: @Sendable (State) -> Void
    private let logger: Logger

    /// Starts the client's thread; `onStateChange` is called on it, in order.
    public init(configuration: Configuration, logger: Logger, onStateChange: @escaping @Sendable (State) -> Void = { _ in }) {
        self.configuration = configuration
        self.logger = logger
        self.onStateChange = onStateChange
        let thread = Thread { [self] in run() }
        thread.name = "redis"
        thread.stackSize = 512 << 10
        thread.start()
    }

    public var state: State { queue.withLock { $0.state } }

    /// Sends the commands in one pipeline; one result per command, in order. Never throws:
    /// every command has its own outcome (an error reply in one does not fail the others).
    public func pipeline(_ commands: [[String]]) async -> [Result<RedisReply, RedisError>] {
        guard !commands.isEmpty else { return [] }
        return await withCheckedContinuation { continuation in
            let refused: RedisError? = queue.withLock { queue in
                if queue.stopping { return .stopped }
                if case .unavailable(let why) = queue.state { return .unavailable(why) }
                guard queue.commands + commands.count <= configuration.maxQueued else {
                    return .unavailable("\(configuration.maxQueued) commands already queued")
                }
                queue.requests.append(Request(commands: commands, enqueued: .now, continuation: continuation))
                queue.commands += commands.count
                return nil
            }
            if let refused {
                continuation.resume(returning: commands.map { _ in .failure(refused) })
            } else {
                wakeup.signal()
            }
        }
    }

    /// One command; an error reply is thrown as `RedisError.reply`.
    public func command(_ arguments: [String]) async throws(RedisError) -> RedisReply {
        let reply = try await pipeline([arguments])[0].get()
        if case .error(let message) = reply { throw .reply(message) }
        return reply
    }

    /// Stops the thread after the batch in flight; queued commands fail with `.stopped`.
    public func shutdown() async {
        let first = queue.withLock { queue in
            defer { queue.stopping = true }
            return !queue.stopping
        }
        guard first else { return }
        wakeup.signal()
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let waiter = Thread { [stopped] in
                stopped.wait()
                stopped.signal()
                done.resume()
            }
            waiter.start()
        }
    }

    private func setState(_ state: State) {
        let changed = queue.withLock { queue in
            defer { queue.state = state }
            return queue.state != state
        }
        guard changed else { return }
        switch state {
        case .connected: logger.notice("redis connected", metadata: ["redis": "\(configuration.endpoint)"])
        case .unavailable(let why):
            logger.error("redis unavailable, retrying", metadata: ["redis": "\(configuration.endpoint)", "reason": "\(why)"])
        case .connecting: break
        }
        onStateChange(state)
    }

    private func failQueued(_ error: RedisError) {
        let requests = queue.withLock { queue in
            defer { queue.requests = []; queue.commands = 0 }
            return queue.requests
        }
        for request in requests { request.continuation.resume(returning: request.commands.map { _ in .failure(error) }) }
    }

    private var isStopping: Bool { queue.withLock { $0.stopping } }

    private func run() {
        var connection: RedisConnection?
        var delay = configuration.backoffInitial
        while !isStopping {
            guard let current = connection else {
                do throws(RedisError) {
                    connection = try RedisConnection.connect(to: configuration.endpoint, timeout: configuration.timeout,
                                                             limits: configuration.limits)
                    delay = configuration.backoffInitial
                    setState(.connected)
                } catch {
                    setState(.unavailable(error.reason))
                    failQueued(.unavailable(error.reason))
                    _ = wakeupOrStop(after: delay)
                    delay = min(delay * 2, configuration.backoffMaximum)
                }
                continue
            }
            let batch = queue.withLock { queue in
                defer { queue.requests = []; queue.commands = 0 }
                return queue.requests
            }
            if batch.isEmpty {
                wakeup.wait()
                continue
            }
            let now = ContinuousClock.now
            let (ready, expired) = (batch.filter { now - $0.enqueued <= configuration.queueTimeout },
                                    batch.filter { now - $0.enqueued > configuration.queueTimeout })
            for request in expired { request.continuation.resume(returning: request.commands.map { _ in .failure(.timeout) }) }
            guard !ready.isEmpty else { continue }
            do throws(RedisError) {
                let replies = try current.pipeline(ready.flatMap(\.commands))
                var offset = 0
                for request in ready {
                    request.continuation.resume(returning: Array(replies[offset..<offset + request.commands.count]))
                    offset += request.commands.count
                }
            } catch {
                // The replies of a broken or timed-out pipeline cannot be matched up any more: drop the connection.
                connection = nil
                for request in ready { request.continuation.resume(returning: request.commands.map { _ in .failure(error) }) }
                setState(.unavailable(error.reason))
            }
        }
        failQueued(.stopped)
        connection = nil
        stopped.signal()
    }

    /// Sleeps `delay` unless woken by a stop.
    private func wakeupOrStop(after delay: Duration) -> Bool {
        let deadline = ContinuousClock.now + delay
        while ContinuousClock.now < deadline, !isStopping {
            let remaining = deadline - ContinuousClock.now
            let (seconds, attoseconds) = remaining.components
            _ = wakeup.wait(timeout: .now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)))
        }
        return isStopping
    }
}

extension RedisError {
    /// The words after "redis …:" for state and logs.
    public var reason: String {
        switch self {
        case .unavailable(let why), .connectionLost(let why), .reply(let why), .replyTooLarge(let why): why
        case .timeout: "timed out"
        case .stopped: "stopped"
        }
    }
}
