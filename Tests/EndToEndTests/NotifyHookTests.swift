import App
import Foundation
import NginxCompat
import Synchronization
import Testing

extension EndToEnd {
    /// nginx-rtmp's notify hooks against a real HTTP hook server and a real ffmpeg publisher.
    @Suite("nginx-rtmp notify hooks")
    struct NotifyHooks {
        /// A value as the form carries it: everything but `A–Z a–z 0–9 - _ . ~` percent-encoded.
        static func encoded(_ value: String) -> String {
            value.addingPercentEncoding(withAllowedCharacters: CharacterSet(
                charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")) ?? value
        }

        static let sessionNames = ["app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "clientid"]

        @Test("connect, publish, publish_done, done, disconnect: nginx-rtmp's exact bodies, in order; HLS under the name")
        func lifecycle() async throws {
            let hook = try await HookServer { _ in .init(status: 200) }
            let server = try await TestServer {
                for path in [\NotifyConfiguration.onConnect, \.onPublish, \.onPublishDone, \.onDone, \.onDisconnect] {
                    $0.notify[keyPath: path] = NotifyURL(hook.url)
                }
            }
            let publisher = try publish("av-640x360.flv", to: server.rtmpURL("show?user=ann&t=a%20b"), extra: ["-t", "3"])
            _ = try await server.waitForPlaylist("show") { !$0.segments.isEmpty }
            #expect(try await publisher.wait().status == 0)
            let calls = try await hook.wait { $0.contains { $0["call"] == "disconnect" } }
            for call in calls { print("hook body: \(call)") }
            #expect(calls.map { $0["call"] ?? "?" } == ["connect", "publish", "publish_done", "done", "disconnect"])
            #expect(calls.allSatisfy { $0.method == "POST" && $0.contentType == "application/x-www-form-urlencoded" })

            // What ffmpeg sent in connect, and the values only the server knows, from the calls themselves.
            let connect = calls[0]
            let flashVer = try #require(connect["flashver"])
            #expect(flashVer.hasPrefix("FMLE/3.0 (compatible; Lavf"), "\(flashVer)")
            let tcURL = "rtmp://127.0.0.1:\(server.rtmpPort)/live"
            let epoch = try #require(connect["epoch"])
            #expect(UInt32(epoch) != nil)
            let clientID = try #require(calls[1]["clientid"])
            #expect(UInt64(clientID) != nil)

            let session = "app=live&flashver=\(Self.encoded(flashVer))&swfurl=&tcurl=\(Self.encoded(tcURL))&pageurl="
                + "&addr=127.0.0.1"
            #expect(connect.form == "\(session)&epoch=\(epoch)&call=connect")
            #expect(calls[1].form == "\(session)&clientid=\(clientID)&call=publish&name=show&type=live&user=ann&t=a%20b")
            #expect(calls[2].form == "\(session)&clientid=\(clientID)&call=publish_done&name=show&user=ann&t=a%20b")
            #expect(calls[3].form == "\(session)&clientid=\(clientID)&call=done&name=show&user=ann&t=a%20b")
            #expect(calls[4].form == "\(session)&clientid=\(clientID)&call=disconnect&app=live")
            #expect(calls[1]["t"] == "a b", "the stream name's query is passed on as sent")

            try await hook.stop()
            try await server.stop()
        }

        @Test("on_publish: 4xx refuses (ffmpeg fails, no HLS, no *_done); a redirect renames the channel")
        func denyAndRename() async throws {
            let hook = try await HookServer { fields in
                switch fields["name"] {
                case "blocked": .init(status: 403)
                case "src-key": .init(status: 302, location: "renamed")
                case "pushy": .init(status: 302, location: "rtmp://elsewhere/live/x")
                default: .init(status: 200)
                }
            }
            let server = try await TestServer {
                $0.notify.onPublish = NotifyURL(hook.url)
                $0.notify.onPublishDone = NotifyURL(hook.url)
                $0.notify.onDone = NotifyURL(hook.url)
                $0.notify.onDisconnect = NotifyURL(hook.url)
            }
            let denied = try await publish("video-only.flv", to: server.rtmpURL("blocked")).wait()
            #expect(denied.status != 0)
            #expect(denied.stderr.contains("publish hook answered 403"), "ffmpeg said: \(denied.stderr)")
            #expect(server.logs.contains("NetStream.Publish.Denied: publish hook answered 403"))
            // The connection's last call is on_disconnect: by then a publish_done would have been sent.
            try await hook.wait { $0.contains { $0["call"] == "disconnect" } }
            #expect(hook.calls.map { $0["call"] } == ["publish", "disconnect"])
            #expect(try await server.get("/live/blocked/index.m3u8").status == 404)

            let pushRedirect = try await publish("video-only.flv", to: server.rtmpURL("pushy")).wait()
            #expect(pushRedirect.status != 0)
            #expect(server.logs.contains("push redirect is not supported"))

            let renamed = try publish("av-640x360.flv", to: server.rtmpURL("src-key"), extra: ["-t", "3"])
            _ = try await server.waitForPlaylist("renamed") { !$0.segments.isEmpty }
            #expect(try await server.get("/live/src-key/index.m3u8").status == 404)
            #expect(try await renamed.wait().status == 0)
            // publish_done names the stream as the client sent it, as nginx-rtmp does.
            let done = try await hook.wait(for: "publish_done")
            #expect(done["name"] == "src-key")
            for line in server.logs.all { #expect(!line.contains("src-key"), "stream name in log: \(line)") }

            try await hook.stop()
            try await server.stop()
        }

        @Test("on_publish after configured keys: the hook gets the key as sent; a 2xx keeps the key's channel, decides unknown names")
        func afterKeys() async throws {
            let hook = try await HookServer { fields in fields["name"] == "nope" ? .init(status: 403) : .init(status: 204) }
            let server = try await TestServer {
                $0.streamKeys = ["k-7f3a": "main"]
                $0.notify.onPublish = NotifyURL(hook.url)
            }
            let wrong = try await publish("video-only.flv", to: server.rtmpURL("nope")).wait()
            #expect(wrong.status != 0)
            #expect(wrong.stderr.contains("publish hook answered 403"), "the hook refused the unknown key: \(wrong.stderr)")
            let publisher = try publish("av-640x360.flv", to: server.rtmpURL("k-7f3a"), extra: ["-t", "3"])
            _ = try await server.waitForPlaylist("main") { !$0.segments.isEmpty }
            #expect(try await publisher.wait().status == 0)
            #expect(try await server.get("/live/k-7f3a/index.m3u8").status == 404)
            #expect(hook.calls.map { $0["name"] } == ["nope", "k-7f3a"])
            // A name no key knows, allowed by the hook: published under its own name (the hook alone maps keys).
            let unknown = try publish("av-640x360.flv", to: server.rtmpURL("walk-in"), extra: ["-t", "3"])
            _ = try await server.waitForPlaylist("walk-in") { !$0.segments.isEmpty }
            #expect(try await unknown.wait().status == 0)
            try await hook.stop()
            try await server.stop()
        }

        @Test("on_publish after a database key: asked with the key as sent, a 2xx keeps the key's channel, a 403 refuses it")
        func afterDatabaseKey() async throws {
            let refuse = Atomic<Bool>(false)
            let hook = try await HookServer { _ in .init(status: refuse.load(ordering: .relaxed) ? 403 : 200) }
            let server = try await TestServer {
                $0.bcryptCost = 10
                $0.notify.onPublish = NotifyURL(hook.url)
            }
            let api = try await APIClient(server: server).signUp("hooked")
            #expect(try await api.call("POST", "/api/v1/channels", json: ["name": "studio"]).status == 201)
            let key = try #require(try await api.call("POST", "/api/v1/channels/studio/keys").json["key"] as? String)

            let publisher = try publish("av-640x360.flv", to: server.rtmpURL(key), extra: ["-t", "3"])
            _ = try await server.waitForPlaylist("studio") { !$0.segments.isEmpty }
            #expect(try await publisher.wait().status == 0)
            #expect(hook.calls.map { $0["name"] } == [key], "the platform's hook hears the key as sent")

            refuse.store(true, ordering: .relaxed)
            let refused = try await publish("video-only.flv", to: server.rtmpURL(key)).wait()
            #expect(refused.status != 0 && refused.stderr.contains("publish hook answered 403"), "\(refused.stderr)")
            for line in server.logs.all { #expect(!line.contains(key), "key in log: \(line)") }
            try await hook.stop()
            try await server.stop()
        }

        @Test("a hook that never answers refuses once the notify timeout passes")
        func timeout() async throws {
            let hook = try await HookServer { _ in .init(status: 200, hold: true) }
            let server = try await TestServer {
                $0.notify.onPublish = NotifyURL(hook.url)
                $0.notify.timeout = .seconds(1)
            }
            let started = ContinuousClock.now
            let denied = try await publish("video-only.flv", to: server.rtmpURL("waiting")).wait()
            let elapsed = ContinuousClock.now - started
            #expect(denied.status != 0)
            #expect(elapsed >= .seconds(1) && elapsed < .seconds(8), "refused after the 1 s timeout: \(elapsed)")
            #expect(server.logs.contains("publish hook unreachable"))
            #expect(try await server.get("/live/waiting/index.m3u8").status == 404)
            #expect(hook.calls.map { $0["call"] } == ["publish"])
            try await hook.stop()
            try await server.stop()
        }

        @Test("notify_method get: the same fields as the query string of a GET")
        func get() async throws {
            let hook = try await HookServer { _ in .init(status: 200) }
            let server = try await TestServer {
                $0.notify.method = .get
                $0.notify.onPublish = NotifyURL(hook.url)
            }
            let publisher = try publish("av-640x360.flv", to: server.rtmpURL("viaget?x=1"), extra: ["-t", "3"])
            _ = try await server.waitForPlaylist("viaget") { !$0.segments.isEmpty }
            #expect(try await publisher.wait().status == 0)
            let call = try #require(hook.requests.first)
            print("hook GET query: \(call.form)")
            #expect(call.method == "GET")
            #expect(call.names == Self.sessionNames + ["call", "name", "type", "x"])
            #expect(call["call"] == "publish" && call["name"] == "viaget" && call["x"] == "1")
            try await hook.stop()
            try await server.stop()
        }

        @Test("on_update: called every notify_update_timeout with nginx-rtmp's fields; an error status ends the session")
        func update() async throws {
            let updates = Atomic<Int>(0)
            let hook = try await HookServer { fields in
                guard fields["call"] == "update_publish" else { return .init(status: 200) }
                return .init(status: updates.add(1, ordering: .relaxed).newValue == 1 ? 200 : 500)
            }
            let server = try await TestServer {
                $0.notify.onUpdate = NotifyURL(hook.url)
                $0.notify.onPublishDone = NotifyURL(hook.url)
                $0.notify.updateTimeout = .seconds(1)
            }
            let publisher = try publish("av-long.flv", to: server.rtmpURL("updating?u=1"))
            let ended = try await publisher.wait()
            #expect(ended.status != 0, "the server ended a 20 s publish: \(ended.stderr)")
            #expect(server.logs.contains("reason=on_update: update_publish hook answered 500"))
            let calls = try await hook.wait { $0.contains { $0["call"] == "publish_done" } }
            for call in calls { print("hook body: \(call)") }
            #expect(calls.map { $0["call"] } == ["update_publish", "update_publish", "publish_done"])
            let first = calls[0]
            #expect(first.names == Self.sessionNames + ["call", "time", "timestamp", "name", "u"])
            #expect(first["time"] == "1", "seconds since the publish began")
            #expect((Int(first["timestamp"] ?? "") ?? 0) > 0, "the stream's RTMP timestamp")
            #expect(calls[1]["time"] == "2")
            #expect(first["name"] == "updating" && first["u"] == "1")
            try await hook.stop()
            try await server.stop()
        }

        @Test("notify_update_strict: off, a 3xx to on_update carries on; on, it ends the session")
        func updateStrict() async throws {
            let hook = try await HookServer { _ in .init(status: 302, location: "elsewhere") }
            for strict in [false, true] {
                let server = try await TestServer {
                    $0.notify.onUpdate = NotifyURL(hook.url)
                    $0.notify.updateTimeout = .seconds(1)
                    $0.notify.updateStrict = strict
                }
                let publisher = try publish("av-long.flv", to: server.rtmpURL("strict-\(strict)"))
                // Two updates answered 302: the first one ends a strict session, so only a lax one gets a second.
                let calls = try await hook.wait { $0.filter { $0["name"] == "strict-\(strict)" }.count >= (strict ? 1 : 2) }
                if strict {
                    #expect(try await publisher.wait().status != 0)
                    #expect(server.logs.contains("notify_update_strict on"))
                    #expect(calls.filter { $0["name"] == "strict-true" }.count == 1)
                } else {
                    #expect(publisher.isRunning, "a 3xx does not end a session without notify_update_strict")
                    publisher.kill()
                    _ = try await publisher.wait()
                }
                try await server.stop()
            }
            try await hook.stop()
        }

        @Test("on_connect per application: a refusal closes the connection, a redirect moves it to another application")
        func connect() async throws {
            let hook = try await HookServer { fields in
                switch (fields["call"], fields["app"]) {
                case ("connect", "alias"): .init(status: 302, location: "live")
                case ("connect", _): .init(status: 403)
                default: .init(status: 200)
                }
            }
            let server = try await TestServer {
                $0.notify.onConnect = NotifyURL(byApp: ["private": hook.url, "alias": hook.url])
                $0.notify.onPublish = NotifyURL(byApp: ["live": hook.url])
            }
            let refused = try await publish("video-only.flv", to: server.rtmpURL("cam", app: "private")).wait()
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("connect hook answered 403"), "ffmpeg said: \(refused.stderr)")
            #expect(server.logs.contains("connect refused"))
            let call = try #require(hook.requests.first)
            #expect(call.names == ["app", "flashver", "swfurl", "tcurl", "pageurl", "addr", "epoch", "call"])
            #expect(call["app"] == "private")
            #expect(hook.requests.count == 1, "no publish after a refused connect")

            // Application live has no on_connect: only its on_publish is asked.
            let open = try publish("av-640x360.flv", to: server.rtmpURL("open"), extra: ["-t", "3"])
            _ = try await server.waitForPlaylist("open") { !$0.segments.isEmpty }
            #expect(try await open.wait().status == 0)
            #expect(hook.requests.map { $0["call"] } == ["connect", "publish"])

            // alias → live: the publish is decided (and reported) as application live's.
            let moved = try publish("av-640x360.flv", to: server.rtmpURL("moved", app: "alias"), extra: ["-t", "3"])
            _ = try await server.waitForPlaylist("moved") { !$0.segments.isEmpty }
            #expect(try await moved.wait().status == 0)
            #expect(hook.requests.map { $0["call"] } == ["connect", "publish", "connect", "publish"])
            #expect(hook.requests[2]["app"] == "alias" && hook.requests[3]["app"] == "live")
            #expect(server.logs.contains("connect redirected"))
            try await hook.stop()
            try await server.stop()
        }

        @Test("on_play_done after an RTMP play ends, with the name the player asked for")
        func playDone() async throws {
            let hook = try await HookServer { _ in .init(status: 200) }
            let server = try await TestServer {
                $0.notify.onPlay = NotifyURL(hook.url)
                $0.notify.onPlayDone = NotifyURL(hook.url)
                $0.notify.onDone = NotifyURL(hook.url)
            }
            let publisher = try publish("av-long.flv", to: server.rtmpURL("watched"))
            _ = try await server.waitForPlaylist("watched") { !$0.segments.isEmpty }
            let played = try await ChildProcess("ffprobe", ["-v", "error", "-rw_timeout", "15000000", "-show_entries",
                                                            "stream=codec_name", "-of", "csv=p=0",
                                                            server.rtmpURL("watched?v=2")]).wait()
            #expect(played.status == 0, "\(played.stderr)")
            let calls = try await hook.wait { $0.contains { $0["call"] == "done" } }
            for call in calls { print("hook body: \(call)") }
            #expect(calls.map { $0["call"] } == ["play", "play_done", "done"])
            #expect(calls[1].names == Self.sessionNames + ["call", "name", "v"])
            #expect(calls[1]["name"] == "watched" && calls[1]["v"] == "2")
            publisher.kill()
            _ = try await publisher.wait()
            try await hook.stop()
            try await server.stop()
        }
    }
}
