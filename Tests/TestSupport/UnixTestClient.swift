#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CUVShims

/// A plain client of a Unix stream socket for tests: connects blocking, then reads without
/// blocking, so that the loop under test can run on the same thread between reads.
public final class UnixTestClient {
    /// The descriptor (-1 once closed).
    public private(set) var fd: Int32
    private var received: [UInt8] = []
    /// The server closed its end (a read returned end of file or an error).
    public private(set) var sawEnd = false

    /// Connects to `path` (trying for `timeoutMilliseconds` while its queue is full); `nil`
    /// with `errno` set when it cannot.
    public init?(path: String, timeoutMilliseconds: Int32 = 10_000) {
        let fd = cuvs_unix_connect(path, timeoutMilliseconds)
        if fd < 0 {
            errno = -fd
            return nil
        }
        self.fd = fd
    }

    deinit { close() }

    /// Leaves a stale socket at `path` (bound, never listening, its descriptor closed), as a
    /// killed daemon would. Whether it could.
    public static func bindStale(at path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return bound == 0
    }

    /// Sends all of `text` (blocking); `false` when the server is gone.
    @discardableResult
    public func send(_ text: String) -> Bool {
        send(Array(text.utf8))
    }

    /// Sends all of `bytes` (blocking); `false` when the server is gone.
    @discardableResult
    public func send(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let count = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count <= 0 { return false }
            offset += count
        }
        return true
    }

    /// Sends as much of `bytes` as the socket takes now; returns how many (-1: the peer is gone).
    public func sendWithoutWaiting(_ bytes: [UInt8]) -> Int {
        let count = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1 }
        return count
    }

    /// Reads what has arrived, without waiting.
    public func poll() {
        guard fd >= 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            if count > 0 {
                received.append(contentsOf: buffer[0..<count])
                continue
            }
            if count == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) { sawEnd = true }
            return
        }
    }

    /// The complete lines received so far (reads first).
    public func lines() -> [String] {
        poll()
        var lines = String(decoding: received, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        lines.removeLast()   // the part after the last newline (empty when it ended one)
        return lines
    }

    /// Bytes received so far.
    public var receivedCount: Int { received.count }

    /// Shuts down the sending side (the server sees end of file).
    public func finishSending() { shutdown(fd, Int32(SHUT_WR)) }

    /// Closes the connection.
    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}
