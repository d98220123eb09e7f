import Logging

/// An Erlang/OTP-style supervisor: starts its children in order, watches them, restarts them
/// by its strategy with per-child backoff, gives up when restarts exceed its intensity, and stops
/// its children in reverse order.
///
/// A supervisor is confined to its runtime's thread (the loop thread for the libuv runtime):
/// it is not `Sendable`. It reads time and arms timers only through its ``SupervisorRuntime``,
/// so on the manual runtime every run is deterministic.
///
/// Internally every change runs to completion before the next one starts: ends reported while
/// the supervisor is busy (a loop task that fails inside its own start, a task that finishes
/// inside its stop request) wait in a mailbox and are handled right after, never re-entrantly.
///
/// ```swift
/// let root = try Supervisor(SupervisorSpec(strategy: .oneForOne, children: [
///     ChildSpec(id: "web", .process(ProcessSpec(argv: ["/usr/bin/web"])), backoff: .exponential()),
/// ]), runtime: runtime)
/// root.onEvent { print($0) }
/// root.start()
/// ```
public final class Supervisor {

    /// The lifecycle of a supervisor.
    public enum State: Sendable, Equatable {
        /// Created, not started.
        case idle
        /// Supervising.
        case running
        /// Stopping its children in reverse order, then ending with this reason.
        case shuttingDown(ExitReason)
        /// Ended with this reason.
        case stopped(ExitReason)
    }

    /// `root`, or `root/db` for a nested supervisor.
    public let path: String
    /// The spec it was created with (children added at run time are not in it).
    public let spec: SupervisorSpec
    /// Where the whole tree's events go.
    public let events: EventSink
    /// The current state.
    public private(set) var state: State = .idle {
        didSet { isRunning = state == .running }
    }
    /// `state == .running`, kept as a flag: matching the enum copies its `ExitReason` payload
    /// (reference counting), and the restart path asks several times per restart.
    private(set) var isRunning = false

    let runtime: any SupervisorRuntime
    let random: RandomSource
    /// The children, in start order, indexed by id.
    private(set) var childList = ChildList()
    private unowned var parentRecord: ChildRecord?
    private var parentGeneration: UInt64 = 0
    /// Until the children of the first start have all been started (each ready, or failed):
    /// then a nested supervisor is ready for its parent, as OTP's `start_link` returns.
    private var initialSequence = false
    private var terminationHandlers: [(ExitReason) -> Void] = []

    /// The bookkeeping every restart touches, in one private field whose dynamic exclusivity
    /// checks are off (one of the five exceptions listed in docs/PERFORMANCE.md, with the
    /// measurement). Sound because the supervisor is confined to its runtime's thread and
    /// nothing can run while an access to it is open: the accessors below are the only way in,
    /// they never call out, and they never release a reference inside the access (releasing a
    /// record or a timer can run a `deinit`, which may be user code that calls back into this
    /// supervisor). Values are swapped out and dropped after the access instead.
    private struct Bookkeeping {
        // Mailbox: ends reported while busy, oldest first. The oldest waits in its own slot
        // (the common case is one end at a time, a task failing inside its own start), later
        // ones in the array, so the common case allocates nothing.
        var firstMail: Mail?
        var laterMail: [Mail] = []
        var laterMailHead = 0
        var processing = false
        // Restarts waiting for their delay or for their group to stop, earliest due first. A
        // child is `.restarting` while it is here, or once due while it waits in `startQueue`
        // for its turn (or in a restart pass's local list, between the two).
        var schedule = RestartSchedule()
        var intensity: IntensityWindow
        var restartTimer: (any RuntimeTimer)?
    }
    @exclusivity(unchecked) private var book: Bookkeeping

    private var firstMail: Mail? {
        get { book.firstMail }
        set { withExtendedLifetime(exchange(&book.firstMail, with: newValue)) {} }
    }
    private var laterMail: [Mail] {
        _read { yield book.laterMail }
    }
    private var laterMailHead: Int {
        get { book.laterMailHead }
        set { book.laterMailHead = newValue }
    }
    private var processing: Bool {
        get { book.processing }
        set { book.processing = newValue }
    }
    private var intensity: IntensityWindow {
        _read { yield book.intensity }
        _modify { yield &book.intensity }
    }
    private var restartTimer: (any RuntimeTimer)? {
        get { book.restartTimer }
        set { withExtendedLifetime(exchange(&book.restartTimer, with: newValue)) {} }
    }

