#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CLibUV
import CUVShims

/// The process at the other end of a Unix stream connection, as the kernel recorded it when it
/// connected (`SO_PEERCRED`): it cannot be forged by what the peer sends.
package struct PeerCredentials: Sendable, Equatable {
    package var pid: Int32
    package var uid: UInt32
    package var gid: UInt32
}

/// A Unix stream socket listening at a path in the file system (`uv_pipe_t`), for a daemon's
/// control socket. It is created with its permissions already set (never briefly open to
/// others), refuses to replace a live socket, replaces a stale one (its daemon was killed), and
/// removes its path when closed, if the path still names this socket.
package final class UnixStreamListener: LoopHandle {
    /// The path it listens at.
    package let path: String
    private var identity = cuvs_socket_identity()
    private var onConnection: ((UnixStreamConnection) -> Void)?
    private let readBuffer = SharedReadBuffer()

    /// Listens at `path` with permissions `mode`; `onConnection` receives every accepted
    /// connection (not reading yet) on the loop.
    /// - Throws: ``UVError`` with `EADDRINUSE` when a live socket is at `path`, `EEXIST` when
    ///   something that is not a socket is there, `ENAMETOOLONG` for a path over 107 bytes.
    package init(loop: EventLoop, path: String, mode: UInt32 = 0o600, backlog: Int32 = 128,
                 onConnection: @escaping (UnixStreamConnection) -> Void) throws(UVError) {
        loop.preconditionInLoop("UnixStreamListener.init")
        var identity = cuvs_socket_identity()
        let fd = cuvs_unix_listen(path, mode, backlog, &identity)
        if fd < 0 { throw UVError(errno: -fd, operation: "listen at \(path)") }
        let memory = LoopHandle.allocate(uv_pipe_t.self, on: loop)
        let pipe = memory.bindMemory(to: uv_pipe_t.self, capacity: 1)
        let initResult = uv_pipe_init(loop.rawLoop, pipe, 0)
        if initResult < 0 {
            memory.deallocate()
            Glibc.close(fd)
            _ = cuvs_unix_unlink_if_same(path, &identity)
            throw UVError(code: initResult, operation: "listen at \(path)")
        }
        self.path = path
        self.identity = identity
        self.onConnection = onConnection
        super.init(loop: loop, initialisedHandle: memory)
        let openResult = uv_pipe_open(pipe, fd)
        if openResult < 0 {
            // Not adopted by the handle: ours to close.
            Glibc.close(fd)
            close()
            throw UVError(code: openResult, operation: "listen at \(path)")
        }
        let listenResult = uv_listen(streamHandle, backlog) { server, status in
            guard let server, let data = server.pointee.data else { return }
            Unmanaged<UnixStreamListener>.fromOpaque(data).takeUnretainedValue().accept(status: status)
        }
        if listenResult < 0 {
            close()
            throw UVError(code: listenResult, operation: "listen at \(path)")
        }
    }

    private func accept(status: Int32) {
        guard status >= 0, isOpen else { return }
        let connection = UnixStreamConnection(loop: loop, readBuffer: readBuffer)
        let result = uv_accept(streamHandle, connection.streamHandle)
        guard result >= 0 else {
            connection.close()
            return
        }
        connection.readPeerCredentials()
        onConnection?(connection)
    }

    override func willClose() {
        onConnection = nil
        _ = cuvs_unix_unlink_if_same(path, &identity)
    }
}

