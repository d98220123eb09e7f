#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Supervision
import UVLoop

/// The libuv runtime: drives supervision trees on one `EventLoop`.
///
/// Timers are `uv_timer_t`s (one per child that needs one, reused), zero-delay restarts go
/// through the loop's run-soon queue (one loop turn, I/O polled in between), process workers
/// are `ChildProcess`es (own process group, stop signal to the group, SIGKILL at the
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
    /// Let each new process worker's program run before the loop thread goes on with its own
    /// bookkeeping (`ProcessOptions.childRunsFirst`; pidfd method only). Default: `false`;
    /// `SupervisorDaemon` sets it (``DaemonOptions/childRunsFirst``).
    public var childRunsFirst = false

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

    /// Notify datagrams refused so far (foreign senders, malformed or oversized messages).
    public private(set) var droppedNotifications = DroppedNotifications()
    /// Async-task workers whose task has not ended yet, abandoned ones included (a supervisor
    /// gives up waiting for a task at its shutdown timeout, but the task still runs on this
    /// loop until it returns).
    public var runningAsyncTasks: Int { asyncTasks.running }
    private let asyncTasks = AsyncTaskCount()
    /// Environment changes for every process worker (the daemon's descendant cookie).
    var childEnvironment: [String: String?] = [:] {
        didSet { childEnvironmentVersion &+= 1 }
    }
    private var childEnvironmentVersion = 0
    /// What the options of a kept process start depend on besides its spec: when it differs
    /// from the one a cache was made with, the options are made again.
    private var spawnSettings: ProcessStartCache.Settings {
        .init(spawnMethod: spawnMethod, parentDeathSignal: parentDeathSignal, childRunsFirst: childRunsFirst,
              environmentVersion: childEnvironmentVersion)
    }
    /// Told when a process worker in its own group starts (`true`) and when it has exited.
    var processGroupObserver: ((_ group: Int32, _ started: Bool) -> Void)?
    /// Told after every process worker started (the daemon's code-page trimmer counts it as
    /// activity).
    var processStarted: (() -> Void)?

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

    /// Spawns a process worker. Spawn errors become `SupervisionError/Code/startFailed` with
    /// libuv's error name and the program (`spawn "/usr/bin/nope": ENOENT (...)`).
    ///
    /// With `notify.notifySocket` the child gets a private notify socket (`NOTIFY_SOCKET=@uvs/...`,
    /// an abstract name: nothing in the file system) and `WATCHDOG_USEC` when a watchdog is set;
    /// datagrams are accepted from the child and from processes in its session (helpers such as
    /// `systemd-notify`), and from a sender that has already exited (the name is known only to
    /// the child's environment); others are dropped and counted in ``droppedNotifications``.
    /// With `notify.readyDescriptor` it gets the write end of a pipe as that descriptor
    /// (descriptors between 3 and it are `/dev/null`).
    public func startProcess(_ spec: ProcessSpec, path: String, notify: NotifySetup,
                             onOutput: @escaping (_ stream: String, _ line: String) -> Void,
                             onNotice: @escaping (WorkerNotice) -> Void,
                             onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker {
        var cache: AnyObject?
        return try startProcess(spec, path: path, notify: notify, cache: &cache, onOutput: onOutput, onNotice: onNotice, onExit: onExit)
    }

    /// ``startProcess(_:path:notify:onOutput:onNotice:onExit:)``, keeping in `cache` the spawn's
    /// options and C arrays for the child's next start (one without a notify setup: those get
    /// fresh environment values every time). They are made again when the runtime's spawn
    /// settings or the children's environment changes, or `environ` does.
    public func startProcess(_ spec: ProcessSpec, path: String, notify: NotifySetup, cache: inout AnyObject?,
                             onOutput: @escaping (_ stream: String, _ line: String) -> Void,
                             onNotice: @escaping (WorkerNotice) -> Void,
                             onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker {
        let wantsOutput = spec.stdout == .capture || spec.stderr == .capture
        let lineHandler: ((ProcessOutput) -> Void)? = wantsOutput ? { output in
            guard case .line(let stream, let line) = output else { return }
            onOutput(stream == .standardOutput ? "stdout" : "stderr", line)
        } : nil
        let worker = UVProcessWorker(stopSignal: spec.stopSignal)
        let options: ProcessOptions
        let spawnCache: SpawnCache?
        if notify.isNone, let kept = cache as? ProcessStartCache, kept.settings == spawnSettings {
            options = kept.options
            spawnCache = kept.spawnCache
        } else {
            var made = ProcessOptions(spec)
            made.spawnMethod = spawnMethod
            made.parentDeathSignal = spawnMethod == .pidfd ? parentDeathSignal : nil
            made.childRunsFirst = spawnMethod == .pidfd && childRunsFirst
            var environmentChanges = childEnvironment
            if !notify.isNone {
                do {
                    let notifyChanges = try worker.prepareNotifications(notify, on: loop, options: &made,
                                                                        expectedUID: spec.userID ?? getuid(), runtime: self, onNotice: onNotice)
                    environmentChanges.merge(notifyChanges) { _, new in new }
                } catch {
                    worker.closeNotifications()
                    throw SupervisionError(.startFailed, error.description)
                }
            }
            if !environmentChanges.isEmpty {
                made.environment = EnvironmentPolicy(spec.environment.applying(environmentChanges))
            }
            options = made
            if notify.isNone {
                let kept = ProcessStartCache(options: made, settings: spawnSettings)
                cache = kept
                spawnCache = kept.spawnCache
            } else {
                spawnCache = nil
            }
        }
        let observer = spec.newProcessGroup ? processGroupObserver : nil
        worker.exitHandler = onExit
        worker.groupObserver = observer
        do {
            // Captures the worker alone, so no closure context is allocated (every restart
            // comes through here). The worker is held until the exit, when the process drops
            // this handler.
            worker.process = try ChildProcess.spawn(on: loop, options, reusing: spawnCache, onOutput: lineHandler) { exit in
                worker.processExited(exit)
            }
        } catch {
            worker.closeNotifications()
            throw SupervisionError(.startFailed, error.description)
        }
        worker.readinessPipe?.closeWriteEnd()
        if let observer, let pid = worker.pid { observer(pid, true) }
        processStarted?()
        return worker
    }

    /// Counts a refused notify datagram.
    fileprivate func dropped(_ count: (inout DroppedNotifications) -> Void) {
        count(&droppedNotifications)
    }

    /// Runs an async-task worker on the loop's task executor; cancellation is its stop request.
    public func startAsyncTask(_ body: @escaping @Sendable () async throws -> Void, path: String,
                               onNotice: @escaping (WorkerNotice) -> Void,
                               onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker {
        let remote = loop.remote
        let delivery = LoopBound(onExit, remote: remote)
        let noticeDelivery = LoopBound(onNotice, remote: remote)
        // Notices hop to the loop thread like the end does (after this start has returned).
        let notifier = WorkerNotifier { notice in try? remote.execute { noticeDelivery.value(notice) } }
        asyncTasks.running += 1
        let count = LoopBound(asyncTasks, remote: remote)
        let task = Task(executorPreference: remote) {
            let termination = await SupervisedTask.$notifier.withValue(notifier) {
                await WorkerTermination.ofAsyncTask(body)
            }
            // Hop explicitly: the report must run on the loop thread, after this start returned.
            try? remote.execute {
                count.value.ended()
                delivery.value(termination)
            }
        }
        return AsyncTaskWorker(task: task)
    }

    /// Calls `body` on the loop once every async-task worker started here has ended (at once if
    /// none runs), or after `timeout` if some still run. A program that closes its loop after
    /// its tree stopped waits for this first: a task the supervisor abandoned at its shutdown
    /// deadline (a stop with no time left) is still on its way out, and resuming it on a
    /// closed loop would stop the process.
    public func afterAsyncTasksEnd(within timeout: Duration, _ body: @escaping () -> Void) {
        loop.preconditionInLoop("UVRuntime.afterAsyncTasksEnd")
        guard asyncTasks.running > 0 else { return body() }
        let timer = LoopTimer(loop: loop) { [asyncTasks] in asyncTasks.fireWaiters() }
        try? timer.start(after: timeout)
        asyncTasks.waiters.append {
            timer.close()
            body()
        }
    }
}

/// The async-task workers still running on a runtime's loop, and who waits for them to end.
/// Loop-confined.
private final class AsyncTaskCount {
    var running = 0
    var waiters: [() -> Void] = []

    func ended() {
        running -= 1
        if running == 0 { fireWaiters() }
    }

    func fireWaiters() {
        let waiting = waiters
        waiters = []
        for waiter in waiting { waiter() }
    }
}

extension UVRuntime {
    /// Starts one probe attempt: a TCP connection (`uv_tcp_t`, closed once it is made) or a
    /// command (spawned like a worker, output to `/dev/null`, success on exit 0; killed with its
    /// group when cancelled).
    public func startProbe(_ check: ProbeCheck, completion: @escaping (ProbeResult) -> Void) -> any RuntimeProbe {
        let probe = UVProbe(completion: completion)
        switch check {
        case .tcp(let host, let port):
            do {
                probe.connection = try TCPConnectAttempt(loop: loop, host: host, port: port) { [weak probe] error in
                    probe?.finish(error.map { .failure($0.description) } ?? .success)
                }
            } catch {
                loop.runSoon { [weak probe] in probe?.finish(.failure(error.description)) }
            }
        case .command(let argv):
            var options = ProcessOptions(argv: argv)
            options.stdin = .null
            options.stdout = .null
            options.stderr = .null
            options.spawnMethod = spawnMethod
            options.parentDeathSignal = spawnMethod == .pidfd ? parentDeathSignal : nil
            do {
                probe.process = try ChildProcess.spawn(on: loop, options) { [weak probe] exit in
                    probe?.finish(exit == .exited(0) ? .success : .failure(exit.description))
                }
            } catch {
                loop.runSoon { [weak probe] in probe?.finish(.failure(error.description)) }
            }
        }
        return probe
    }
}

/// What a process start kept for the next start of the same child: its options and the
/// spawn's C arrays (``UVRuntime/startProcess(_:path:notify:cache:onOutput:onNotice:onExit:)``).
final class ProcessStartCache {
    struct Settings: Equatable {
        var spawnMethod: SpawnMethod
        var parentDeathSignal: Int32?
        var childRunsFirst: Bool
        var environmentVersion: Int
    }

    let options: ProcessOptions
    let settings: Settings
    let spawnCache = SpawnCache()

    init(options: ProcessOptions, settings: Settings) {
        self.options = options
        self.settings = settings
    }
}

/// One probe attempt on the libuv runtime.
final class UVProbe: RuntimeProbe {
    private var completion: ((ProbeResult) -> Void)?
    var connection: TCPConnectAttempt?
    var process: ChildProcess?

    init(completion: @escaping (ProbeResult) -> Void) { self.completion = completion }

    func finish(_ result: ProbeResult) {
        connection = nil
        process = nil
        completion.take()?(result)
    }

    func cancel() {
        completion = nil
        connection.take()?.cancel()
        // Killed with its group; the loop still reaps it.
        if let process = process.take() { try? process.signalGroup(SIGKILL) }
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
    /// Told once, when the process has exited.
    var exitHandler: ((WorkerTermination) -> Void)?
    /// Told of the process group's end (the daemon's sentinel), when the child leads a group.
    var groupObserver: ((_ group: Int32, _ started: Bool) -> Void)?
    /// Where its notify messages arrive, when it has readiness or a watchdog by notify.
    var notifySocket: NotifySocket?
    /// Its readiness descriptor's pipe, with readiness `.descriptor`.
    var readinessPipe: ReadinessPipe?

    init(stopSignal: Int32) { self.stopSignal = stopSignal }

    /// Opens what `setup` asks for, adds the readiness descriptor to the spawn `options`, and
    /// returns the child's environment changes.
    func prepareNotifications(_ setup: NotifySetup, on loop: EventLoop, options: inout ProcessOptions,
                              expectedUID: UInt32, runtime: UVRuntime,
                              onNotice: @escaping (WorkerNotice) -> Void) throws(UVError) -> [String: String?] {
        var overrides: [String: String?] = [:]
        if setup.notifySocket {
            let socket = try NotifySocket(loop: loop) { [weak self, weak runtime] datagram in
                guard let self, let runtime else { return }
                self.received(datagram, expectedUID: expectedUID, runtime: runtime, onNotice: onNotice)
            }
            notifySocket = socket
            overrides["NOTIFY_SOCKET"] = socket.environmentValue
            // The child is the process the watchdog watches; an inherited WATCHDOG_PID (ours,
            // from our own manager) would make sd_watchdog_enabled() say no.
            overrides["WATCHDOG_PID"] = .some(nil)
            overrides["WATCHDOG_USEC"] = setup.watchdog.map { String(max(1, $0.nanosecondsClamped / 1000)) } ?? .some(nil)
        }
        if let descriptor = setup.readyDescriptor {
            let pipe = try ReadinessPipe(loop: loop) { onNotice(.ready) }
            readinessPipe = pipe
            options.extraDescriptors = Array(repeating: -1, count: Int(descriptor) - 3) + [pipe.writeEnd]
        }
        return overrides
    }

    /// A datagram on the notify socket: see `NotifyMessage.accept` for who is heard.
    private func received(_ datagram: NotifyDatagram, expectedUID: UInt32, runtime: UVRuntime,
                          onNotice: (WorkerNotice) -> Void) {
        guard let childPID = process?.pid else { return }
        switch NotifyMessage.accept(datagram.bytes, senderPID: datagram.senderPID, senderUID: datagram.senderUID,
                                    truncated: datagram.truncated, childPID: childPID, expectedUID: expectedUID) {
        case .success(let notices):
            for notice in notices { onNotice(notice) }
        case .failure(let refusal):
            runtime.dropped { NotifyMessage.count(refusal, in: &$0) }
        }
    }

    /// The process exited: the group is gone, notices sent just before the exit are read, then
    /// the supervisor hears of the end.
    func processExited(_ exit: ProcessExit) {
        if let groupObserver, let pid { groupObserver(pid, false) }
        groupObserver = nil
        closeNotifications()
        let handler = exitHandler
        exitHandler = nil
        switch exit {
        case .exited(let code): handler?(.exited(code))
        case .signaled(let signal): handler?(.signaled(signal))
        }
    }

    /// Reads what is still queued, then closes the socket and the pipe.
    func closeNotifications() {
        notifySocket?.drain()
        notifySocket?.close()
        notifySocket = nil
        readinessPipe?.drain()
        readinessPipe?.close()
        readinessPipe = nil
    }

    var pid: Int32? { process?.pid }

    func requestStop() {
        try? process?.signalGroup(stopSignal)
    }

    func kill() -> Bool {
        try? process?.signalGroup(SIGKILL)
        return true
    }
}

extension EnvironmentPolicy {
    /// The loop layer's policy for a supervision `ProcessEnvironment`.
    init(_ environment: ProcessEnvironment) {
        switch environment {
        case .inherit: self = .inherit
        case .replace(let values): self = .replace(values)
        case .inheritWithOverrides(let values): self = .inheritWithOverrides(values)
        }
    }
}

extension ProcessOptions {
    /// The loop layer's options for a supervision `ProcessSpec` (captured streams become pipes).
    package init(_ spec: ProcessSpec) {
        self.init(argv: spec.argv)
        environment = EnvironmentPolicy(spec.environment)
        workingDirectory = spec.workingDirectory
        stdin = Self.stdio(spec.stdin)
        stdout = Self.stdio(spec.stdout)
        stderr = Self.stdio(spec.stderr)
        newProcessGroup = spec.newProcessGroup
        userID = spec.userID
        groupID = spec.groupID
        supplementaryGroups = spec.supplementaryGroups
        fileModeMask = spec.umask
        resourceLimits = spec.resourceLimits.map { ResourceLimit(resource: $0.resource.rawValue, soft: $0.soft, hard: $0.hard) }
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
