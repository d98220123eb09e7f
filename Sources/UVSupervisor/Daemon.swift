#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Logging
import Supervision
import UVLoop

/// Options for ``SupervisorDaemon/run(_:options:)``.
public struct DaemonOptions {
    /// The root supervisor's name (default `root`).
    public var name: String = "root"
    /// Where events are logged (default: none).
    public var logger: Logger? = nil
    /// The whole tree's shutdown deadline after SIGTERM or a first SIGINT (default 10 s).
    public var shutdownTimeout: Duration = .seconds(10)
    /// Report loop iterations busier than this as ``SupervisorEvent/Kind/loopLag(_:)`` events on
    /// the root (default 250 ms; `nil` turns the watchdog off).
    public var lagThreshold: Duration? = .milliseconds(250)
    /// Seeds backoff jitter (default: random).
    public var randomSeed: UInt64? = nil
    /// How process workers are spawned (default: pidfd where available).
    public var spawnMethod: SpawnMethod = .preferred
    /// The signal children get if the daemon dies, even by SIGKILL (default SIGKILL; pidfd only).
    public var parentDeathSignal: Int32? = SIGKILL
    /// Called with the root before it starts: add event handlers here.
    public var configure: ((Supervisor) -> Void)? = nil

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
    /// - Throws: ``SupervisionError`` for an invalid spec, ``UVError`` when the loop cannot start.
    public static func run(_ spec: SupervisorSpec, options: DaemonOptions = DaemonOptions()) throws -> ExitReason {
        let loop = try EventLoop()
        let runtime = UVRuntime(loop: loop, spawnMethod: options.spawnMethod, parentDeathSignal: options.parentDeathSignal)
        let root = try Supervisor(spec, name: options.name, runtime: runtime, logger: options.logger, randomSeed: options.randomSeed)
        var interrupts = 0
        let timeout = options.shutdownTimeout
        let terminate = try SignalWatcher(loop: loop, signal: SIGTERM) { _ in root.shutdown(within: timeout) }
        let interrupt = try SignalWatcher(loop: loop, signal: SIGINT) { _ in
            interrupts += 1
            root.shutdown(within: interrupts == 1 ? timeout : .zero)
        }
        var watchdog: LoopLagWatchdog?
        if let threshold = options.lagThreshold {
            watchdog = try LoopLagWatchdog(loop: loop, threshold: threshold) { lag in
                root.events.emit(SupervisorEvent(path: root.path, time: runtime.nowNanoseconds, kind: .loopLag(lag), restartCount: 0))
            }
        }
        root.onTermination { _ in
            terminate.close()
            interrupt.close()
            watchdog?.close()
            loop.stop()
        }
        options.configure?(root)
        root.start()
        if root.finalReason == nil { loop.run(.untilStopped) }
        try loop.close()
        return root.finalReason ?? .shutdown
    }
}

extension ExitReason {
    /// A process exit status for `main`: 0 for ``normal`` and ``shutdown``, 1 otherwise.
    public var exitStatus: Int32 { isAbnormal ? 1 : 0 }
}
