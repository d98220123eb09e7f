import CLibUV

/// An error from libuv or from the loop layer, with libuv's error name and what was being attempted.
///
/// ```
/// spawn "/usr/bin/nope": ENOENT (no such file or directory)
/// ```
public struct UVError: Error, Sendable, Equatable, CustomStringConvertible {
    /// libuv's (negative) error code, such as `UV_ENOENT`.
    public let code: Int32
    /// What the loop layer was doing, such as `spawn "/usr/bin/nope"`.
    public let operation: String

    /// Creates an error from a libuv error code and the operation that failed.
    public init(code: Int32, operation: String) {
        self.code = code
        self.operation = operation
    }

    /// Creates an error from a positive `errno` value.
    public init(errno: Int32, operation: String) {
        self.init(code: uv_translate_sys_error(errno), operation: operation)
    }

    /// libuv's name for the code, such as `ENOENT`.
    public var name: String { String(cString: uv_err_name(code)) }

    /// libuv's message for the code, such as `no such file or directory`.
    public var message: String { String(cString: uv_strerror(code)) }

    /// `operation: NAME (message)`.
    public var description: String { "\(operation): \(name) (\(message))" }

    /// Throws when `result` is a negative libuv status.
    @inline(__always)
    static func check(_ result: Int32, _ operation: @autoclosure () -> String) throws(UVError) {
        if result < 0 { throw UVError(code: result, operation: operation()) }
    }

    /// The error for a call made on a handle or loop that has been closed.
    static func closed(_ operation: String) -> UVError {
        UVError(code: numericCast(UV_EBADF.rawValue), operation: "\(operation): already closed")
    }
}
