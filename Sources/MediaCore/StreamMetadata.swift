/// The publisher's `onMetaData` (encoder, sizes, rates), flattened to simple values.
public struct StreamMetadata: Sendable, Equatable {
    public enum Value: Sendable, Equatable {
        case number(Double)
        case boolean(Bool)
        case string(String)
    }

    public struct Property: Sendable, Equatable {
        public var key: String
        public var value: Value
        public init(_ key: String, _ value: Value) {
            self.key = key
            self.value = value
        }
    }

    /// In the publisher's order.
    public var properties: [Property]

    public init(properties: [Property] = []) {
        self.properties = properties
    }

    public subscript(key: String) -> Value? {
        properties.first { $0.key == key }?.value
    }
}
