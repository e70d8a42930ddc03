public import StreamHub

/// The form fields of nginx-rtmp's notify calls, named and ordered as ngx_rtmp_notify_module.c
/// writes them. Every call but `connect` starts with the session's fields (app, flashver, swfurl,
/// tcurl, pageurl, addr, clientid); the client's query (of the stream name, or of connect's app)
/// goes after the fields, as sent, by `NotifyClient`.
public enum NotifyFields {
    public typealias Fields = [(String, String)]

    /// `app, flashver, swfurl, tcurl, pageurl, addr, clientid`.
    static func session(app: String, flashVer: String?, swfURL: String?, tcURL: String?, pageURL: String?,
                        address: String, clientID: UInt64) -> Fields {
        [("app", app), ("flashver", flashVer ?? ""), ("swfurl", swfURL ?? ""), ("tcurl", tcURL ?? ""),
         ("pageurl", pageURL ?? ""), ("addr", address), ("clientid", "\(clientID)")]
    }

    static func session(_ session: RTMPSessionInfo) -> Fields {
        Self.session(app: session.app, flashVer: session.flashVer, swfURL: session.swfURL, tcURL: session.tcURL,
                     pageURL: session.pageURL, address: session.address, clientID: session.clientID)
    }

    /// `on_connect`: no clientid, the handshake's epoch instead, then `call=connect`.
    public static func connect(_ session: RTMPSessionInfo) -> Fields {
        [("app", session.app), ("flashver", session.flashVer ?? ""), ("swfurl", session.swfURL ?? ""),
         ("tcurl", session.tcURL ?? ""), ("pageurl", session.pageURL ?? ""), ("addr", session.address),
         ("epoch", "\(session.epoch)"), ("call", "connect")]
    }

    /// `on_publish`: the session, `call=publish`, the name as sent (no query) and the publish type.
    public static func publish(_ request: PublishRequest) -> Fields {
        session(app: request.app, flashVer: request.flashVer, swfURL: request.swfURL, tcURL: request.tcURL,
                pageURL: request.pageURL, address: request.address, clientID: request.clientID)
            + [("call", "publish"), ("name", request.streamKey), ("type", request.publishType)]
    }

    /// `on_play`: the session, `call=play`, the name, then start, duration (as C's uint32) and reset.
    public static func play(_ request: PlayRequest) -> Fields {
        session(app: request.app, flashVer: request.flashVer, swfURL: request.swfURL, tcURL: request.tcURL,
                pageURL: request.pageURL, address: request.address, clientID: request.clientID)
            + [("call", "play"), ("name", request.channel),
               // nginx-rtmp prints these as unsigned 32-bit: -2 (live or recorded) becomes 4294967294.
               ("start", "\(uint32(request.start))"), ("duration", "\(uint32(request.duration))"),
               ("reset", request.reset ? "1" : "0")]
    }

    /// `on_publish_done`, `on_play_done`, `on_done`: the session, `call`, and the name as sent.
    public static func done(_ call: String, _ session: RTMPSessionInfo, _ stream: RTMPStreamInfo) -> Fields {
        Self.session(session) + [("call", call)] + (stream.name.isEmpty ? [] : [("name", stream.name)])
    }

    /// `on_update`: `call=update_publish` or `update_play`, `time` (seconds since the stream began),
    /// `timestamp` (its last RTMP timestamp, printed as C's int32), then the name.
    public static func update(_ session: RTMPSessionInfo, _ stream: RTMPStreamInfo, elapsed: Int64,
                              timestamp: UInt32) -> Fields {
        Self.session(session)
            + [("call", "update_\(stream.kind.rawValue)"), ("time", "\(elapsed)"),
               ("timestamp", "\(Int32(bitPattern: timestamp))")]
            + (stream.name.isEmpty ? [] : [("name", stream.name)])
    }

    /// `on_disconnect`: the session, `call=disconnect`, and the app once more (nginx-rtmp sends it twice).
    public static func disconnect(_ session: RTMPSessionInfo) -> Fields {
        Self.session(session) + [("call", "disconnect"), ("app", session.app)]
    }
}

/// A client's number as nginx-rtmp prints it (C's cast to uint32_t); NaN and huge values, which a
/// hostile client can send, become 0 rather than a trap.
func uint32(_ value: Double) -> UInt32 {
    guard value.isFinite, value.magnitude < 9.2e18 else { return 0 }
    return UInt32(truncatingIfNeeded: Int64(value))
}