    /// Adds `record` to the restart schedule at `due`.
    private func schedule(_ record: ChildRecord, due: Int64) {
        record.restartDue = due
        book.schedule.insert(record)
    }

    /// Takes `record` out of the restart schedule, if it waits there. The schedule's reference
    /// is dropped after the unchecked access (the caller holds one of its own anyway).
    private func unschedule(_ record: ChildRecord) {
        withExtendedLifetime(book.schedule.remove(record)) {}
    }

    /// Empties the mailbox's array outside the unchecked access: the list is taken out, emptied
    /// (a mail may hold the last reference to a removed record, whose `deinit` may call back),
    /// and put back, with anything a callback added meanwhile.
    private func clearLaterMail() {
        var list: [Mail] = []
        swap(&list, &book.laterMail)
        book.laterMailHead = 0
        list.removeAll(keepingCapacity: true)
        swap(&list, &book.laterMail)
        if !list.isEmpty { book.laterMail.append(contentsOf: list) }
    }

    // Ordered stops: one child at a time, each ended (or killed/abandoned) before the next.
    private var stopQueue: [(record: ChildRecord, purpose: StopPurpose)] = []
    private var stopHead = 0
    private var currentStop: ChildRecord?
    private var shutdownDeadline: Int64?

    // Ordered starts: a child that must get ready holds back the siblings after it (the gate)
    // until it is ready or has ended, as OTP's start_link; the rest wait here, in order.
    private var startQueue: [(record: ChildRecord, isRestart: Bool)] = []
    private var startHead = 0
    private var startGate: ChildRecord?

    /// The run-soon entry of a restart pass (queued at most once at a time).
    private let restartPass = RestartPass()
    private var dynamicCounter = 0

    /// Creates a root supervisor after validating `spec` (and every nested spec): nothing starts
    /// until ``start()``.
    /// - Parameters:
    ///   - spec: the tree.
    ///   - name: the root's path element (default `root`).
    ///   - runtime: what runs the workers and the clock (`UVRuntime`, `DispatchRuntime`,
    ///     `ManualRuntime`).
    ///   - logger: events are also logged here.
    ///   - randomSeed: seeds backoff jitter (default: a random seed); fix it for reproducible runs.
    /// - Throws: ``SupervisionError`` for the first invalid field, naming its path.
    public convenience init(
        _ spec: SupervisorSpec,
        name: String = "root",
        runtime: any SupervisorRuntime,
        logger: Logger? = nil,
        randomSeed: UInt64? = nil
    ) throws(SupervisionError) {
        if name.isEmpty || name.contains("/") {
            throw SupervisionError(.invalidID, "supervisor name \"\(name)\" must be non-empty and contain no \"/\"")
        }
        try Validation.validate(spec, path: name)
        var systemRandom = SystemRandomNumberGenerator()
        self.init(validated: spec, path: name, runtime: runtime, events: EventSink(logger: logger),
                  random: RandomSource(seed: randomSeed ?? systemRandom.next()))
    }

    init(validated spec: SupervisorSpec, path: String, runtime: any SupervisorRuntime, events: EventSink, random: RandomSource) {
        self.spec = spec
        self.path = path
        self.runtime = runtime
        self.events = events
        self.random = random
        self.book = Bookkeeping(intensity: IntensityWindow(spec.intensity))
        for child in spec.children {
            childList.append(ChildRecord(spec: child, path: path + "/" + child.id, supervisor: self))
        }
    }

    deinit {
        // A supervisor dropped while running: its timers must not fire into freed memory, and
        // workers that end later must find their records detached.
        restartTimer?.close()
        for case let record? in childList.slots {
            record.removed = true
            record.timer?.close()
            record.timer = nil
        }
    }

    /// Called when the parent record goes away (the parent supervisor was dropped).
    func detachFromParent() {
        parentRecord = nil
    }

    var now: Int64 { runtime.nowNanoseconds }

    // MARK: Starting

