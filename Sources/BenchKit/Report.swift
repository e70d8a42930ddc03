import Foundation

/// The results as Markdown: a row per server per scenario, then Estuary / nginx-rtmp and the bar.
public enum Report {
    /// `notes` go under the machine line: how the run was made, so anyone can make it again.
    public static func markdown(_ measurements: [ServerRun], machine: String, date: String, notes: [String] = []) -> String {
        var lines = ["# Estuary vs nginx-rtmp — \(date)", "", machine, ""] + notes.flatMap { [$0, ""] } + [
                     "| scenario | size | server | CPU % of a core | CPU % per unit | peak RSS | figures | valid |",
                     "| --- | --- | --- | ---: | ---: | ---: | --- | --- |"]
        for m in measurements {
            let figures = m.figures.sorted { $0.key < $1.key }.map { "\($0.key)=\(format($0.value))" }.joined(separator: " ")
            lines.append("| \(m.scenario) | \(m.size) | \(m.server.rawValue) | \(format(m.cpuPercent)) | "
                         + "\(m.cpuPerUnit.map(format) ?? "–") | \(megabytes(m.peakResidentBytes)) | \(figures) | \(m.validity) |")
        }
        lines += ["", "| scenario | size | measure | Estuary / nginx-rtmp | bar | result |", "| --- | --- | --- | ---: | --- | --- |"]
        for (estuary, nginx) in pairs(measurements) {
            for (measure, bar, check) in bars(estuary.scenario) {
                guard let (value, pass) = check(estuary, nginx) else { continue }
                lines.append("| \(estuary.scenario) | \(estuary.size) | \(measure) | \(format(value)) | \(bar) | "
                             + result(estuary, nginx, pass: pass) + " |")
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A busy reader makes a server's CPU a lower bound (`ServerRun.readerBusy`). Lowering
    /// nginx-rtmp's figure can only raise the ratio, so a PASS still stands; anything else is unknown.
    static func result(_ estuary: ServerRun, _ nginx: ServerRun, pass: Bool) -> String {
        guard estuary.valid, nginx.valid, !estuary.readerBusy else { return "invalid run" }
        guard nginx.readerBusy else { return pass ? "PASS" : "FALL SHORT" }
        return pass ? "PASS (ratio an upper bound: generator busy reading nginx-rtmp)" : "invalid run"
    }

    static func pairs(_ measurements: [ServerRun]) -> [(ServerRun, ServerRun)] {
        measurements.filter { $0.server == .estuary }.compactMap { estuary in
            measurements.first { $0.server == .nginx && $0.scenario == estuary.scenario && $0.size == estuary.size }
                .map { (estuary, $0) }
        }
    }

    typealias Check = @Sendable (ServerRun, ServerRun) -> (Double, Bool)?

    /// CPU per unit (stream or player), Estuary over nginx-rtmp, at most `limit`.
    static func cpuRatio(atMost limit: Double) -> Check {
        { estuary, nginx in
            guard let e = estuary.cpuPerUnit, let n = nginx.cpuPerUnit, n > 0 else { return nil }
            return (e / n, e / n <= limit)
        }
    }

    static func figureRatio(_ name: String, atLeast limit: Double) -> Check {
        { estuary, nginx in
            guard let e = estuary.figures[name], let n = nginx.figures[name], n > 0 else { return nil }
            return (e / n, e / n >= limit)
        }
    }

    static func bars(_ scenario: String) -> [(String, String, Check)] {
        switch scenario {
        case let s where s.hasPrefix("ingest+hls"):
            [("CPU per stream", "≤ 0.55", cpuRatio(atMost: 0.55)), ("RSS per stream", "≤ 3 MB + window", memoryBar)]
        case let s where s.hasPrefix("ingest"):
            [("CPU per stream", "≤ 0.55", cpuRatio(atMost: 0.55))]
        case "fan-out":
            [("CPU per player", "≤ 0.6", cpuRatio(atMost: 0.6))]
        case "hls viewers":
            [("CPU per viewer", "≤ 1.0", cpuRatio(atMost: 1.0))]
        case "hls":
            [("segment req/s", "≥ 1.0", figureRatio("segment_rps", atLeast: 1.0)),
             ("playlist req/s", "≥ 1.0", figureRatio("playlist_rps", atLeast: 1.0)),
             ("publish → first playlist (Estuary ms)", "≤ 2100", { estuary, _ in
                 estuary.figures["first_playlist_ms"].map { ($0, $0 <= 2100) } })]
        default: []
        }
    }

    /// Estuary's resident memory per live stream against 3 MB plus its HLS window (6 × 2 s).
    static let memoryBar: Check = { estuary, _ in
        guard let streams = estuary.figures["streams"], streams > 0, let idle = estuary.figures["idle_rss"],
              let bitrate = estuary.figures["bitrate"] else { return nil }
        let perStream = (Double(estuary.peakResidentBytes) - idle) / streams
        let allowance = 3_000_000 + 12 * bitrate / 8
        return (perStream / allowance, perStream <= allowance)
    }

    static func format(_ value: Double) -> String {
        value >= 100 ? String(format: "%.0f", value) : value >= 10 ? String(format: "%.1f", value) : String(format: "%.3f", value)
    }

    static func megabytes(_ bytes: UInt64) -> String { String(format: "%.1f MB", Double(bytes) / 1_000_000) }
}
