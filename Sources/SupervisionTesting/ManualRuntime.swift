import Supervision

/// A runtime for deterministic tests of supervision trees: a virtual clock the test advances,
/// timers that fire only when it does, and workers that exist only on paper, whose exits the
/// test scripts.
///
/// Loop tasks run for real (they are plain callbacks); process and async-task workers are
/// simulated: a start is recorded (``Action``), ``exit(_:_:)`` ends one, and a stop request ends it
/// on the next turn as the ``StopBehaviour`` of that path says.
///
/// ```swift
/// let runtime = ManualRuntime()
/// let root = try Supervisor(spec, runtime: runtime, randomSeed: 1)
/// root.start(); runtime.runUntilIdle()
/// runtime.exit("root/web", .exited(1))      // the process crashed
/// runtime.advance(by: .milliseconds(100))   // its backoff elapses; it restarts
/// ```
public final class ManualRuntime: SupervisorRuntime {
    /// How a simulated worker answers a stop request.
    public enum StopBehaviour: Sendable, Equatable {
        /// It ends on the next turn (a process with the stop signal, a task by returning).
        case exitsPromptly
        /// It ends after this long.
        case exitsAfter(Duration)
        /// It ignores the request; only a kill ends it (a task can then only be abandoned).
        case ignores
    }

    /// Something the runtime was asked to do, in order.
    public enum Action: Sendable, Equatable {
        /// A process or async task was started at this path.
        case start(String)
        /// A stop request was sent.
        case requestStop(String)
        /// A kill was sent.
        case kill(String)
    }

    /// The virtual time in nanoseconds.
    public private(set) var nowNanoseconds: Int64 = 0
    /// Every start, stop request and kill, in order.
    public private(set) var actions: [Action] = []
    /// How each path answers stop requests (default: ``StopBehaviour/exitsPromptly``).
    public var stopBehaviour: [String: StopBehaviour] = [:]
    /// Paths whose next starts fail with this message (cleared by setting `nil`).
    public var startFailures: [String: String] = [:]
    /// How each probe check answers (default: it never answers, so the attempt times out).
    /// An answer is delivered on the next turn after the attempt starts.
    public var probeAnswers: [ProbeCheck: ProbeResult] = [:]
    /// Probe attempts started, in order.
    public private(set) var probeAttempts: [ProbeCheck] = []

    private var soon: [() -> Void] = []
    private var timers: [ManualTimer] = []
    private var timerSequence = 0
    private var nextPid: Int32 = 1000
    private var running: [String: ManualWorker] = [:]

    /// A fresh runtime at time zero.
    public init() {}

    /// The simulated workers currently running, by path.
    public var runningPaths: [String] { running.keys.sorted() }

    /// The simulated worker at `path`, if running.
    public func worker(at path: String) -> ManualWorker? { running[path] }

    // MARK: Driving

    /// Runs run-soon jobs until none is left (bounded: traps after a million, which means a
    /// job keeps re-enqueueing itself).
    public func runUntilIdle() {
        var budget = 1_000_000
        while !soon.isEmpty {
            let batch = soon
            soon.removeAll()
            for job in batch { job() }
            budget -= batch.count
            precondition(budget > 0, "run-soon jobs never settle")
        }
    }

    /// Advances the clock by `duration`, firing due timers in deadline order (ties in arming
    /// order) and running run-soon jobs after each.
    public func advance(by duration: Duration) {
        let target = nowNanoseconds.addingSaturating(duration.nanosecondsClamped)
        runUntilIdle()
        while let next = nextDueTimer(before: target) {
            nowNanoseconds = max(nowNanoseconds, next.deadline)
            next.deadline = .max
            next.fire()
            runUntilIdle()
        }
        nowNanoseconds = target
        runUntilIdle()
    }

    /// Ends the simulated worker at `path` as if it had exited so (delivered on this turn).
    /// - Returns: whether such a worker was running.
    @discardableResult
    public func exit(_ path: String, _ termination: WorkerTermination) -> Bool {
        guard let worker = running.removeValue(forKey: path) else { return false }
        worker.end(termination)
        runUntilIdle()
        return true
    }

