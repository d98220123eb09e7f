#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import CLibUV


/// The `Sendable` way into an ``EventLoop`` from any thread, and the loop's Swift concurrency
/// executor.
///
/// Submissions go into a mutex-guarded queue and wake the loop through one `uv_async_t`.
/// Unretained runnables have a lane of their own, trivially copyable entries in a `realloc`'d
/// buffer, so the lock is held for a store and an increment; every other job remembers how many
/// unretained ones were queued before it, which keeps one submission order across both lanes.
/// `uv_async_send` coalesces (many sends may give one callback), so the callback drains the
/// whole queue. Submissions made on the loop thread itself skip the lock and the wakeup syscall:
/// they go straight to the loop's run-soon queue. After the loop has closed, ``execute(_:)``
/// throws instead of touching the freed async handle (the `closed` flag and `uv_async_send`
/// are both under the same lock).
///
/// As a `SerialExecutor` it lets actors pin themselves to the loop thread; as a `TaskExecutor`
/// it runs async code there under `withTaskExecutorPreference(remote) { ... }`. The loop must
/// outlive every actor and task bound to it: a job enqueued after close is a programming error
/// and traps with a message.
public final class LoopRemote: Sendable {
    enum RemoteJob: Sendable {
        case closure(@Sendable () -> Void)
        case runnable(any LoopRunnable & Sendable)
        case closureWithLoop(@Sendable (EventLoop) -> Void)
        case executorJob(UnownedJob)
        case stopLoop
    }

    /// A job of the general lane and its place among the unretained ones.
    struct OrderedJob {
        let job: RemoteJob
        /// How many unretained jobs of the same batch were queued before this one.
        let afterUnretained: Int
    }

    /// What the submitting threads share with the loop, under `lock`.
    private struct SharedQueue: ~Copyable {
        var unretained = TrivialBuffer<UnretainedRunnable>(capacity: 64)
        var jobs: [OrderedJob] = []
        var wakeupPending = false
        var closed = false
    }

    private let lock = PthreadMutex()
    @exclusivity(unchecked) nonisolated(unsafe) private var shared = SharedQueue()
    private let ownerThread: pthread_t
    // Loop-confined fields: written once during attach, read only on the loop thread.
    nonisolated(unsafe) private unowned(unsafe) var loop: EventLoop?
    nonisolated(unsafe) private var asyncHandle: UnsafeMutablePointer<uv_async_t>?
    nonisolated(unsafe) private var wakeupHandle: AsyncWakeupHandle?
    // The batch being run, owned by the loop thread (swapped with the shared lanes).
    @exclusivity(unchecked) nonisolated(unsafe) private var drainingUnretained = TrivialBuffer<UnretainedRunnable>(capacity: 64)
    @exclusivity(unchecked) nonisolated(unsafe) private var drainingJobs: [OrderedJob] = []

    init(ownerThread: pthread_t) {
        self.ownerThread = ownerThread
    }

    func attach(to loop: EventLoop) {
        self.loop = loop
        let handle = AsyncWakeupHandle(loop: loop, remote: self)
        wakeupHandle = handle
        asyncHandle = handle.asyncPointer
    }

    /// Whether the caller runs on the loop's thread.
    @inline(__always)
    public var inLoopThread: Bool { pthread_equal(pthread_self(), ownerThread) != 0 }

    /// Whether the loop has closed (or is closing) and refuses submissions.
    public var isClosed: Bool {
        lock.lock()
        defer { lock.unlock() }
        return shared.closed
    }

    /// Runs `job` on the loop thread, in submission order per submitting thread.
    /// - Throws: ``UVError`` (`ECANCELED`) when the loop is closed.
    public func execute(_ job: @escaping @Sendable () -> Void) throws(UVError) {
        try submit(.closure(job), operation: "execute on the loop")
    }

    /// Runs `runnable.runOnLoop()` on the loop thread: the allocation-free way to submit (no
    /// closure context per job), for hot cross-thread paths.
    /// - Throws: ``UVError`` (`ECANCELED`) when the loop is closed.
    public func execute(_ runnable: some LoopRunnable & Sendable) throws(UVError) {
        try submit(.runnable(runnable), operation: "execute on the loop")
    }

    /// Like ``execute(_:)-(LoopRunnable&Sendable)`` without retaining `runnable`: no reference
    /// counting per job, so the submitting thread never writes to the object (its reference
    /// count shares a cache line with its fields, which the loop thread writes). The caller
    /// must keep `runnable` alive until it has run; the hot path of a producer that owns a
    /// long-lived job object.
    /// - Throws: ``UVError`` (`ECANCELED`) when the loop is closed (the job will not run).
    public func execute(unretained runnable: some LoopRunnable & Sendable) throws(UVError) {
        let job = UnretainedRunnable(runnable)
        if inLoopThread, let loop, !loop.isClosed {
            loop.runSoonQueue.enqueue(.unretained(job))
            return
        }
        lock.lock()
        if shared.closed {
            lock.unlock()
            throw UVError(code: UV_ECANCELED.rawValue, operation: "execute on the loop: the loop is closed")
        }
        shared.unretained.append(job)
        wakeLoopLocked()
        lock.unlock()
    }

    /// Wakes the loop unless a wakeup is already on its way. Call with `lock` held.
    @inline(__always)
    private func wakeLoopLocked() {
        if !shared.wakeupPending {
            shared.wakeupPending = true
            uv_async_send(asyncHandle)
        }
    }

    /// Runs `job` on the loop thread with the loop itself, to create or use handles there.
    /// - Throws: ``UVError`` (`ECANCELED`) when the loop is closed.
    public func executeWithLoop(_ job: @escaping @Sendable (EventLoop) -> Void) throws(UVError) {
        try submit(.closureWithLoop(job), operation: "execute on the loop")
    }

