import Foundation
import NIOPosix
import Synchronization

/// The event loops RTMP and HTTP share. As many threads as CPUs this process may run on
/// (its affinity mask, so `taskset -c 0` means one loop), unless configured; NIO's own default
/// counts every CPU of the machine, and two loops on one core only take turns.
enum EventLoops {
    private static let groups = Mutex<[Int: MultiThreadedEventLoopGroup]>([:])

    /// One group per thread count for the life of the process (tests start many servers).
    static func group(threads: Int) -> MultiThreadedEventLoopGroup {
        groups.withLock { groups in
            if let group = groups[threads] { return group }
            let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
            groups[threads] = group
            return group
        }
    }

    /// CPUs in this process's affinity mask (at least 1), from `Cpus_allowed_list` in /proc/self/status.
    static var availableCPUs: Int {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }
        guard let list = line?.split(separator: ":").last, let count = cpuCount(list.trimmingCharacters(in: .whitespaces)) else {
            return ProcessInfo.processInfo.activeProcessorCount
        }
        return max(count, 1)
    }

    /// `0-3,8,10-11` → 7; nil when it is not such a list.
    static func cpuCount(_ list: String) -> Int? {
        var total = 0
        for part in list.split(separator: ",") {
            let bounds = part.split(separator: "-")
            guard let low = Int(bounds[0]), let high = bounds.count > 1 ? Int(bounds[1]) : low, high >= low,
                  bounds.count <= 2 else { return nil }
            total += high - low + 1
        }
        return total == 0 ? nil : total
    }
}
