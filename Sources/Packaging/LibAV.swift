import CFFmpeg
import NIOCore

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

/// A write-only `AVIOContext` that appends everything a muxer writes to a `ByteBuffer`.
///
/// The muxed bytes are copied once, from the context's own buffer into the `ByteBuffer` that
/// `take()` then hands out whole: that buffer is what HTTP serves, so a segment is never
/// copied again. Owns the context and its I/O buffer (which libav may reallocate, so
/// `pb->buffer` is what is freed). A muxer using it must be freed first: keep this object
/// alive at least as long as the `AVFormatContext` whose `pb` it is.
final class AVIOMemoryWriter {
    /// More than this in one segment is refused (the muxer sees an I/O error): a ByteBuffer
    /// cannot pass 4 GiB, and no live segment comes near this.
    static let maxBytes = 1 << 30

    private(set) var context: UnsafeMutablePointer<AVIOContext>
    /// Heap-allocated so its address, which the context holds as `opaque`, never moves.
    private let sink: UnsafeMutablePointer<estuary_sink>
    private var buffer: ByteBuffer

    init() throws(LibAVError) {
        let sink = UnsafeMutablePointer<estuary_sink>.allocate(capacity: 1)
        sink.initialize(to: estuary_sink(write: nil, opaque: nil))
        guard let context = estuary_avio_open_sink(sink) else {
            sink.deinitialize(count: 1)
            sink.deallocate()
            throw .outOfMemory("allocating the in-memory AVIOContext")
        }
        self.context = context
        self.sink = sink
        buffer = ByteBufferAllocator().buffer(capacity: 64 << 10)
        // Unretained: the context, and so the sink's use of `self`, ends in deinit.
        sink.pointee.opaque = Unmanaged.passUnretained(self).toOpaque()
        sink.pointee.write = { opaque, bytes, count in
            guard let opaque, let bytes else { return estuary_averror(EINVAL) }
            let writer = Unmanaged<AVIOMemoryWriter>.fromOpaque(opaque).takeUnretainedValue()
            guard writer.buffer.readableBytes <= AVIOMemoryWriter.maxBytes - Int(count) else { return estuary_averror(ENOMEM) }
            writer.buffer.writeBytes(UnsafeRawBufferPointer(start: bytes, count: Int(count)))
            return count
        }
    }

    deinit {
        var context: UnsafeMutablePointer<AVIOContext>? = context
        estuary_avio_close(&context)
        sink.deinitialize(count: 1)
        sink.deallocate()
    }

    /// Flushes the context's buffer and returns every byte written since the previous call;
    /// `last` when nothing more will be written.
    func take(last: Bool = false) throws(LibAVError) -> ByteBuffer {
        avio_flush(context)
        // The write callback reports failures (out of memory) through the context's sticky error.
        try LibAVError.check(context.pointee.error, "writing muxed bytes to memory")
        let bytes = buffer
        guard !last else {
            buffer = ByteBuffer()
            return bytes
        }
        // Segments of a stream are about the same size: reserving a little more than the last one
        // means the next rarely grows (a growth copies).
        buffer = ByteBufferAllocator().buffer(capacity: max(bytes.readableBytes + bytes.readableBytes / 8, 4096))
        return bytes
    }
}