    /// Starts the children in spec order. A child that fails to start is a failed child
    /// (restarted with its backoff, counted toward intensity), never a tight loop.
    public func start() {
        runtime.preconditionOnRuntimeThread("Supervisor.start")
        guard case .idle = state else { return }
        perform {
            state = .running
            initialSequence = true
            for record in childList.live { startQueue.append((record, false)) }
            pumpStarts()
            emitSupervisorEvent(.supervisorStarted)
        }
    }

    func startRecord(_ record: ChildRecord, isRestart: Bool, now: Int64? = nil) {
        record.generation &+= 1
        record.stopRequested = false
        record.stopTimerDue = nil
        record.killSent = false
        record.stopPurpose = nil
        if isRestart { record.restartCount += 1 }
        record.startedAt = now ?? self.now
        if record.statusText != nil { record.statusText = nil }   // the last incarnation's
        record.state = .running
        // Ready at once unless a check says otherwise (a nested supervisor: once its own
        // children have started).
        record.isReady = record.healthSettings == nil && record.loopTaskStart != nil
        let generation = record.generation
        if let startTask = record.loopTaskStart {
            // The hot path (loop tasks): no copy of the spec's enum. A fresh context every time:
            // reusing an ended one that looked unreferenced let a weak or unowned reference of
            // the old incarnation (a timer closure's) report for the new one.
            let context = LoopTaskContext(path: record.path, restartCount: record.restartCount, record: record, generation: generation)
            record.worker = .loopTask(context)
            if events.isActive { emit(record, .started(pid: nil)) }
            if let settings = record.healthSettings { beginHealthChecks(record, settings) }
            startTask(context)
            return
        }
        if record.healthSettings == nil && !record.spec.kind.isSupervisor { record.isReady = true }
        switch record.spec.kind {
        case .process(let process):
            do {
                let reports = WorkerReports(record, supervisor: self, generation: generation)
                let setup = record.healthSettings?.notifySetup ?? .none
                let worker = try runtime.startProcess(process, path: record.path, notify: setup, cache: &record.runtimeCache,
                                                      onOutput: { reports.output(stream: $0, line: $1) },
                                                      onNotice: { reports.notice($0) },
                                                      onExit: { reports.ended($0) })
                // A temporary child is never started again: nothing to keep for it.
                if record.spec.restart == .temporary { record.runtimeCache = nil }
                record.worker = .runtime(worker)
                emit(record, .started(pid: worker.pid))
                if let settings = record.healthSettings { beginHealthChecks(record, settings) }
            } catch {
                startFailed(record, generation: generation, message: error.message)
            }
        case .asyncTask(let taskBody):
            var body = taskBody
            if let argument = record.spec.argumentBox {
                body = { try await ChildArgument.$current.withValue(argument.value) { try await taskBody() } }
            }
            do {
                let reports = WorkerReports(record, supervisor: self, generation: generation)
                let worker = try runtime.startAsyncTask(body, path: record.path, onNotice: { reports.notice($0) },
                                                        onExit: { reports.ended($0) })
                record.worker = .runtime(worker)
                emit(record, .started(pid: nil))
                if let settings = record.healthSettings { beginHealthChecks(record, settings) }
            } catch {
                startFailed(record, generation: generation, message: error.message)
            }
        case .loopTask(let startTask):
            let context = LoopTaskContext(path: record.path, restartCount: record.restartCount, record: record, generation: generation)
            record.worker = .loopTask(context)
            emit(record, .started(pid: nil))
            if let settings = record.healthSettings { beginHealthChecks(record, settings) }
            startTask(context)
        case .supervisor(let nestedSpec):
            let nested = Supervisor(validated: nestedSpec, path: record.path, runtime: runtime, events: events, random: random)
            nested.parentRecord = record
            nested.parentGeneration = generation
            record.worker = .supervisor(nested)
            record.lastNestedSupervisor = nested
            emit(record, .started(pid: nil))
            nested.start()
        }
    }

    private func startFailed(_ record: ChildRecord, generation: UInt64, message: String) {
        emit(record, .startFailed(message))
        enqueueEnding(record, generation: generation, .startFailed(message))
    }

    // MARK: Mailbox

