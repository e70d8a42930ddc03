@testable import App
import NIOCore
import Testing

@Suite("API access")
struct APIAccessTests {
    @Test("loopback peers only, without a token", arguments: [
        ("127.0.0.1", true), ("127.5.6.7", true), ("::1", true), ("10.0.0.1", false), ("192.168.1.10", false),
        ("::2", false),
    ])
    func loopback(ip: String, allowed: Bool) throws {
        let address = try SocketAddress(ipAddress: ip, port: 1234)
        #expect(APIAccessMiddleware.isLoopback(address) == allowed)
    }

    @Test("no address is not loopback")
    func noAddress() {
        #expect(!APIAccessMiddleware.isLoopback(nil))
    }

    @Test("token comparison", arguments: [("abc", "abc", true), ("abc", "abd", false), ("abc", "abcd", false), ("", "", true),
                                           ("", "a", false)])
    func compare(a: String, b: String, equal: Bool) {
        #expect(APIAccessMiddleware.constantTimeEqual(Array(a.utf8), Array(b.utf8)) == equal)
    }
}

@Suite("Event loops")
struct EventLoopsTests {
    @Test("CPU lists as /proc prints them", arguments: [("0", 1), ("0-1", 2), ("0-3,8,10-11", 7), ("", nil), ("a-b", nil), ("3-1", nil),
                                                        ("1-2-3", nil)])
    func cpuList(list: String, count: Int?) {
        #expect(EventLoops.cpuCount(list) == count)
    }

    @Test("this process may run on at least one CPU")
    func available() {
        #expect(EventLoops.availableCPUs >= 1)
    }
}
