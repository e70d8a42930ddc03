public import Foundation
import Synchronization

/// Counts events per key (an address, an account) in fixed windows and says how long to wait
/// once a key has used up its window. In memory: one node's view, which is what a login
/// throttle needs.
public final class RateLimiter: Sendable {
    public let limit: Int
    public let window: TimeInterval
    private struct Bucket {
        var windowStart: Date
        var count: Int
    }
    private let buckets = Mutex<[String: Bucket]>([:])
    private let now: @Sendable () -> Date

    public init(limit: Int, window: TimeInterval, now: @escaping @Sendable () -> Date = Date.init) {
        self.limit = limit
        self.window = window
        self.now = now
    }

    /// Seconds to wait (rounded up, at least 1) if `key` is over its limit; nil if it may go on.
    public func retryAfter(_ key: String) -> Int? {
        let now = now()
        return buckets.withLock { buckets in
            guard let bucket = buckets[key], now.timeIntervalSince(bucket.windowStart) < window,
                  bucket.count >= limit
            else { return nil }
            return max(1, Int((window - now.timeIntervalSince(bucket.windowStart)).rounded(.up)))
        }
    }

    /// Counts one event for `key`.
    public func record(_ key: String) {
        let now = now()
        buckets.withLock { buckets in
            if buckets.count > 100_000 {
                // Bounded memory under a spray of addresses: drop windows that have ended.
                buckets = buckets.filter { now.timeIntervalSince($0.value.windowStart) < window }
            }
            if var bucket = buckets[key], now.timeIntervalSince(bucket.windowStart) < window {
                bucket.count += 1
                buckets[key] = bucket
            } else {
                buckets[key] = Bucket(windowStart: now, count: 1)
            }
        }
    }

    /// Forgets `key` (a successful login clears its account's failures).
    public func reset(_ key: String) {
        _ = buckets.withLock { $0.removeValue(forKey: key) }
    }
}
