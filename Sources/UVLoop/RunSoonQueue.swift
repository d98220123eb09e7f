import CLibUV

/// Jobs for the next loop turn.
///
/// Why not a 0 ms timer: on libuv 1.44 a 0 ms timer re-armed inside its own callback runs again
/// in the same timer pass, so a restart loop built on it never polls I/O. Here jobs are drained
/// by a `uv_check_t` (after the I/O poll), and a `uv_idle_t` is active only while jobs are
/// pending, which makes that poll non-blocking. Jobs enqueued while draining wait for the next
/// turn, so a job that re-enqueues itself cannot starve I/O either.
///
/// Unretained runnables (the runtimes' hot path) have a lane of their own with trivially
/// copyable entries: no reference counting and no value-witness calls per job. Jobs run in
/// submission order within each lane; the unretained lane is drained first.
final class RunSoonQueue {
    enum Job {
        case closure(() -> Void)
        case runnable(any LoopRunnable)
        /// From ``LoopRemote/execute(unretained:)`` on the loop thread: kept in this lane so
        /// that it stays in order with the remote's other same-thread submissions.
        case unretained(UnretainedRunnable)
        case executorJob(UnownedJob)
    }

    @exclusivity(unchecked) private var pending: [Job] = []
    @exclusivity(unchecked) private var pendingUnretained = TrivialBuffer<UnretainedRunnable>(capacity: 64)
    @exclusivity(unchecked) private var drainingUnretained = TrivialBuffer<UnretainedRunnable>(capacity: 64)
    @exclusivity(unchecked) private var draining: [Job] = []
    private var checkHandle: RunSoonCheckHandle?
    private var idleHandle: RunSoonIdleHandle?
    @exclusivity(unchecked) private var idleActive = false
    private unowned(unsafe) var remote: LoopRemote?

    init() {
        pending.reserveCapacity(64)
        draining.reserveCapacity(64)
    }

    func attach(to loop: EventLoop) {
        remote = loop.remote
        checkHandle = RunSoonCheckHandle(loop: loop, queue: self)
        idleHandle = RunSoonIdleHandle(loop: loop)
    }

    var hasPendingJobs: Bool { !pending.isEmpty || !pendingUnretained.isEmpty }

    @inline(__always)
    func enqueue(_ job: Job) {
        pending.append(job)
        startIdleIfNeeded()
    }

    @inline(__always)
    func enqueueUnretained(_ runnable: UnretainedRunnable) {
        pendingUnretained.append(runnable)
        startIdleIfNeeded()
    }

    @inline(__always)
    private func startIdleIfNeeded() {
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
        if pending.isEmpty && pendingUnretained.isEmpty {
            stopIdle()
            return
        }
        if !pendingUnretained.isEmpty {
            pendingUnretained.exchange(with: &drainingUnretained)
            let jobs = drainingUnretained.base
            for index in 0..<drainingUnretained.count { jobs[index].run() }
            drainingUnretained.removeAll()
        }
        if pending.isEmpty {
            if pendingUnretained.isEmpty { stopIdle() }
            return
        }
        swap(&pending, &draining)
        for index in draining.indices {
            switch draining[index] {
            case .closure(let job): job()
            case .runnable(let runnable): runnable.runOnLoop()
            case .unretained(let runnable): runnable.run()
            case .executorJob(let job): remote?.runExecutorJob(job)
            }
        }
        draining.removeAll(keepingCapacity: true)
        if pending.isEmpty && pendingUnretained.isEmpty { stopIdle() }
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
    /// Unretained (the queue owns this handle); `Unmanaged` so that draining costs no retain.
    let queue: Unmanaged<RunSoonQueue>

    init(loop: EventLoop, queue: RunSoonQueue) {
        self.queue = Unmanaged.passUnretained(queue)
        let memory = LoopHandle.allocate(uv_check_t.self)
        uv_check_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_check_t.self))
        super.init(loop: loop, initialisedHandle: memory)
        uv_check_start(memory.assumingMemoryBound(to: uv_check_t.self)) { check in
            guard let data = check?.pointee.data else { return }
            Unmanaged<RunSoonCheckHandle>.fromOpaque(data)._withUnsafeGuaranteedRef { $0.queue._withUnsafeGuaranteedRef { $0.drain() } }
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
