#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CoreMetrics
import Logging
import Supervision
import UVLoop

/// Options for ``SupervisorDaemon/run(_:options:)``.
public struct DaemonOptions {
    /// When the daemon tells its manager it is ready (`READY=1`, with `Type=notify`).
    public enum ReadyCondition: Sendable, Equatable {
        /// Once every child of the root is ready (see `Readiness`; nested supervisors once
        /// their own children are). The default.
        case allChildren
        /// Once every significant child of the root is ready.
        case significantChildren
        /// As soon as the tree has started.
        case started
    }

    /// The root supervisor's name (default `root`).
    public var name: String = "root"
    /// Where events are logged (default: standard error, `info` and up; `nil` for silence).
    public var logger: Logger? = Logger(label: "uv-supervisor", factory: { label in StreamLogHandler.standardError(label: label) })
    /// The level at which captured output lines of process workers are logged (default `info`).
    public var outputLogLevel: Logger.Level = .info
    /// The whole tree's shutdown deadline after SIGTERM or a first SIGINT (default 10 s).
    public var shutdownTimeout: Duration = .seconds(10)
    /// Report loop iterations busier than this as `SupervisorEvent/Kind/loopLag(_:)` events on
    /// the root (default 250 ms; `nil` turns the watchdog off). A stall also skips the next
    /// systemd watchdog ping.
    public var lagThreshold: Duration? = .milliseconds(250)
    /// Seeds backoff jitter (default: random).
    public var randomSeed: UInt64? = nil
    /// How process workers are spawned (default: pidfd where available). With
    /// `.pidfd` and an orphan reaper (``reapOrphans``, or the sentinel of
    /// ``killDescendants``), SIGCHLD is blocked on the thread that runs the daemon until it
    /// returns and read from a signalfd, and the daemon's loop refuses `.libuv`
    /// spawns meanwhile (their exits are reported only by libuv's SIGCHLD handler).
    public var spawnMethod: SpawnMethod = .preferred
    /// The signal children get if the daemon dies, even by SIGKILL (default SIGKILL; pidfd only).
    public var parentDeathSignal: Int32? = SIGKILL
    /// Let a new child's program run before the daemon finishes its own bookkeeping of the
    /// start (default `true`; `ProcessOptions.childRunsFirst`): the daemon's thread, woken when
    /// the child calls `execve`, does not preempt the program on the CPU they share but waits
    /// until it sleeps or has used its time slice. A restart's gap is then the program's start,
    /// not the daemon's events, logs and metrics for it (about 40 µs of a ~1.1 ms gap here). Only
    /// while the daemon's thread is in the default scheduling policy; its custom time slice, if
    /// it had one (Linux 6.12+), is reset to the default at the first spawn.
    public var childRunsFirst = true
    /// Under systemd (`NOTIFY_SOCKET` set): when to send `READY=1` (default: all children ready).
    public var readyWhen: ReadyCondition = .allChildren
    /// Leave no descendant behind, even when the daemon is SIGKILLed (default `true`): the
    /// daemon becomes a child subreaper (orphaned descendants are re-parented to it, reaped, and
    /// killed when it stops), and a small sentinel process kills every worker's process group,
    /// and every process carrying the daemon's cookie (`UVS_DAEMON_COOKIE` in its environment),
    /// once the daemon is gone.
    public var killDescendants: Bool = true
    /// Let go of the code pages the daemon is not running (default `nil`: never). Once the root
    /// has started its children, and again whenever no process worker has started for this long
    /// (at least 100 ms) after some did, the daemon, and its sentinel once, ask the kernel to
    /// unmap their pages of read-only file mappings in which nothing was ever written
    /// (`madvise(MADV_DONTNEED)` on the code and constant data of the executable and its
    /// libraries; relocated data stays). Start-up, reloads and bursts of restarts run far more
    /// code than an idle daemon does, and the kernel maps 64 KiB around every page a program
    /// touches, so that code is most of a small daemon's resident size; a page used again comes
    /// back from the page cache (or from the file, if memory pressure evicted it meanwhile). Only
    /// done while the process has a single thread (another thread could unmap a file and map
    /// something else at its address in between), which a daemon without async-task workers is.
    /// The timer runs only after process starts, so an idle daemon is never woken. Off by
    /// default because it concerns every library in the host program; `uv-supervisor` sets 30 s.
    public var trimCodePages: Duration? = nil
    /// Reap orphans re-parented to the daemon (default `true`; needed as a container's PID 1
    /// and with ``killDescendants``). Never takes the exit status of a supervised child.
    public var reapOrphans: Bool = true
    /// Signals passed on to every process worker (its group) instead of being handled by the
    /// daemon; `nil` (the default) means SIGHUP, SIGUSR1 and SIGUSR2 when the daemon is PID 1
    /// (a container's runtime sends them to PID 1 only), none otherwise.
    public var forwardedSignals: [Int32]? = nil
    /// Report the tree's metrics (`SupervisorMetrics`) to the bootstrapped swift-metrics
    /// backend (default `true`). Nothing is attached, and nothing is paid, when no backend has
    /// been bootstrapped (`MetricsSystem.bootstrap`) before the daemon starts.
    public var metrics: Bool = true
    /// Serve a control socket for `uvsctl` and other clients (default: none). The daemon does
    /// not start when the socket cannot be made (another daemon serves that path, say).
    public var controlSocket: ControlSocketOptions? = nil
    /// What `uvsctl reload` (the control protocol's `reload`) does: re-read whatever the tree
    /// comes from and apply the difference, then call `done` with `nil` and a summary, or with
    /// an error message (nothing changed). `nil` (the default): the daemon has nothing to reload.
    public var reload: ((_ done: @escaping (_ error: String?, _ summary: String) -> Void) -> Void)? = nil
    /// Called with the root and its loop before the root starts: add event handlers, timers,
    /// anything else that lives on the loop.
    public var configure: ((Supervisor, EventLoop) -> Void)? = nil

