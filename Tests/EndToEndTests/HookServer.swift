import Foundation
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A real HTTP endpoint for notify hooks (on_play …) on a free loopback port: records each
/// form body it receives and answers what `answer` says.
final class HookServer: Sendable {
    struct Answer: Sendable {
        var status: Int
        var location: String?
    }

    final class Calls: Sendable {
        let bodies = Mutex<[[String: String]]>([])
    }

    private let recorded = Calls()
    private let group: ServiceGroup
    private let task: Task<Void, any Error>
    let port: Int

    init(answer: @escaping @Sendable ([String: String]) -> Answer) async throws {
        let router = Router()
        let recorded = self.recorded
        router.post("/hook") { request, _ -> Response in
            let buffer = try await request.body.collect(upTo: 1 << 20)
            let fields = HookServer.form(String(buffer: buffer))
            recorded.bodies.withLock { $0.append(fields) }
            let reply = answer(fields)
            var headers = HTTPFields()
            if let location = reply.location { headers[.location] = location }
            return Response(status: .init(code: reply.status), headers: headers)
        }
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
    var calls: [[String: String]] { recorded.bodies.withLock { $0 } }

    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await task.value
    }

    static func form(_ body: String) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in body.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            fields[String(parts[0])] = parts.count > 1 ? String(parts[1]).removingPercentEncoding : ""
        }
        return fields
    }
}