    /// The time of the earliest armed timer, if any.
    public var nextTimerDeadline: Int64? {
        timers.filter { $0.deadline != .max }.map(\.deadline).min()
    }

    private func nextDueTimer(before target: Int64) -> ManualTimer? {
        var best: ManualTimer?
        for timer in timers where timer.deadline != .max && timer.deadline <= target {
            if best == nil || (timer.deadline, timer.sequence) < (best!.deadline, best!.sequence) { best = timer }
        }
        return best
    }

    // MARK: SupervisorRuntime

    /// The manual runtime has no thread of its own: every thread is fine.
    public func preconditionOnRuntimeThread(_ operation: @autoclosure () -> String) {}

    /// Queues `job`; it runs in ``runUntilIdle()`` or ``advance(by:)``, never in the caller's stack.
    public func runSoon(_ job: any RunSoonJob) {
        soon.append { job.runSoonJob() }
    }

    /// A timer on the virtual clock: it fires only when ``advance(by:)`` passes its deadline.
    public func makeTimer(_ fire: @escaping () -> Void) -> any RuntimeTimer {
        let timer = ManualTimer(runtime: self, fire: fire)
        timers.append(timer)
        return timer
    }

    /// Records the start of a simulated process (fake pid) or fails it as ``startFailures`` says.
    public func startProcess(_ spec: ProcessSpec, path: String, notify: NotifySetup,
                             onOutput: @escaping (_ stream: String, _ line: String) -> Void,
                             onNotice: @escaping (WorkerNotice) -> Void,
                             onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker {
        let worker = try start(path: path, pid: true, stopSignal: spec.stopSignal, onExit: onExit)
        worker.onOutput = onOutput
        worker.onNotice = onNotice
        worker.notifySetup = notify
        return worker
    }

    /// The simulated worker at `path` reports `notice` (`READY=1`, `WATCHDOG=1`, `STATUS=...`,
    /// or an async task's `SupervisedTask` call), delivered at once.
    /// - Returns: whether such a worker was running.
    @discardableResult
    public func notify(_ path: String, _ notice: WorkerNotice) -> Bool {
        guard let worker = running[path], let onNotice = worker.onNotice else { return false }
        onNotice(notice)
        runUntilIdle()
        return true
    }

    /// Starts a simulated probe attempt: it answers as ``probeAnswers`` says on the next turn,
    /// or never.
    public func startProbe(_ check: ProbeCheck, completion: @escaping (ProbeResult) -> Void) -> any RuntimeProbe {
        probeAttempts.append(check)
        let attempt = ManualProbe()
        if let answer = probeAnswers[check] {
            enqueue { [weak attempt] in
                guard let attempt, !attempt.cancelled else { return }
                attempt.cancelled = true
                completion(answer)
            }
        }
        return attempt
    }

    /// The simulated process at `path` writes `line` to a captured stream (`"stdout"` or
    /// `"stderr"`), delivered at once.
    /// - Returns: whether such a process was running.
    @discardableResult
    public func write(_ path: String, stream: String = "stdout", line: String) -> Bool {
        guard let worker = running[path], let onOutput = worker.onOutput else { return false }
        onOutput(stream, line)
        runUntilIdle()
        return true
    }

    /// Records the start of a simulated async task (its body is not run; ``notify(_:_:)``
    /// stands in for its `SupervisedTask` calls).
    public func startAsyncTask(_ body: @escaping @Sendable () async throws -> Void, path: String,
                               onNotice: @escaping (WorkerNotice) -> Void,
                               onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker {
        let worker = try start(path: path, pid: false, stopSignal: 0, onExit: onExit)
        worker.onNotice = onNotice
        return worker
    }

    private func start(path: String, pid: Bool, stopSignal: Int32,
                       onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> ManualWorker {
        if let message = startFailures[path] {
            throw SupervisionError(.startFailed, message)
        }
        actions.append(.start(path))
        var workerPid: Int32?
        if pid {
            nextPid += 1
            workerPid = nextPid
        }
        let worker = ManualWorker(runtime: self, path: path, pid: workerPid, stopSignal: stopSignal, onExit: onExit)
        running[path] = worker
        return worker
    }

    func enqueue(_ job: @escaping () -> Void) { soon.append(job) }

    func record(_ action: Action) { actions.append(action) }

    func removeRunning(_ worker: ManualWorker) {
        if running[worker.path] === worker { running[worker.path] = nil }
    }

    func nextSequence() -> Int {
        timerSequence += 1
        return timerSequence
    }

    func scheduleEnd(of worker: ManualWorker, after nanoseconds: Int64, _ termination: WorkerTermination) {
        let timer = ManualTimer(runtime: self) { [weak self, weak worker] in
            guard let self, let worker, self.running[worker.path] === worker else { return }
            self.running[worker.path] = nil
            worker.end(termination)
        }
        timers.append(timer)
        timer.arm(afterNanoseconds: nanoseconds)
    }
}

/// A simulated process or async task.
public final class ManualWorker: RunningWorker {
    /// Its path.
    public let path: String
    /// A fake pid for processes (1001, 1002, ...), `nil` for tasks.
    public let pid: Int32?
    /// Whether a stop was requested.
    public private(set) var stopRequested = false
    /// Whether it was killed.
    public private(set) var killed = false
    private let stopSignal: Int32
    private var onExit: ((WorkerTermination) -> Void)?
    /// Where a simulated process's captured lines go.
    var onOutput: ((_ stream: String, _ line: String) -> Void)?
    /// Where its notices go.
    var onNotice: ((WorkerNotice) -> Void)?
    /// What its supervisor asked to set up for its notices (processes).
    public internal(set) var notifySetup: NotifySetup = .none
    private unowned let runtime: ManualRuntime

    init(runtime: ManualRuntime, path: String, pid: Int32?, stopSignal: Int32, onExit: @escaping (WorkerTermination) -> Void) {
        self.runtime = runtime
        self.path = path
        self.pid = pid
        self.stopSignal = stopSignal
        self.onExit = onExit
    }

    func end(_ termination: WorkerTermination) {
        guard let onExit else { return }
        self.onExit = nil
        onExit(termination)
    }

    /// Records the stop request and ends the worker as its ``ManualRuntime/StopBehaviour`` says.
    public func requestStop() {
        runtime.record(.requestStop(path))
        stopRequested = true
        let termination: WorkerTermination = pid != nil ? .signaled(stopSignal) : .threw("CancellationError()")
        switch runtime.stopBehaviour[path] ?? .exitsPromptly {
        case .exitsPromptly:
            runtime.enqueue { [weak self] in
                guard let self, self.onExit != nil else { return }
                self.runtime.removeRunning(self)
                self.end(termination)
            }
        case .exitsAfter(let duration):
            runtime.scheduleEnd(of: self, after: duration.nanosecondsClamped, termination)
        case .ignores:
            break
        }
    }

    /// Kills a simulated process on the next turn; a task cannot be killed (`false`).
    public func kill() -> Bool {
        guard pid != nil else { return false }   // tasks cannot be killed
        runtime.record(.kill(path))
        killed = true
        runtime.enqueue { [weak self] in
            guard let self, self.onExit != nil else { return }
            self.runtime.removeRunning(self)
            self.end(.signaled(9))
        }
        return true
    }
}

final class ManualTimer: RuntimeTimer {
    var deadline: Int64 = .max
    var sequence = 0
    private let fireHandler: () -> Void
    private unowned let runtime: ManualRuntime
    private var closed = false

    init(runtime: ManualRuntime, fire: @escaping () -> Void) {
        self.runtime = runtime
        self.fireHandler = fire
    }

    func fire() { if !closed { fireHandler() } }

    func arm(afterNanoseconds nanoseconds: Int64) {
        guard !closed else { return }
        deadline = runtime.nowNanoseconds.addingSaturating(max(0, nanoseconds))
        sequence = runtime.nextSequence()
    }

    func disarm() { deadline = .max }

    func close() {
        closed = true
        deadline = .max
    }
}

/// A simulated probe attempt.
final class ManualProbe: RuntimeProbe {
    var cancelled = false
    func cancel() { cancelled = true }
}
