import Foundation
public import Hummingbird
import IngestServer
import NIOCore
import StreamHub

/// The relay API of one channel:
///
/// - `GET /streams/{channel}/relays`: the channel's push targets and pull, as `[RelayTargetStatus]`.
/// - `POST /streams/{channel}/relays` with `{"url": "rtmp://…"}`: adds a push (201 with its status).
/// - `DELETE /streams/{channel}/relays` with `{"url": "rtmp://…"}`: removes it (204, or 404).
///
/// Errors are 400/404, formatted by the API's error middleware. URLs in responses are masked; a request's
/// URL is never echoed back.
public func addRelayRoutes(to group: RouterGroup<AppRequestContext>, service: RelayService) {
    group.get("/streams/{channel}/relays") { _, context -> Response in
        let channel = try channelParameter(context)
        return json(.ok, service.targets(channel: channel))
    }
    group.post("/streams/{channel}/relays") { request, context -> Response in
        let channel = try channelParameter(context)
        let url = try await urlBody(request)
        let added: RelayTargetStatus
        do {
            added = try service.addPush(channel: channel, url: url)
        } catch {
            throw HTTPError(.badRequest, message: "\(error)")
        }
        return json(.created, added)
    }
    group.delete("/streams/{channel}/relays") { request, context -> Response in
        let channel = try channelParameter(context)
        let url = try await urlBody(request)
        guard service.removePush(channel: channel, url: url) else {
            throw HTTPError(.notFound, message: "no push of \(channel) to that URL")
        }
        return Response(status: .noContent)
    }
}

private struct URLBody: Decodable {
    var url: String
}

/// Request bodies are a URL and a little JSON: anything bigger is not one.
private let maxBodyBytes = 8192

private func urlBody(_ request: Request) async throws -> String {
    var request = request
    let body: ByteBuffer
    do {
        body = try await request.collectBody(upTo: maxBodyBytes)
    } catch is NIOTooManyBytesError {
        throw HTTPError(.contentTooLarge, message: "body must be JSON of at most \(maxBodyBytes) bytes")
    }
    guard let decoded = try? JSONDecoder().decode(URLBody.self, from: Data(body.readableBytesView)) else {
        throw HTTPError(.badRequest, message: #"body must be JSON {"url": "rtmp://host[:port]/app/stream"}"#)
    }
    return decoded.url
}

private func channelParameter(_ context: AppRequestContext) throws -> String {
    guard let channel = context.parameters.get("channel"), StaticKeyAuthorizer.isValidChannelName(channel) else {
        throw HTTPError(.badRequest, message: "not a channel name")
    }
    return channel
}

private func json(_ status: HTTPResponse.Status, _ value: some Encodable) -> Response {
    let encoder = JSONEncoder()
    encoder.dateEncodingStrategy = .iso8601
    encoder.outputFormatting = [.sortedKeys]
    let data = (try? encoder.encode(value)) ?? Data(#"{"error":"encoding failed"}"#.utf8)
    return Response(status: status, headers: [.contentType: "application/json"],
                    body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
}
