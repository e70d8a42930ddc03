import Synchronization

/// A port that becomes known once a listener has bound; `value` waits for it.
public final class ListeningPort: Sendable {
    private struct State {
        var result: Result<Int, any Error>?
        var waiters: [CheckedContinuation<Int, any Error>] = []
    }

    public struct NotListening: Error, CustomStringConvertible {
        public var description: String { "the server stopped before it was listening" }
    }

    private let state = Mutex(State())

    init() {}

    func set(_ port: Int) { complete(.success(port)) }

    /// The listener failed to start (or the app stopped first): waiters get the error.
    func fail(_ error: any Error) { complete(.failure(error)) }

    private func complete(_ result: Result<Int, any Error>) {
        let waiters = state.withLock { state -> [CheckedContinuation<Int, any Error>] in
            guard state.result == nil else { return [] }
            state.result = result
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    /// The bound port, once the listener is up; throws if it never comes up.
    public var value: Int {
        get async throws {
            try await withCheckedThrowingContinuation { continuation in
                let result = state.withLock { state -> Result<Int, any Error>? in
                    if let result = state.result { return result }
                    state.waiters.append(continuation)
                    return nil
                }
                if let result { continuation.resume(with: result) }
            }
        }
    }
}
