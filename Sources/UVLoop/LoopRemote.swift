#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CLibUV


/// The `Sendable` way into an ``EventLoop`` from any thread, and the loop's Swift concurrency
/// executor.
///
/// Submissions go into a mutex-guarded queue and wake the loop through one `uv_async_t`.
/// ``LoopJob``s have a lane of their own (one retained word per job, so the lock is held for a
/// reference count and a store); every other job remembers how many of them were queued before
/// it, which keeps one submission order across both lanes.
/// `uv_async_send` coalesces (many sends may give one callback), so the callback drains the
/// whole queue. Submissions made on the loop thread itself skip the lock and the wakeup syscall:
/// they go straight to the loop's run-soon queue. Once the loop's ``EventLoop/close()`` has
/// begun, submissions from other threads are refused; submissions from the loop's own thread
/// are accepted only while close() runs the work that was already accepted (a task's next
/// step), and refused from then on. Refused means: `execute(_:)` throws, and an executor job
/// traps (see below). The `closed` flag and `uv_async_send` are under the same lock, so a
/// refused submission never touches the freed async handle.
///
/// As a `SerialExecutor` it lets actors pin themselves to the loop thread; as a `TaskExecutor`
/// it runs async code there under `withTaskExecutorPreference(remote) { ... }`. The loop must
/// outlive every actor and task bound to it: a job enqueued once the loop is closing is a
/// programming error and traps with a message.
///
/// Why `@unchecked Sendable`: the shared queue is only touched under `lock`; every other stored
/// property is either immutable after `attach(to:)` (which runs before the loop is handed to
/// anybody) or touched only on the loop's thread (`loop`, `refusing`, the draining batch), and
/// every entry point checks which thread it is on before touching those.
public final class LoopRemote: @unchecked Sendable {
    enum RemoteJob {
        case closure(@Sendable () -> Void)
        case runnable(any LoopRunnable & Sendable)
        case closureWithLoop(@Sendable (EventLoop) -> Void)
        case executorJob(UnownedJob)
        case stopLoop
    }

    /// What the submitting threads share with the loop, under `lock`.
    private struct SharedQueue: ~Copyable {
        var loopJobs = TrivialBuffer<Unmanaged<LoopJob>>(capacity: 64)
        var jobs: [(job: RemoteJob, afterLoopJobs: Int)] = []
        var wakeupPending = false
        var closed = false
    }

    private let lock = PthreadMutex()
    // Unchecked exclusivity (listed in docs/PERFORMANCE.md): every access is under `lock`,
    // which is the exclusivity; a dynamic check on top would cost as much as the lock itself.
    @exclusivity(unchecked) private var shared = SharedQueue()
    private let ownerThread: pthread_t
    // Loop-thread state (see the type's notes).
    private unowned var loop: EventLoop?
    private var asyncHandle: UnsafeMutablePointer<uv_async_t>?
    private var wakeupHandle: AsyncWakeupHandle?
    /// Set on the loop thread when teardown begins: same-thread submissions are refused too.
    private var refusing = false
    /// The batch being run, swapped with the shared queue.
    private var drainingLoopJobs = TrivialBuffer<Unmanaged<LoopJob>>(capacity: 64)
    private var drainingJobs: [(job: RemoteJob, afterLoopJobs: Int)] = []

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
    public var inLoopThread: Bool { pthread_self() == ownerThread }

    /// Traps with a clear message when called from another thread than the loop's.
    public func preconditionInLoop(_ what: @autoclosure () -> String, file: StaticString = #fileID, line: UInt = #line) {
        precondition(inLoopThread, "\(what()) must be called on the event loop's thread", file: file, line: line)
    }

    /// Whether the loop has closed (or is closing) and refuses submissions.
    public var isClosed: Bool {
        lock.lock()
        defer { lock.unlock() }
        return shared.closed
    }

    /// Runs `job` on the loop thread, in submission order per submitting thread.
    /// - Throws: ``UVError`` (`ECANCELED`) when the loop is closing or closed.
    public func execute(_ job: @escaping @Sendable () -> Void) throws(UVError) {
        try submit(.closure(job), operation: "execute on the loop")
    }

    /// Runs `runnable.runOnLoop()` on the loop thread: the way to submit without a closure
    /// context per job, for hot cross-thread paths. The loop holds `runnable` until it has run.
    /// - Throws: ``UVError`` (`ECANCELED`) when the loop is closing or closed.
    public func execute(_ runnable: some LoopRunnable & Sendable) throws(UVError) {
        try submit(.runnable(runnable), operation: "execute on the loop")
    }

