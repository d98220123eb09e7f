#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CUVShims
import UVSupervisor

/// What went wrong talking to a daemon, with the exit status `uvsctl` ends with.
struct ClientFailure: Error, CustomStringConvertible {
    /// 1: the daemon answered no (or not in time, once asked); 3: no daemon could be asked.
    var status: Int32
    var description: String

    static func unreachable(_ message: String) -> ClientFailure { ClientFailure(status: 3, description: message) }
}

/// One connection to a daemon's control socket: a request line out, response lines in, with a
/// deadline on every wait.
final class ControlClient {
    private let fd: Int32
    private let path: String
    private var buffer: [UInt8] = []
    private var nextID: Int64 = 1

    init(path: String, timeout: Double) throws(ClientFailure) {
        self.path = path
        let fd = cuvs_unix_connect(path, timeout < 0 ? -1 : Int32(min(timeout * 1000, 3_600_000)))
        if fd < 0 {
            let why: String
            switch -fd {
            case ENOENT: why = "no daemon serves \(path) (no such socket; is the daemon running with a control socket there? --socket or UVS_CONTROL_SOCKET choose another)"
            case ECONNREFUSED: why = "no daemon serves \(path) any more (connection refused: the socket is stale)"
            case EACCES, EPERM: why = "permission denied on \(path): the socket belongs to the daemon's user (run as that user or root)"
            case ENAMETOOLONG: why = "\(path): the path is longer than a Unix socket allows"
            case ETIMEDOUT: why = "the daemon at \(path) accepts no connection (its queue is full: is it stuck?)"
            default: why = "cannot connect to \(path): \(String(cString: strerror(-fd)))"
            }
            throw .unreachable(why)
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// Sends `request` (an object; `v` and `id` are added) and returns the response's object.
    /// A daemon's refusal of the connection itself (`permissionDenied`, `tooManyClients`) is
    /// reported as unreachable; other errors come back to the caller inside the response.
    func request(_ fields: [JSONValue.Member], timeout: Double) throws(ClientFailure) -> JSONValue {
        let id = nextID
        nextID += 1
        var line: [UInt8] = []
        JSONValue.object([.init("v", .integer(1)), .init("id", .integer(id))] + fields).write(to: &line)
        line.append(UInt8(ascii: "\n"))
        var offset = 0
        while offset < line.count {
            let count = line[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count <= 0 {
                // A daemon that refuses the connection (permission, too many clients) says why
                // and closes at once: its line may be waiting even though sending failed.
                if let refusal = try? readMessage(timeout: 1), refusal["ok"] == .bool(false),
                   let message = refusal["error"]?["message"]?.stringValue {
                    throw .unreachable(message)
                }
                throw .unreachable("the daemon at \(path) closed the connection")
            }
            offset += count
        }
        while true {
            guard let response = try readMessage(timeout: timeout) else {
                throw .unreachable("the daemon at \(path) closed the connection without answering")
            }
            if response["id"] == .integer(id) { return response }
            if response["id"] == nil, response["ok"] == .bool(false) {
                let message = response["error"]?["message"]?.stringValue ?? response.serialized
                throw .unreachable(message)
            }
        }
    }

    /// The next message, waiting at most `timeout` seconds (forever when negative); `nil` at
    /// the end of the stream.
    func readMessage(timeout: Double) throws(ClientFailure) -> JSONValue? {
        let deadline = timeout < 0 ? Double.infinity : now() + timeout
        while true {
            if let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<newline])
                buffer.removeSubrange(...newline)
                do {
                    return try JSONValue.parse(line)
                } catch {
                    throw ClientFailure(status: 1, description: "the daemon sent something that is not JSON: \(error)")
                }
            }
            let left = deadline - now()
            if left <= 0 {
                throw ClientFailure(status: 1, description: "the daemon at \(path) did not answer within \(timeout) s "
                    + "(what was asked may still be under way; --timeout waits longer)")
            }
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let waitMilliseconds = left.isInfinite ? -1 : Int32(min(left * 1000, 60_000) + 1)
            let ready = poll(&poller, 1, waitMilliseconds)
            if ready < 0 && errno == EINTR { continue }
            if ready <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { return nil }
            buffer.append(contentsOf: chunk[0..<count])
        }
    }

    private func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
