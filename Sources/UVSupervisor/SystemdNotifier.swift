#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CUVShims
import Supervision
import UVLoop

/// The daemon's own side of systemd's notify protocol (`Type=notify`), talking to its manager:
/// what ``SupervisorDaemon`` sends when `NOTIFY_SOCKET` is set (and nothing otherwise).
struct SystemdNotifier {
    /// `NOTIFY_SOCKET`: `@abstract` or an absolute path.
    let address: String
    /// Half of `WATCHDOG_USEC`, when the manager wants pings from this process.
    let watchdogPingInterval: Duration?

    /// The manager's socket from the environment, or `nil` when not run by a notify-aware manager.
    static func fromEnvironment() -> SystemdNotifier? {
        guard let address = environment("NOTIFY_SOCKET"), address.hasPrefix("@") || address.hasPrefix("/") else {
            return nil
        }
        var ping: Duration?
        // WATCHDOG_PID, when set, names the process the manager watches; for another one, stay quiet.
        let watchedPID = environment("WATCHDOG_PID").flatMap { Int32($0) }
        if let text = environment("WATCHDOG_USEC"), let microseconds = Int64(text), microseconds > 0,
           watchedPID == nil || watchedPID == getpid() {
            ping = .microseconds(microseconds / 2)
        }
        return SystemdNotifier(address: address, watchdogPingInterval: ping)
    }

    private static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// Sends one message (`KEY=VALUE` lines). Returns whether the datagram went out.
    @discardableResult
    func send(_ message: String) -> Bool {
        var bytes = Array(message.utf8)
        return bytes.withUnsafeMutableBytes { cuvs_notify_send_address(address, $0.baseAddress, $0.count) } == 0
    }
}

/// What the daemon reports to its manager, decided from the tree's events.
final class ManagerReports {
    private let notifier: SystemdNotifier
    private let root: Supervisor
    private let readyWhen: DaemonOptions.ReadyCondition
    private let loop: EventLoop
    private var readySent = false
    private var stoppingSent = false
    private var lastStatus = ""
    private var lastTrouble: String?
    private var updateQueued = false
    /// Set by the lag watchdog: the loop stalled since the last ping, so the next one is skipped.
    var stalledSinceLastPing = false
    private var pingTimer: LoopTimer?

    init(notifier: SystemdNotifier, root: Supervisor, loop: EventLoop, readyWhen: DaemonOptions.ReadyCondition) {
        self.notifier = notifier
        self.root = root
        self.loop = loop
        self.readyWhen = readyWhen
    }

    /// Starts listening to the tree and, with a watchdog, pinging.
    func start() throws(UVError) {
        root.onEvent { [weak self] event in self?.observe(event) }
        if let interval = notifier.watchdogPingInterval {
            let timer = LoopTimer(loop: loop) { [weak self] in self?.ping() }
            try timer.start(after: interval, repeating: interval)
            pingTimer = timer
        }
    }

    func close() {
        pingTimer?.close()
        pingTimer = nil
    }

    private func ping() {
        // Only while the loop is healthy: a stall since the last ping skips this one, so a
        // loop that keeps stalling is restarted by the manager.
        if stalledSinceLastPing {
            stalledSinceLastPing = false
            return
        }
        notifier.send("WATCHDOG=1")
    }

    private func observe(_ event: SupervisorEvent) {
        switch event.kind {
        case .supervisorStopping where event.path == root.path:
            if !stoppingSent {
                stoppingSent = true
                notifier.send("STOPPING=1\nSTATUS=stopping")
                lastStatus = "stopping"
            }
            return
        case .exited(let reason) where reason.isAbnormal:
            lastTrouble = "\(event.path) \(reason)"
        case .intensityExceeded:
            lastTrouble = "\(event.path) gave up"
        default:
            break
        }
        // Decided once per loop turn, after the turn's changes (a nested supervisor is marked
        // ready after its last child's event).
        if !updateQueued && !stoppingSent {
            updateQueued = true
            loop.runSoon { [weak self] in self?.update() }
        }
    }

    private func update() {
        updateQueued = false
        guard !stoppingSent, root.state == .running else { return }
        if !readySent && isReady() {
            readySent = true
            notifier.send("READY=1\nMAINPID=\(getpid())")
        }
        let counts = root.countChildren()
        var status = "\(counts.active) of \(counts.specs) children running"
        if !readySent { status += ", starting" }
        if let lastTrouble { status += "; last failure: \(lastTrouble)" }
        if status != lastStatus {
            lastStatus = status
            notifier.send("STATUS=" + status)
        }
    }

    private func isReady() -> Bool {
        root.isReady(readyWhen)
    }
}