/// One connection accepted by a ``UnixStreamListener``: reads newline-terminated lines of at
/// most ``maxLineLength`` bytes, writes bytes with the amount still queued known
/// (``pendingWriteBytes``), so that the owner can drop a peer that does not read.
package final class UnixStreamConnection: LoopHandle {
    /// Why the connection stopped delivering lines.
    package enum End: Sendable, Equatable {
        /// The peer finished sending (end of file); writing may still work.
        case peerFinished
        /// A line grew past ``maxLineLength`` without its newline.
        case lineTooLong
        /// A read error (the peer reset the connection, say).
        case failed(UVError)
    }

    /// The peer, read when the connection was accepted; `nil` if the kernel did not say.
    package private(set) var peer: PeerCredentials?
    /// Lines longer than this end the reading with ``End/lineTooLong`` (default 64 KiB).
    package var maxLineLength = 64 * 1024
    /// Bytes handed to ``write(_:)`` that the kernel has not taken yet.
    package private(set) var pendingWriteBytes = 0
    /// Called once when a write fails (the peer closed its end: `EPIPE`, `ECONNRESET`); the
    /// connection is closed right after.
    package var onWriteError: ((UVError) -> Void)?
    /// Called after each write the kernel took (``pendingWriteBytes`` went down).
    package var onWritten: (() -> Void)?
    private var onLine: (([UInt8]) -> Void)?
    private var onEnd: ((End) -> Void)?
    private var paused = false
    private var partialLine: [UInt8] = []
    private var closeWhenWritten = false
    private let readBuffer: SharedReadBuffer

    fileprivate init(loop: EventLoop, readBuffer: SharedReadBuffer) {
        self.readBuffer = readBuffer
        let memory = LoopHandle.allocate(uv_pipe_t.self, on: loop)
        // Cannot fail for a pipe without IPC.
        uv_pipe_init(loop.rawLoop, memory.bindMemory(to: uv_pipe_t.self, capacity: 1), 0)
        super.init(loop: loop, initialisedHandle: memory)
    }

    fileprivate func readPeerCredentials() {
        var descriptor = uv_os_fd_t()
        guard uv_fileno(UnsafeMutableRawPointer(rawHandle).uvHandle(), &descriptor) == 0 else { return }
        var pid: Int32 = 0
        var uid: UInt32 = 0
        var gid: UInt32 = 0
        if cuvs_peer_credentials(descriptor, &pid, &uid, &gid) == 0 {
            peer = PeerCredentials(pid: pid, uid: uid, gid: gid)
        }
    }

    /// Starts delivering lines (without their newline) and then, once, how the reading ended.
    package func startReading(onLine: @escaping ([UInt8]) -> Void, onEnd: @escaping (End) -> Void) throws(UVError) {
        loop.preconditionInLoop("UnixStreamConnection.startReading")
        guard isOpen else { throw UVError(code: Int32(UV_EBADF.rawValue), operation: "read a closed connection") }
        self.onLine = onLine
        self.onEnd = onEnd
        try startLibuvReading()
    }

    private func startLibuvReading() throws(UVError) {
        let result = uv_read_start(streamHandle, { handle, _, buffer in
            guard let handle, let data = handle.pointee.data, let buffer else { return }
            let connection = Unmanaged<UnixStreamConnection>.fromOpaque(data).takeUnretainedValue()
            // libuv calls read right after alloc, for this stream only: one buffer serves all.
            buffer.pointee = uv_buf_init(connection.readBuffer.bytes.baseAddress, UInt32(connection.readBuffer.bytes.count))
        }, { stream, count, _ in
            guard let stream, let data = stream.pointee.data else { return }
            Unmanaged<UnixStreamConnection>.fromOpaque(data).takeUnretainedValue().didRead(count)
        })
        try UVError.check(result, "read a connection")
    }

    /// Stops reading for now (backpressure: the peer's bytes wait in the kernel, and the peer
    /// blocks once its buffer is full) until ``resumeReading()``.
    package func pauseReading() {
        guard isOpen, onLine != nil, !paused else { return }
        paused = true
        uv_read_stop(streamHandle)
    }

    /// Reads again after ``pauseReading()``.
    package func resumeReading() {
        guard isOpen, onLine != nil, paused else { return }
        paused = false
        try? startLibuvReading()
    }

    /// Whether reading is paused.
    package var isPaused: Bool { paused }

    /// Stops delivering lines (the peer's further bytes stay in the kernel).
    package func stopReading() {
        guard isOpen else { return }
        uv_read_stop(streamHandle)
        onLine = nil
        onEnd = nil
    }

    private func didRead(_ count: Int) {
        if count < 0 {
            endReading(count == Int(UV_EOF.rawValue) ? .peerFinished : .failed(UVError(code: Int32(count), operation: "read a connection")))
            return
        }
        var start = 0
        let bytes = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(readBuffer.bytes)[0..<count])
        while start < count, onLine != nil {
            guard let newline = bytes[start...].firstIndex(of: UInt8(ascii: "\n")) else {
                partialLine.append(contentsOf: bytes[start...])
                if partialLine.count > maxLineLength { endReading(.lineTooLong) }
                return
            }
            partialLine.append(contentsOf: bytes[start..<newline])
            start = newline + 1
            if partialLine.count > maxLineLength {
                endReading(.lineTooLong)
                return
            }
            let line = partialLine
            partialLine.removeAll(keepingCapacity: partialLine.count <= 4096)
            onLine?(line)
        }
    }

    private func endReading(_ end: End) {
        let onEnd = self.onEnd
        stopReading()
        partialLine = []
        onEnd?(end)
    }

    /// Queues `bytes` for writing; `false` when the connection is closing or the write failed
    /// at once. A peer that went away is usually noticed later, in the write's completion:
    /// ``onWriteError`` then.
    @discardableResult
    package func write(_ bytes: [UInt8]) -> Bool {
        loop.preconditionInLoop("UnixStreamConnection.write")
        guard isOpen, !bytes.isEmpty else { return isOpen }
        let request = WriteRequest(copying: bytes)
        var buffer = uv_buf_init(request.bytes.baseAddress, UInt32(request.bytes.count))
        // libuv holds this reference until the write callback, which it always calls (with
        // UV_ECANCELED when the stream closes first), and which releases it; a write refused
        // at once never reaches the callback and is released below.
        request.request.pointee.data = Unmanaged.passRetained(request).toOpaque()
        let result = uv_write(request.request, streamHandle, &buffer, 1) { request, status in
            guard let request, let data = request.pointee.data else { return }
            let write = Unmanaged<WriteRequest>.fromOpaque(data).takeRetainedValue()
            // The stream's data stays set until its close callback, which comes after this one.
            guard let streamData = request.pointee.handle?.pointee.data else { return }
            Unmanaged<UnixStreamConnection>.fromOpaque(streamData).takeUnretainedValue().didWrite(write.bytes.count, status: status)
        }
        if result < 0 {
            Unmanaged<WriteRequest>.fromOpaque(request.request.pointee.data!).release()
            return false
        }
        pendingWriteBytes += bytes.count
        return true
    }

    private func didWrite(_ count: Int, status: Int32) {
        pendingWriteBytes -= count
        if status < 0 && status != UV_ECANCELED.rawValue && isOpen {
            // The peer is gone: nothing more can be written; the owner hears it once.
            let report = onWriteError
            onWriteError = nil
            close()
            report?(UVError(code: status, operation: "write to a connection"))
            return
        }
        if closeWhenWritten && pendingWriteBytes == 0 { close() }
        if isOpen { onWritten?() }
    }

    /// Closes the connection once everything written so far has gone (at once if nothing is
    /// queued).
    package func closeAfterWriting() {
        guard isOpen else { return }
        stopReading()
        if pendingWriteBytes == 0 { close() } else { closeWhenWritten = true }
    }

    override func willClose() {
        uv_read_stop(streamHandle)
        onLine = nil
        onEnd = nil
        onWritten = nil
    }
}

/// The buffer a listener's connections read into, one at a time (typed as libuv's `char`).
private final class SharedReadBuffer {
    let bytes: UnsafeMutableBufferPointer<CChar> = {
        let bytes = UnsafeMutableBufferPointer<CChar>.allocate(capacity: 16 * 1024)
        bytes.initialize(repeating: 0)
        return bytes
    }()
    deinit { bytes.deallocate() }
}

/// A `uv_write_t` and a copy of its bytes, alive until libuv's write callback (which it always
/// calls, with `UV_ECANCELED` when the stream closes first).
private final class WriteRequest {
    let request: UnsafeMutablePointer<uv_write_t>
    let bytes: UnsafeMutableBufferPointer<CChar>

    init(copying source: [UInt8]) {
        request = .allocate(capacity: 1)
        request.initialize(to: uv_write_t())
        bytes = .allocate(capacity: source.count)
        _ = bytes.initialize(from: source.lazy.map { CChar(bitPattern: $0) })
    }

    deinit {
        request.deinitialize(count: 1)
        request.deallocate()
        bytes.deallocate()
    }
}