    /// Runs `body`, then every end reported meanwhile, one at a time.
    func perform(_ body: () -> Void) {
        if processing {
            body()
            return
        }
        processing = true
        body()
        while true {
            if let mail = book.firstMail.take() {
                handleEnding(mail.record, generation: mail.generation, mail.ending)
            } else if laterMailHead < laterMail.count {
                let mail = laterMail[laterMailHead]
                laterMailHead += 1
                handleEnding(mail.record, generation: mail.generation, mail.ending)
            } else if !laterMail.isEmpty {
                // All handled: empty it (dropping a mail can run a deinit that reports more).
                clearLaterMail()
            } else {
                break
            }
        }
        processing = false
    }

    func enqueueEnding(_ record: ChildRecord, generation: UInt64, _ ending: Ending) {
        if processing {
            let mail = Mail(record: record, generation: generation, ending: ending)
            if firstMail == nil && laterMailHead >= laterMail.count {
                firstMail = mail
            } else {
                book.laterMail.append(mail)
            }
            return
        }
        // Not busy (a worker ending on its own): handle it at once, then whatever it caused.
        perform { handleEnding(record, generation: generation, ending) }
    }

    private func handleEnding(_ record: ChildRecord, generation: UInt64, _ ending: Ending) {
        guard !record.removed, generation == record.generation, record.isActive else { return }
        // A child stopped for failing a check ends with that failure, however it ended.
        var reason = record.exitReason(for: ending)
        if case .failed(let failure, _) = record.stopPurpose { reason = failure }
        let wasStopping = record.state == .stopping
        record.isReady = false
        record.health?.reset()
        // The start sequence it was holding back goes on once this end has been decided.
        let wasGate = startGate === record
        if wasGate { startGate = nil }
        defer { if wasGate { pumpStarts() } }
        if case .loopTask(let context) = record.worker { context.abandon() }
        record.worker = nil
        record.timer?.disarm()
        record.lastExit = reason
        record.state = .idle
        emit(record, .exited(reason))
        // An event handler may already have acted on this child (restarted, terminated or
        // deleted it): then that decision stands, and this end decides nothing more.
        let untouched = !record.removed && record.generation == generation && record.state == .idle
        if wasStopping {
            let purpose = record.stopPurpose ?? .shutdown
            record.stopPurpose = nil
            if currentStop === record { currentStop = nil }
            if untouched { settle(record, purpose: purpose, reason: reason) }
            pumpStops()
            return
        }
        guard isRunning, untouched else { return }
        decideRestart(record, reason: reason)
    }

    // MARK: Restart decisions

    private func decideRestart(_ record: ChildRecord, reason: ExitReason) {
        let restart: Bool
        switch record.spec.restart {
        case .permanent: restart = true
        case .transient: restart = reason.isAbnormal
        case .temporary: restart = false
        }
        if !restart {
            let generation = record.generation
            emit(record, .notRestarted(why: record.spec.restart == .temporary
                ? "temporary" : "transient child ended with \(reason)"))
            // A handler that restarted (or deleted) it meanwhile has decided instead.
            guard !record.removed, record.generation == generation, record.state == .idle else { return }
            if record.spec.restart == .temporary || spec.isDynamic { remove(record) }
            if record.spec.significant { checkAutoShutdown() }
            return
        }
        let now = self.now
        if !intensity.recordRestart(at: now) {
            emitSupervisorEvent(.intensityExceeded(maxRestarts: spec.intensity.maxRestarts, period: spec.intensity.period))
            beginShutdown(.intensityExceeded)
            return
        }
        if now - record.startedAt >= record.backoffResetAfter { record.consecutiveRestarts = 0 }
        record.consecutiveRestarts += 1
        let delay = record.hasBackoff
            ? record.spec.backoff.delay(forAttempt: record.consecutiveRestarts, using: &random.generator) : 0
        let due = now.addingSaturating(delay)
        markRestarting(record, due: due, decidedAt: now,
                       why: record.hasBackoff ? "backoff step \(record.consecutiveRestarts)" : "immediate")
        // Event handlers run inside this decision and may shut the supervisor down or change
        // siblings: every step below checks again.
        guard isRunning else { return }
        switch spec.strategy {
        case .oneForOne:
            break
        case .oneForAll, .restForOne:
            let group: [ChildRecord]
            if spec.strategy == .oneForAll {
                group = childList.live
            } else {
                group = childList.children(after: record)
            }
            let why = "\(spec.strategy == .oneForAll ? "oneForAll" : "restForOne") with \(record.id)"
            var stops: [(record: ChildRecord, purpose: StopPurpose)] = []
            for sibling in group.reversed() where sibling !== record {
                guard isRunning else { break }
                if sibling.removed { continue }   // deleted by a handler meanwhile
                switch sibling.state {
                case .running:
                    stops.append((sibling, .groupRestart(due: due)))
                    if sibling.spec.restart != .temporary { emitDelay(sibling, due: due, decidedAt: now, why: why) }
                case .stopping:
                    if case .groupRestart(let existing) = sibling.stopPurpose {
                        sibling.stopPurpose = .groupRestart(due: max(existing, due))
                    }
                case .restarting:
                    // Waiting in the schedule, or already due and queued behind the start gate:
                    // either way it now waits for this decision's due time, in the schedule.
                    schedule(sibling, due: max(sibling.restartDue, due))
                case .idle, .terminated:
                    if sibling.spec.restart == .temporary {
                        remove(sibling)
                    } else {
                        markRestarting(sibling, due: due, decidedAt: now, why: why)
                    }
                }
            }
            if isRunning { enqueueStops(stops) }
        }
        armRestartPass(now: now)
    }

