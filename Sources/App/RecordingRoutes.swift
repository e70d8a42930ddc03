import Foundation
public import Hummingbird
import NIOCore
import StreamHub

/// `GET|POST|DELETE <group>/streams/{channel}/recordings`: a channel's recordings, start, stop.
///
/// Every answer is JSON. Success: `{"channel": …, "recording": true|false, "recordings": [RecordingStatus]}`
/// (200; 201 when a recording was started). Errors (as every API error): `{"error": {"code", "message"}}` with 400 (not a channel
/// name), 404 (`POST`: the channel is not live), 409 (recording is off on this server, the channel
/// is already being recorded, or — `DELETE` — it is not being recorded).
public func addRecordingRoutes(to group: RouterGroup<AppRequestContext>, service: RecordingService) {
    let path: RouterPath = "streams/{channel}/recordings"
    group.get(path) { _, context in
        let channel = try context.parameters.require("channel")
        guard StaticKeyAuthorizer.isValidChannelName(channel) else { throw RecordingJSON.invalidChannel(channel) }
        return RecordingJSON.list(channel: channel, service: service, status: .ok)
    }
    group.post(path) { _, context in
        let channel = try context.parameters.require("channel")
        guard StaticKeyAuthorizer.isValidChannelName(channel) else { throw RecordingJSON.invalidChannel(channel) }
        do throws(RecordingServiceError) {
            try service.start(channel: channel)
        } catch {
            throw RecordingJSON.error(error)
        }
        return RecordingJSON.list(channel: channel, service: service, status: .created)
    }
    group.delete(path) { _, context in
        let channel = try context.parameters.require("channel")
        guard StaticKeyAuthorizer.isValidChannelName(channel) else { throw RecordingJSON.invalidChannel(channel) }
        do throws(RecordingServiceError) {
            // Returns once the files are closed, so the answer shows them finished.
            try await service.stop(channel: channel)
        } catch {
            throw RecordingJSON.error(error)
        }
        return RecordingJSON.list(channel: channel, service: service, status: .ok)
    }
}

/// JSON bodies for the recording routes.
enum RecordingJSON {
    struct List: Encodable {
        var channel: String
        var recording: Bool
        var recordings: [RecordingStatus]
    }

    static func list(channel: String, service: RecordingService, status: HTTPResponse.Status) -> Response {
        json(List(channel: channel, recording: service.isRecording(channel: channel),
                  recordings: service.status(channel: channel)), status: status)
    }

    static func error(_ error: RecordingServiceError) -> HTTPError {
        let status: HTTPResponse.Status = switch error {
        case .notLive: .notFound
        case .disabled, .alreadyRecording, .notRecording: .conflict
        }
        return HTTPError(status, message: error.description)
    }

    static func invalidChannel(_ channel: String) -> HTTPError {
        HTTPError(.badRequest, message: "'\(channel.prefix(80))' is not a channel name (1–64 letters, digits, '-', '_', '.'; not starting with '.')")
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status) -> Response {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Our own plain structs of strings and numbers: encoding them cannot fail.
        let body = (try? encoder.encode(value)) ?? Data(#"{"error":"response encoding failed"}"#.utf8)
        return Response(status: status, headers: [.contentType: "application/json"],
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}
