import CLibUV

/// Jobs for the next loop turn.
///
/// Why not a 0 ms timer: on libuv 1.44 a 0 ms timer re-armed inside its own callback runs again
/// in the same timer pass, so a restart loop built on it never polls I/O. Here jobs are drained
/// by a `uv_check_t` (after the I/O poll), and a `uv_idle_t` is active only while jobs are
/// pending, which makes that poll non-blocking. Jobs enqueued while draining wait for the next
/// turn, so a job that re-enqueues itself cannot starve I/O either.
///
/// Every job is held strongly from its submission until it has run. Runnables (the hot path:
/// the runtimes' turns) have a lane of their own, an array of class existentials, which
/// appending and draining handle without the enum's generic copies; every other job remembers
/// how many runnables were queued before it, so the two lanes run in one submission order.
final class RunSoonQueue {
    enum Job {
        case closure(() -> Void)
        case executorJob(UnownedJob)
    }

    // Unchecked exclusivity on the runnable lane only: its dynamic checks were a quarter of a
    // same-thread submit (perf, submit_same_thread); both are private, touched on the loop
    // thread only, and never passed inout across a call out of this type.
    @exclusivity(unchecked) private var pendingRunnables: [any LoopRunnable] = []
    /// The package-internal unretained lane (see ``UnsafeUnretainedLoopJob``): one word a job.
    private var pendingUnretained = TrivialBuffer<Unmanaged<UnsafeUnretainedLoopJob>>(capacity: 64)
    private var drainingUnretained = TrivialBuffer<Unmanaged<UnsafeUnretainedLoopJob>>(capacity: 64)
    private var pending: [(job: Job, afterRunnables: Int)] = []
    @exclusivity(unchecked) private var drainingRunnables: [any LoopRunnable] = []
    private var draining: [(job: Job, afterRunnables: Int)] = []
    private var checkHandle: RunSoonCheckHandle?
    private var idleHandle: RunSoonIdleHandle?
    private var idleActive = false
    /// The remote runs executor jobs (it owns the executor identity). Unowned: the loop owns both.
    private unowned var remote: LoopRemote?

    init() {
        pendingRunnables.reserveCapacity(64)
        drainingRunnables.reserveCapacity(64)
        pending.reserveCapacity(64)
        draining.reserveCapacity(64)
    }

    func attach(to loop: EventLoop) {
        remote = loop.remote
        checkHandle = RunSoonCheckHandle(loop: loop, queue: self)
        idleHandle = RunSoonIdleHandle(loop: loop)
    }

    var hasPendingJobs: Bool { !pending.isEmpty || !pendingRunnables.isEmpty || !pendingUnretained.isEmpty }

    /// Queues `job` without retaining it; unretained jobs run first in their turn, in order.
    @inline(__always)
    func enqueue(unsafeUnretained job: UnsafeUnretainedLoopJob) {
        pendingUnretained.append(Unmanaged.passUnretained(job))
        if !idleActive { startIdle() }
    }

    @inline(__always)
    func enqueue(_ job: Job) {
        pending.append((job, pendingRunnables.count))
        if !idleActive { startIdle() }
    }

    @inline(__always)
    func enqueue(_ runnable: any LoopRunnable) {
        pendingRunnables.append(runnable)
        if !idleActive { startIdle() }
    }

    @inline(never)
    private func startIdle() {
        if let idleHandle, idleHandle.isOpen {
            idleActive = true
            idleHandle.start()
        }
    }

    /// Runs the jobs that were pending when the turn's check phase began.
    func drain() {
        if !pendingUnretained.isEmpty {
            pendingUnretained.exchange(with: &drainingUnretained)
            let jobs = drainingUnretained.base
            for index in 0..<drainingUnretained.count {
                jobs[index]._withUnsafeGuaranteedRef { $0.run() }
            }
            drainingUnretained.removeAll()
        }
        if pending.isEmpty && pendingRunnables.isEmpty {
            if pendingUnretained.isEmpty { stopIdle() }
            return
        }
        swap(&pendingRunnables, &drainingRunnables)
        swap(&pending, &draining)
        var nextRunnable = 0
        for index in draining.indices {
            let (job, afterRunnables) = draining[index]
            while nextRunnable < afterRunnables {
                drainingRunnables[nextRunnable].runOnLoop()
                nextRunnable += 1
            }
            switch job {
            case .closure(let body): body()
            case .executorJob(let executorJob): remote?.runExecutorJob(executorJob)
            }
        }
        while nextRunnable < drainingRunnables.count {
            drainingRunnables[nextRunnable].runOnLoop()
            nextRunnable += 1
        }
        drainingRunnables.removeAll(keepingCapacity: true)
        if !draining.isEmpty { draining.removeAll(keepingCapacity: true) }
        if !hasPendingJobs { stopIdle() }
    }

    private func stopIdle() {
        guard idleActive else { return }
        idleActive = false
        idleHandle?.stop()
    }
}

/// The `uv_check_t` that drains the run-soon queue after each I/O poll. Unreferenced, so it
/// never keeps the loop alive by itself.
final class RunSoonCheckHandle: LoopHandle {
    /// Unowned: the queue owns this handle, and the loop's teardown closes it first.
    unowned let queue: RunSoonQueue

    init(loop: EventLoop, queue: RunSoonQueue) {
        self.queue = queue
        let memory = LoopHandle.allocate(uv_check_t.self)
        uv_check_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_check_t.self))
        super.init(loop: loop, initialisedHandle: memory)
        uv_check_start(memory.assumingMemoryBound(to: uv_check_t.self)) { check in
            guard let data = check?.pointee.data else { return }
            Unmanaged<RunSoonCheckHandle>.fromOpaque(data).takeUnretainedValue().queue.drain()
        }
        uv_unref(rawHandle)
    }
}

/// The `uv_idle_t` that keeps the poll phase from blocking while run-soon jobs are pending.
final class RunSoonIdleHandle: LoopHandle {
    init(loop: EventLoop) {
        let memory = LoopHandle.allocate(uv_idle_t.self)
        uv_idle_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_idle_t.self))
        super.init(loop: loop, initialisedHandle: memory)
    }

    func start() {
        uv_idle_start(UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_idle_t.self)) { _ in }
    }

    func stop() {
        guard isOpen else { return }
        uv_idle_stop(UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_idle_t.self))
    }
}

/// A job for the loop's package-internal unretained lane (``EventLoop/runSoon(unsafeUnretained:)``):
/// the queue stores one word per job (an `Unmanaged` reference to this object: no reference
/// counting per job, no layout assumption) and calls ``run()``.
///
/// Unsafe: the queue does not keep the job alive. Whoever enqueues it must guarantee that it
/// (and what its body uses) lives until it has run, for example by holding a strong
/// reference in a field that only the body clears.
package final class UnsafeUnretainedLoopJob {
    private let body: () -> Void

    package init(_ body: @escaping () -> Void) {
        self.body = body
    }

    /// Called on the loop thread once per enqueue.
    @inline(__always)
    package func run() { body() }
}