    private func markRestarting(_ record: ChildRecord, due: Int64, decidedAt: Int64, why: @autoclosure () -> String) {
        record.state = .restarting
        schedule(record, due: due)
        emitDelay(record, due: due, decidedAt: decidedAt, why: why())
    }

    private func emitDelay(_ record: ChildRecord, due: Int64, decidedAt: Int64, why: @autoclosure () -> String) {
        if events.isActive {
            emit(record, .restartScheduled(delay: .nanoseconds(max(0, due - decidedAt)), why: why()))
        }
    }

    private func checkAutoShutdown() {
        switch spec.autoShutdown {
        case .never:
            return
        case .anySignificant:
            beginShutdown(.shutdown)
        case .allSignificant:
            if childList.activeCount.significantAlive == 0 { beginShutdown(.shutdown) }
        }
    }

    /// Schedules the next restart pass: on the next turn if one is due, else at the earliest due time.
    private func armRestartPass(now knownNow: Int64? = nil) {
        guard isRunning, let earliest = book.schedule.first?.restartDue else { return }
        let now = knownNow ?? self.now
        let wait = earliest - now
        if wait <= 0 {
            restartTimer?.disarm()
            if restartPass.supervisor == nil {
                // The entry holds the supervisor until the pass has run.
                restartPass.supervisor = self
                runtime.runSoon(restartPass)
            }
        } else {
            if restartTimer == nil {
                // Weak: a timer event may still be queued when a dropped supervisor goes away.
                // (Made only for delayed restarts, so zero-backoff restarts stay off the weak
                // reference side table.)
                restartTimer = runtime.makeTimer { [weak self] in
                    guard let self else { return }
                    self.perform { self.runDueRestarts() }
                }
            }
            restartTimer?.arm(afterNanoseconds: wait)
        }
    }

    /// The run-soon entry of a restart pass. It references its supervisor only while queued,
    /// so the two form no lasting cycle, and a supervisor dropped meanwhile still gets its pass.
    private final class RestartPass: RunSoonJob {
        var supervisor: Supervisor?

        func runSoonJob() {
            guard let supervisor = supervisor.take() else { return }
            supervisor.perform { supervisor.runDueRestarts() }
        }
    }

    private func runDueRestarts() {
        guard isRunning, currentStop == nil, stopHead >= stopQueue.count else { return }
        let now = self.now
        // Only the due children are touched: O(due × log waiting), whatever else waits.
        guard let first = takeDue(now: now) else { return armRestartPass(now: now) }
        guard let second = takeDue(now: now) else {
            // The common case (one child crash-looping): no allocation.
            if let gate = startGate, first.sequence < gate.sequence {
                startIfStillDue(first, isRestart: true, now: now, mayHoldSequence: false)
            } else if startGate == nil && startHead >= startQueue.count {
                startIfStillDue(first, isRestart: true, now: now)
            } else {
                startQueue.append((first, true))
            }
            return armRestartPass(now: now)
        }
        // Several due at once (a group restart): they start in start order, each waiting for
        // the one before it to be ready. While a start sequence is held by a child that is not
        // ready yet, the children before it in start order start at once (nothing waits for
        // them); the ones after it queue behind it.
        var due = [first, second]
        while let next = takeDue(now: now) { due.append(next) }
        due.sort { $0.sequence < $1.sequence }
        if let gate = startGate {
            let gateSequence = gate.sequence
            for record in due where record.sequence < gateSequence {
                startIfStillDue(record, isRestart: true, now: now, mayHoldSequence: false)
            }
            for record in due where record.sequence >= gateSequence { startQueue.append((record, true)) }
        } else {
            for record in due { startQueue.append((record, true)) }
            pumpStarts(now: now)
        }
        armRestartPass(now: now)
    }

