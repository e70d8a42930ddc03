import App
import Configuration
import IngestServer
import Logging
import StreamHub
import Testing

@Suite("Relay configuration")
struct RelayConfigurationTests {
    static func configuration(_ environment: [String: String]) throws -> EstuaryConfiguration {
        try EstuaryConfiguration(reader: ConfigReader(providers: [EnvironmentVariablesProvider(environmentVariables: environment)]))
    }

    @Test("ESTUARY_RELAY_PUSH and ESTUARY_RELAY_PULL: comma-separated; ,always binds to the pull before it")
    func environment() throws {
        let configuration = try Self.configuration([
            "ESTUARY_RELAY_PUSH": "main=rtmp://a.example/live2/key-1,*=rtmp://b.example:1936/app,live/*=rtmp://c.example/in",
            "ESTUARY_RELAY_PULL": "mirror=rtmp://origin.example/live/source,always,lazy=rtmp://origin.example/live/other",
            "ESTUARY_RELAY_PULL_IDLE": "4",
        ])
        #expect(configuration.relayPush == [
            .init(channel: "main", url: "rtmp://a.example/live2/key-1"),
            .init(channel: "*", url: "rtmp://b.example:1936/app"),
            .init(channel: "live/*", url: "rtmp://c.example/in"),
        ])
        #expect(configuration.relayPush.map(\.scope) == [.channel("main"), .everyChannel, .application("live")])
        #expect(configuration.relayPull == [
            .init(channel: "mirror", url: "rtmp://origin.example/live/source", mode: .always),
            .init(channel: "lazy", url: "rtmp://origin.example/live/other", mode: .onDemand),
        ])
        #expect(configuration.relayPullIdle == 4)
        #expect(!configuration.description.contains("key-1"), "the description counts relays, never shows them")
    }

    @Test("invalid relay entries are refused with a reason that does not repeat the key", arguments: [
        ("ESTUARY_RELAY_PUSH", "main", "CHANNEL=URL"),
        ("ESTUARY_RELAY_PUSH", "bad name=rtmp://h/live/k", "not a channel name"),
        ("ESTUARY_RELAY_PUSH", "bad app/*=rtmp://h/live/secret-k", "not a channel name, * or APP/*"),
        ("ESTUARY_RELAY_PUSH", "/*=rtmp://h/live/secret-k", "not a channel name, * or APP/*"),
        ("ESTUARY_RELAY_PUSH", "live/cam=rtmp://h/live/secret-k", "not a channel name, * or APP/*"),
        ("ESTUARY_RELAY_PUSH", "main=http://h/live/secret-k", "rtmp://"),
        ("ESTUARY_RELAY_PUSH", "main=rtmps://h/live/secret-k", "rtmps"),
        ("ESTUARY_RELAY_PUSH", "main=rtmp://h/live", "app/stream"),
        ("ESTUARY_RELAY_PULL", "mirror=rtmp://h:0/live/secret-k", "port"),
        ("ESTUARY_RELAY_PULL", "a=rtmp://h/live/x,a=rtmp://h/live/y", "more than one"),
        ("ESTUARY_RELAY_PULL_IDLE", "0", "positive"),
    ])
    func invalid(variable: String, value: String, reason: String) throws {
        do {
            _ = try Self.configuration([variable: value])
            Issue.record("\(variable)=\(value) was accepted")
        } catch {
            #expect("\(error)".contains(reason), "\(error)")
            #expect(!"\(error)".contains("secret-k"), "\(error)")
        }
    }

    @Test("a * push publishes each channel under its name, or where the URL says {channel}")
    func wildcardURLs() {
        #expect(RelayPushEntry(channel: "*", url: "rtmp://h/app").url(for: "show")?.streamKey == "show")
        #expect(RelayPushEntry(channel: "*", url: "rtmp://h/app/").url(for: "show")?.streamKey == "show")
        #expect(RelayPushEntry(channel: "*", url: "rtmp://h/app/pre-{channel}?t=1").url(for: "show")?.streamKey
            == "pre-show?t=1")
        #expect(RelayPushEntry(channel: "main", url: "rtmp://h/app").url(for: "main") == nil)
        #expect(RelayPushEntry(channel: "live/*", url: "rtmp://h/app").url(for: "show")?.streamKey == "show")
    }

    @Test("an APP/* push is made for each channel published in that application, and for no other")
    func applicationScope() async throws {
        let hub = StreamHub()
        let relay = try RelayService(hub: hub, pushes: [.init(channel: "live/*", url: "rtmp://127.0.0.1:1/up"),
                                                        .init(channel: "*", url: "rtmp://127.0.0.1:2/all/{channel}-copy")],
                                     pulls: [], logger: Logger(label: "relay-scope-test"))
        let inLive = try await hub.startPublishing(channel: "cam", app: "live")
        let inStudio = try await hub.startPublishing(channel: "desk", app: "studio")
        #expect(relay.targets(channel: "cam").map(\.url) == [
            "rtmp://127.0.0.1:1/up/\(RTMPURLMask.mask("cam"))", "rtmp://127.0.0.1:2/all/\(RTMPURLMask.mask("cam-copy"))",
        ])
        #expect(relay.targets(channel: "desk").map(\.url) == ["rtmp://127.0.0.1:2/all/\(RTMPURLMask.mask("desk-copy"))"])
        #expect(RelayPushEntry(channel: "live/*", url: "").matches(app: "live"))
        #expect(!RelayPushEntry(channel: "live/*", url: "").matches(app: "live2"))
        #expect(!RelayPushEntry(channel: "cam", url: "").matches(app: "live"), "a channel entry is not a pattern")
        await inLive.finish()
        await inStudio.finish()
    }
}

@Suite("Relay backoff")
struct BackoffTests {
    @Test("1 s doubling to the 30 s cap; a healthy connection or a clean end starts over")
    func schedule() {
        var backoff = Backoff(initial: .seconds(1), maximum: .seconds(30), healthyAfter: .seconds(60))
        let delays = (0..<7).map { _ in backoff.failed(healthyFor: nil) }
        #expect(delays == [1, 2, 4, 8, 16, 30, 30].map { Duration.seconds($0) })
        #expect(backoff.failures == 7)
        #expect(backoff.failed(healthyFor: .seconds(59)) == .seconds(30), "not healthy for long enough")
        #expect(backoff.failed(healthyFor: .seconds(60)) == .seconds(1), "healthy for a minute: start over")
        #expect(backoff.failed(healthyFor: nil) == .seconds(2))
        backoff.reset()
        #expect(backoff.failures == 0)
        #expect(backoff.failed(healthyFor: nil) == .seconds(1))
    }
}
