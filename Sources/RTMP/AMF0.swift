public import NIOCore

/// An AMF0 value (Action Message Format 0, as used in RTMP commands and metadata).
///
/// Objects and ECMA arrays keep their key order so that a decode followed by an
/// encode reproduces the original bytes.
public enum AMF0Value: Sendable, Equatable {
    case number(Double)
    case boolean(Bool)
    case string(String)
    case object([AMF0Property])
    case null
    case undefined
    case ecmaArray([AMF0Property])
    case strictArray([AMF0Value])
    case date(millisecondsSince1970: Double, timeZone: Int16)
    case longString(String)

    /// Looks up a property of an object or ECMA array.
    public subscript(key: String) -> AMF0Value? {
        switch self {
        case .object(let properties), .ecmaArray(let properties):
            properties.first { $0.key == key }?.value
        default:
            nil
        }
    }

    public var stringValue: String? {
        switch self {
        case .string(let value), .longString(let value): value
        default: nil
        }
    }

    public var numberValue: Double? {
        if case .number(let value) = self { value } else { nil }
    }

    public var booleanValue: Bool? {
        if case .boolean(let value) = self { value } else { nil }
    }
}

/// A key/value pair of an AMF0 object or ECMA array.
public struct AMF0Property: Sendable, Equatable {
    public var key: String
    public var value: AMF0Value

    public init(_ key: String, _ value: AMF0Value) {
        self.key = key
        self.value = value
    }
}

/// Type markers (AMF0 spec §2.1).
enum AMF0Marker: UInt8 {
    case number = 0x00
    case boolean = 0x01
    case string = 0x02
    case object = 0x03
    case movieClip = 0x04
    case null = 0x05
    case undefined = 0x06
    case reference = 0x07
    case ecmaArray = 0x08
    case objectEnd = 0x09
    case strictArray = 0x0A
    case date = 0x0B
    case longString = 0x0C
}

public enum AMF0Error: Error, Equatable, Sendable, CustomStringConvertible {
    case truncated
    case unsupportedMarker(UInt8)
    case depthExceeded(limit: Int)
    case tooManyElements(count: UInt32, limit: Int)
    case stringTooLong(length: UInt32, limit: Int)
    case invalidUTF8
    case missingObjectEnd

    public var description: String {
        switch self {
        case .truncated: "AMF0 value truncated"
        case .unsupportedMarker(let marker): "unsupported AMF0 marker 0x\(String(marker, radix: 16))"
        case .depthExceeded(let limit): "AMF0 nesting deeper than \(limit)"
        case .tooManyElements(let count, let limit): "AMF0 container of \(count) elements exceeds \(limit)"
        case .stringTooLong(let length, let limit): "AMF0 string of \(length) bytes exceeds \(limit)"
        case .invalidUTF8: "AMF0 string is not UTF-8"
        case .missingObjectEnd: "AMF0 object end marker missing"
        }
    }
}

/// Decodes AMF0 values from a complete message body, within limits.
public struct AMF0Decoder: Sendable {
    public struct Limits: Sendable {
        public var maxDepth: Int
        public var maxElements: Int
        public var maxStringLength: Int

        public init(maxDepth: Int = 32, maxElements: Int = 4096, maxStringLength: Int = 1 << 20) {
            self.maxDepth = maxDepth
            self.maxElements = maxElements
            self.maxStringLength = maxStringLength
        }
    }

    public var limits: Limits

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Decodes every value in `buffer` (an RTMP command or data message body).
    public func decodeAll(_ buffer: ByteBuffer) throws(AMF0Error) -> [AMF0Value] {
        var buffer = buffer
        var values: [AMF0Value] = []
        while buffer.readableBytes > 0 {
            guard values.count < limits.maxElements else {
                throw .tooManyElements(count: UInt32(values.count + 1), limit: limits.maxElements)
            }
            values.append(try decode(&buffer))
        }
        return values
    }

    /// Decodes one value; on error the buffer's reader index is unspecified.
    public func decode(_ buffer: inout ByteBuffer) throws(AMF0Error) -> AMF0Value {
        try decode(&buffer, depth: 0)
    }

    private func decode(_ buffer: inout ByteBuffer, depth: Int) throws(AMF0Error) -> AMF0Value {
        guard let rawMarker = buffer.readInteger(as: UInt8.self) else { throw .truncated }
        guard let marker = AMF0Marker(rawValue: rawMarker) else { throw .unsupportedMarker(rawMarker) }
        switch marker {
        case .number:
            return .number(try readDouble(&buffer))
        case .boolean:
            guard let byte = buffer.readInteger(as: UInt8.self) else { throw .truncated }
            return .boolean(byte != 0)
        case .string:
            guard let length = buffer.readInteger(as: UInt16.self) else { throw .truncated }
            return .string(try readString(&buffer, length: UInt32(length)))
        case .longString:
            guard let length = buffer.readInteger(as: UInt32.self) else { throw .truncated }
            return .longString(try readString(&buffer, length: length))
        case .object:
            return .object(try readProperties(&buffer, depth: depth + 1))
        case .ecmaArray:
            // The count is advisory: encoders disagree with it, the end marker decides.
            guard buffer.readInteger(as: UInt32.self) != nil else { throw .truncated }
            return .ecmaArray(try readProperties(&buffer, depth: depth + 1))
        case .strictArray:
            guard let count = buffer.readInteger(as: UInt32.self) else { throw .truncated }
            guard count <= limits.maxElements else { throw .tooManyElements(count: count, limit: limits.maxElements) }
            guard depth + 1 <= limits.maxDepth else { throw .depthExceeded(limit: limits.maxDepth) }
            var elements: [AMF0Value] = []
            elements.reserveCapacity(Int(count))
            for _ in 0..<count {
                elements.append(try decode(&buffer, depth: depth + 1))
            }
            return .strictArray(elements)
        case .date:
            let milliseconds = try readDouble(&buffer)
            guard let timeZone = buffer.readInteger(as: Int16.self) else { throw .truncated }
            return .date(millisecondsSince1970: milliseconds, timeZone: timeZone)
        case .null:
            return .null
        case .undefined:
            return .undefined
        case .movieClip, .reference, .objectEnd:
            throw .unsupportedMarker(rawMarker)
        }
    }

