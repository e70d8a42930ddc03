@testable import NginxCompat
import StreamHub
import Testing

/// The fields of each notify call, against ngx_rtmp_notify_module.c: names, order, values.
@Suite("Notify fields")
struct NotifyFieldsTests {
    static let session = RTMPSessionInfo(app: "live", args: "tok=1", flashVer: "FMLE/3.0 (compatible; FMSc/1.0)",
                                         swfURL: "", tcURL: "rtmp://h:1935/live", pageURL: nil, address: "10.0.0.1",
                                         clientID: 42, epoch: 123_456)
    static let stream = RTMPStreamInfo(kind: .publish, name: "key-1", args: "a=b", channel: "main")

    static func names(_ fields: [(String, String)]) -> [String] { fields.map(\.0) }

    @Test("connect: app … addr, epoch (no clientid), call=connect; its args follow as sent")
    func connect() {
        let fields = NotifyFields.connect(Self.session)
        #expect(Self.names(fields) == ["app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "epoch", "call"])
        #expect(fields.map(\.1) == ["live", "FMLE/3.0 (compatible; FMSc/1.0)", "", "rtmp://h:1935/live", "", "10.0.0.1",
                                    "123456", "connect"])
        #expect(NotifyClient.formBody(fields, clientQuery: Self.session.args)
                == "app=live&flashver=FMLE%2F3.0%20%28compatible%3B%20FMSc%2F1.0%29&swfurl=&tcurl=rtmp%3A%2F%2Fh%3A1935%2Flive"
                + "&pageurl=&addr=10.0.0.1&epoch=123456&call=connect&tok=1")
    }

    @Test("publish: the session, call=publish, the name as sent, the type")
    func publish() {
        let request = PublishRequest(app: "live", streamKey: "key-1", query: "a=b", publishType: "live",
                                     tcURL: "rtmp://h/live", flashVer: "FMLE/3.0", address: "::1", clientID: 7)
        let fields = NotifyFields.publish(request)
        #expect(Self.names(fields) == ["app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "clientid", "call", "name",
                                       "type"])
        #expect(NotifyClient.formBody(fields, clientQuery: request.query)
                == "app=live&flashver=FMLE%2F3.0&swfurl=&tcurl=rtmp%3A%2F%2Fh%2Flive&pageurl=&addr=%3A%3A1&clientid=7"
                + "&call=publish&name=key-1&type=live&a=b")
    }

    @Test("play: the session, call=play, name, start, duration, reset")
    func play() {
        let fields = NotifyFields.play(PlayRequest(app: "live", channel: "show", address: "1.2.3.4", clientID: 3,
                                                   start: -2, duration: -1, reset: false))
        #expect(Self.names(fields) == ["app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "clientid", "call", "name",
                                       "start", "duration", "reset"])
        #expect(fields.suffix(4).map(\.1) == ["show", "4294967294", "4294967295", "0"])
    }

    @Test("publish_done, play_done, done: the session, call, the name as sent")
    func done() {
        for call in ["publish_done", "play_done", "done"] {
            let fields = NotifyFields.done(call, Self.session, Self.stream)
            #expect(Self.names(fields) == ["app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "clientid", "call",
                                           "name"])
            #expect(fields.suffix(3).map(\.1) == ["42", call, "key-1"])
        }
        let unnamed = RTMPStreamInfo(kind: .play, name: "", channel: "x")
        #expect(Self.names(NotifyFields.done("done", Self.session, unnamed)).last == "call", "no name: no name field")
    }

    @Test("update: call=update_publish or update_play, time, timestamp (C's int32), name")
    func update() {
        let fields = NotifyFields.update(Self.session, Self.stream, elapsed: 61, timestamp: 3_000_000_000)
        #expect(Self.names(fields) == ["app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "clientid", "call", "time",
                                       "timestamp", "name"])
        #expect(fields.suffix(4).map(\.1) == ["update_publish", "61", "-1294967296", "key-1"])
        let play = RTMPStreamInfo(kind: .play, name: "show", channel: "show")
        #expect(NotifyFields.update(Self.session, play, elapsed: 0, timestamp: 5)[7].1 == "update_play")
    }

    @Test("disconnect: the session, call=disconnect, then app again (as nginx-rtmp sends it)")
    func disconnect() {
        #expect(Self.names(NotifyFields.disconnect(Self.session))
                == ["app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "clientid", "call", "app"])
    }

    @Test("GET puts the form after ? (or & when the URL has a query)")
    func getURL() {
        #expect(NotifyClient.getURL("http://h/on_publish", form: "app=live") == "http://h/on_publish?app=live")
        #expect(NotifyClient.getURL("http://h/hook?secret=1", form: "app=live") == "http://h/hook?secret=1&app=live")
    }

    @Test("URLs for every application and per application; the per-app one wins")
    func urls() throws {
        var urls = NotifyURL()
        try urls.add("http://all.example/hook?x=1")
        try urls.add("vip=https://vip.example/hook?a=b")
        #expect(urls.url(app: "live") == "http://all.example/hook?x=1")
        #expect(urls.url(app: "vip") == "https://vip.example/hook?a=b")
        var only = NotifyURL()
        try only.add("live=http://h/p")
        #expect(only.url(app: "other") == nil)
        for bad in ["ftp://h/x", "live=", "live=ftp://h", "=http://h", "http://", "just-text", "a/b=http://h"] {
            var urls = NotifyURL()
            #expect(throws: NotifyConfiguration.Problem.self, "\(bad)") { try urls.add(bad) }
        }
    }
}

@Suite("Publish authorizer chain")
struct PublishChainTests {
    struct Fixed: PublishAuthorizer {
        let decision: PublishDecision
        func authorize(_ request: PublishRequest) async -> PublishDecision { decision }
    }

    /// Like on_publish: sees the name as sent; keeps the channel chosen before it unless it renames.
    struct Follower: ChainablePublishAuthorizer {
        let rename: String?
        let seen = Seen()
        final class Seen: @unchecked Sendable { var names: [String] = [] }
        func authorize(_ request: PublishRequest) async -> PublishDecision { await authorize(request, after: request.streamKey) }
        func authorize(_ request: PublishRequest, after channel: String) async -> PublishDecision {
            seen.names.append(request.streamKey)
            return .allow(channel: rename ?? channel)
        }
    }

    @Test("the first refusal wins; a follower sees the key as sent and keeps or renames the channel")
    func chain() async {
        let request = PublishRequest(app: "live", streamKey: "key-1")
        let keep = Follower(rename: nil)
        #expect(await PublishAuthorizerChain([Fixed(decision: .allow(channel: "main")), keep]).authorize(request)
                == .allow(channel: "main"))
        #expect(keep.seen.names == ["key-1"])
        #expect(await PublishAuthorizerChain([Fixed(decision: .allow(channel: "main")), Follower(rename: "other")])
                .authorize(request) == .allow(channel: "other"))
        let after = Follower(rename: nil)
        #expect(await PublishAuthorizerChain([Fixed(decision: .deny(reason: "no")), after]).authorize(request)
                == .deny(reason: "no"))
        #expect(after.seen.names.isEmpty, "nothing runs after a refusal")
        #expect(await PublishAuthorizerChain([]).authorize(request) == .deny(reason: "no publish authorizer"))
    }
}
