/// A value that belongs to one loop's thread, carried through `Sendable` contexts (a closure
/// handed to ``LoopRemote/execute(_:)``, a `Task`) and touched only back on that thread.
///
/// Every access checks the thread and traps with a message elsewhere, so carrying a
/// loop-confined object (a supervisor's callback, a handle) across threads cannot become a data
/// race. What it cannot check: the last copy may be dropped on another thread, and with it the
/// value's reference; a class whose `deinit` touches loop state must not be the last thing
/// such a box holds.
///
/// ```swift
/// let report = LoopBound(onExit, remote: loop.remote)     // on the loop thread
/// Task { let result = await work(); try? remote.execute { report.value(result) } }
/// ```
///
/// `@unchecked Sendable`: every access checks the thread (above). Package-internal, because of
/// the release caveat: it is the runtimes' tool, not a general public box.
package struct LoopBound<Value>: @unchecked Sendable {
    private var storage: Value
    /// The loop whose thread alone may touch the value.
    package let remote: LoopRemote

    /// Binds `value` to the loop of `remote`. Call it on that loop's thread.
    package init(_ value: Value, remote: LoopRemote) {
        remote.preconditionInLoop("LoopBound.init")
        self.storage = value
        self.remote = remote
    }

    /// The value; reading or writing it traps off the loop's thread.
    package var value: Value {
        get {
            remote.preconditionInLoop("LoopBound.value")
            return storage
        }
        set {
            remote.preconditionInLoop("LoopBound.value")
            storage = newValue
        }
    }
}
