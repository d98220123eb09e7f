#if canImport(Glibc)
import Glibc
#endif

/// When a started child counts as ready: the moment its supervisor may start the next sibling
/// (OTP's `start_link` returning from `init`; systemd's `Type=`; s6's `notification-fd`;
/// Kubernetes' readiness probe).
///
/// A child that is not ready within its ``ChildSpec/readyTimeout`` fails its start: it is
/// stopped by its shutdown policy, ends with ``ExitReason/startFailed(_:)``, counts toward
/// intensity and is restarted with its backoff.
public enum Readiness: Sendable, Equatable {
    /// Ready as soon as it is started (the default).
    case started
    /// It says so. A process speaks systemd's notify protocol: it gets `NOTIFY_SOCKET` in its
    /// environment and sends `READY=1` there (`systemd-notify --ready`, `sd_notify(3)`, or any
    /// program writing the datagram itself; helpers it starts may send it too). A loop task calls
    /// ``LoopTaskContext/ready()``, an async task ``SupervisedTask/ready()``.
    case notify
    /// A process writes a newline to this descriptor (3 to 66), which it inherits as the write
    /// end of a pipe: s6's `notification-fd`. Descriptors between 3 and it are `/dev/null`
    /// (with `SpawnMethod.libuv`, left closed).
    case descriptor(Int32)
    /// A probe succeeds (its first success makes the child ready).
    case probe(Probe)
}

/// How a running child shows it is still alive; one that stops showing it is stopped by its
/// shutdown policy (a `SIGSTOP`ped process is killed at the timeout), ends with
/// ``ExitReason/unresponsive(_:)`` and is restarted by its restart type, counted toward
/// intensity like any failure. Checks begin once the child is ready.
public enum Liveness: Sendable, Equatable {
    /// No check (the default): only its end is noticed.
    case none
    /// A ping at least every `interval`. A process gets systemd's `WATCHDOG_USEC` (and
    /// `NOTIFY_SOCKET`) and sends `WATCHDOG=1` (`WATCHDOG=trigger` fails it at once); a loop task
    /// calls ``LoopTaskContext/heartbeat()``, an async task ``SupervisedTask/heartbeat()``.
    case watchdog(Duration)
    /// A probe fails ``Probe/failureThreshold`` times in a row (Kubernetes' liveness probe).
    case probe(Probe)
}

/// A check the runtime runs against a child from outside, periodically.
public struct Probe: Sendable, Equatable {
    /// What is checked.
    public var check: ProbeCheck
    /// The time between the end of one attempt and the start of the next (default 1 s).
    public var interval: Duration
    /// An attempt that has not succeeded after this long fails (default 1 s).
    public var timeout: Duration
    /// Consecutive failures that make a liveness probe fail the child (default 3); readiness
    /// probes retry until the ready timeout.
    public var failureThreshold: Int
    /// The wait before the first attempt (default none): after the start for a readiness probe,
    /// after the child became ready for a liveness probe.
    public var initialDelay: Duration

    /// A probe with every parameter given or defaulted.
    public init(_ check: ProbeCheck, interval: Duration = .seconds(1), timeout: Duration = .seconds(1),
                failureThreshold: Int = 3, initialDelay: Duration = .zero) {
        self.check = check
        self.interval = interval
        self.timeout = timeout
        self.failureThreshold = failureThreshold
        self.initialDelay = initialDelay
    }

    /// A TCP connection to `host:port` succeeds (the connection is closed at once).
    public static func tcp(host: String = "127.0.0.1", port: UInt16, interval: Duration = .seconds(1),
                           timeout: Duration = .seconds(1), failureThreshold: Int = 3) -> Probe {
        Probe(.tcp(host: host, port: port), interval: interval, timeout: timeout, failureThreshold: failureThreshold)
    }

    /// A command (argv, never a shell) exits 0.
    public static func command(_ argv: [String], interval: Duration = .seconds(1),
                               timeout: Duration = .seconds(1), failureThreshold: Int = 3) -> Probe {
        Probe(.command(argv), interval: interval, timeout: timeout, failureThreshold: failureThreshold)
    }
}

/// What a ``Probe`` checks.
public enum ProbeCheck: Sendable, Hashable, CustomStringConvertible {
    /// A TCP connection to a numeric IPv4 or IPv6 address and port can be made.
    case tcp(host: String, port: UInt16)
    /// A command exits 0 (argv; `argv[0]` a path or a name looked up in `PATH`; its output is
    /// discarded; it is killed when the attempt times out).
    case command([String])

