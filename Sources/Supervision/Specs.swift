/// When a child is restarted after it ends (OTP's `restart`).
public enum RestartType: Sendable, Equatable, CustomStringConvertible {
    /// Always restarted, whatever the exit reason.
    case permanent
    /// Restarted only after an abnormal exit (anything but ``ExitReason/normal`` and
    /// ``ExitReason/shutdown``).
    case transient
    /// Never restarted; removed from its supervisor when it ends.
    case temporary

    /// The restart type's name.
    public var description: String {
        switch self {
        case .permanent: return "permanent"
        case .transient: return "transient"
        case .temporary: return "temporary"
        }
    }
}

/// How a child is stopped (OTP's `shutdown`).
public enum ShutdownPolicy: Sendable, Equatable {
    /// Killed at once (SIGKILL to a process's group; a task is abandoned at once).
    case brutalKill
    /// Asked to stop (stop signal, stop handler or cancellation), then killed (or, for a task,
    /// reported abandoned) if it has not ended after this long. Must be positive.
    case timeout(Duration)
    /// Asked to stop, and waited for without limit. The default for supervisors.
    case infinity
}

/// Which siblings are restarted with a failed child (OTP's `strategy`).
public enum RestartStrategy: Sendable, Equatable {
    /// Only the child that ended.
    case oneForOne
    /// All children: the others are stopped in reverse start order, then all are started again
    /// in start order.
    case oneForAll
    /// The child that ended and every child started after it.
    case restForOne
}

/// More than `maxRestarts` restarts within `period` make the supervisor give up: it stops all
/// its children in reverse order and ends with ``ExitReason/intensityExceeded``, which its
/// parent handles like any child failure (escalation).
///
/// A restart at time `t` is inside the window at time `now` when `now - t < period`. Restarts
/// are counted when they are decided (before any backoff delay). Counting is O(1) amortised:
/// only the restarts still inside the window are kept.
public struct RestartIntensity: Sendable, Equatable {
    /// Restarts allowed inside the window; one more escalates. Zero allows none.
    public var maxRestarts: Int
    /// The sliding window. Must be positive.
    public var period: Duration

    /// OTP's default: 3 restarts in 5 seconds... and this library's too.
    public static let `default` = RestartIntensity(maxRestarts: 3, period: .seconds(5))

    /// `maxRestarts` restarts within `period`.
    public init(maxRestarts: Int, period: Duration) {
        self.maxRestarts = maxRestarts
        self.period = period
    }
}

/// When a supervisor ends by itself because significant children ended (OTP's `auto_shutdown`).
public enum AutoShutdown: Sendable, Equatable {
    /// Never (the default).
    case never
    /// As soon as any significant child ends without being restarted.
    case anySignificant
    /// When every significant child has ended without being restarted.
    case allSignificant
}

/// Timer-based exponential backoff between restarts of one child (OTP has none; restarts are
/// immediate there, as with ``none``).
///
/// Rules:
/// - The delay before the k-th consecutive restart (k = 1, 2, ...) is
///   `min(maximum, initial * multiplier^(k-1))`.
/// - Jitter then multiplies that delay by a random factor in `[1 - jitter, 1 + jitter]` drawn
///   from the supervisor's seeded generator. It applies after the cap, so delays at the cap are
///   spread as well (`maximum` is the largest delay before jitter; with jitter `j` a delay can
///   reach `maximum × (1 + j)`): capping again would make about half the delays at the cap
///   exactly `maximum`, and restarts of many children in step again.
/// - A child that stayed up for `resetAfter` or longer starts again from k = 1.
/// - Every restart counts, whatever the exit reason (a permanent child that exits 0 at once is
///   a crash loop too).
/// - With ``RestartStrategy/oneForAll`` and ``RestartStrategy/restForOne`` the group is stopped
///   at once and restarted together after the failing child's delay.
public struct Backoff: Sendable, Equatable {
    /// The first delay.
    public var initial: Duration
    /// Growth per consecutive restart (at least 1).
    public var multiplier: Double
    /// The largest delay before jitter (at least `initial`); see the rules above.
    public var maximum: Duration
    /// Random spread as a fraction of the delay, in `0...1`.
    public var jitter: Double
    /// Uptime after which the consecutive-restart count resets. Must be positive.
    public var resetAfter: Duration