    /// Asks the loop to return from ``EventLoop/run(_:)``, from any thread.
    /// - Throws: ``UVError`` (`ECANCELED`) when the loop is closed.
    public func stop() throws(UVError) {
        try submit(.stopLoop, operation: "stop the loop")
    }

    @inline(__always)
    private func submit(_ job: RemoteJob, operation: @autoclosure () -> String) throws(UVError) {
        if inLoopThread, let loop, !loop.isClosed {
            // Same thread: no lock, no syscall; the run-soon queue runs it on the next turn.
            if case .runnable(let runnable) = job {
                loop.runSoonQueue.enqueue(.runnable(runnable))
            } else {
                loop.runSoonQueue.enqueue(.closure { [unowned(unsafe) self] in self.run(job) })
            }
            return
        }
        lock.lock()
        if shared.closed {
            lock.unlock()
            throw UVError(code: UV_ECANCELED.rawValue, operation: "\(operation()): the loop is closed")
        }
        shared.jobs.append(OrderedJob(job: job, afterUnretained: shared.unretained.count))
        wakeLoopLocked()
        lock.unlock()
    }

    private func run(_ job: RemoteJob) {
        switch job {
        case .closure(let body): body()
        case .runnable(let runnable): runnable.runOnLoop()
        case .closureWithLoop(let body): if let loop { body(loop) }
        case .executorJob(let job): runExecutorJob(job)
        case .stopLoop: loop?.stop()
        }
    }

    /// Called by the async handle on the loop thread: runs every job queued so far.
    func drainRemoteJobs() {
        lock.lock()
        shared.unretained.exchange(with: &drainingUnretained)
        swap(&shared.jobs, &drainingJobs)
        shared.wakeupPending = false
        lock.unlock()
        // Merge the lanes back into submission order.
        let unretained = drainingUnretained.base
        var nextUnretained = 0
        for index in drainingJobs.indices {
            let ordered = drainingJobs[index]
            while nextUnretained < ordered.afterUnretained {
                unretained[nextUnretained].run()
                nextUnretained += 1
            }
            run(ordered.job)
        }
        while nextUnretained < drainingUnretained.count {
            unretained[nextUnretained].run()
            nextUnretained += 1
        }
        drainingUnretained.removeAll()
        if !drainingJobs.isEmpty { drainingJobs.removeAll(keepingCapacity: true) }
    }

    var hasPendingJobs: Bool {
        lock.lock()
        defer { lock.unlock() }
        return !shared.jobs.isEmpty || !shared.unretained.isEmpty
    }

    /// Teardown, step 1: from now on submissions are refused; queued jobs still run.
    func refuseNewWork() {
        lock.lock()
        shared.closed = true
        if !shared.jobs.isEmpty || !shared.unretained.isEmpty { wakeLoopLocked() }
        lock.unlock()
    }

    /// The loop's ``EventLoop/run(_:)`` in `untilStopped` mode keeps the loop alive through us.
    func keepLoopAlive(_ keep: Bool) {
        guard let wakeupHandle, wakeupHandle.isOpen else { return }
        if keep { uv_ref(wakeupHandle.rawHandle) } else { uv_unref(wakeupHandle.rawHandle) }
    }

    func loopDidClose() {
        loop = nil
        asyncHandle = nil
        wakeupHandle = nil
    }

    func runExecutorJob(_ job: UnownedJob) {
        job.runSynchronously(isolatedTo: asUnownedSerialExecutor(), taskExecutor: asUnownedTaskExecutor())
    }
}

extension LoopRemote: SerialExecutor, TaskExecutor {
    /// Enqueues a Swift concurrency job to run on the loop thread.
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if inLoopThread, let loop, !loop.isClosed {
            loop.runSoonQueue.enqueue(.executorJob(job))
            return
        }
        do {
            try submit(.executorJob(job), operation: "enqueue an executor job")
        } catch {
            fatalError("\(error): an actor or task outlived the event loop it is bound to")
        }
    }

    /// This loop as a serial executor (actors pinned with `unownedExecutor`).
    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// This loop as a task executor (`withTaskExecutorPreference`).
    public func asUnownedTaskExecutor() -> UnownedTaskExecutor {
        UnownedTaskExecutor(ordinary: self)
    }

    /// Traps unless called on the loop thread.
    public func checkIsolated() {
        precondition(inLoopThread, "expected to run on the event loop's thread")
    }

    /// Whether the current thread is the loop's.
    public func isIsolatingCurrentContext() -> Bool? { inLoopThread }
}

/// The `uv_async_t` behind ``LoopRemote``. Unreferenced unless the loop runs `untilStopped`.
final class AsyncWakeupHandle: LoopHandle {
    unowned(unsafe) let remote: LoopRemote

    var asyncPointer: UnsafeMutablePointer<uv_async_t> {
        UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_async_t.self)
    }

    init(loop: EventLoop, remote: LoopRemote) {
        self.remote = remote
        let memory = LoopHandle.allocate(uv_async_t.self)
        uv_async_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_async_t.self)) { async in
            guard let data = async?.pointee.data else { return }
            Unmanaged<AsyncWakeupHandle>.fromOpaque(data)._withUnsafeGuaranteedRef { $0.remote.drainRemoteJobs() }
        }
        super.init(loop: loop, initialisedHandle: memory)
        uv_unref(rawHandle)
    }

    override func closeForTeardown() {
        // Make sure nothing is still queued, then close (submissions are refused by now).
        remote.drainRemoteJobs()
        close()
    }
}