    /// The defaults.
    public init() {}
}

/// Runs a supervision tree as a daemon's whole `main`, in one call.
///
/// ```swift
/// let reason = try SupervisorDaemon.run(SupervisorSpec(children: [...]))
/// exit(reason.exitStatus)
/// ```
public enum SupervisorDaemon {
    /// Builds the tree on a new loop on the calling thread, starts it, and runs until the tree
    /// has stopped. SIGTERM and a first SIGINT shut it down gracefully within
    /// ``DaemonOptions/shutdownTimeout`` (reverse order, stop signals, kills at the timeouts);
    /// a second SIGINT kills what is left at once. Then the loop is torn down (every handle
    /// closed) and the root's final reason returned.
    ///
    /// Under systemd with `Type=notify` (`NOTIFY_SOCKET` set) it tells its manager `READY=1`
    /// (see ``DaemonOptions/readyWhen``) with `MAINPID=`, a one-line `STATUS=` when it changes,
    /// `STOPPING=1` when shutdown begins, and `WATCHDOG=1` at half of `WATCHDOG_USEC` while the
    /// loop is healthy; without `NOTIFY_SOCKET` nothing is sent and no timer runs.
    /// - Throws: `SupervisionError` for an invalid spec, `UVError` when the loop cannot start.
    public static func run(_ spec: SupervisorSpec, options: DaemonOptions = DaemonOptions()) throws -> ExitReason {
        try run(options: options) { _ in spec }
    }

    /// The same, with the spec built on the daemon's loop: loop tasks that make their own timers
    /// or I/O capture `loop` (`SupervisorDaemon.run { loop in mySpec(loop: loop) }`).
    public static func run(options: DaemonOptions = DaemonOptions(),
                           _ makeSpec: (EventLoop) throws -> SupervisorSpec) throws -> ExitReason {
        try runRecordingForce(options: options, makeSpec).reason
    }

    /// Runs the tree (as ``run(options:_:)``) and exits the process with a status a service or
    /// container manager understands, as tini and s6-overlay do: 0 after a clean stop, 1 when
    /// the root gave up (restart intensity exceeded), 128 + n when a repeated signal n forced
    /// the stop (a second SIGINT: 130), 2 when the tree could not even start (invalid spec,
    /// no loop), with the error on standard error.
    public static func main(options: DaemonOptions = DaemonOptions(),
                            _ makeSpec: (EventLoop) throws -> SupervisorSpec) -> Never {
        do {
            let (reason, forcingSignal) = try runRecordingForce(options: options, makeSpec)
            if let forcingSignal { exit(128 + forcingSignal) }
            exit(reason.exitStatus)
        } catch {
            fputs("uv-supervisor: \(error)\n", stderr)
            exit(2)
        }
    }

    /// Unmaps this process's clean code pages now, as ``DaemonOptions/trimCodePages`` does
    /// (`uv-supervisor` calls it after a reload, which ran the config decoder). Returns the
    /// kilobytes that were resident in them, or `nil` when nothing was done (more than one thread).
    @discardableResult
    package static func trimCodePages() -> Int? {
        CodePageTrimmer.trimNow()
    }

