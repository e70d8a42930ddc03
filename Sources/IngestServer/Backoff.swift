/// Delays between reconnect attempts: `initial`, doubling per failure up to `maximum`; a
/// connection that stayed healthy for `healthyAfter` before failing starts over at `initial`.
public struct Backoff: Sendable, Equatable {
    public let initial: Duration
    public let maximum: Duration
    public let healthyAfter: Duration
    /// Failures since the last reset (0: none).
    public private(set) var failures = 0
    private var next: Duration

    public init(initial: Duration, maximum: Duration, healthyAfter: Duration) {
        self.initial = initial
        self.maximum = max(initial, maximum)
        self.healthyAfter = healthyAfter
        next = initial
    }

    /// A connection failed after carrying media for `healthyFor` (nil: it never did); returns the delay
    /// before the next attempt.
    public mutating func failed(healthyFor: Duration?) -> Duration {
        if let healthyFor, healthyFor >= healthyAfter { reset() }
        failures += 1
        defer { next = min(next * 2, maximum) }
        return next
    }

    /// A clean end (the channel stopped, the pull went idle): the next failure waits `initial` again.
    public mutating func reset() {
        next = initial
        failures = 0
    }
}
