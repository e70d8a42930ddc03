import Foundation

/// Writes all of `bytes` to `descriptor`, retrying short and interrupted writes. Returns the
/// `errno` of the write that failed (`ENOSPC` for one that wrote nothing), or nil.
func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32? {
    var offset = 0
    while offset < bytes.count {
        let count = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
        if count < 0, errno == EINTR { continue }
        guard count > 0 else { return count < 0 ? errno : ENOSPC }
        offset += count
    }
    return nil
}

/// The C library's text for an `errno` value.
func systemErrorText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "error \(code)" }
    return String(cString: text)
}
