import App
import ArgumentParser
import Foundation
import Logging
import Testing

@testable import estuary

/// `estuary serve` as the binary reads it: its flags parsed by ArgumentParser, then `ESTUARY_*`
/// variables, then defaults.
@Suite("Configuration: flags, environment, defaults")
struct ConfigurationTests {
    static func resolve(_ flags: [String], _ environment: [String: String] = [:]) throws -> EstuaryConfiguration {
        try Serve.parse(flags).configuration(environment: environment)
    }

    @Test("with nothing set: the documented defaults, publishing open")
    func defaults() throws {
        let configuration = try Self.resolve([])
        #expect(configuration.rtmpPort == 1935)
        #expect(configuration.httpPort == 8080)
        #expect(configuration.bind == "0.0.0.0")
        #expect(configuration.dataDirectory == "./estuary-data")
        #expect(configuration.hlsSegmentDuration == 2)
        #expect(configuration.hlsWindow == 6)
        #expect(configuration.hlsPath == nil)
        #expect(configuration.logLevel == .info)
        #expect(configuration.streamKeys.isEmpty)
        #expect(configuration.publishGrace == 10)
    }

    /// One setting: its flag, its variable, a value, another value, and how to read it back.
    struct Setting: CustomTestStringConvertible, Sendable {
        var flag: String
        var variable: String
        var value: String
        var other: String
        var read: @Sendable (EstuaryConfiguration) -> String
        var testDescription: String { flag }
    }

    static let settings: [Setting] = [
        Setting(flag: "--rtmp-port", variable: "ESTUARY_RTMP_PORT", value: "1936", other: "1937") { "\($0.rtmpPort)" },
        Setting(flag: "--http-port", variable: "ESTUARY_HTTP_PORT", value: "0", other: "8081") { "\($0.httpPort)" },
        Setting(flag: "--bind", variable: "ESTUARY_BIND", value: "127.0.0.1", other: "::1") { $0.bind },
        Setting(flag: "--data-dir", variable: "ESTUARY_DATA_DIR", value: "/var/lib/estuary", other: "/tmp/e") { $0.dataDirectory },
        Setting(flag: "--hls-segment-duration", variable: "ESTUARY_HLS_SEGMENT_DURATION", value: "1.5", other: "4.0") {
            "\($0.hlsSegmentDuration)"
        },
        Setting(flag: "--hls-window", variable: "ESTUARY_HLS_WINDOW", value: "9", other: "3") { "\($0.hlsWindow)" },
        Setting(flag: "--hls-path", variable: "ESTUARY_HLS_PATH", value: "/srv/hls", other: "/srv/other") { $0.hlsPath ?? "nil" },
        Setting(flag: "--log-level", variable: "ESTUARY_LOG_LEVEL", value: "debug", other: "error") { "\($0.logLevel)" },
        Setting(flag: "--publish-grace", variable: "ESTUARY_PUBLISH_GRACE", value: "3.5", other: "20.0") { "\($0.publishGrace)" },
        Setting(flag: "--stream-key", variable: "ESTUARY_STREAM_KEY", value: "k1=main", other: "k2=side") {
            $0.streamKeys.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        },
    ]

    @Test("each setting by flag, by variable, and with both (the flag wins)", arguments: settings)
    func setting(_ setting: Setting) throws {
        #expect(setting.read(try Self.resolve([setting.flag, setting.value])) == setting.value)
        #expect(setting.read(try Self.resolve([], [setting.variable: setting.value])) == setting.value)
        #expect(setting.read(try Self.resolve([setting.flag, setting.value], [setting.variable: setting.other])) == setting.value)
        #expect(setting.read(try Self.resolve([], [setting.variable: setting.other])) == setting.other)
    }

