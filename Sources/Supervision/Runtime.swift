/// What the supervision logic needs from the world: a clock, timers, a run-soon queue, and a
/// way to start and stop workers. The libuv runtime, the Dispatch runtime and the manual test
/// runtime all implement it, so the very same logic runs on each.
///
/// All calls happen on the runtime's one thread (the loop thread, the serial queue, or the
/// test's thread); implementations are not required to be thread-safe.
public protocol SupervisorRuntime: AnyObject {
    /// Monotonic time in nanoseconds (any fixed origin).
    var nowNanoseconds: Int64 { get }

    /// Runs `job.runSoonJob()` on a later turn (after pending I/O), never in the caller's stack.
    func runSoon(_ job: any RunSoonJob)

    /// A re-armable one-shot timer that calls `fire` on the runtime's thread.
    func makeTimer(_ fire: @escaping () -> Void) -> any RuntimeTimer

    /// Traps with a message naming `operation` when called off the runtime's thread. Called at
    /// the supervisor's public entry points (a wrong-thread call would corrupt its state).
    func preconditionOnRuntimeThread(_ operation: @autoclosure () -> String)

    /// Starts a process worker. `onExit` must be called exactly once, later, on the runtime's
    /// thread (never from inside this call).
    /// - Throws: ``SupervisionError`` with code ``SupervisionError/Code/startFailed`` and a
    ///   message naming the program and the system's error name.
    ///
    /// - Parameters:
    ///   - spec: the program, its arguments, environment and stdio.
    ///   - path: the child's path, for messages.
    ///   - notify: what to set up for its readiness and liveness reports (a notify socket,
    ///     `WATCHDOG_USEC`, a readiness descriptor); `.none` for most children.
    ///   - onOutput: for streams set to ``ProcessStdio/capture``: each line (`"stdout"` or
    ///     `"stderr"`, the line without its newline), on the runtime's thread; the supervisor
    ///     turns them into events on its own clock.
    ///   - onNotice: what the process reports through the setup in `notify`, on the runtime's
    ///     thread, never from inside this call.
    ///   - onExit: how it ended.
    func startProcess(_ spec: ProcessSpec, path: String, notify: NotifySetup,
                      onOutput: @escaping (_ stream: String, _ line: String) -> Void,
                      onNotice: @escaping (WorkerNotice) -> Void,
                      onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker

    /// Starts a process worker as ``startProcess(_:path:notify:onOutput:onNotice:onExit:)``
    /// does, with a place to keep what it prepared for the next start of the same child.
    ///
    /// The supervisor keeps `cache` with the child, passes it to every start of that child (the
    /// same `spec` every time) and drops it with the child. A runtime may store anything there
    /// (argv and the environment as C arrays, say) and must check that it still applies; the
    /// default implementation ignores it.
    func startProcess(_ spec: ProcessSpec, path: String, notify: NotifySetup, cache: inout AnyObject?,
                      onOutput: @escaping (_ stream: String, _ line: String) -> Void,
                      onNotice: @escaping (WorkerNotice) -> Void,
                      onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker

    /// Starts an async-task worker. `onExit` must be called exactly once, later, on the
    /// runtime's thread: `.returned` or `.threw(description)`. The body runs with
    /// `SupervisedTask.notifier` bound to a notifier that delivers to `onNotice` on the
    /// runtime's thread.
    func startAsyncTask(_ body: @escaping @Sendable () async throws -> Void, path: String,
                        onNotice: @escaping (WorkerNotice) -> Void,
                        onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker

    /// Starts one probe attempt. `completion` is called at most once, later, on the runtime's
    /// thread, unless the attempt is cancelled first. The supervisor enforces the probe's
    /// timeout itself (it cancels the attempt).
    func startProbe(_ check: ProbeCheck, completion: @escaping (ProbeResult) -> Void) -> any RuntimeProbe
}

extension SupervisorRuntime {
    /// Starts the process without a cache (what a runtime that keeps nothing between starts does).
    public func startProcess(_ spec: ProcessSpec, path: String, notify: NotifySetup, cache: inout AnyObject?,
                             onOutput: @escaping (_ stream: String, _ line: String) -> Void,
                             onNotice: @escaping (WorkerNotice) -> Void,
                             onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker {
        try startProcess(spec, path: path, notify: notify, onOutput: onOutput, onNotice: onNotice, onExit: onExit)
    }
}

/// An object the runtime can run on a later turn without allocating a closure.
public protocol RunSoonJob: AnyObject {
    /// Called once per ``SupervisorRuntime/runSoon(_:)``.
    func runSoonJob()
}

/// A timer made by ``SupervisorRuntime/makeTimer(_:)``.
public protocol RuntimeTimer: AnyObject {
    /// Arms (or re-arms) the timer to fire once after `nanoseconds` (0 or more).
    func arm(afterNanoseconds nanoseconds: Int64)
    /// Disarms it; harmless when not armed.
    func disarm()
    /// Releases it for good (disarming it first).
    func close()
}

/// A started process or async task, as its runtime controls it.
public protocol RunningWorker: AnyObject {
    /// The process id, for processes.
    var pid: Int32? { get }
    /// Asks the worker to stop: the stop signal to a process's group, cancellation for a task.
    func requestStop()
    /// Ends the worker at once if its kind allows (SIGKILL to a process's group). Returns
    /// `false` when it cannot be killed (a task), in which case it will be abandoned.
    func kill() -> Bool
}

extension Int64 {
    /// `self + other`, saturating at `Int64.min` and `Int64.max` instead of trapping: deadlines
    /// built from user durations (`.seconds(Int64.max)`) must not crash a supervisor.
    @inline(__always)
    package func addingSaturating(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        if !overflow { return sum }
        return other > 0 ? .max : .min
    }
}

extension Duration {
    /// Whole nanoseconds, saturating at `Int64.max`; negative durations stay negative.
    package var nanosecondsClamped: Int64 {
        // `components` traps past Int64.max seconds, which a Duration can hold.
        if self >= .seconds(Int64.max) { return .max }
        if self <= .seconds(Int64.min) { return .min }
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? Int64.min : Int64.max }
        let (sum, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflow2 ? Int64.max : sum
    }
}

extension WorkerTermination {
    /// Runs an async-task worker's body to its end: `.returned`, or `.threw` with the error's
    /// description. Shared by the runtimes, so both report a task's end alike.
    package static func ofAsyncTask(_ body: @Sendable () async throws -> Void) async -> WorkerTermination {
        do {
            try await body()
            return .returned
        } catch {
            return .threw(String(describing: error))
        }
    }
}

/// A running async task as a worker: cancellation is the only way to stop it, and it cannot be
/// killed (the supervisor abandons it at its shutdown timeout). Shared by the runtimes.
package final class AsyncTaskWorker: RunningWorker {
    /// The task.
    package let task: Task<Void, Never>

    /// Wraps `task`.
    package init(task: Task<Void, Never>) { self.task = task }

    /// Tasks have no pid.
    package var pid: Int32? { nil }

    /// Cancels the task.
    package func requestStop() { task.cancel() }

    /// Tasks cannot be killed: returns `false`.
    package func kill() -> Bool { false }
}
