import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization
import Testing

/// A real HTTP endpoint for notify hooks (on_play …) on a free loopback port: records each call
/// (POST form body or GET query) and answers what `answer` says.
final class HookServer: Sendable {
    struct Answer: Sendable {
        var status: Int
        var location: String?
        /// Never answer (until `stop`): the caller's timeout decides.
        var hold = false
    }

    /// One request as it arrived.
    struct Call: Sendable, CustomStringConvertible {
        var method: String
        /// The form: the POST body, or the GET query string.
        var form: String
        var contentType: String?

        /// Name/value pairs in order, decoded.
        var fields: [(String, String)] {
            form.split(separator: "&").map { pair in
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                return (String(parts[0]), parts.count > 1 ? String(parts[1]).removingPercentEncoding ?? "" : "")
            }
        }

        var names: [String] { fields.map(\.0) }
        subscript(_ name: String) -> String? { fields.first { $0.0 == name }?.1 }
        var description: String { "\(method) \(form)" }
    }

    final class Calls: Sendable {
        typealias Predicate = @Sendable ([Call]) -> Bool

        struct State {
            var calls: [Call] = []
            var waiters: [UUID: (Predicate, CheckedContinuation<Void, Never>)] = [:]
            var timedOut: Set<UUID> = []
            var released = false
            var held: [CheckedContinuation<Void, Never>] = []
        }

        let state = Mutex(State())

        func append(_ call: Call) {
            let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                state.calls.append(call)
                let calls = state.calls
                var ready: [CheckedContinuation<Void, Never>] = []
                for (id, (predicate, continuation)) in state.waiters where predicate(calls) {
                    ready.append(continuation)
                    state.waiters[id] = nil
                }
                return ready
            }
            for continuation in ready { continuation.resume() }
        }

        func register(_ id: UUID, _ predicate: @escaping Predicate, _ continuation: CheckedContinuation<Void, Never>) {
            let now = state.withLock { state -> Bool in
                if state.timedOut.contains(id) || predicate(state.calls) { return true }
                state.waiters[id] = (predicate, continuation)
                return false
            }
            if now { continuation.resume() }
        }

        func timeOut(_ id: UUID) {
            let waiter = state.withLock { state in
                state.timedOut.insert(id)
                return state.waiters.removeValue(forKey: id)
            }
            waiter?.1.resume()
        }

        /// Waits until `stop` releases held answers.
        func hold() async {
            await withCheckedContinuation { continuation in
                let released = state.withLock { state in
                    if !state.released { state.held.append(continuation) }
                    return state.released
                }
                if released { continuation.resume() }
            }
        }

        func release() {
            let held = state.withLock { state in
                state.released = true
                defer { state.held = [] }
                return state.held
            }
            for continuation in held { continuation.resume() }
        }
    }

    private let recorded = Calls()
    private let group: ServiceGroup
    private let task: Task<Void, any Error>
    let port: Int

    init(answer: @escaping @Sendable ([String: String]) -> Answer) async throws {
        let router = Router()
        let recorded = self.recorded
        @Sendable func handle(_ request: Request, _ context: BasicRequestContext) async throws -> Response {
            let call: Call
            if request.method == .get {
                call = Call(method: "GET", form: request.uri.query ?? "", contentType: request.headers[.contentType])
            } else {
                let buffer = try await request.body.collect(upTo: 1 << 20)
                call = Call(method: "\(request.method)", form: String(buffer: buffer),
                            contentType: request.headers[.contentType])
            }
            recorded.append(call)
            let reply = answer(Dictionary(call.fields) { _, last in last })
            if reply.hold { await recorded.hold() }
            var headers = HTTPFields()
            if let location = reply.location { headers[.location] = location }
            return Response(status: .init(code: reply.status), headers: headers)
        }
        router.post("/hook", use: handle)
        router.get("/hook", use: handle)
        let (portStream, portContinuation) = AsyncStream<Int>.makeStream()
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
                              onServerRunning: { portContinuation.yield($0.localAddress?.port ?? 0) },
                              logger: Logger(label: "hook") { _ in SwiftLogNoOpLogHandler() })
        let group = ServiceGroup(configuration: .init(services: [app], logger: Logger(label: "hook") { _ in SwiftLogNoOpLogHandler() }))
        self.group = group
        task = Task { try await group.run() }
        var bound = 0
        for await port in portStream {
            bound = port
            break
        }
        port = bound
    }

    var url: String { "http://127.0.0.1:\(port)/hook" }
    /// Every call's fields by name (a repeated name keeps its last value).
    var calls: [[String: String]] { requests.map { Dictionary($0.fields) { _, last in last } } }
    /// Every call as it arrived, in order.
    var requests: [Call] { recorded.state.withLock { $0.calls } }

    /// The calls with `call=<name>`.
    func calls(_ name: String) -> [Call] { requests.filter { $0["call"] == name } }

    /// Waits (on the calls' arrival, not a clock) until `predicate` holds for the calls so far.
    @discardableResult
    func wait(timeout: Duration = .seconds(20), until predicate: @escaping @Sendable ([Call]) -> Bool) async throws
        -> [Call] {
        let id = UUID()
        let recorded = self.recorded
        let met = try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { recorded.register(id, predicate, $0) }
                return true
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return false
            }
            let first = try await group.next() ?? false
            recorded.timeOut(id)
            group.cancelAll()
            return first && predicate(requests)
        }
        guard met else {
            Issue.record("hook calls not as expected within \(timeout): \(requests)")
            throw TestFailure.timeout
        }
        return requests
    }

    /// Waits for the first call with `call=<name>`.
    func wait(for name: String, timeout: Duration = .seconds(20)) async throws -> Call {
        try await wait(timeout: timeout) { $0.contains { $0["call"] == name } }
        return try #require(calls(name).first)
    }

    func stop() async throws {
        recorded.release()
        await group.triggerGracefulShutdown()
        try await task.value
    }
}