    /// `tcp 127.0.0.1:8080` or `command /usr/bin/check --quick`.
    public var description: String {
        switch self {
        case .tcp(let host, let port): return host.contains(":") ? "tcp [\(host)]:\(port)" : "tcp \(host):\(port)"
        case .command(let argv): return "command " + argv.joined(separator: " ")
        }
    }
}

/// How one probe attempt went, as its runtime reports it.
public enum ProbeResult: Sendable, Equatable {
    /// The check passed.
    case success
    /// The check failed, with why (`ECONNREFUSED (connection refused)`, `exited 1`).
    case failure(String)
}

/// A probe attempt in progress, as its runtime controls it.
public protocol RuntimeProbe: AnyObject {
    /// Abandons the attempt: its completion is never called (a command probe's process is
    /// killed, a connection attempt closed).
    func cancel()
}

/// What a running worker reports besides its output and its end: systemd's notify messages for
/// processes, ``SupervisedTask`` calls for async tasks.
public enum WorkerNotice: Sendable, Equatable {
    /// `READY=1`: it is ready.
    case ready
    /// `STATUS=...`: a line saying what it is doing, shown in its status.
    case status(String)
    /// `WATCHDOG=1`: it is alive.
    case watchdog
    /// `WATCHDOG=trigger`: it asks to be treated as hung.
    case watchdogTrigger
    /// `EXTEND_TIMEOUT_USEC=...`: it needs this much longer (from now) to get ready (the stop
    /// timeout is not extended).
    case extendTimeout(Duration)
    /// `STOPPING=1`: it is stopping by itself.
    case stopping
}

/// What a process worker's runtime sets up for its readiness and liveness reports.
public struct NotifySetup: Sendable, Equatable {
    /// Give it a private notify socket (`NOTIFY_SOCKET`) and report its messages.
    public var notifySocket: Bool
    /// `WATCHDOG_USEC` for its environment.
    public var watchdog: Duration?
    /// Give it the write end of a pipe as this descriptor; a newline on it reports `.ready`.
    public var readyDescriptor: Int32?

    /// Nothing to set up.
    public static let none = NotifySetup(notifySocket: false, watchdog: nil, readyDescriptor: nil)

    /// A setup with every field given.
    public init(notifySocket: Bool, watchdog: Duration?, readyDescriptor: Int32?) {
        self.notifySocket = notifySocket
        self.watchdog = watchdog
        self.readyDescriptor = readyDescriptor
    }

    /// Whether anything is to be set up.
    public var isNone: Bool { self == .none }
}

/// How an async-task child reports readiness, heartbeats and status (the async counterpart of
/// ``LoopTaskContext/ready()``); calls outside a supervised async task do nothing.
///
/// ```swift
/// ChildSpec(id: "indexer", .asyncTask {
///     try await openIndex()
///     SupervisedTask.ready()
///     while !Task.isCancelled {
///         try await indexNextBatch()
///         SupervisedTask.heartbeat()
///     }
/// }, readiness: .notify, liveness: .watchdog(.seconds(10)))
/// ```
public enum SupervisedTask {
    /// The running async-task child's way back to its supervisor, set by its runtime.
    @TaskLocal package static var notifier: WorkerNotifier?

    /// The task is ready (``Readiness/notify``).
    public static func ready() { notifier?.send(.ready) }

    /// The task is alive (``Liveness/watchdog(_:)``).
    public static func heartbeat() { notifier?.send(.watchdog) }

    /// A line saying what the task is doing, shown in its status.
    public static func status(_ text: String) { notifier?.send(.status(text)) }
}

/// Carries an async task's notices to its supervisor's thread (each runtime hops its own way).
package final class WorkerNotifier: Sendable {
    private let deliver: @Sendable (WorkerNotice) -> Void

    package init(_ deliver: @escaping @Sendable (WorkerNotice) -> Void) { self.deliver = deliver }

    package func send(_ notice: WorkerNotice) { deliver(notice) }
}

/// A child's readiness and liveness settings, held once and shared by every copy of its spec
/// (one word in each ``ChildSpec``), with the durations the supervisor needs in nanoseconds.
final class HealthSettings: Sendable {
    let readiness: Readiness
    let readyTimeout: Duration
    let liveness: Liveness
    let readyTimeoutNanoseconds: Int64

