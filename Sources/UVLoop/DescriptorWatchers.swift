#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CLibUV
import CUVShims

/// Watches a descriptor it owns for readability (`uv_poll_t`) and calls back on the loop. The
/// descriptor is closed only after the handle's close callback, so libuv never polls a number
/// that was closed (and perhaps reused) under it. libuv has no handle for Unix datagram sockets
/// or plain pipes read by hand: this is what the notify socket and the readiness pipe use.
package final class ReadableDescriptor: LoopHandle {
    /// The descriptor (owned: closed after the handle).
    package let fd: Int32
    private var onReadable: (() -> Void)?

    private var pollPointer: UnsafeMutablePointer<uv_poll_t> {
        UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_poll_t.self)
    }

    /// Starts watching `fd`, which it now owns (closed here too when this fails).
    package init(loop: EventLoop, owning fd: Int32, onReadable: @escaping () -> Void) throws(UVError) {
        loop.preconditionInLoop("ReadableDescriptor.init")
        let memory = LoopHandle.allocate(uv_poll_t.self, on: loop)
        // Bound once to the handle's type here; `pollPointer` reads it as bound.
        let initResult = uv_poll_init(loop.rawLoop, memory.bindMemory(to: uv_poll_t.self, capacity: 1), fd)
        if initResult < 0 {
            memory.deallocate()
            Glibc.close(fd)
            throw UVError(code: initResult, operation: "watch descriptor \(fd)")
        }
        self.fd = fd
        self.onReadable = onReadable
        super.init(loop: loop, initialisedHandle: memory)
        let result = uv_poll_start(pollPointer, Int32(UV_READABLE.rawValue)) { handle, _, _ in
            guard let data = handle?.pointee.data else { return }
            Unmanaged<ReadableDescriptor>.fromOpaque(data).takeUnretainedValue().readable()
        }
        if result < 0 {
            close()
            throw UVError(code: result, operation: "watch descriptor \(fd)")
        }
    }

    private func readable() {
        onReadable?()
    }

    override func willClose() {
        uv_poll_stop(pollPointer)
        onReadable = nil
    }

    override func didFinishClosing() {
        Glibc.close(fd)
    }
}

/// One datagram received on a ``NotifySocket``.
package struct NotifyDatagram: Sendable, Equatable {
    /// Its bytes (at most ``NotifySocket/maximumLength``).
    package var bytes: [UInt8]
    /// The sender's pid and uid as the kernel vouches for them (`SCM_CREDENTIALS`), if any came.
    package var senderPID: Int32?
    package var senderUID: UInt32?
    /// It was longer than ``NotifySocket/maximumLength`` (the rest was dropped by the kernel).
    package var truncated: Bool
    /// Descriptors it carried (closed on arrival).
    package var descriptors: Int
}

/// The receiving end of systemd's notify protocol for one child: an `AF_UNIX` datagram socket
/// under a private abstract name (`NOTIFY_SOCKET=@uvs/...`, so nothing is left in the file
/// system, even after a SIGKILL), with the senders' credentials attached to every datagram.
package final class NotifySocket {
    /// Longer datagrams are reported truncated (systemd's limit: `PIPE_BUF`).
    package static let maximumLength = 4096

    /// The abstract name, without the leading NUL.
    package let name: String
    private let watcher: ReadableDescriptor
    private var handler: ((NotifyDatagram) -> Void)?

    /// The value for the child's `NOTIFY_SOCKET`.
    package var environmentValue: String { "@" + name }

    /// Opens a socket under a fresh random name; `handler` gets each datagram on the loop.
    package init(loop: EventLoop, handler: @escaping (NotifyDatagram) -> Void) throws(UVError) {
        // Unguessable (the kernel's random source), so that only the child knows where to send.
        var random = SystemRandomNumberGenerator()
        let name = "uvs/\(getpid())/" + String(random.next(), radix: 16) + String(random.next(), radix: 16)
        let fd = cuvs_notify_socket_open(name)
        if fd < 0 { throw UVError(errno: -fd, operation: "notify socket @\(name)") }
        self.name = name
        self.handler = handler
        var drainLater: (() -> Void)?
        watcher = try ReadableDescriptor(loop: loop, owning: fd) { drainLater?() }
        drainLater = { [weak self] in self?.drain(limit: 64) }
    }

    deinit {
        watcher.close()
    }

    /// Receives the datagrams waiting now, at most `limit` (the poll callback takes 64 per
    /// wakeup, so a flood cannot hold the loop; the poll fires again for the rest). Also called
    /// right before the child's exit is reported, so that a `READY=1` sent just before it is
    /// not lost.
    package func drain(limit: Int = 4096) {
        guard watcher.isOpen else { return }
        var buffer = [UInt8](repeating: 0, count: Self.maximumLength)
        var left = limit
        while handler != nil && left > 0 {
            left -= 1
            var info = cuvs_notify_datagram()
            let count = buffer.withUnsafeMutableBytes { cuvs_notify_receive(watcher.fd, $0.baseAddress, $0.count, &info) }
            if count < 0 { break }   // EAGAIN: nothing more (other errors: nothing to read either)
            let datagram = NotifyDatagram(
                bytes: Array(buffer[0..<Int(count)]),
                senderPID: info.has_credentials != 0 ? info.sender_pid : nil,
                senderUID: info.has_credentials != 0 ? info.sender_uid : nil,
                truncated: info.truncated != 0, descriptors: Int(info.descriptors))
            handler?(datagram)
        }
    }

    /// Stops receiving and closes the socket. Idempotent.
    package func close() {
        handler = nil
        watcher.close()
    }
}