    @Test("stream keys: repeated flags, a comma-separated variable, and a keys file with comments and blank lines")
    func streamKeys() throws {
        #expect(try Self.resolve(["--stream-key", "a=one", "--stream-key", "b=two"]).streamKeys == ["a": "one", "b": "two"])
        #expect(try Self.resolve([], ["ESTUARY_STREAM_KEY": "a=one,b=two"]).streamKeys == ["a": "one", "b": "two"])

        let file = FileManager.default.temporaryDirectory.appendingPathComponent("estuary-keys-\(UUID().uuidString)")
        try Data("""
            # studio keys
            key-alpha=alpha

              key-beta=beta.2
            #key-gamma=gamma
            """.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        #expect(try Self.resolve(["--stream-keys-file", file.path]).streamKeys == ["key-alpha": "alpha", "key-beta": "beta.2"])
        // The file adds to the flags' keys.
        #expect(try Self.resolve(["--stream-key", "k=main"], ["ESTUARY_STREAM_KEYS_FILE": file.path]).streamKeys
            == ["k": "main", "key-alpha": "alpha", "key-beta": "beta.2"])
    }

    @Test("invalid values are refused with a message naming the setting, never echoing a key", arguments: [
        (["--rtmp-port", "70000"], [:], "ports must be 0…65535"),
        (["--http-port=-1"], [:], "ports must be 0…65535"),
        ([], ["ESTUARY_RTMP_PORT": "1936x"], "--rtmp-port (ESTUARY_RTMP_PORT) '1936x' is not a whole number"),
        ([], ["ESTUARY_HLS_SEGMENT_DURATION": "two"], "--hls-segment-duration (ESTUARY_HLS_SEGMENT_DURATION) 'two' is not a number"),
        (["--hls-segment-duration", "0.1"], [:], "HLS segment duration must be 0.5…30 seconds"),
        (["--hls-window", "0"], [:], "HLS window must be 1…100 segments"),
        ([], ["ESTUARY_HLS_WINDOW": "101"], "HLS window must be 1…100 segments"),
        (["--log-level", "loud"], [:], "log level 'loud' is not one of"),
        (["--stream-key", "s3cret"], [:], "stream key must be KEY=CHANNEL"),
        (["--stream-key", "s3cret=bad name"], [:], "channel name 'bad name' must be 1–64 of letters"),
        (["--stream-key", "=main"], [:], "empty stream key for channel main"),
        (["--stream-keys-file", "/nonexistent/keys"], [:], "cannot read stream keys file /nonexistent/keys"),
        (["--publish-grace=-1"], [:], "timeouts must be positive"),
    ] as [([String], [String: String], String)])
    func invalid(flags: [String], environment: [String: String], message: String) throws {
        do {
            let configuration = try Self.resolve(flags, environment)
            Issue.record("accepted: \(configuration)")
        } catch {
            let text = Serve.message(for: error)
            #expect(text.contains(message), "\(text)")
            #expect(!text.contains("s3cret"), "\(text)")
        }
    }

    @Test("a flag value of the wrong type is refused by the parser, naming the flag")
    func unparsableFlag() {
        #expect(throws: (any Error).self) { try Serve.parse(["--rtmp-port", "abc"]) }
        do {
            _ = try Serve.parse(["--hls-window", "six"])
        } catch {
            #expect(Serve.message(for: error).contains("'six' is invalid for '--hls-window"), "\(Serve.message(for: error))")
        }
    }

    @Test("port 0 picks free ports and the log says which; with no keys the log warns that publishing is open")
    func listeningAndOpenMode() async throws {
        let open = try await TestServer()
        #expect(open.rtmpPort != 0 && open.httpPort != 0)
        let logs = open.logs.all
        #expect(logs.contains { $0.hasPrefix("info RTMP listening ") && $0.contains("address=rtmp://127.0.0.1:\(open.rtmpPort)") },
                "\(logs)")
        #expect(logs.contains { $0.hasPrefix("info HTTP listening ") && $0.contains("address=http://127.0.0.1:\(open.httpPort)") },
                "\(logs)")
        #expect(logs.contains { $0.hasPrefix("warning NO STREAM KEYS: publishing is OPEN") }, "\(logs)")
        try await open.stop()

        let keyed = try await TestServer { $0.streamKeys = ["k": "main"] }
        #expect(!keyed.logs.contains("NO STREAM KEYS"))
        #expect(keyed.logs.all.contains { $0.hasPrefix("info stream keys loaded ") && $0.contains("count=1") })
        try await keyed.stop()
    }
}
