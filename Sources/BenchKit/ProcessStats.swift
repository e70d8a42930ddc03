import Foundation

/// CPU time and resident memory of a server and every process under it (nginx's master and
/// worker; Estuary's one process), read from `/proc` — the only view of the server a benchmark uses.
public struct ProcessSample: Sendable, Equatable {
    /// utime + stime of all the processes, in clock ticks.
    public var cpuTicks: UInt64
    /// Sum of VmRSS, in bytes.
    public var residentBytes: UInt64
    public var processes: Int
}

public enum ProcessStats {
    public static let ticksPerSecond = UInt64(sysconf(Int32(_SC_CLK_TCK)))

    /// `(ppid, utime, stime)` from `/proc/<pid>/stat`. The command name may hold spaces and
    /// parentheses, so the fields are counted from the last `)`.
    static func parseStat(_ text: String) -> (parent: Int32, utime: UInt64, stime: UInt64)? {
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ", omittingEmptySubsequences: true)
        // After the name: state(0) ppid(1) … utime(11) stime(12).
        guard fields.count > 12, let parent = Int32(fields[1]), let utime = UInt64(fields[11]),
              let stime = UInt64(fields[12]) else { return nil }
        return (parent, utime, stime)
    }

    /// VmRSS from `/proc/<pid>/status`, in bytes.
    static func parseResident(_ status: String) -> UInt64? {
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 3, let value = UInt64(parts[1]), parts[2] == "kB" else { return nil }
            return value * 1024
        }
        return nil
    }

    /// The process `root` and all its descendants, summed; nil once `root` is gone.
    public static func sample(root: Int32) -> ProcessSample? {
        var parents: [Int32: Int32] = [:]
        var cpu: [Int32: UInt64] = [:]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let pid = Int32(entry), let text = read("/proc/\(pid)/stat"), let stat = parseStat(text) else { continue }
            parents[pid] = stat.parent
            cpu[pid] = stat.utime + stat.stime
        }
        guard cpu[root] != nil else { return nil }
        var members: Set<Int32> = [root]
        var grew = true
        while grew {
            grew = false
            for (pid, parent) in parents where members.contains(parent) && !members.contains(pid) {
                members.insert(pid)
                grew = true
            }
        }
        var sample = ProcessSample(cpuTicks: 0, residentBytes: 0, processes: members.count)
        for pid in members {
            sample.cpuTicks += cpu[pid] ?? 0
            sample.residentBytes += read("/proc/\(pid)/status").flatMap(parseResident) ?? 0
        }
        return sample
    }

    static func read(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Samples a server once a second; reports CPU as a percentage of one core and peak RSS.
public final class ProcessMonitor: @unchecked Sendable {
    public struct Summary: Sendable, Equatable {
        /// Percent of one core over the measured interval.
        public var cpuPercent: Double
        public var peakResidentBytes: UInt64
        public var seconds: Double
    }

    private let root: Int32
    private var first: (ContinuousClock.Instant, ProcessSample)?
    private var last: (ContinuousClock.Instant, ProcessSample)?
    private var peak: UInt64 = 0
    private let lock = NSLock()

    public init(root: Int32) { self.root = root }

    /// Takes one sample; the first one is the start of the measurement.
    public func tick() {
        guard let sample = ProcessStats.sample(root: root) else { return }
        let now = ContinuousClock.now
        lock.lock()
        defer { lock.unlock() }
        if first == nil { first = (now, sample) }
        last = (now, sample)
        peak = max(peak, sample.residentBytes)
    }

    public var summary: Summary? {
        lock.lock()
        defer { lock.unlock() }
        guard let first, let last, last.0 > first.0 else { return nil }
        let seconds = Double((last.0 - first.0).components.attoseconds) / 1e18 + Double((last.0 - first.0).components.seconds)
        let cpuSeconds = Double(last.1.cpuTicks - first.1.cpuTicks) / Double(ProcessStats.ticksPerSecond)
        return Summary(cpuPercent: 100 * cpuSeconds / seconds, peakResidentBytes: peak, seconds: seconds)
    }
}

/// This process's own CPU time (all threads, not its children such as the servers or wrk): the
/// generator's cost, to tell a saturated generator from a slow server.
public enum GeneratorCPU {
    public static func seconds() -> Double {
        var usage = rusage()
        guard getrusage(RUSAGE_SELF.rawValue, &usage) == 0 else { return 0 }
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}
