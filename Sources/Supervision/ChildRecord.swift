/// Where a child is in its life, as its supervisor sees it.
public enum ChildState: Sendable, Equatable, CustomStringConvertible {
    /// Not running: not started yet, or ended and not restarted.
    case idle
    /// Running.
    case running
    /// Asked to stop; waiting for it to end (or for its shutdown timeout).
    case stopping
    /// Waiting for its restart (backoff delay, or its group still stopping).
    case restarting
    /// Stopped by ``Supervisor/terminateChild(_:completion:)``; ``Supervisor/restartChild(_:)`` starts it again.
    case terminated

    /// The state's name.
    public var description: String {
        switch self {
        case .idle: return "idle"
        case .running: return "running"
        case .stopping: return "stopping"
        case .restarting: return "restarting"
        case .terminated: return "terminated"
        }
    }
}

/// The worker behind a running child.
enum ActiveWorker {
    case runtime(any RunningWorker)
    case loopTask(LoopTaskContext)
    case supervisor(Supervisor)
}

/// How a worker's end reached its supervisor.
enum Ending {
    case worker(WorkerTermination)
    case supervisor(ExitReason)
    case startFailed(String)
    case abandoned
}

/// Why a child is being stopped: decides what it becomes once it has ended.
enum StopPurpose {
    /// The supervisor shuts down: the child stays idle.
    case shutdown
    /// Part of a group restart: the child restarts once the group has stopped.
    case groupRestart(due: Int64)
    /// ``Supervisor/terminateChild(_:completion:)``: the child becomes terminated (or is removed).
    case terminate
    /// Its incarnation `generation` failed a readiness or liveness check: it ends with this
    /// reason, decided as a failure.
    case failed(ExitReason, generation: UInt64)
}

/// Stores `value` in `slot` and returns what was there. The caller drops the old value after
/// the access to `slot` has ended: used where that access is unchecked and the release could
/// run a `deinit` that calls back (see `ChildRecord.hot`, `Supervisor.book`).
@inline(__always)
func exchange<Value>(_ slot: inout Value, with value: Value) -> Value {
    var value = value
    swap(&value, &slot)
    return value
}

/// One child of a supervisor: its spec and its mutable state. Loop-confined.
final class ChildRecord {
    let id: String
    let path: String
    let spec: ChildSpec
    unowned let supervisor: Supervisor

    /// The fields every restart reads and writes, in one private field whose dynamic exclusivity
    /// checks are off (one of the five exceptions listed in docs/PERFORMANCE.md, with the
    /// measurement). Sound because it is loop-confined and the accessors below are the only way
    /// in: none of them calls out while it holds the access, and none releases a reference
    /// inside it (a worker or timer of a user-written runtime may have a `deinit` that calls
    /// back): old values are swapped out and dropped after the access.
    private struct Hot {
        var state: ChildState = .idle
        var worker: ActiveWorker?
        var generation: UInt64 = 0
        var lastExit: ExitReason?
        var stopPurpose: StopPurpose?
        var timer: (any RuntimeTimer)?
    }
    @exclusivity(unchecked) private var hot = Hot()

    var state: ChildState {
        get { hot.state }
        set {
            let old = hot.state
            hot.state = newValue
            guard let activeCount else { return }
            let wasActive = old == .running || old == .stopping
            let isActive = newValue == .running || newValue == .stopping
            if wasActive != isActive { activeCount.value += isActive ? 1 : -1 }
            if isSignificant {
                let wasAlive = wasActive || old == .restarting
                let isAlive = isActive || newValue == .restarting
                if wasAlive != isAlive { activeCount.significantAlive += isAlive ? 1 : -1 }
            }
        }
    }
    /// Its supervisor's counts of active children, while it is in its supervisor's list.
    var activeCount: ActiveChildCount?
    /// `spec.significant`, kept apart so that the state setter reads one flag.
    let isSignificant: Bool
    var worker: ActiveWorker? {
        get { hot.worker }
        set { withExtendedLifetime(exchange(&hot.worker, with: newValue)) {} }
    }
    /// Increments on every start; ends reported by an earlier incarnation are ignored.
    var generation: UInt64 {
        get { hot.generation }
        set { hot.generation = newValue }
    }
    var lastExit: ExitReason? {
        get { hot.lastExit }
        set { withExtendedLifetime(exchange(&hot.lastExit, with: newValue)) {} }
    }
    /// While stopping: why (plain values, nothing to release).
    var stopPurpose: StopPurpose? {
        get { hot.stopPurpose }
        set { hot.stopPurpose = newValue }
    }
    /// Its shutdown timer, made on first use and reused.
    var timer: (any RuntimeTimer)? {
        get { hot.timer }
        set { withExtendedLifetime(exchange(&hot.timer, with: newValue)) {} }
    }
    /// What the runtime kept from this child's last start (``SupervisorRuntime/startProcess(_:path:notify:cache:onOutput:onNotice:onExit:)``).
    var runtimeCache: AnyObject?
    /// Its start sequence number in its supervisor: never changes, so it orders children that
    /// are due together (``slotIndex`` changes when the list compacts).
    var sequence = 0
    /// Its slot in its supervisor's ``ChildList`` while it is there, else -1.
    var slotIndex = -1
    var restartCount = 0
    /// Consecutive restarts without a stable run, for backoff.
    var consecutiveRestarts = 0
    var startedAt: Int64 = 0
    /// When `state == .restarting`: the earliest time to start it again. The restart schedule's
    /// key: written only through `RestartSchedule.reschedule` or before `insert` (a direct
    /// write to a scheduled record would break the heap's order).
    var restartDue: Int64 = 0
    /// Its place in its supervisor's ``RestartSchedule`` while it waits there, else -1.
    var scheduleIndex = -1
    /// While stopping: whether it was asked, and whether it was killed.
    var stopRequested = false
    /// When the stop timer of the current stop fires (runtime nanoseconds), if armed.
    var stopTimerDue: Int64?
    var killSent = false
    var stopCompletions: [(ExitReason) -> Void] = []
    /// The latest nested supervisor (kept after it ended, for status snapshots).
    var lastNestedSupervisor: Supervisor?
    /// Set once removed from its supervisor (or when the supervisor went away).
    var removed = false