    private func readDouble(_ buffer: inout ByteBuffer) throws(AMF0Error) -> Double {
        guard let bits = buffer.readInteger(as: UInt64.self) else { throw .truncated }
        return Double(bitPattern: bits)
    }

    private func readString(_ buffer: inout ByteBuffer, length: UInt32) throws(AMF0Error) -> String {
        guard length <= limits.maxStringLength else {
            throw .stringTooLong(length: length, limit: limits.maxStringLength)
        }
        guard let bytes = buffer.readBytes(length: Int(length)) else { throw .truncated }
        guard let string = String(validating: bytes, as: UTF8.self) else { throw .invalidUTF8 }
        return string
    }

    private func readProperties(_ buffer: inout ByteBuffer, depth: Int) throws(AMF0Error) -> [AMF0Property] {
        guard depth <= limits.maxDepth else { throw .depthExceeded(limit: limits.maxDepth) }
        var properties: [AMF0Property] = []
        while true {
            guard let keyLength = buffer.readInteger(as: UInt16.self) else { throw .missingObjectEnd }
            if keyLength == 0 {
                guard let end = buffer.readInteger(as: UInt8.self) else { throw .missingObjectEnd }
                guard end == AMF0Marker.objectEnd.rawValue else { throw .missingObjectEnd }
                return properties
            }
            let key = try readString(&buffer, length: UInt32(keyLength))
            guard properties.count < limits.maxElements else {
                throw .tooManyElements(count: UInt32(properties.count + 1), limit: limits.maxElements)
            }
            properties.append(AMF0Property(key, try decode(&buffer, depth: depth)))
        }
    }
}

/// Encodes AMF0 values.
public enum AMF0Encoder {
    public static func encode(_ values: [AMF0Value], into buffer: inout ByteBuffer) {
        for value in values {
            encode(value, into: &buffer)
        }
    }

    public static func encode(_ value: AMF0Value, into buffer: inout ByteBuffer) {
        switch value {
        case .number(let number):
            buffer.writeInteger(AMF0Marker.number.rawValue)
            buffer.writeInteger(number.bitPattern)
        case .boolean(let flag):
            buffer.writeInteger(AMF0Marker.boolean.rawValue)
            buffer.writeInteger(UInt8(flag ? 1 : 0))
        case .string(let string):
            let utf8 = Array(string.utf8)
            if utf8.count > Int(UInt16.max) {
                buffer.writeInteger(AMF0Marker.longString.rawValue)
                buffer.writeInteger(UInt32(utf8.count))
            } else {
                buffer.writeInteger(AMF0Marker.string.rawValue)
                buffer.writeInteger(UInt16(utf8.count))
            }
            buffer.writeBytes(utf8)
        case .longString(let string):
            let utf8 = Array(string.utf8)
            buffer.writeInteger(AMF0Marker.longString.rawValue)
            buffer.writeInteger(UInt32(utf8.count))
            buffer.writeBytes(utf8)
        case .object(let properties):
            buffer.writeInteger(AMF0Marker.object.rawValue)
            encode(properties, into: &buffer)
        case .ecmaArray(let properties):
            buffer.writeInteger(AMF0Marker.ecmaArray.rawValue)
            buffer.writeInteger(UInt32(properties.count))
            encode(properties, into: &buffer)
        case .strictArray(let elements):
            buffer.writeInteger(AMF0Marker.strictArray.rawValue)
            buffer.writeInteger(UInt32(elements.count))
            encode(elements, into: &buffer)
        case .date(let milliseconds, let timeZone):
            buffer.writeInteger(AMF0Marker.date.rawValue)
            buffer.writeInteger(milliseconds.bitPattern)
            buffer.writeInteger(timeZone)
        case .null:
            buffer.writeInteger(AMF0Marker.null.rawValue)
        case .undefined:
            buffer.writeInteger(AMF0Marker.undefined.rawValue)
        }
    }

    private static func encode(_ properties: [AMF0Property], into buffer: inout ByteBuffer) {
        for property in properties {
            let key = Array(property.key.utf8.prefix(Int(UInt16.max)))
            buffer.writeInteger(UInt16(key.count))
            buffer.writeBytes(key)
            encode(property.value, into: &buffer)
        }
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(AMF0Marker.objectEnd.rawValue)
    }
}
