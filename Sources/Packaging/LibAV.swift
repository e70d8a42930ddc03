import CFFmpeg

/// A failed libav call: what we were doing and libav's error code, described with `av_strerror`'s text.
public struct LibAVError: Error, CustomStringConvertible, Equatable, Sendable {
    /// What was being done, in our words ("writing the TS header").
    public let operation: String
    /// libav's negative `AVERROR` code.
    public let code: Int32

    public init(operation: String, code: Int32) {
        self.operation = operation
        self.code = code
    }

    public var description: String {
        "\(operation) failed: \(Self.message(for: code)) (\(code))"
    }

    /// libav's text for an error code (`av_strerror` writes a generic text for unknown codes).
    static func message(for code: Int32) -> String {
        var text = [CChar](repeating: 0, count: Int(AV_ERROR_MAX_STRING_SIZE))
        _ = av_strerror(code, &text, text.count)
        let bytes = text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Throws when a libav return code is an error (negative).
    static func check(_ code: Int32, _ operation: @autoclosure () -> String) throws(LibAVError) {
        if code < 0 { throw LibAVError(operation: operation(), code: code) }
    }

    static func invalidArgument(_ operation: String) -> LibAVError {
        LibAVError(operation: operation, code: estuary_averror(EINVAL))
    }

    static func invalidData(_ operation: String) -> LibAVError {
        LibAVError(operation: operation, code: estuary_averror_invaliddata())
    }

    static func outOfMemory(_ operation: String) -> LibAVError {
        LibAVError(operation: operation, code: estuary_averror(ENOMEM))
    }
}

/// A write-only `AVIOContext` that appends everything a muxer writes to a growable memory buffer.
///
/// Owns the context, its I/O buffer (which libav may reallocate, so `pb->buffer` is what is freed)
/// and the memory buffer. A muxer using it must be freed first: keep this object alive at least
/// as long as the `AVFormatContext` whose `pb` it is.
final class AVIOMemoryWriter {
    private(set) var context: UnsafeMutablePointer<AVIOContext>
    /// Heap-allocated so its address, which the context holds as `opaque`, never moves.
    private let output: UnsafeMutablePointer<estuary_membuf>

    init() throws(LibAVError) {
        let output = UnsafeMutablePointer<estuary_membuf>.allocate(capacity: 1)
        output.initialize(to: estuary_membuf(data: nil, size: 0, capacity: 0))
        guard let context = estuary_avio_open_membuf(output) else {
            output.deinitialize(count: 1)
            output.deallocate()
            throw .outOfMemory("allocating the in-memory AVIOContext")
        }
        self.context = context
        self.output = output
    }

    deinit {
        var context: UnsafeMutablePointer<AVIOContext>? = context
        estuary_avio_close_membuf(&context)
        estuary_membuf_free(output)
        output.deinitialize(count: 1)
        output.deallocate()
    }

    /// Flushes the context's buffer and returns every byte written since the previous call.
    func take() throws(LibAVError) -> [UInt8] {
        avio_flush(context)
        // The write callback reports failures (out of memory) through the context's sticky error.
        try LibAVError.check(context.pointee.error, "writing muxed bytes to memory")
        let size = output.pointee.size
        guard size > 0, let data = output.pointee.data else { return [] }
        let bytes = [UInt8](UnsafeBufferPointer(start: data, count: size))
        output.pointee.size = 0  // keep the capacity for the next segment
        return bytes
    }
}