    /// Restart at once, as OTP does.
    public static let none = Backoff(initial: .zero, multiplier: 1, maximum: .zero, jitter: 0, resetAfter: .seconds(1))

    /// Exponential backoff.
    public static func exponential(
        initial: Duration = .milliseconds(100),
        multiplier: Double = 2,
        maximum: Duration = .seconds(30),
        jitter: Double = 0.1,
        resetAfter: Duration = .seconds(30)
    ) -> Backoff {
        Backoff(initial: initial, multiplier: multiplier, maximum: maximum, jitter: jitter, resetAfter: resetAfter)
    }

    /// A backoff with every parameter given.
    public init(initial: Duration, multiplier: Double, maximum: Duration, jitter: Double, resetAfter: Duration) {
        self.initial = initial
        self.multiplier = multiplier
        self.maximum = maximum
        self.jitter = jitter
        self.resetAfter = resetAfter
    }

    /// Whether restarts are immediate.
    public var isNone: Bool { maximum == .zero }
}

/// Where a process child's standard stream goes.
public enum ProcessStdio: Sendable, Equatable {
    /// The supervisor's own descriptor.
    case inherit
    /// `/dev/null`.
    case null
    /// A file (created if needed; appended to or truncated).
    case file(path: String, append: Bool)
    /// Read on the loop and delivered line by line as ``SupervisorEvent/Kind/output(stream:line:)``
    /// events (and to the logger). Only for standard output and standard error.
    case capture
}

/// One resource limit for a process child (`setrlimit` in the child before it runs the program).
public struct ResourceLimit: Sendable, Equatable {
    /// The resources systemd's `Limit*=` settings name.
    public enum Resource: Int32, Sendable, CaseIterable {
        case cpuSeconds = 0, fileSize = 1, dataSize = 2, stackSize = 3, coreSize = 4, residentSize = 5
        case processes = 6, openFiles = 7, lockedMemory = 8, addressSpace = 9, fileLocks = 10
        case pendingSignals = 11, messageQueueBytes = 12, nicePriority = 13, realtimePriority = 14
        case realtimeMicroseconds = 15

        /// The config-file and systemd name: `nofile`, `nproc`, `core`, ...
        public var name: String {
            switch self {
            case .cpuSeconds: return "cpu"
            case .fileSize: return "fsize"
            case .dataSize: return "data"
            case .stackSize: return "stack"
            case .coreSize: return "core"
            case .residentSize: return "rss"
            case .processes: return "nproc"
            case .openFiles: return "nofile"
            case .lockedMemory: return "memlock"
            case .addressSpace: return "as"
            case .fileLocks: return "locks"
            case .pendingSignals: return "sigpending"
            case .messageQueueBytes: return "msgqueue"
            case .nicePriority: return "nice"
            case .realtimePriority: return "rtprio"
            case .realtimeMicroseconds: return "rttime"
            }
        }
    }

    /// No limit (`RLIM_INFINITY`).
    public static let unlimited = UInt64.max

    /// Which resource.
    public var resource: Resource
    /// The soft limit (what the process gets) and the hard limit (how far it may raise it).
    public var soft: UInt64
    public var hard: UInt64

    /// A limit with its soft and hard values (``unlimited`` for none).
    public init(_ resource: Resource, soft: UInt64, hard: UInt64) {
        self.resource = resource
        self.soft = soft
        self.hard = hard
    }

    /// The same soft and hard limit, as systemd's `LimitNOFILE=65536`.
    public init(_ resource: Resource, _ value: UInt64) {
        self.init(resource, soft: value, hard: value)
    }
}

/// How a process child's environment is built.
public enum ProcessEnvironment: Sendable, Equatable {
    /// The supervisor's own environment.
    case inherit
    /// Exactly these variables.
    case replace([String: String])
    /// The supervisor's environment with these changes: a value sets, `nil` removes.
    case inheritWithOverrides([String: String?])
}

extension ProcessEnvironment {
    /// This policy with `changes` applied over it: a value sets, `nil` removes. The one merge
    /// every runtime uses (per-child arguments, notify sockets, the daemon's cookie).
    package func applying(_ changes: [String: String?]) -> ProcessEnvironment {
        guard !changes.isEmpty else { return self }
        switch self {
        case .inherit:
            return .inheritWithOverrides(changes)
        case .inheritWithOverrides(let overrides):
            return .inheritWithOverrides(overrides.merging(changes) { _, new in new })
        case .replace(var variables):
            for (key, value) in changes { variables[key] = value }
            return .replace(variables)
        }
    }
}

