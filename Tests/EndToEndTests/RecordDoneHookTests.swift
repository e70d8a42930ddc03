import App
import NginxCompat
import Foundation
import Testing

extension EndToEnd {
    @Suite("on_record_done")
    struct RecordDoneHook {
        @Test("each finished recording file is posted to on_record_done with nginx-rtmp's fields")
        func posted() async throws {
            let hook = try await HookServer { _ in .init(status: 200) }
            let server = try await TestServer {
                $0.recordMode = .all
                $0.notify.onRecordDone = .init(hook.url)
            }
            #expect(try await publish("av-640x360.flv", to: server.rtmpURL("taped"), extra: ["-t", "3"]).wait().status == 0)
            let deadline = ContinuousClock.now + .seconds(20)
            while hook.calls.count < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            let calls = hook.calls
            #expect(calls.count == 2, "one call per format: \(calls)")
            #expect(Set(calls.compactMap { $0["recorder"] }) == ["flv", "mp4"])
            for call in calls {
                #expect(call["call"] == "record_done")
                #expect(call["name"] == "taped")
                #expect(call["app"] == "live")
                let path = try #require(call["path"])
                #expect(path.hasPrefix(server.dataDirectory.path + "/recordings/taped-"), "\(path)")
                #expect(FileManager.default.fileExists(atPath: path), "the file is there when the hook hears of it")
            }
            try await hook.stop()
            try await server.stop()
        }
    }
}
