@testable import NginxCompat
import StreamHub
import Testing

@Suite("Notify hooks")
struct NotifyTests {
    @Test("form values are percent-encoded except unreserved characters",
          arguments: [("plain", "plain"), ("a b", "a%20b"), ("x&y=z", "x%26y%3Dz"), ("rtmp://h:1/live", "rtmp%3A%2F%2Fh%3A1%2Flive"),
                      ("ü", "%C3%BC"), ("-_.~", "-_.~"), ("\n", "%0A")])
    func encoding(raw: String, encoded: String) {
        #expect(NotifyClient.formEncoded(raw) == encoded)
    }

    @Test("the body lists fields in order, then the client's query as sent")
    func body() {
        #expect(NotifyClient.formBody([("call", "play"), ("name", "a b")], clientQuery: "token=x&u=1")
                == "call=play&name=a%20b&token=x&u=1")
        #expect(NotifyClient.formBody([("call", "play")], clientQuery: nil) == "call=play")
        #expect(NotifyClient.formBody([("call", "play")], clientQuery: "") == "call=play")
    }

    @Test("on_play carries nginx-rtmp's fields; start −2 prints as C's uint32, hostile numbers as 0")
    func playFields() {
        let request = PlayRequest(app: "live", channel: "show", query: "u=1", tcURL: "rtmp://h/live", flashVer: "FMLE/3.0",
                                  address: "10.0.0.1", clientID: 7, start: -2, duration: .nan, reset: true)
        let fields = Dictionary(uniqueKeysWithValues: OnPlayHook.fields(request))
        #expect(fields["call"] == "play")
        #expect(fields["name"] == "show")
        #expect(fields["start"] == "4294967294")
        #expect(fields["duration"] == "0")
        #expect(fields["reset"] == "1")
        #expect(fields["clientid"] == "7")
        #expect(fields["addr"] == "10.0.0.1")
        #expect(uint32(.infinity) == 0)
        #expect(uint32(1e300) == 0)
        #expect(uint32(5000) == 5000)
    }

    struct Fixed: PlayAuthorizer {
        let decision: PlayDecision
        func authorize(_ request: PlayRequest) async -> PlayDecision { decision }
    }

    struct Echo: PlayAuthorizer {
        func authorize(_ request: PlayRequest) async -> PlayDecision { .allow(channel: request.channel + "-seen") }
    }

    @Test("a chain stops at the first refusal and passes renames along")
    func chain() async {
        let request = PlayRequest(app: "live", channel: "a")
        #expect(await PlayAuthorizerChain([Fixed(decision: .allow(channel: "b")), Echo()]).authorize(request) == .allow(channel: "b-seen"))
        #expect(await PlayAuthorizerChain([Fixed(decision: .deny(reason: "no")), Echo()]).authorize(request) == .deny(reason: "no"))
        #expect(await PlayAuthorizerChain([]).authorize(request) == .allow(channel: "a"))
    }
}