    /// Starts the queued children in order until one must get ready first (the gate) or none
    /// is left; then, after the first start, reports this supervisor ready to its parent.
    func pumpStarts(now: Int64? = nil) {
        while startGate == nil && startHead < startQueue.count && isRunning {
            let (record, isRestart) = startQueue[startHead]
            startHead += 1
            startIfStillDue(record, isRestart: isRestart, now: now)
        }
        guard startGate == nil && startHead >= startQueue.count else { return }
        if !startQueue.isEmpty {
            startQueue.removeAll(keepingCapacity: startQueue.count < 1024)
            startHead = 0
        }
        if initialSequence && isRunning {
            initialSequence = false
            reportReadyToParent()
        }
    }

    /// Starts a queued child unless something changed meanwhile (it was terminated, deleted,
    /// restarted by hand, or its group failed again); holds the sequence if it must get ready.
    private func startIfStillDue(_ record: ChildRecord, isRestart: Bool, now: Int64? = nil, mayHoldSequence: Bool = true) {
        guard !record.removed, record.state == (isRestart ? .restarting : .idle) else { return }
        // Back in the schedule: a later group decision moved its restart (it starts from there).
        if isRestart && book.schedule.contains(record) { return }
        startRecord(record, isRestart: isRestart, now: now)
        if mayHoldSequence && record.state == .running && !record.isReady { startGate = record }
    }

    /// A child became ready: the start sequence it held goes on.
    func childBecameReady(_ record: ChildRecord) {
        record.isReady = true
        if startGate === record {
            startGate = nil
            pumpStarts()
        }
    }

    private func reportReadyToParent() {
        guard let parentRecord else { return }
        let generation = parentGeneration
        let parent = parentRecord.supervisor
        parent.perform {
            guard !parentRecord.removed, parentRecord.generation == generation,
                  parentRecord.state == .running, !parentRecord.isReady else { return }
            parent.childBecameReady(parentRecord)
        }
    }

    /// Takes the child due first out of the schedule if it is due by `now`.
    private func takeDue(now: Int64) -> ChildRecord? {
        guard let first = book.schedule.first, first.restartDue <= now else { return nil }
        return book.schedule.removeFirst()
    }

    // MARK: Stopping

    func enqueueStops(_ stops: [(record: ChildRecord, purpose: StopPurpose)]) {
        stopQueue.append(contentsOf: stops)
        pumpStops()
    }

    /// Stops queued children one at a time.
    private func pumpStops() {
        while currentStop == nil && stopHead < stopQueue.count {
            let (record, purpose) = stopQueue[stopHead]
            stopHead += 1
            if record.removed { continue }
            // A check failed by an earlier incarnation concerns only that one.
            if case .failed(_, let generation) = purpose, generation != record.generation { continue }
            switch record.state {
            case .running:
                beginStop(record, purpose: purpose)
                if record.state == .stopping { currentStop = record }
            case .stopping:
                currentStop = record
            case .restarting, .idle, .terminated:
                settle(record, purpose: purpose, reason: nil)
            }
        }
        if currentStop == nil && stopHead >= stopQueue.count {
            stopQueue.removeAll(keepingCapacity: true)
            stopHead = 0
            if case .shuttingDown(let reason) = state {
                finishShutdown(reason)
            } else {
                armRestartPass()
            }
        }
    }

