import NIOCore
import Testing

@testable import RTMP

/// `connect` held for the owner's answer (nginx-rtmp's on_connect), and connect's args.
@Suite("Server session: held connect")
struct ServerSessionConnectTests {
    static func holding() -> ServerSession {
        var configuration = ServerSession.Configuration()
        configuration.authorizesConnect = true
        return ServerSession(configuration: configuration)
    }

    @Test("the query of connect's app is its args; the app is the part before it")
    func args() throws {
        var session = Self.holding()
        let actions = session.receive(Client.connect(app: "live?tok=1&u=a/_definst_"))
        guard case .authorizeConnect(let request) = try #require(actions.first) else {
            Issue.record("expected authorizeConnect, got \(actions)")
            return
        }
        #expect(actions.count == 1, "nothing is sent before the answer")
        #expect(request.app == "live")
        #expect(request.args == "tok=1&u=a")
        #expect(request.tcURL == "rtmp://127.0.0.1/live?tok=1&u=a/_definst_")
        #expect(session.state == .awaitingConnect)
        #expect(!session.isConnected)
    }

    @Test("allowed: the usual replies, in the app the owner names")
    func allowed() throws {
        var session = Self.holding()
        _ = session.receive(Client.connect())
        let replies = session.connectAllowed(app: "other")
        #expect(replies.count == 5)
        #expect(try #require(sentCommand(replies[4]))[3]["code"] == .string("NetConnection.Connect.Success"))
        #expect(session.app == "other")
        #expect(session.state == .connected)
        #expect(session.isConnected)
        #expect(session.connectAllowed().isEmpty, "a second answer does nothing")
    }

    @Test("refused: _error NetConnection.Connect.Rejected with the reason, then close")
    func refused() throws {
        var session = Self.holding()
        _ = session.receive(Client.connect(7))
        let replies = session.connectRejected("connect hook answered 403")
        let error = try #require(sentCommand(replies[0]))
        #expect(error[0] == .string("_error"))
        #expect(error[1] == .number(7))
        #expect(error[3]["code"] == .string("NetConnection.Connect.Rejected"))
        #expect(error[3]["description"] == .string("connect hook answered 403"))
        #expect(replies.last == .close(reason: "connect refused: connect hook answered 403"))
        #expect(session.state == .closed)
        #expect(!session.isConnected)
    }

    @Test("a second connect while the first is held closes the connection")
    func secondConnect() {
        var session = Self.holding()
        _ = session.receive(Client.connect())
        #expect(session.receive(Client.connect(2)).last == .close(reason: "second connect on one connection"))
    }

    @Test("not held by default: connect is answered at once, its args still parsed")
    func notHeld() {
        var session = ServerSession()
        #expect(session.receive(Client.connect(app: "live?x=1")).count == 5)
        #expect(session.app == "live")
        #expect(session.connectArgs == "x=1")
    }
}