    /// Whether the current incarnation is ready (see ``Readiness``; a nested supervisor once
    /// its children have started).
    var isReady = false
    /// Its readiness and liveness settings, when not the defaults.
    let healthSettings: HealthSettings?
    /// Their tracking (timers, probe), made at the first start that needs it.
    var health: ChildHealth?
    /// The last `STATUS=` it sent.
    var statusText: String?
    /// Its metrics, while a ``SupervisorMetrics`` reports the tree (created at its first event).
    var metrics: SupervisorMetrics.ChildMetrics?

    /// The start closure of a loop task, kept apart so that restarts do not copy the spec's enum.
    let loopTaskStart: ((LoopTaskContext) -> Void)?
    /// The spec's backoff facts a restart decision needs, computed once rather than with
    /// `Duration` arithmetic on every restart.
    let hasBackoff: Bool
    let backoffResetAfter: Int64

    init(spec: ChildSpec, path: String, supervisor: Supervisor) {
        self.id = spec.id
        self.spec = spec
        if case .loopTask(let start) = spec.kind { loopTaskStart = start } else { loopTaskStart = nil }
        isSignificant = spec.significant
        healthSettings = spec.health
        hasBackoff = !spec.backoff.isNone
        backoffResetAfter = spec.backoff.resetAfter.nanosecondsClamped
        self.path = path
        self.supervisor = supervisor
    }

    var isActive: Bool { state == .running || state == .stopping }

    var pid: Int32? {
        if case .runtime(let worker) = worker { return worker.pid }
        return nil
    }

    deinit {
        // Nothing may call back into a record that is gone.
        timer?.close()
        health?.close()
        lastNestedSupervisor?.detachFromParent()
    }

    /// A worker of this record ended (called by runtimes and loop tasks, on the runtime thread).
    /// Ignored once the record was removed or its supervisor is gone.
    func workerEnded(generation: UInt64, _ termination: WorkerTermination) {
        guard !removed else { return }
        supervisor.enqueueEnding(self, generation: generation, .worker(termination))
    }

    /// A worker of this record reported a notice (runtimes and loop tasks, on the runtime
    /// thread). Ignored once removed, or from an earlier incarnation.
    func noticeArrived(generation: UInt64, _ notice: WorkerNotice) {
        guard !removed, generation == self.generation, isActive else { return }
        supervisor.perform { supervisor.handleNotice(self, notice) }
    }

    /// The exit reason for how the worker ended, given how the supervisor was treating it.
    func exitReason(for ending: Ending) -> ExitReason {
        switch ending {
        case .abandoned: return .abandoned
        case .startFailed(let message): return .startFailed(message)
        case .supervisor(let reason):
            if stopRequested && !killSent { return reason == .intensityExceeded ? reason : .shutdown }
            return killSent ? .killed : reason
        case .worker(let termination):
            if killSent { return .killed }
            if stopRequested { return .shutdown }
            switch termination {
            case .exited(let code):
                if case .process(let process) = spec.kind, process.successExitCodes.contains(code) { return .normal }
                return code == 0 ? .normal : .exited(code)
            case .signaled(let signal):
                if case .process(let process) = spec.kind, process.successSignals.contains(signal) { return .normal }
                return .signaled(signal)
            case .returned: return .normal
            case .threw(let message): return .failure(message)
            }
        }
    }
}

/// Where one incarnation of a runtime worker (a process or an async task) reports back: its
/// output lines, notices and end. The runtime's callbacks each capture this one object, and a
/// closure that captures a single class reference needs no context of its own: a start
/// allocates this and nothing more (three closures with their own captures were three
/// allocations, on every restart).
///
/// Weak: a process can outlive a record that was removed and a supervisor that was dropped.
/// Lines can still arrive after the exit, even after a temporary child's record is gone: they
/// are reported as long as the supervisor exists.
final class WorkerReports {
    private weak var record: ChildRecord?
    private weak var supervisor: Supervisor?
    private let generation: UInt64
    private let path: String
    private let restartCount: Int

    init(_ record: ChildRecord, supervisor: Supervisor, generation: UInt64) {
        self.record = record
        self.supervisor = supervisor
        self.generation = generation
        path = record.path
        restartCount = record.restartCount
    }

    func output(stream: String, line: String) {
        supervisor?.emitOutput(path: path, restartCount: restartCount, stream: stream, line: line)
    }

    func notice(_ notice: WorkerNotice) {
        record?.noticeArrived(generation: generation, notice)
    }

    func ended(_ termination: WorkerTermination) {
        record?.workerEnded(generation: generation, termination)
    }
}