    private func beginStop(_ record: ChildRecord, purpose: StopPurpose) {
        record.state = .stopping
        record.stopPurpose = purpose
        record.stopRequested = true
        emit(record, .stopping)
        var timeout: Int64?
        switch record.spec.effectiveShutdown {
        case .brutalKill: timeout = 0
        case .timeout(let duration): timeout = duration.nanosecondsClamped
        case .infinity: timeout = nil
        }
        if let deadline = shutdownDeadline {
            let left = max(0, deadline - now)
            timeout = min(timeout ?? left, left)
        }
        if timeout == 0 {
            kill(record)
            return
        }
        switch record.worker {
        case .runtime(let worker): worker.requestStop()
        case .loopTask(let context): context.requestStop()
        case .supervisor(let nested): nested.requestShutdown(deadline: shutdownDeadline)
        case nil: break
        }
        if let timeout, record.state == .stopping {
            armStopTimer(record, after: timeout)
        }
    }

    private func armStopTimer(_ record: ChildRecord, after nanoseconds: Int64) {
        if record.timer == nil {
            record.timer = runtime.makeTimer { [weak self, weak record] in
                guard let self, let record else { return }
                self.perform {
                    if record.state == .stopping && !record.killSent { self.kill(record) }
                }
            }
        }
        record.timer?.arm(afterNanoseconds: nanoseconds)
        record.stopTimerDue = now + nanoseconds
    }

    /// Kills a stopping child: SIGKILL for processes, brutal stop for supervisors; tasks cannot
    /// be killed, so they are abandoned (reported, and no longer supervised).
    private func kill(_ record: ChildRecord) {
        record.killSent = true
        let generation = record.generation
        switch record.worker {
        case .runtime(let worker):
            if worker.kill() {
                emit(record, .killed)
            } else {
                // An async task cannot be killed. A stop with no time left (a brutal kill, an
                // expired deadline) never asked it to stop: cancel it now, so that it ends soon
                // even unsupervised (its runtime can wait for it before closing its loop).
                worker.requestStop()
                emit(record, .abandoned)
                enqueueEnding(record, generation: generation, .abandoned)
            }
        case .loopTask(let context):
            context.abandon()
            emit(record, .abandoned)
            enqueueEnding(record, generation: generation, .abandoned)
        case .supervisor(let nested):
            emit(record, .killed)
            nested.forceStop()
        case nil:
            enqueueEnding(record, generation: generation, .abandoned)
        }
    }

    /// What a child becomes once stopped (or when a stop finds it not running).
    private func settle(_ record: ChildRecord, purpose: StopPurpose, reason: ExitReason?) {
        let completions = record.stopCompletions
        record.stopCompletions = []
        if case .shuttingDown = state {
            unschedule(record)
            record.state = .idle
        } else {
            switch purpose {
            case .shutdown:
                record.state = .idle
            case .groupRestart(let due):
                if record.spec.restart == .temporary {
                    remove(record)
                } else if record.state != .restarting {
                    record.state = .restarting
                    schedule(record, due: due)
                }
            case .failed(let failure, _):
                // Stopped for failing a check: decided as the failure it is (unless it had
                // already ended by itself, and that end was decided).
                if reason != nil && isRunning { decideRestart(record, reason: failure) }
            case .terminate:
                unschedule(record)
                if record.spec.restart == .temporary || spec.isDynamic {
                    remove(record)
                } else {
                    record.state = .terminated
                }
            }
        }
        for completion in completions { completion(reason ?? record.lastExit ?? .shutdown) }
    }

    private func remove(_ record: ChildRecord) {
        guard !record.removed else { return }
        record.removed = true
        record.state = .idle
        record.timer?.close()
        record.timer = nil
        childList.remove(record)
        unschedule(record)
        emit(record, .removed)
    }

    /// Begins the supervisor's own end: stop everything in reverse start order, then report.
    func beginShutdown(_ reason: ExitReason) {
        switch state {
        case .running:
            break
        case .idle:
            state = .shuttingDown(reason)
            finishShutdown(reason)
            return
        case .shuttingDown, .stopped:
            return
        }
        state = .shuttingDown(reason)
        emitSupervisorEvent(.supervisorStopping(reason))
        restartTimer?.disarm()
        let waiting = book.schedule.removeAll()
        for record in waiting where record.state == .restarting { record.state = .idle }
        // Children still waiting for their turn to start stay down.
        for (record, isRestart) in startQueue[startHead...] where isRestart && record.state == .restarting { record.state = .idle }
        startQueue.removeAll()
        startHead = 0
        startGate = nil
        initialSequence = false
        // A stop in progress finishes first; then every child, last started first.
        stopQueue.removeAll(keepingCapacity: true)
        stopHead = 0
        for record in childList.live.reversed() { stopQueue.append((record, .shutdown)) }
        pumpStops()
    }

