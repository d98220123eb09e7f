#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CLibUV


/// Watches a POSIX signal (`uv_signal_t`) and delivers it on the loop, outside signal context.
///
/// When the last watcher of a signal in the process stops, the signal's previous disposition
/// (what it was before the first watcher started) is restored; libuv alone would reset it to
/// the default, turning an ignored SIGPIPE or SIGHUP into a fatal one.
public final class SignalWatcher: LoopHandle {
    /// The signal number being watched.
    public let signalNumber: Int32
    private var handler: (Int32) -> Void
    private var watching = false

    private var signalPointer: UnsafeMutablePointer<uv_signal_t> {
        UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_signal_t.self)
    }

    /// Starts watching `signal`; `handler` runs on the loop each time it arrives.
    /// - Throws: ``UVError`` `EINVAL` for a number out of range, SIGKILL or SIGSTOP.
    public init(loop: EventLoop, signal: Int32, _ handler: @escaping (Int32) -> Void) throws(UVError) {
        loop.preconditionInLoop("SignalWatcher.init")
        if signal <= 0 || signal >= 65 || signal == SIGKILL || signal == SIGSTOP {
            throw UVError(code: UV_EINVAL.rawValue, operation: "watch signal \(signal): not a signal that can be caught")
        }
        signalNumber = signal
        self.handler = handler
        let memory = LoopHandle.allocate(uv_signal_t.self, on: loop)
        let initResult = uv_signal_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_signal_t.self))
        if initResult < 0 {
            memory.deallocate()
            throw UVError(code: initResult, operation: "watch signal \(signal)")
        }
        super.init(loop: loop, initialisedHandle: memory)
        SignalDispositions.willWatch(signal)
        let result = uv_signal_start(signalPointer, { handle, signal in
            guard let data = handle?.pointee.data else { return }
            Unmanaged<SignalWatcher>.fromOpaque(data).takeUnretainedValue().handler(signal)
        }, signal)
        if result < 0 {
            SignalDispositions.didStopWatching(signal)
            close()
            throw UVError(code: result, operation: "watch signal \(signal)")
        }
        watching = true
    }

    /// Stops watching (the handle stays open until `close()`). Idempotent.
    public func stop() {
        guard watching, isOpen else { return }
        loop.preconditionInLoop("SignalWatcher.stop")
        watching = false
        uv_signal_stop(signalPointer)
        SignalDispositions.didStopWatching(signalNumber)
    }

    /// Whether the watcher is receiving its signal.
    public var isWatching: Bool { watching }

    override func willClose() {
        if watching {
            watching = false
            uv_signal_stop(signalPointer)
            SignalDispositions.didStopWatching(signalNumber)
        }
    }
}

/// Process-wide bookkeeping of how many watchers each signal has, and what its disposition
/// was before the first one.
enum SignalDispositions {
    /// `@unchecked Sendable`: `sigaction` holds C function pointers (not `Sendable` to Swift),
    /// which are plain addresses; the table that holds it is only touched under its lock.
    private struct Saved: @unchecked Sendable {
        var watchers = 0
        var previous = sigaction()
    }

    private static let table = LockedValue<[Int32: Saved]>([:])

    static func willWatch(_ signal: Int32) {
        table.withLock { table in
            var entry = table[signal] ?? Saved()
            if entry.watchers == 0 { sigaction(signal, nil, &entry.previous) }
            entry.watchers += 1
            table[signal] = entry
        }
    }

    static func didStopWatching(_ signal: Int32) {
        table.withLock { table in
            guard var entry = table[signal] else { return }
            entry.watchers -= 1
            if entry.watchers <= 0 {
                // libuv has just reset the signal to SIG_DFL (or still has its handler if another
                // loop watches it); restore what was there before us.
                sigaction(signal, &entry.previous, nil)
                table[signal] = nil
            } else {
                table[signal] = entry
            }
        }
    }
}