/// s6's readiness notification: a pipe whose write end the child gets as a descriptor of its
/// choice; the first newline written to it means "ready".
package final class ReadinessPipe {
    private var watcher: ReadableDescriptor?
    private var onReady: (() -> Void)?
    /// The write end, for the child; ``closeWriteEnd()`` once it has been spawned.
    package private(set) var writeEnd: Int32

    /// A pipe whose first newline calls `onReady` on the loop.
    package init(loop: EventLoop, onReady: @escaping () -> Void) throws(UVError) {
        var ends: [Int32] = [-1, -1]
        if cuvs_pipe_cloexec(&ends) != 0 { throw UVError(errno: cuvs_errno(), operation: "readiness pipe") }
        _ = fcntl(ends[0], F_SETFL, fcntl(ends[0], F_GETFL) | O_NONBLOCK)
        writeEnd = ends[1]
        self.onReady = onReady
        var readLater: (() -> Void)?
        do {
            watcher = try ReadableDescriptor(loop: loop, owning: ends[0]) { readLater?() }
        } catch {
            Glibc.close(ends[1])
            throw error
        }
        readLater = { [weak self] in self?.readable() }
    }

    deinit {
        closeWriteEnd()
        watcher?.close()
    }

    /// Reads what the child wrote (also called right before its exit is reported, so that a
    /// newline written just before it is not lost).
    package func drain() { readable() }

    private func readable() {
        guard let watcher else { return }
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(watcher.fd, $0.baseAddress, $0.count) }
            if count > 0 {
                if buffer[0..<count].contains(UInt8(ascii: "\n")), let onReady = onReady.take() {
                    onReady()
                }
                continue
            }
            if count == 0 || (errno != EAGAIN && errno != EINTR) {
                // End of file (every writer closed it) or an error: nothing more will come.
                close()
            }
            return
        }
    }

    /// Closes the parent's copy of the write end (after the spawn). Idempotent.
    package func closeWriteEnd() {
        if writeEnd >= 0 {
            Glibc.close(writeEnd)
            writeEnd = -1
        }
    }

    /// Stops watching and closes both ends. Idempotent.
    package func close() {
        onReady = nil
        closeWriteEnd()
        watcher.take()?.close()
    }
}

/// One TCP connection attempt (`uv_tcp_t`), closed as soon as it has an outcome: what a TCP
/// probe needs. `completion` gets `nil` when the connection was made, the error otherwise.
package final class TCPConnectAttempt: LoopHandle {
    private var completion: ((UVError?) -> Void)?

    /// Starts connecting to `host` (a numeric IPv4 or IPv6 address) and `port`.
    /// - Throws: ``UVError`` for an address that does not parse, or a connect that fails at once.
    package init(loop: EventLoop, host: String, port: UInt16, completion: @escaping (UVError?) -> Void) throws(UVError) {
        loop.preconditionInLoop("TCPConnectAttempt.init")
        // Typed addresses, passed to libuv as `sockaddr` through a scoped rebinding.
        let isIPv6 = host.contains(":")
        var address4 = sockaddr_in()
        var address6 = sockaddr_in6()
        let parsed = isIPv6 ? uv_ip6_addr(host, Int32(port), &address6) : uv_ip4_addr(host, Int32(port), &address4)
        if parsed != 0 { throw UVError(code: parsed, operation: "tcp \(host):\(port): not a numeric address") }
        let memory = LoopHandle.allocate(uv_tcp_t.self, on: loop)
        let initResult = uv_tcp_init(loop.rawLoop, memory.bindMemory(to: uv_tcp_t.self, capacity: 1))
        if initResult < 0 {
            memory.deallocate()
            throw UVError(code: initResult, operation: "tcp \(host):\(port)")
        }
        self.completion = completion
        super.init(loop: loop, initialisedHandle: memory)
        // The request keeps this object alive until its callback, which libuv always calls
        // (with ECANCELED when the handle is closed first); the callback frees it.
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        request.initialize(to: uv_connect_t())
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
        let tcp = UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_tcp_t.self)
        let onConnect: uv_connect_cb = { request, status in
            guard let request else { return }
            let attempt = Unmanaged<TCPConnectAttempt>.fromOpaque(request.pointee.data!).takeRetainedValue()
            request.deinitialize(count: 1)
            request.deallocate()
            attempt.finished(status)
        }
        let result = isIPv6
            ? withUnsafePointer(to: &address6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_connect(request, tcp, $0, onConnect) } }
            : withUnsafePointer(to: &address4) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { uv_tcp_connect(request, tcp, $0, onConnect) } }
        if result < 0 {
            Unmanaged<TCPConnectAttempt>.fromOpaque(request.pointee.data!).release()
            request.deinitialize(count: 1)
            request.deallocate()
            self.completion = nil
            close()
            throw UVError(code: result, operation: "tcp \(host):\(port)")
        }
    }

    private func finished(_ status: Int32) {
        let completion = self.completion.take()
        close()
        completion?(status == 0 ? nil : UVError(code: status, operation: "connect"))
    }

    /// Abandons the attempt: the completion is not called. Idempotent.
    package func cancel() {
        completion = nil
        close()
    }
}