    /// Stop request from a parent (or the user), with an optional absolute deadline.
    func requestShutdown(deadline: Int64?) {
        perform {
            let previous = shutdownDeadline
            if let deadline { shutdownDeadline = min(previous ?? deadline, deadline) }
            // A tighter deadline applies to the child being stopped now as well; a later one
            // changes nothing (the earlier deadline and the child's own timeout stand).
            if case .shuttingDown = state, let effective = shutdownDeadline, effective != previous,
               let current = currentStop, !current.killSent {
                let left = max(0, effective - now)
                if left == 0 {
                    kill(current)
                } else if current.stopTimerDue.map({ now + left < $0 }) ?? true {
                    armStopTimer(current, after: left)
                }
            }
            beginShutdown(.shutdown)
        }
    }

    /// Ends at once: every child is killed (tasks abandoned) in reverse order without waiting
    /// for stop requests. Used when this supervisor itself is killed by its parent.
    func forceStop() {
        requestShutdown(deadline: now)
    }

    private func finishShutdown(_ reason: ExitReason) {
        state = .stopped(reason)
        restartTimer?.close()
        restartTimer = nil
        for record in childList.live {
            record.timer?.close()
            record.timer = nil
        }
        emitSupervisorEvent(.supervisorStopped(reason))
        if let parentRecord {
            parentRecord.supervisor.enqueueEnding(parentRecord, generation: parentGeneration, .supervisor(reason))
        } else {
            events.finishStreams()
        }
        let handlers = terminationHandlers
        terminationHandlers = []
        for handler in handlers { handler(reason) }
    }

    // MARK: Events

    @inline(__always)
    func emit(_ record: ChildRecord, _ kind: SupervisorEvent.Kind) {
        guard events.isActive else { return }
        events.emit(SupervisorEvent(path: record.path, time: now, kind: kind, restartCount: record.restartCount), about: record)
    }

    /// A line of a captured stream, on the runtime's clock, with the restart count of the
    /// incarnation that wrote it (its last lines can arrive after a restart).
    func emitOutput(path: String, restartCount: Int, stream: String, line: String) {
        guard events.isActive else { return }
        events.emit(SupervisorEvent(path: path, time: now, kind: .output(stream: stream, line: line), restartCount: restartCount))
    }

    func emitSupervisorEvent(_ kind: SupervisorEvent.Kind) {
        guard events.isActive else { return }
        events.emit(SupervisorEvent(path: path, time: now, kind: kind, restartCount: parentRecord?.restartCount ?? 0), about: parentRecord)
    }

    // MARK: Internal access for the run-time API

    func record(_ id: String) throws(SupervisionError) -> ChildRecord {
        guard let record = childList[id] else {
            throw SupervisionError(.unknownID, "\(path): no child has the id \"\(id)\"")
        }
        return record
    }

    func addRecord(_ spec: ChildSpec) -> ChildRecord {
        let record = ChildRecord(spec: spec, path: path + "/" + spec.id, supervisor: self)
        childList.append(record)
        return record
    }

    func nextDynamicID(_ base: String) -> String {
        dynamicCounter += 1
        return base + "-" + String(dynamicCounter)   // (interpolation costs twice as much)
    }

    func terminate(_ record: ChildRecord, completion: ((ExitReason) -> Void)?) {
        if let completion { record.stopCompletions.append(completion) }
        enqueueStops([(record, .terminate)])
    }

    func addTerminationHandler(_ handler: @escaping (ExitReason) -> Void) {
        terminationHandlers.append(handler)
    }

    var isAcceptingWork: Bool {
        isRunning
    }

    func removeRecordForDelete(_ record: ChildRecord) { remove(record) }
}

/// An end reported while its supervisor was busy.
struct Mail {
    let record: ChildRecord
    let generation: UInt64
    let ending: Ending
}

/// The tree's shared jitter generator (one per root, so a seed fixes the whole tree).
final class RandomSource {
    var generator: SplitMix64
    init(seed: UInt64) { generator = SplitMix64(seed: seed) }
}
