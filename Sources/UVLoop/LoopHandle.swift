import CLibUV

/// The lifecycle of a libuv handle as seen from Swift.
public enum HandleState: Sendable, Equatable {
    /// Initialised and usable.
    case open
    /// `uv_close` was called; the close callback has not run yet.
    case closing
    /// The close callback ran; the handle's memory is gone.
    case closed
}

/// The base of every Swift object that owns a libuv handle.
///
/// Lifetime rule: libuv holds a retained reference to this object (in `handle->data`)
/// from initialisation until the close callback, so neither the object nor the handle's
/// memory can disappear while libuv may still call back. The close callback frees the
/// memory and drops that reference. `close()` is idempotent.
///
/// Loop-confined: not `Sendable`; every mutating entry point checks the thread.
public class LoopHandle {
    /// The loop this handle belongs to. Not public: it is valid only while the handle is open
    /// (the loop closes every handle in its teardown, which also runs from its `deinit`, when a
    /// safe `unowned` reference could no longer be read). Every entry point checks that the
    /// handle is open before touching it, so a handle object kept after its loop is gone only
    /// ever answers "closed".
    package unowned(unsafe) let loop: EventLoop
    /// The handle's memory, allocated by the subclass and freed after the close callback.
    let rawHandle: UnsafeMutablePointer<uv_handle_t>
    /// Where the handle is in its lifecycle.
    public private(set) var state: HandleState = .open

    /// Allocates zeroed memory for a handle of type `T`; the subclass initialises it.
    static func allocate<T>(_ type: T.Type, on loop: EventLoop) -> UnsafeMutableRawPointer {
        // Every handle is made through here, before its `uv_*_init` touches the libuv loop.
        precondition(!loop.isClosed, "a handle created on a closed EventLoop")
        let memory = UnsafeMutableRawPointer.allocate(
            byteCount: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment)
        memory.initializeMemory(as: UInt8.self, repeating: 0, count: MemoryLayout<T>.size)
        return memory
    }

    /// Takes ownership of `memory`, which the subclass has already initialised with `uv_*_init`.
    init(loop: EventLoop, initialisedHandle memory: UnsafeMutableRawPointer) {
        self.loop = loop
        self.rawHandle = memory.assumingMemoryBound(to: uv_handle_t.self)
        rawHandle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        loop.openHandleCount += 1
    }

    /// Whether the handle is open (not closing or closed).
    public var isOpen: Bool { state == .open }

    /// Starts closing the handle. Idempotent: calling it on a closing or closed handle does nothing.
    /// The handle stops delivering callbacks at once; its memory is freed on a later loop turn.
    public func close() {
        guard state == .open else { return }
        loop.preconditionInLoop("close a handle")
        state = .closing
        willClose()
        uv_close(rawHandle) { handle in
            guard let handle, let data = handle.pointee.data else { return }
            let owner = Unmanaged<LoopHandle>.fromOpaque(data).takeRetainedValue()
            owner.didClose()
        }
    }

    /// Called once, just before `uv_close`. Subclasses release what they hold.
    func willClose() {}

    /// Called by the loop's teardown for every handle still open. Subclasses that must not be
    /// closed yet (a child process before its exit) override it.
    func closeForTeardown() { close() }

    private func didClose() {
        state = .closed
        rawHandle.pointee.data = nil
        UnsafeMutableRawPointer(rawHandle).deallocate()
        loop.openHandleCount -= 1
        didFinishClosing()
    }

    /// Called once after the close callback ran and the memory was freed.
    func didFinishClosing() {}
}

extension LoopHandle {
    /// The handle as a `uv_stream_t`, for the stream handle types (`uv_pipe_t`, `uv_tcp_t`).
    /// Sound by libuv's own definition: those structs begin with `UV_STREAM_FIELDS` (after
    /// `UV_HANDLE_FIELDS`), and libuv's API takes them as `uv_stream_t *` by this very cast.
    /// Only subclasses that initialised a stream handle use it.
    var streamHandle: UnsafeMutablePointer<uv_stream_t> {
        UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_stream_t.self)
    }
}

extension UnsafeMutableRawPointer {
    /// The libuv handle behind a generic `uv_handle_t` pointer.
    @inline(__always)
    func uvHandle() -> UnsafeMutablePointer<uv_handle_t> { assumingMemoryBound(to: uv_handle_t.self) }
}
