import CLibUV

/// Jobs for the next loop turn.
///
/// Why not a 0 ms timer: on libuv 1.44 a 0 ms timer re-armed inside its own callback runs again
/// in the same timer pass, so a restart loop built on it never polls I/O. Here jobs are drained
/// by a `uv_check_t` (after the I/O poll), and a `uv_idle_t` is active only while jobs are
/// pending, which makes that poll non-blocking. Jobs enqueued while draining wait for the next
/// turn, so a job that re-enqueues itself cannot starve I/O either.
///
/// Every job is held strongly from its submission until it has run. ``LoopJob``s (the hot
/// path, the runtimes' turns among them) have a lane of their own: one retained word per job in
/// a `realloc`'d buffer, so an append is a reference count and a store. Every other job
/// remembers how many ``LoopJob``s were queued before it, so the two lanes run in one
/// submission order.
final class RunSoonQueue {
    enum Job {
        case closure(() -> Void)
        case runnable(any LoopRunnable)
        case executorJob(UnownedJob)
    }

    /// The job lane: jobs queued for the next turn, and the batch being run.
    private struct JobLane: ~Copyable {
        var pending = TrivialBuffer<Unmanaged<LoopJob>>(capacity: 64)
        var draining = TrivialBuffer<Unmanaged<LoopJob>>(capacity: 64)

        /// Moves the pending jobs into the draining batch (pointers and counts only).
        mutating func beginDraining() { pending.exchange(with: &draining) }
    }
    /// Dynamic exclusivity checks off (one of the five exceptions listed in
    /// docs/PERFORMANCE.md): they would cost as much as the submit itself. Private, loop-thread
    /// only, and no access to it calls out (jobs run after their batch was taken).
    @exclusivity(unchecked) private var lane = JobLane()
    private var pending: [(job: Job, afterJobs: Int)] = []
    private var draining: [(job: Job, afterJobs: Int)] = []
    private var checkHandle: RunSoonCheckHandle?
    private var idleHandle: RunSoonIdleHandle?
    private var idleActive = false
    /// The remote runs executor jobs (it owns the executor identity). Unowned: the loop owns both.
    private unowned var remote: LoopRemote?

    init() {
        pending.reserveCapacity(64)
        draining.reserveCapacity(64)
    }

    deinit {
        // Jobs still queued (a loop dropped without running them) are released, not leaked.
        for index in 0..<lane.pending.count { lane.pending.base[index].release() }
    }

    func attach(to loop: EventLoop) {
        remote = loop.remote
        checkHandle = RunSoonCheckHandle(loop: loop, queue: self)
        idleHandle = RunSoonIdleHandle(loop: loop)
    }

    var hasPendingJobs: Bool { !pending.isEmpty || !lane.pending.isEmpty }

    @inline(__always)
    func enqueue(_ job: Job) {
        pending.append((job, lane.pending.count))
        if !idleActive { startIdle() }
    }

    /// Queues `job`, holding one reference to it until it has run.
    @inline(__always)
    func enqueue(_ job: LoopJob) {
        lane.pending.append(Unmanaged.passRetained(job))
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
        if !hasPendingJobs {
            stopIdle()
            return
        }
        lane.beginDraining()
        swap(&pending, &draining)
        let jobs = lane.draining.base
        let jobCount = lane.draining.count
        var nextJob = 0
        for index in draining.indices {
            let (job, afterJobs) = draining[index]
            while nextJob < afterJobs {
                Self.run(jobs[nextJob])
                nextJob += 1
            }
            switch job {
            case .closure(let body): body()
            case .runnable(let runnable): runnable.runOnLoop()
            case .executorJob(let executorJob): remote?.runExecutorJob(executorJob)
            }
        }
        while nextJob < jobCount {
            Self.run(jobs[nextJob])
            nextJob += 1
        }
        lane.draining.removeAll()
        if !draining.isEmpty { draining.removeAll(keepingCapacity: true) }
        if !hasPendingJobs { stopIdle() }
    }

    /// Runs one entry and drops the reference its submission took.
    @inline(__always)
    private static func run(_ reference: Unmanaged<LoopJob>) {
        reference.takeRetainedValue().run()
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
        let memory = LoopHandle.allocate(uv_check_t.self, on: loop)
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
        let memory = LoopHandle.allocate(uv_idle_t.self, on: loop)
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