    private static func runRecordingForce(options: DaemonOptions,
                                          _ makeSpec: (EventLoop) throws -> SupervisorSpec) throws -> (reason: ExitReason, forcingSignal: Int32?) {
        // The daemon is the whole program: a client or a log reader that goes away must cost
        // it a write error, not its life (as nginx and every long-running server do). Children
        // get every disposition back to its default when they are spawned.
        signal(SIGPIPE, SIG_IGN)
        let loop = try EventLoop()
        let runtime = UVRuntime(loop: loop, spawnMethod: options.spawnMethod, parentDeathSignal: options.parentDeathSignal)
        runtime.childRunsFirst = options.childRunsFirst
        let spec = try makeSpec(loop)
        let root = try Supervisor(spec, name: options.name, runtime: runtime, logger: options.logger, randomSeed: options.randomSeed)
        root.events.outputLogLevel = options.outputLogLevel
        if options.metrics && !(MetricsSystem.factory is NOOPMetricsHandler) { root.reportMetrics() }
        var interrupts = 0
        let timeout = options.shutdownTimeout
        let terminate = try SignalWatcher(loop: loop, signal: SIGTERM) { _ in root.shutdown(within: timeout) }
        var forcingSignal: Int32?
        let interrupt = try SignalWatcher(loop: loop, signal: SIGINT) { _ in
            interrupts += 1
            if interrupts > 1 { forcingSignal = SIGINT }
            root.shutdown(within: interrupts == 1 ? timeout : .zero)
        }
        // A container's PID 1, or a subreaper: orphans come to us and must be reaped.
        let isInit = getpid() == 1
        let sentinel = options.killDescendants ? DescendantSentinel.start(releasePages: options.trimCodePages != nil) : nil
        if let sentinel {
            runtime.childEnvironment[sentinel.cookie.name] = sentinel.cookie.value
            runtime.processGroupObserver = { group, started in sentinel.note(group: group, started: started) }
            OrphanReaper.becomeSubreaper()
        }
        let reaper = options.reapOrphans || sentinel != nil
            ? try OrphanReaper(loop: loop, quietLoopThread: options.spawnMethod == .pidfd) : nil
        let forwarded = options.forwardedSignals ?? (isInit ? [SIGHUP, SIGUSR1, SIGUSR2] : [])
        var forwarders: [SignalWatcher] = []
        let reports = SystemdNotifier.fromEnvironment().map {
            ManagerReports(notifier: $0, root: root, loop: loop, readyWhen: options.readyWhen)
        }
        var watchdog: LoopLagWatchdog?
        let control: ControlServer?
        do {
            for signal in forwarded {
                forwarders.append(try SignalWatcher(loop: loop, signal: signal) { signal in
                    for pid in root.processWorkerPIDs() where kill(-pid, signal) != 0 { kill(pid, signal) }
                })
            }
            if let threshold = options.lagThreshold {
                watchdog = try LoopLagWatchdog(loop: loop, threshold: threshold) { lag in
                    reports?.stalledSinceLastPing = true
                    root.events.emit(SupervisorEvent(path: root.path, time: runtime.nowNanoseconds, kind: .loopLag(lag), restartCount: 0))
                }
            }
            control = try options.controlSocket.map { socket throws(UVError) in
                try ControlServer(loop: loop, root: root, options: socket, shutdownTimeout: timeout, readyWhen: options.readyWhen,
                                  reload: options.reload)
            }
            do {
                try reports?.start()
            } catch {
                control?.close()
                throw error
            }
        } catch {
            // Nothing has started: close what was made, as a failed start must leave nothing
            // (and the loop's thread gets SIGCHLD back).
            reports?.close()
            watchdog?.close()
            forwarders.forEach { $0.close() }
            terminate.close()
            interrupt.close()
            reaper?.close()
            try? loop.close()
            sentinel?.close()
            throw error
        }
        let signalForwarders = forwarders
        let trimmer = CodePageTrimmer.watching(runtime, on: loop, quietPeriod: options.trimCodePages)
        root.onTermination { _ in
            control?.close()
            terminate.close()
            interrupt.close()
            watchdog?.close()
            reports?.close()
            trimmer?.close()
            signalForwarders.forEach { $0.close() }
            // Async-task workers abandoned at the deadline end on this loop before it closes.
            runtime.afterAsyncTasksEnd(within: .seconds(5)) { loop.stop() }
        }
        options.configure?(root, loop)
        root.start()
        if root.finalReason == nil { trimmer?.trim() }
        if root.finalReason == nil { loop.run(.untilStopped) }
        // Descendants that outlived their supervised parents (adopted as a subreaper) go too.
        reaper?.killRemaining()
        reaper?.close()
        try loop.close()
        sentinel?.close()
        return (root.finalReason ?? .shutdown, forcingSignal)
    }
}

extension ExitReason {
    /// A process exit status for `main`: 0 for `ExitReason.normal` and `ExitReason.shutdown`, 1 otherwise.
    public var exitStatus: Int32 { isAbnormal ? 1 : 0 }
}
