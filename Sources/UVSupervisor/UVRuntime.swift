#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Supervision
import UVLoop

/// The libuv runtime: drives supervision trees on one ``EventLoop``.
///
/// Timers are `uv_timer_t`s (one per child that needs one, reused), zero-delay restarts go
/// through the loop's run-soon queue (one loop turn, I/O polled in between), process workers
/// are ``ChildProcess``es (own process group, stop signal to the group, SIGKILL at the
/// timeout), async tasks run on the loop's task executor. Confined to the loop's thread.
///
/// ```swift
/// let loop = try EventLoop()
/// let runtime = UVRuntime(loop: loop)
/// let root = try Supervisor(spec, runtime: runtime)
/// root.start()
/// loop.run()
/// ```
public final class UVRuntime: SupervisorRuntime {
    /// The loop everything runs on.
    public let loop: EventLoop
    /// How process workers are spawned (default: the pidfd fast path where available).
    public var spawnMethod: SpawnMethod
    /// The signal a process worker receives when the supervisor dies, even by SIGKILL
    /// (`PR_SET_PDEATHSIG`, pidfd method only). Default: SIGKILL; `nil` to let children outlive it.
    public var parentDeathSignal: Int32?

    /// Restart jobs for the next turn, each held until it has run (a supervisor dropped
    /// meanwhile still gets its turn, then goes away). The first waits in its own slot (the
    /// common case: one supervisor restarting one child), the rest in an array.
    private struct Jobs {
        var first: (any RunSoonJob)?
        var later: [any RunSoonJob] = []
        var spare: [any RunSoonJob] = []
    }
    /// Dynamic exclusivity checks off (one of the five exceptions listed in
    /// docs/PERFORMANCE.md): private, loop-confined, and no access to it calls out (the jobs
    /// run from a local batch, after the access has ended).
    @exclusivity(unchecked) private var jobs = Jobs()
    /// The one run-soon entry all of a turn's jobs share.
    private let turn = Turn()

    /// A runtime on `loop`. Call it on the loop's thread.
    public init(loop: EventLoop, spawnMethod: SpawnMethod = .preferred, parentDeathSignal: Int32? = SIGKILL) {
        loop.preconditionInLoop("UVRuntime.init")
        self.loop = loop
        self.spawnMethod = spawnMethod
        self.parentDeathSignal = spawnMethod == .pidfd ? parentDeathSignal : nil
    }

    // MARK: Clock and scheduling

    /// The loop's cached time (`uv_now`, milliseconds, taken once per loop iteration) in
    /// nanoseconds: what libuv's own timers measure against, and millisecond resolution is what
    /// the timers have anyway.
    public var nowNanoseconds: Int64 { Int64(bitPattern: loop.now &* 1_000_000) }

    /// Queues `job` for the next loop turn. All jobs share one run-soon entry, so a restart costs
    /// no allocation here.
    public func runSoon(_ job: any RunSoonJob) {
        loop.preconditionInLoop("UVRuntime.runSoon")
        if jobs.first == nil && jobs.later.isEmpty {
            jobs.first = job
        } else {
            jobs.later.append(job)
        }
        if turn.runtime == nil {
            // The entry holds the runtime until it has run: a job may drop the last other
            // reference to it (the tree's) while the turn is still running.
            turn.runtime = self
            loop.runSoon(turn)
        }
    }

    /// Runs the jobs queued before this turn.
    private func runTurn() {
        let first = jobs.first.take()
        if jobs.later.isEmpty {
            first?.runSoonJob()
            return
        }
        // Jobs queued from here on wait for the next turn.
        var batch: [any RunSoonJob] = []
        swap(&batch, &jobs.spare)
        swap(&batch, &jobs.later)
        first?.runSoonJob()
        for job in batch { job.runSoonJob() }
        batch.removeAll(keepingCapacity: true)
        jobs.spare = batch
    }

    /// The run-soon entry of a turn. It references the runtime only while queued, so the two
    /// form no lasting cycle.
    private final class Turn: LoopJob {
        var runtime: UVRuntime?

        override func run() {
            guard let runtime = runtime.take() else { return }
            runtime.runTurn()
        }
    }