/// What to run for a process child. Plain data; the runtime spawns it (never through a shell).
public struct ProcessSpec: Sendable, Equatable {
    /// The argument vector; `argv[0]` is a path or a name looked up in `PATH`.
    public var argv: [String]
    /// The environment policy (default: inherit). Values never appear in events or logs.
    public var environment: ProcessEnvironment = .inherit
    /// The working directory; `nil` keeps the supervisor's.
    public var workingDirectory: String? = nil
    /// Standard input (default: `/dev/null`).
    public var stdin: ProcessStdio = .null
    /// Standard output (default: inherited).
    public var stdout: ProcessStdio = .inherit
    /// Standard error (default: inherited).
    public var stderr: ProcessStdio = .inherit
    /// The signal that asks the child to stop (default: SIGTERM, 15), sent to its group.
    public var stopSignal: Int32 = 15
    /// Exit codes that count as a normal exit (default: `[0]`).
    public var successExitCodes: Set<Int32> = [0]
    /// Signals that count as a normal end when they end the process (default: none), as
    /// systemd's `SuccessExitStatus=` accepts signal names: a worker that dies of a SIGTERM
    /// somebody else sent it was told to stop, so a transient child is then not restarted.
    public var successSignals: Set<Int32> = []
    /// Its own session and process group (default: `true`), so stopping it reaches grandchildren.
    public var newProcessGroup: Bool = true
    /// Run as this user id (needs privileges).
    public var userID: UInt32? = nil
    /// Run as this group id (needs privileges).
    public var groupID: UInt32? = nil
    /// The child's supplementary groups (requires privileges); `nil` keeps the supervisor's,
    /// or clears them when ``groupID`` is set (as `setgid` alone would leave root's groups).
    public var supplementaryGroups: [UInt32]? = nil
    /// The child's file mode creation mask (`umask`, 0...0o777); `nil` inherits the supervisor's.
    public var umask: UInt32? = nil
    /// Resource limits set in the child before it runs the program, as systemd's `LimitNOFILE=`
    /// and friends.
    public var resourceLimits: [ResourceLimit] = []

    /// A process running `argv`.
    public init(argv: [String]) {
        self.argv = argv
    }
}

/// What a child is.
///
/// The process and supervisor cases are `indirect`: their specs live in a shared box, so that
/// every ``ChildSpec`` (one per child, kept by its supervisor) stays small whatever it runs;
/// a loop-task child of a dynamic supervisor is about 130 bytes smaller for it.
public enum WorkerKind {
    /// An operating-system process: crashes are isolated from the supervisor.
    indirect case process(ProcessSpec)
    /// A callback-style task on the supervisor's loop: the cheapest kind. The closure starts it
    /// and must return without blocking; see ``LoopTaskContext``.
    case loopTask((LoopTaskContext) -> Void)
    /// An `async throws` function on the loop's task executor: returning is a normal exit, a
    /// thrown error a failure, and the stop request is task cancellation.
    case asyncTask(@Sendable () async throws -> Void)
    /// A nested supervisor.
    indirect case supervisor(SupervisorSpec)

    /// Which of the four kinds it is, as a plain value (for status reports and matching).
    public var childKind: ChildKind {
        switch self {
        case .process: return .process
        case .loopTask: return .loopTask
        case .asyncTask: return .asyncTask
        case .supervisor: return .supervisor
        }
    }

    /// A short name for status and events: `process`, `loopTask`, `asyncTask`, `supervisor`.
    public var name: String { childKind.rawValue }

    /// Whether a ``ChildSpec/argument`` reaches it (the task kinds).
    var takesArgument: Bool {
        switch self {
        case .loopTask, .asyncTask: return true
        case .process, .supervisor: return false
        }
    }

    var isSupervisor: Bool {
        if case .supervisor = self { return true }
        return false
    }
}

