#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// A mutex-protected value, on `pthread_mutex_t`.
///
/// Why not `Synchronization.Mutex`: on Linux it is built on raw futex calls that ThreadSanitizer
/// does not model, so every correctly locked access shows up as a race and `--sanitize=thread`
/// becomes useless. glibc's mutex takes the same uncontended fast path (one atomic). Adaptive,
/// like ``PthreadMutex``.
///
/// `Sendable` only when the value is: the lock serialises access to the box, but a value that
/// is not `Sendable` (a non-`Sendable` class, say) could still be shared through it by copying
/// it out of ``withLock(_:)``.
package final class LockedValue<Value> {
    private let mutex = PthreadMutex()
    private var value: Value

    /// Creates the lock around `value`.
    package init(_ value: Value) {
        self.value = value
    }

    /// Runs `body` with exclusive access to the value.
    @inline(__always)
    package func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        mutex.lock()
        defer { mutex.unlock() }
        return try body(&value)
    }
}

// Every access to `value` is under `mutex`; the value itself crosses threads, so it must be
// `Sendable`.
extension LockedValue: @unchecked Sendable where Value: Sendable {}

/// A bare `pthread_mutex_t` (behind ``LockedValue``, and alone for state that cannot live in
/// one, such as non-copyable buffers); the caller pairs ``lock()`` and ``unlock()``.
///
/// Adaptive (`PTHREAD_MUTEX_ADAPTIVE_NP`): a contender spins briefly before sleeping in the
/// kernel. The sections it guards are a few stores long, so a spin almost always wins, where a
/// futex sleep and wakeup cost both threads a system call.
///
/// `@unchecked Sendable`: a mutex exists to be shared between threads; its storage is a heap
/// allocation that never moves, as `pthread_mutex_t` requires.
final class PthreadMutex: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        var attributes = pthread_mutexattr_t()
        pthread_mutexattr_init(&attributes)
        pthread_mutexattr_settype(&attributes, Int32(PTHREAD_MUTEX_ADAPTIVE_NP))
        pthread_mutex_init(mutex, &attributes)
        pthread_mutexattr_destroy(&attributes)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    @inline(__always) func lock() { pthread_mutex_lock(mutex) }
    @inline(__always) func unlock() { pthread_mutex_unlock(mutex) }
}
