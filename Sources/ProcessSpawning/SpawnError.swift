#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CUVShims

/// A failed system call while preparing or starting a child, with what was being attempted:
/// `spawn "/usr/bin/nope": ENOENT (no such file or directory)`, the same words the loop layer's
/// errors use.
package struct SpawnError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The positive `errno` value.
    package let errno: Int32
    /// What was being done, such as `spawn "/usr/bin/nope"`.
    package let operation: String

    package init(errno: Int32, operation: String) {
        self.errno = errno
        self.operation = operation
    }

    /// The error's symbolic name, such as `ENOENT`.
    package var name: String {
        guard let name = cuvs_error_name(errno) else { return "E\(errno)" }
        return String(cString: name)
    }

    /// The system's message, starting lower-case: `no such file or directory`.
    package var message: String {
        var buffer = [CChar](repeating: 0, count: 128)
        let text = String(cString: cuvs_error_message(errno, &buffer, buffer.count))
        guard let first = text.first else { return text }
        return first.lowercased() + text.dropFirst()
    }

    /// `operation: NAME (message)`.
    package var description: String { "\(operation): \(name) (\(message))" }
}