    /// Traps unless called on the loop's thread.
    public func preconditionOnRuntimeThread(_ operation: @autoclosure () -> String) {
        loop.preconditionInLoop(operation())
    }

    /// A `uv_timer_t`-backed timer.
    public func makeTimer(_ fire: @escaping () -> Void) -> any RuntimeTimer {
        UVRuntimeTimer(timer: LoopTimer(loop: loop, fire))
    }

    // MARK: Workers

    /// Spawns a process worker. Spawn errors become ``SupervisionError/Code/startFailed`` with
    /// libuv's error name and the program (`spawn "/usr/bin/nope": ENOENT (...)`).
    public func startProcess(_ spec: ProcessSpec, path: String,
                             onOutput: @escaping (_ stream: String, _ line: String) -> Void,
                             onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker {
        var options = ProcessOptions(spec)
        options.spawnMethod = spawnMethod
        options.parentDeathSignal = spawnMethod == .pidfd ? parentDeathSignal : nil
        let wantsOutput = spec.stdout == .capture || spec.stderr == .capture
        let lineHandler: ((ProcessOutput) -> Void)? = wantsOutput ? { output in
            guard case .line(let stream, let line) = output else { return }
            onOutput(stream == .standardOutput ? "stdout" : "stderr", line)
        } : nil
        let worker = UVProcessWorker(stopSignal: spec.stopSignal)
        do {
            worker.process = try ChildProcess.spawn(on: loop, options, onOutput: lineHandler) { exit in
                switch exit {
                case .exited(let code): onExit(.exited(code))
                case .signaled(let signal): onExit(.signaled(signal))
                }
            }
        } catch {
            throw SupervisionError(.startFailed, error.description)
        }
        return worker
    }

    /// Runs an async-task worker on the loop's task executor; cancellation is its stop request.
    public func startAsyncTask(_ body: @escaping @Sendable () async throws -> Void, path: String,
                               onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker {
        let remote = loop.remote
        let delivery = LoopBound(onExit, remote: remote)
        let task = Task(executorPreference: remote) {
            let termination = await WorkerTermination.ofAsyncTask(body)
            // Hop explicitly: the report must run on the loop thread, after this start returned.
            try? remote.execute { delivery.value(termination) }
        }
        return AsyncTaskWorker(task: task)
    }
}

final class UVRuntimeTimer: RuntimeTimer {
    let timer: LoopTimer

    init(timer: LoopTimer) { self.timer = timer }

    func arm(afterNanoseconds nanoseconds: Int64) {
        // Rounded up, so the timer never fires early; no overflow at Int64.max.
        let nanoseconds = UInt64(max(0, nanoseconds))
        let milliseconds = nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 == 0 ? 0 : 1)
        try? timer.start(afterMilliseconds: milliseconds)
    }

    func disarm() { timer.stop() }

    func close() { timer.close() }
}

/// A supervised child process: stop requests and kills go to its whole process group.
final class UVProcessWorker: RunningWorker {
    var process: ChildProcess?
    let stopSignal: Int32

    init(stopSignal: Int32) { self.stopSignal = stopSignal }

    var pid: Int32? { process?.pid }

    func requestStop() {
        try? process?.signalGroup(stopSignal)
    }

    func kill() -> Bool {
        try? process?.signalGroup(SIGKILL)
        return true
    }
}

extension ProcessOptions {
    /// The loop layer's options for a supervision `ProcessSpec` (captured streams become pipes).
    package init(_ spec: ProcessSpec) {
        self.init(argv: spec.argv)
        switch spec.environment {
        case .inherit: environment = .inherit
        case .replace(let values): environment = .replace(values)
        case .inheritWithOverrides(let values): environment = .inheritWithOverrides(values)
        }
        workingDirectory = spec.workingDirectory
        stdin = Self.stdio(spec.stdin)
        stdout = Self.stdio(spec.stdout)
        stderr = Self.stdio(spec.stderr)
        newProcessGroup = spec.newProcessGroup
        userID = spec.userID
        groupID = spec.groupID
    }

    private static func stdio(_ policy: ProcessStdio) -> StdioPolicy {
        switch policy {
        case .inherit: return .inherit
        case .null: return .null
        case .file(let path, let append): return .file(path: path, append: append)
        case .capture: return .pipe
        }
    }
}
