import Synchronization

/// A port that becomes known once a listener has bound; `value` waits for it.
public final class ListeningPort: Sendable {
    private struct State {
        var port: Int?
        var waiters: [CheckedContinuation<Int, Never>] = []
    }

    private let state = Mutex(State())

    init() {}

    func set(_ port: Int) {
        let waiters = state.withLock { state in
            state.port = port
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: port) }
    }

    /// The bound port, once the listener is up.
    public var value: Int {
        get async {
            await withCheckedContinuation { continuation in
                let port = state.withLock { state -> Int? in
                    if let port = state.port { return port }
                    state.waiters.append(continuation)
                    return nil
                }
                if let port { continuation.resume(returning: port) }
            }
        }
    }
}