/// Which kind of child a ``WorkerKind`` is, without its payload: what ``ChildStatus`` reports
/// (OTP's `worker` and `supervisor`, with the three worker kinds told apart).
public enum ChildKind: String, Sendable, Equatable, CustomStringConvertible {
    /// An operating-system process.
    case process
    /// A callback-style task on the supervisor's loop.
    case loopTask
    /// An `async throws` function on the loop's task executor.
    case asyncTask
    /// A nested supervisor.
    case supervisor

    /// Whether it is a worker (anything but a supervisor), as OTP's `type`.
    public var isWorker: Bool { self != .supervisor }

    /// The kind's name: `process`, `loopTask`, `asyncTask` or `supervisor`.
    public var description: String { rawValue }
}

/// One child of a supervisor (OTP's child specification).
///
/// ```swift
/// ChildSpec(id: "web", .process(ProcessSpec(argv: ["/usr/bin/web", "--port", "8080"])),
///           restart: .permanent, backoff: .exponential())
/// ```
public struct ChildSpec {
    /// Unique among its siblings; not empty; no `/` (paths are `root/db/worker-2`).
    public var id: String
    /// What to run.
    public var kind: WorkerKind
    /// When to restart it (default: permanent).
    public var restart: RestartType
    /// How to stop it; `nil` means the default: 5 seconds for workers, infinity for supervisors.
    public var shutdown: ShutdownPolicy?
    /// Delays between its restarts (default: none).
    public var backoff: Backoff
    /// Whether its end can end the supervisor (with ``SupervisorSpec/autoShutdown``). Only for
    /// transient and temporary children, as in OTP.
    public var significant: Bool
    /// A value handed to a task child at every start: ``LoopTaskContext/argument`` for a loop
    /// task, ``ChildArgument/current`` inside an async task. Tasks only (a process gets its
    /// arguments in `argv` and its environment). Usually set per child by
    /// ``Supervisor/startChild(from:with:)``, so that one template serves many children.
    public var argument: (any Sendable)? {
        get { argumentBox?.value }
        set { argumentBox = newValue.map(ArgumentBox.init) }
    }
    /// One word in every spec instead of an existential's five.
    var argumentBox: ArgumentBox?

    /// When it counts as ready, so that its supervisor starts the next sibling (default:
    /// ``Readiness/started``, at once). See ``Readiness``.
    public var readiness: Readiness {
        get { health?.readiness ?? .started }
        set { setHealth(readiness: newValue, readyTimeout: readyTimeout, liveness: liveness) }
    }
    /// How long it may take to get ready before its start fails (default 30 s; positive).
    public var readyTimeout: Duration {
        get { health?.readyTimeout ?? HealthSettings.defaultReadyTimeout }
        set { setHealth(readiness: readiness, readyTimeout: newValue, liveness: liveness) }
    }
    /// How it shows it is alive once ready (default: ``Liveness/none``). See ``Liveness``.
    public var liveness: Liveness {
        get { health?.liveness ?? .none }
        set { setHealth(readiness: readiness, readyTimeout: readyTimeout, liveness: newValue) }
    }
    /// The three above, boxed only when one differs from its default (one word per spec).
    private(set) var health: HealthSettings?

    private mutating func setHealth(readiness: Readiness, readyTimeout: Duration, liveness: Liveness) {
        let settings = HealthSettings(readiness: readiness, readyTimeout: readyTimeout, liveness: liveness)
        health = settings.isDefault ? nil : settings
    }

    /// A child spec with every field given or defaulted.
    public init(
        id: String,
        _ kind: WorkerKind,
        restart: RestartType = .permanent,
        shutdown: ShutdownPolicy? = nil,
        backoff: Backoff = .none,
        significant: Bool = false,
        argument: (any Sendable)? = nil,
        readiness: Readiness = .started,
        readyTimeout: Duration = .seconds(30),
        liveness: Liveness = .none
    ) {
        self.id = id
        self.kind = kind
        self.restart = restart
        self.shutdown = shutdown
        self.backoff = backoff
        self.significant = significant
        self.argumentBox = argument.map(ArgumentBox.init)
        setHealth(readiness: readiness, readyTimeout: readyTimeout, liveness: liveness)
    }

    /// The policy in force: the given one or the kind's default.
    public var effectiveShutdown: ShutdownPolicy {
        if let shutdown { return shutdown }
        return kind.isSupervisor ? .infinity : .timeout(.seconds(5))
    }
}

