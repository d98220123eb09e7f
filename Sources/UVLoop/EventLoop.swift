#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CLibUV

/// One libuv loop, owned by the thread that created it.
///
/// Everything on the loop (handles, timers, processes, and the supervisors built on top) is
/// confined to that thread: `EventLoop` is deliberately not `Sendable`. Other threads reach the
/// loop through ``remote`` (a `Sendable` ``LoopRemote``), which is also the loop's Swift
/// concurrency executor.
///
/// ```swift
/// let loop = try EventLoop()
/// let timer = LoopTimer(loop: loop) { print("tick") }
/// try timer.start(after: .milliseconds(10))
/// loop.run()
/// try loop.close()   // closes every handle, then uv_loop_close must return 0
/// ```
public final class EventLoop {
    /// How ``run(_:)`` drives the loop.
    public enum RunMode: Sendable {
        /// Until no referenced handle is active (`UV_RUN_DEFAULT`).
        case untilIdle
        /// One iteration, blocking for I/O if there is nothing else to do (`UV_RUN_ONCE`).
        /// Note libuv's order: timers already due run *before* the poll, which then blocks until
        /// I/O or the next timer; a loop `while !done { run(.once) }` waiting for a one-shot timer
        /// can block forever if that timer was due when the iteration began.
        case once
        /// One iteration without blocking (`UV_RUN_NOWAIT`).
        case noWait
        /// Until ``stop()`` (or ``LoopRemote/stop()``) is called, even when no handle is active.
        case untilStopped
    }

    /// The underlying libuv loop. Valid until ``close()``.
    package let rawLoop: UnsafeMutablePointer<uv_loop_t>
    /// The owning thread: the only one allowed to touch the loop.
    let ownerThread: pthread_t
    /// Handles initialised and not yet through their close callback (ours, run-soon's, remote's,
    /// the child exit set's).
    var openHandleCount = 0
    private(set) var isClosed = false
    /// Set when ``close()`` begins: no new child process is spawned from then on.
    private(set) var isClosing = false
    /// Whether ``run(_:)`` (or the teardown) is running the loop: neither may start again from
    /// inside one of its callbacks.
    private var isRunning = false
    private var stopRequested = false

    /// The run-soon queue: jobs for the next loop turn, after I/O has been polled.
    let runSoonQueue: RunSoonQueue
    /// The `Sendable` way in from other threads; also the loop's executor.
    public let remote: LoopRemote

    /// Child processes whose exit has not been reported yet (teardown kills them).
    /// Keyed by a serial number of this loop's (never reused, unlike a pid: a pid freed by a
    /// reap can be given to a new child before the old one's exit has been handled).
    private(set) var liveProcesses: [UInt64: ChildProcess] = [:]
    /// How many live children have each pid (almost always 0 or 1; see above).
    private var livePIDs: [Int32: Int] = [:]
    private var lastProcessSerial: UInt64 = 0
    /// Where the pidfds of the pidfd method's children are watched (made with the loop).
    private(set) var childExits: ChildExitSet!
    /// Set while SIGCHLD is blocked on this loop's thread and read from a signalfd (the daemon's
    /// orphan reaper with pidfd-spawned children): libuv's SIGCHLD handler may then never run, so
    /// the libuv spawn method, which learns of exits only through it, is refused.
    package var takesChildSignalsThroughDescriptor = false
    /// `/dev/null`, opened once (close-on-exec) for the null streams of pidfd-spawned children:
    /// read-only for stdin, read-write for output, as each child would open it. Opening it in
    /// every child was a path lookup and a file on every restart (~15 µs of the gap, cold).
    /// The children share the open file, which for `/dev/null` holds nothing they could see:
    /// no offset that matters, and no status flag changes what it does. -1 until needed.
    private var nullDevices: (input: Int32, output: Int32) = (-1, -1)

    /// The loop's `/dev/null` for a child's stdin (`forInput`) or its output; -1 if it cannot
    /// be opened (the child then opens its own, and reports the error if that fails too).
    func nullDevice(forInput: Bool) -> Int32 {
        if forInput {
            if nullDevices.input < 0 { nullDevices.input = open("/dev/null", O_RDONLY | O_CLOEXEC) }
            return nullDevices.input
        }
        if nullDevices.output < 0 { nullDevices.output = open("/dev/null", O_RDWR | O_CLOEXEC) }
        return nullDevices.output
    }

    /// Whether `pid` is a child process this loop spawned and has not reaped yet (the orphan
    /// reaper of a daemon must leave those to their own exit watch).
    package func spawnedChild(_ pid: Int32) -> Bool {
        livePIDs[pid] != nil
    }

