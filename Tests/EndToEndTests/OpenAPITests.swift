import App
import Foundation
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

extension EndToEnd {
    @Suite("OpenAPI document")
    struct OpenAPI {
        static let repositoryDocument = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/App/openapi.yaml")

        @Test("served at /api/v1/openapi.yaml without a token, as the repository has it")
        func served() async throws {
            // With an API token the operator's routes need it; the document does not.
            let server = try await TestServer { $0.apiToken = "an-api-token-of-32-characters-xx" }
            let response = try await server.get("/api/v1/openapi.yaml")
            #expect(response.status == 200)
            #expect(response.headers["content-type"] == "application/yaml")
            #expect(response.body == (try Data(contentsOf: Self.repositoryDocument)),
                    "the binary serves the document compiled in: rebuild after editing Sources/App/openapi.yaml")
            #expect(String(decoding: response.body, as: UTF8.self).hasPrefix("openapi: 3.1."))
            try await server.stop()
        }

        @Test("every registered route is in the document, and every operation in it is registered")
        func everyRoute() async throws {
            let server = try await TestServer()
            let registered = Set(server.app.routes)
            try await server.stop()
            #expect(registered.count > 20, "the router lists its routes: \(registered.sorted())")
            let documented = try OpenAPIPaths.operations(in: String(decoding: try Data(contentsOf: Self.repositoryDocument),
                                                                    as: UTF8.self))
            let undocumented = registered.subtracting(documented).sorted()
            let unregistered = documented.subtracting(registered).sorted()
            #expect(undocumented.isEmpty, "routes missing from openapi.yaml: \(undocumented)")
            #expect(unregistered.isEmpty, "operations in openapi.yaml that no route answers: \(unregistered)")
        }

        @Test("a body larger than the route takes is 413 with the JSON error body, as documented")
        func tooLarge() async throws {
            let server = try await TestServer()
            for (path, size) in [("/api/v1/streams/abc/relays", 8 << 10), ("/api/v1/auth/login", 64 << 10)] {
                var request = URLRequest(url: server.httpURL(path))
                request.httpMethod = "POST"
                request.setValue("application/json", forHTTPHeaderField: "Content-Type")
                request.httpBody = Data(#"{"url":""#.utf8) + Data(repeating: UInt8(ascii: "a"), count: size) + Data(#""}"#.utf8)
                let (body, response) = try await URLSession.shared.data(for: request)
                #expect((response as? HTTPURLResponse)?.statusCode == 413, "\(path)")
                let error = try #require(try JSONSerialization.jsonObject(with: body) as? [String: [String: String]])
                #expect(error["error"]?["code"] == "content_too_large", "\(path): \(error)")
            }
            try await server.stop()
        }

        @Test("the reader of the paths section refuses what it does not understand")
        func reader() throws {
            let document = """
                openapi: 3.1.0
                paths:
                  /a/{b}:
                    parameters:
                      - name: b
                    get:
                      summary: x
                    head:
                      summary: y
                  '/c':
                    delete: {}
                components:
                  schemas: {}
                """
            #expect(try OpenAPIPaths.operations(in: document) == [
                HTTPRoute(method: "GET", path: "/a/{b}"), HTTPRoute(method: "HEAD", path: "/a/{b}"),
                HTTPRoute(method: "DELETE", path: "/c"),
            ])
            #expect(throws: OpenAPIPaths.Unreadable.self) { try OpenAPIPaths.operations(in: "paths: {}\n") }
            #expect(throws: OpenAPIPaths.Unreadable.self) {
                try OpenAPIPaths.operations(in: "paths:\n  /a:\n    gett:\n      summary: typo\n")
            }
            #expect(throws: OpenAPIPaths.Unreadable.self) { try OpenAPIPaths.operations(in: "paths:\n  {/a: {get: {}}}\n") }
        }
    }
}

/// The operations of `openapi.yaml`'s `paths:` section, read without a YAML library.
///
/// Not a YAML parser: it knows the block style the document is written in — each path a key two
/// spaces in, each operation a key four spaces in — and throws on anything else in that section, so
/// a change of style fails the test instead of hiding a route. The whole document is parsed as YAML
/// (and checked as OpenAPI) by schemathesis in `make api-fuzz`.
enum OpenAPIPaths {
    struct Unreadable: Error, CustomStringConvertible {
        var line: Int
        var text: String
        var description: String { "openapi.yaml line \(line): cannot read '\(text)' in paths:" }
    }

    static let methods: Set<String> = ["get", "put", "post", "delete", "options", "head", "patch", "trace"]
    /// The other members a path item may have.
    static let pathItemFields: Set<String> = ["parameters", "summary", "description", "servers", "$ref"]

    static func operations(in document: String) throws -> Set<HTTPRoute> {
        let lines = document.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let start = lines.firstIndex(of: "paths:") else { throw Unreadable(line: 0, text: "no 'paths:' line") }
        var operations = Set<HTTPRoute>()
        var path: String?
        for index in lines.indices.dropFirst(start + 1) {
            let line = lines[index]
            let content = line.drop { $0 == " " }
            if content.isEmpty || content.hasPrefix("#") { continue }
            let indent = line.count - content.count
            if indent == 0 { break }  // the next top-level key
            guard let colon = content.firstIndex(of: ":") else {
                if indent > 4 { continue }
                throw Unreadable(line: index + 1, text: line)
            }
            let key = String(content[..<colon])
            switch indent {
            case 2:
                let unquoted = key.count >= 2 && (key.first == "'" || key.first == "\"") && key.last == key.first
                    ? String(key.dropFirst().dropLast()) : key
                guard unquoted.hasPrefix("/") else { throw Unreadable(line: index + 1, text: line) }
                path = unquoted
            case 4:
                guard let path else { throw Unreadable(line: index + 1, text: line) }
                if methods.contains(key) {
                    operations.insert(HTTPRoute(method: key.uppercased(), path: path))
                } else if !pathItemFields.contains(key) {
                    throw Unreadable(line: index + 1, text: line)
                }
            case 5...: continue
            default: throw Unreadable(line: index + 1, text: line)
            }
        }
        guard !operations.isEmpty else { throw Unreadable(line: start + 1, text: "no operations") }
        return operations
    }
}
