import Hummingbird
public import NIOCore

/// The OpenAPI 3.1 document of every HTTP route: `openapi.yaml` beside this file, compiled into the
/// binary (SwiftPM's `embedInCode`), served at `GET /api/v1/openapi.yaml` without authentication.
///
/// `OpenAPITests` checks that its paths and methods are exactly the routes the server registers;
/// `make api-fuzz` (part of `make test`) runs schemathesis against a live server with it.
public enum OpenAPIDocument {
    /// The document, as YAML.
    public static let yaml = ByteBuffer(bytes: PackageResources.openapi_yaml)

    static func add(to group: RouterGroup<AppRequestContext>) {
        group.get("/openapi.yaml") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/yaml"], body: ResponseBody(byteBuffer: yaml))
        }
    }
}

/// A route the HTTP server answers: `GET /api/v1/streams/{channel}`.
public struct HTTPRoute: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// `GET`, `POST`, …
    public var method: String
    /// The path as the router has it, parameters in braces (as OpenAPI writes them).
    public var path: String

    public init(method: String, path: String) {
        self.method = method
        self.path = path
    }

    public var description: String { "\(method) \(path)" }

    public static func < (lhs: Self, rhs: Self) -> Bool { (lhs.path, lhs.method) < (rhs.path, rhs.method) }
}