/// A task child's argument, held once and shared by the spec and every incarnation's context.
final class ArgumentBox: Sendable {
    let value: any Sendable
    init(_ value: any Sendable) { self.value = value }
}

/// What one dynamic child gets on top of its template (OTP's `start_child(Sup, ExtraArgs)` for
/// `simple_one_for_one`), so that one template serves every child without being copied and
/// edited by hand.
///
/// ```swift
/// let worker = ChildSpec(id: "conn", .process(ProcessSpec(argv: ["/usr/bin/handler"])), restart: .temporary)
/// try supervisor.startChild(from: worker, with: ChildArguments(argv: ["--peer", "10.0.0.7"],
///                                                               environment: ["TRACE": "1"]))
/// ```
public struct ChildArguments: Sendable {
    /// Appended to a process template's `argv`.
    public var argv: [String]
    /// Applied over a process template's environment: a value sets, `nil` removes (over
    /// ``ProcessEnvironment/inherit`` this makes ``ProcessEnvironment/inheritWithOverrides(_:)``;
    /// over ``ProcessEnvironment/replace(_:)`` the replaced set changes).
    public var environment: [String: String?]
    /// The task template's ``ChildSpec/argument``, replaced for this child.
    public var value: (any Sendable)?

    /// Arguments with every field given or empty.
    public init(argv: [String] = [], environment: [String: String?] = [:], value: (any Sendable)? = nil) {
        self.argv = argv
        self.environment = environment
        self.value = value
    }
}

/// The argument of the async-task child whose body is running (``ChildSpec/argument``), as a
/// task-local value: an async task reads it with `ChildArgument.current`.
public enum ChildArgument {
    /// The running async-task child's argument; `nil` outside one, or when it has none.
    @TaskLocal public static var current: (any Sendable)?
}

/// A supervisor: its strategy, its limits and its children.
public struct SupervisorSpec {
    /// Which siblings restart with a failed child (default: one for one).
    public var strategy: RestartStrategy
    /// The restart intensity (default: 3 in 5 seconds).
    public var intensity: RestartIntensity
    /// Whether significant children can end it (default: never).
    public var autoShutdown: AutoShutdown
    /// The children, in start order.
    public var children: [ChildSpec]
    /// For a dynamic supervisor (children added at run time, as Elixir's `DynamicSupervisor`):
    /// the most children it may have at once; `nil` for no limit.
    public var maxChildren: Int?
    /// Whether children are added at run time only (``Supervisor/startChild(_:)``), one for one.
    public var isDynamic: Bool
    /// Specs that are not started with the supervisor but serve as templates for children added
    /// at run time: ``Supervisor/startChild(fromTemplate:with:)`` names one by its id (OTP's
    /// `simple_one_for_one` child spec, here any number of them, on any supervisor). Their ids
    /// are unique among the templates; a control client starts children from them by path.
    public var templates: [ChildSpec] = []

    /// A static supervisor.
    public init(
        strategy: RestartStrategy = .oneForOne,
        intensity: RestartIntensity = .default,
        autoShutdown: AutoShutdown = .never,
        children: [ChildSpec]
    ) {
        self.strategy = strategy
        self.intensity = intensity
        self.autoShutdown = autoShutdown
        self.children = children
        self.maxChildren = nil
        self.isDynamic = false
    }

    /// Checks the spec (and every nested spec) as ``Supervisor`` would before starting it:
    /// what a config loader or a test calls to find errors without a runtime.
    /// - Parameter name: the root's path element, for messages (default `root`).
    /// - Throws: ``SupervisionError`` for the first invalid field, naming its path.
    public func validate(name: String = "root") throws(SupervisionError) {
        try Validation.validate(self, path: name)
    }

    /// A dynamic supervisor: no children at start, one-for-one, at most `maxChildren`, with
    /// `templates` to start children from.
    public static func dynamic(maxChildren: Int? = nil, intensity: RestartIntensity = .default,
                               templates: [ChildSpec] = []) -> SupervisorSpec {
        var spec = SupervisorSpec(strategy: .oneForOne, intensity: intensity, children: [])
        spec.maxChildren = maxChildren
        spec.templates = templates
        spec.isDynamic = true
        return spec
    }
}