    /// The fastest cross-thread submission: the loop calls `job.run()` on its thread (once per
    /// submission), holding one reference to `job` until then (see ``LoopJob``).
    /// - Throws: ``UVError`` (`ECANCELED`) when the loop is closing or closed.
    public func execute<Job: LoopJob & Sendable>(_ job: Job) throws(UVError) {
        if inLoopThread, let loop {
            if refusing {
                throw UVError(code: UV_ECANCELED.rawValue, operation: "execute on the loop: the loop is closing")
            }
            loop.runSoonQueue.enqueue(job)
            return
        }
        let reference = Unmanaged<LoopJob>.passRetained(job)
        lock.lock()
        if shared.closed {
            lock.unlock()
            reference.release()
            throw UVError(code: UV_ECANCELED.rawValue, operation: "execute on the loop: the loop is closed")
        }
        shared.loopJobs.append(reference)
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
    /// - Throws: ``UVError`` (`ECANCELED`) when the loop is closing or closed.
    public func executeWithLoop(_ job: @escaping @Sendable (EventLoop) -> Void) throws(UVError) {
        try submit(.closureWithLoop(job), operation: "execute on the loop")
    }

    /// Asks the loop to return from ``EventLoop/run(_:)``, from any thread.
    /// - Throws: ``UVError`` (`ECANCELED`) when the loop is closing or closed.
    public func stop() throws(UVError) {
        try submit(.stopLoop, operation: "stop the loop")
    }

    @inline(__always)
    private func submit(_ job: RemoteJob, operation: @autoclosure () -> String) throws(UVError) {
        if inLoopThread, let loop {
            // Same thread: no lock, no syscall; the run-soon queue runs it on the next turn.
            if refusing {
                throw UVError(code: UV_ECANCELED.rawValue, operation: "\(operation()): the loop is closing")
            }
            switch job {
            case .runnable(let runnable): loop.runSoonQueue.enqueue(.runnable(runnable))
            case .executorJob(let executorJob): loop.runSoonQueue.enqueue(.executorJob(executorJob))
            default: loop.runSoonQueue.enqueue(.closure { [self] in self.run(job) })
            }
            return
        }
        lock.lock()
        if shared.closed {
            lock.unlock()
            throw UVError(code: UV_ECANCELED.rawValue, operation: "\(operation()): the loop is closed")
        }
        shared.jobs.append((job, shared.loopJobs.count))
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
        shared.loopJobs.exchange(with: &drainingLoopJobs)
        swap(&shared.jobs, &drainingJobs)
        shared.wakeupPending = false
        lock.unlock()
        // Merge the lanes back into submission order.
        let loopJobs = drainingLoopJobs.base
        var nextLoopJob = 0
        for index in drainingJobs.indices {
            let (job, afterLoopJobs) = drainingJobs[index]
            while nextLoopJob < afterLoopJobs {
                loopJobs[nextLoopJob].takeRetainedValue().run()
                nextLoopJob += 1
            }
            run(job)
        }
        while nextLoopJob < drainingLoopJobs.count {
            loopJobs[nextLoopJob].takeRetainedValue().run()
            nextLoopJob += 1
        }
        drainingLoopJobs.removeAll()
        if !drainingJobs.isEmpty { drainingJobs.removeAll(keepingCapacity: true) }
    }

    var hasPendingJobs: Bool {
        lock.lock()
        defer { lock.unlock() }
        return !shared.jobs.isEmpty || !shared.loopJobs.isEmpty
    }

    /// Teardown, step 1 (on the loop thread): from now on submissions from other threads are
    /// refused; jobs already queued still run, and so do the jobs they submit on this thread
    /// (a task's next step), until none is left.
    func refuseNewWork() {
        lock.lock()
        shared.closed = true
        if !shared.jobs.isEmpty || !shared.loopJobs.isEmpty { wakeLoopLocked() }
        lock.unlock()
    }

    /// Teardown, step 2 (on the loop thread): the accepted work has run; from now on
    /// submissions from this thread are refused too (the loop is closing its handles).
    func refuseSameThreadWork() {
        refusing = true
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
    /// Unowned: the loop owns the remote and closes this handle before it goes.
    unowned let remote: LoopRemote

    var asyncPointer: UnsafeMutablePointer<uv_async_t> {
        UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_async_t.self)
    }

    init(loop: EventLoop, remote: LoopRemote) {
        self.remote = remote
        let memory = LoopHandle.allocate(uv_async_t.self, on: loop)
        uv_async_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_async_t.self)) { async in
            guard let data = async?.pointee.data else { return }
            Unmanaged<AsyncWakeupHandle>.fromOpaque(data).takeUnretainedValue().remote.drainRemoteJobs()
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