    /// A serial number for a child about to be spawned.
    func nextProcessSerial() -> UInt64 {
        lastProcessSerial += 1
        return lastProcessSerial
    }

    /// `child` runs and its exit has not been handled yet.
    func processStarted(_ child: ChildProcess) {
        liveProcesses[child.serial] = child
        livePIDs[child.pid, default: 0] += 1
    }

    /// `child`'s exit was handled (or it was abandoned at teardown).
    func processEnded(_ child: ChildProcess) {
        guard liveProcesses.removeValue(forKey: child.serial) != nil else { return }
        if let count = livePIDs[child.pid], count > 1 { livePIDs[child.pid] = count - 1 } else { livePIDs[child.pid] = nil }
    }

    /// Creates a loop owned by the calling thread.
    public init() throws(UVError) {
        let loop = UnsafeMutablePointer<uv_loop_t>.allocate(capacity: 1)
        let result = uv_loop_init(loop)
        if result < 0 {
            loop.deallocate()
            throw UVError(code: result, operation: "uv_loop_init")
        }
        rawLoop = loop
        ownerThread = currentThread()
        runSoonQueue = RunSoonQueue()
        remote = LoopRemote(ownerThread: ownerThread)
        runSoonQueue.attach(to: self)
        remote.attach(to: self)
        // (A failure here runs deinit, which tears the loop down.)
        childExits = try ChildExitSet(loop: self)
    }

    deinit {
        if !isClosed {
            // A loop dropped without close(): tear down anyway so no handle outlives it.
            try? close()
        }
    }

    // MARK: Thread confinement

    /// Whether the caller runs on the loop's thread.
    @inline(__always)
    public var inLoopThread: Bool { currentThread() == ownerThread }

    /// Traps with a clear message when called from another thread than the loop's.
    /// Used at entry points where a wrong-thread call would corrupt state.
    @inline(__always)
    public func preconditionInLoop(_ what: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
        precondition(inLoopThread, "\(what()) must be called on the event loop's thread", file: file, line: line)
    }

    /// Debug-build check of loop confinement for hot paths.
    @inline(__always)
    public func assertInLoop(file: StaticString = #fileID, line: UInt = #line) {
        assert(inLoopThread, "called off the event loop's thread", file: file, line: line)
    }

    // MARK: Running

    /// Runs the loop in `mode`. Returns whether referenced handles are still active.
    @discardableResult
    public func run(_ mode: RunMode = .untilIdle) -> Bool {
        preconditionInLoop("EventLoop.run")
        precondition(!isClosed, "EventLoop.run called after close()")
        precondition(!isRunning, "EventLoop.run called from inside a callback of the same loop (it is already running)")
        isRunning = true
        defer { isRunning = false }
        switch mode {
        case .untilIdle: return uv_run(rawLoop, UV_RUN_DEFAULT) != 0
        case .once: return uv_run(rawLoop, UV_RUN_ONCE) != 0
        case .noWait: return uv_run(rawLoop, UV_RUN_NOWAIT) != 0
        case .untilStopped:
            stopRequested = false
            remote.keepLoopAlive(true)
            defer { remote.keepLoopAlive(false) }
            while !stopRequested {
                uv_run(rawLoop, UV_RUN_DEFAULT)
            }
            stopRequested = false
            return uv_loop_alive(rawLoop) != 0
        }
    }

    /// Makes the current ``run(_:)`` return after this iteration.
    public func stop() {
        preconditionInLoop("EventLoop.stop")
        stopRequested = true
        uv_stop(rawLoop)
    }

    /// The loop's cached time in milliseconds (`uv_now`), updated once per iteration.
    public var now: UInt64 {
        precondition(!isClosed, "EventLoop.now read after close()")
        return uv_now(rawLoop)
    }

    /// Refreshes the cached time (`uv_update_time`), for callers that ran long.
    public func updateTime() {
        precondition(!isClosed, "EventLoop.updateTime called after close()")
        uv_update_time(rawLoop)
    }

    /// The libuv version this process runs with, such as `1.44.2`.
    public static var libuvVersion: String { String(cString: uv_version_string()) }

    /// Monotonic high-resolution time in nanoseconds (`uv_hrtime`).
    public static func hrtime() -> UInt64 { uv_hrtime() }

    // MARK: Run soon

    /// Runs `job` on the next loop turn, after I/O has been polled; never in the current call stack.
    public func runSoon(_ job: @escaping () -> Void) {
        preconditionInLoop("EventLoop.runSoon")
        runSoonQueue.enqueue(.closure(job))
    }