    init(readiness: Readiness, readyTimeout: Duration, liveness: Liveness) {
        self.readiness = readiness
        self.readyTimeout = readyTimeout
        self.liveness = liveness
        readyTimeoutNanoseconds = readyTimeout.nanosecondsClamped
    }

    static let defaultReadyTimeout: Duration = .seconds(30)

    /// Whether these are the defaults (no box needed).
    var isDefault: Bool {
        readiness == .started && liveness == .none && readyTimeout == Self.defaultReadyTimeout
    }

    /// What a process worker's runtime must set up for these checks.
    var notifySetup: NotifySetup {
        var setup = NotifySetup.none
        if readiness == .notify { setup.notifySocket = true }
        if case .watchdog(let interval) = liveness {
            setup.notifySocket = true
            setup.watchdog = interval
        }
        if case .descriptor(let descriptor) = readiness { setup.readyDescriptor = descriptor }
        return setup
    }
}

/// Notify datagrams a runtime refused, by why: counted, never trusted.
public struct DroppedNotifications: Sendable, Equatable {
    /// From a process that is neither the child nor in its session, or without credentials.
    public var foreign = 0
    /// Not `KEY=VALUE` lines of UTF-8 text without NUL bytes.
    public var malformed = 0
    /// Longer than 4096 bytes.
    public var oversized = 0

    /// No drops.
    public init() {}

    /// All drops.
    public var total: Int { foreign + malformed + oversized }
}

/// systemd's notify message format: newline-separated `KEY=VALUE` assignments in one datagram.
package enum NotifyMessage {
    /// Why a datagram was refused.
    package enum Refusal: Error {
        case foreign, malformed, oversized
    }

    /// The notices of a datagram that reached a child's private notify socket, or why it is
    /// refused. Accepted senders, with credentials of root or of the child's user: the child, a
    /// process in its session (helpers such as `systemd-notify`; the child leads its own
    /// session with `newProcessGroup`, the default), or a process already gone (a helper that
    /// sent and exited before the datagram was read). The last clause means that any process of
    /// the child's user (or root) can be believed: abstract socket names are listed in
    /// `/proc/net/unix`. Other users' datagrams are always refused. The same rule for every
    /// runtime.
    package static func accept(_ bytes: [UInt8], senderPID: Int32?, senderUID: UInt32?, truncated: Bool,
                               childPID: Int32, expectedUID: UInt32) -> Result<[WorkerNotice], Refusal> {
        guard let sender = senderPID, let uid = senderUID, uid == 0 || uid == expectedUID else { return .failure(.foreign) }
        if sender != childPID {
            let session = getsid(sender)
            guard session == childPID || (session < 0 && errno == ESRCH) else { return .failure(.foreign) }
        }
        if truncated { return .failure(.oversized) }
        guard let notices = parse(bytes) else { return .failure(.malformed) }
        return .success(notices)
    }

    /// Counts `refusal` in `dropped`.
    package static func count(_ refusal: Refusal, in dropped: inout DroppedNotifications) {
        switch refusal {
        case .foreign: dropped.foreign += 1
        case .malformed: dropped.malformed += 1
        case .oversized: dropped.oversized += 1
        }
    }

    /// The notices in `bytes`, or `nil` when the datagram is malformed (not UTF-8, or a NUL
    /// byte). Lines without `=`, unknown keys and unparsable values are ignored, as systemd
    /// ignores them (a `READY=1` beside them still counts).
    package static func parse(_ bytes: [UInt8]) -> [WorkerNotice]? {
        if bytes.contains(0) { return nil }
        guard let text = String(validating: bytes, as: UTF8.self) else { return nil }
        var notices: [WorkerNotice] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            guard let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals]
            let value = line[line.index(after: equals)...]
            switch key {
            case "READY":
                if value == "1" { notices.append(.ready) }
            case "STATUS":
                notices.append(.status(String(value)))
            case "STOPPING":
                if value == "1" { notices.append(.stopping) }
            case "WATCHDOG":
                if value == "1" { notices.append(.watchdog) } else if value == "trigger" { notices.append(.watchdogTrigger) }
            case "EXTEND_TIMEOUT_USEC":
                guard let microseconds = Int64(value), microseconds >= 0 else { continue }
                let (nanoseconds, overflow) = microseconds.multipliedReportingOverflow(by: 1000)
                notices.append(.extendTimeout(.nanoseconds(overflow ? .max : nanoseconds)))
            default:
                break
            }
        }
        return notices
    }
}