    /// Allocation-free variant of ``runSoon(_:)-(()->Void)`` for hot paths: the loop calls
    /// `runnable.runOnLoop()` on the next turn (once per enqueue), holding it until then.
    @inline(__always)
    public func runSoon(_ runnable: some LoopRunnable) {
        preconditionInLoop("EventLoop.runSoon")
        runSoonQueue.enqueue(.runnable(runnable))
    }

    /// The fastest way to run something on the next turn: the loop calls `job.run()` (once
    /// per submission), holding one reference to `job` until then (see ``LoopJob``).
    @inline(__always)
    public func runSoon(_ job: LoopJob) {
        preconditionInLoop("EventLoop.runSoon")
        runSoonQueue.enqueue(job)
    }

    // MARK: Teardown

    /// The number of libuv handles opened on this loop whose close callback has not run yet.
    public var liveHandleCount: Int { openHandleCount }

    /// Tears the loop down: refuses new submissions through ``remote`` from other threads, runs
    /// the ones already accepted (and what they submit on the loop's thread meanwhile), then
    /// refuses the loop thread's own submissions through the remote too, kills child processes still running
    /// (SIGKILL to their group) and waits for their exit, closes every handle, runs until all
    /// close callbacks have fired, and closes the libuv loop. Jobs that close callbacks queue
    /// with ``runSoon(_:)-(()->Void)`` during the teardown still run before it returns.
    ///
    /// Idempotent. Throws when `uv_loop_close` does not return 0 (a handle that could not be
    /// closed), which would be a bug in this layer.
    public func close() throws(UVError) {
        if isClosed { return }
        preconditionInLoop("EventLoop.close")
        precondition(!isRunning, "EventLoop.close called from inside a callback of the same loop: stop it, and close it after run returns")
        isRunning = true
        isClosing = true
        defer { isRunning = false }
        // 1. No new work from other threads; run what was already accepted, and what it queues
        //    on this thread (a task's next step), until nothing is left. Then this thread's
        //    submissions through the remote are refused too.
        //    Bounded: work that keeps queueing itself (a task spinning on yields) is cut off
        //    after 5 s, and its next submission is refused.
        remote.refuseNewWork()
        let acceptedWorkDeadline = uv_hrtime() + 5_000_000_000
        while (runSoonQueue.hasPendingJobs || remote.hasPendingJobs) && uv_hrtime() < acceptedWorkDeadline {
            uv_run(rawLoop, UV_RUN_NOWAIT)
        }
        remote.refuseSameThreadWork()
        // 2. Children: a process handle closed before its exit leaves a zombie, so kill and wait
        //    (no new child is spawned from here on). The wait polls without blocking, so its
        //    deadline holds even when nothing else would wake the loop.
        let deadline = uv_hrtime() + 5_000_000_000
        while !liveProcesses.isEmpty && uv_hrtime() < deadline {
            for process in liveProcesses.values { process.killForTeardown() }
            uv_run(rawLoop, UV_RUN_NOWAIT)
            if !liveProcesses.isEmpty {
                var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
                nanosleep(&pause, nil)
            }
        }
        // No child is spawned from here on.
        for descriptor in [nullDevices.input, nullDevices.output] where descriptor >= 0 { Glibc.close(descriptor) }
        nullDevices = (-1, -1)
        // 3. Close every handle, ours first through their Swift owners, then anything else.
        uv_walk(rawLoop, { handle, _ in
            guard let handle, uv_is_closing(handle) == 0 else { return }
            if let data = handle.pointee.data {
                Unmanaged<LoopHandle>.fromOpaque(data).takeUnretainedValue().closeForTeardown()
            } else {
                uv_close(handle, nil)
            }
        }, nil)
        // Processes that outlived the deadline above still need their handle closed.
        for process in liveProcesses.values { process.abandonForTeardown() }
        liveProcesses.removeAll()
        livePIDs.removeAll()
        repeat {
            while uv_run(rawLoop, UV_RUN_DEFAULT) != 0 {}
            uv_run(rawLoop, UV_RUN_NOWAIT)
            // The check handle that drains run-soon jobs is closed by now: run the jobs that
            // close callbacks queued here, so none is silently dropped.
            runSoonQueue.drain()
        } while runSoonQueue.hasPendingJobs || uv_loop_alive(rawLoop) != 0
        let result = uv_loop_close(rawLoop)
        remote.loopDidClose()
        if result < 0 {
            throw UVError(code: result, operation: "uv_loop_close (\(openHandleCount) handles still open)")
        }
        isClosed = true
        rawLoop.deallocate()
    }
}

/// An object the loop can run without allocating a closure (see `EventLoop.runSoon(_:)`).
/// The loop holds a strong reference to it from the submission until it has run.
public protocol LoopRunnable: AnyObject {
    /// Called on the loop thread, once per time the object was enqueued.
    func runOnLoop()
}
