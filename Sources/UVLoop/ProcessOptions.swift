/// How a child's environment is built.
public enum EnvironmentPolicy: Sendable, Equatable {
    /// The supervisor's own environment, unchanged.
    case inherit
    /// Exactly these variables and nothing else.
    case replace([String: String])
    /// The supervisor's environment with these changes: a value sets, `nil` removes.
    case inheritWithOverrides([String: String?])
}

/// Where one of a child's standard descriptors (0, 1 or 2) goes.
public enum StdioPolicy: Sendable, Equatable {
    /// The supervisor's own descriptor.
    case inherit
    /// `/dev/null`.
    case null
    /// A file, opened by the supervisor (created with mode 0644 for output; appended to
    /// when `append` is true, truncated otherwise).
    case file(path: String, append: Bool)
    /// A pipe read on the loop; output arrives as lines through the `onOutput` handler.
    /// Only for standard output and standard error.
    case pipe
}

/// Which output stream a line came from.
public enum StandardStream: Sendable, Equatable {
    /// File descriptor 1.
    case standardOutput
    /// File descriptor 2.
    case standardError
}

/// What a piped child output delivers on the loop.
public enum ProcessOutput: Sendable, Equatable {
    /// One line, without its newline. A final line without a newline is delivered too, and a
    /// line longer than ``ChildProcess/maxLineLength`` bytes arrives in pieces of that many bytes
    /// of output (decoded as UTF-8, with invalid or split sequences replaced).
    case line(StandardStream, String)
    /// The stream reached end of file (the child and everything that inherited it closed it).
    case end(StandardStream)
}

/// How a child process ended.
public enum ProcessExit: Sendable, Equatable, CustomStringConvertible {
    /// It called `exit(code)` or returned from `main`.
    case exited(Int32)
    /// A signal ended it.
    case signaled(Int32)

    /// `exit code 3`, `signal 9`.
    public var description: String {
        switch self {
        case .exited(let code): return "exit code \(code)"
        case .signaled(let signal): return "signal \(signal)"
        }
    }
}

/// Everything needed to start a child process. Plain data: build it anywhere, spawn it on the loop.
///
/// ```swift
/// var options = ProcessOptions(argv: ["/bin/sh", "-c", "echo hi; exit 3"])
/// options.stdout = .pipe
/// options.environment = .inheritWithOverrides(["LANG": "C"])
/// ```
public struct ProcessOptions: Sendable, Equatable {
    /// The argument vector; `argv[0]` names the program (a path, or a name looked up in `PATH`).
    /// Never passed through a shell.
    public var argv: [String]
    /// The environment policy. Default: ``EnvironmentPolicy/inherit``.
    public var environment: EnvironmentPolicy = .inherit
    /// The working directory; `nil` keeps the supervisor's.
    public var workingDirectory: String? = nil
    /// Standard input. Default: ``StdioPolicy/null``.
    public var stdin: StdioPolicy = .null
    /// Standard output. Default: ``StdioPolicy/inherit`` (a supervisor that wants logs keeps them).
    public var stdout: StdioPolicy = .inherit
    /// Standard error. Default: ``StdioPolicy/inherit``.
    public var stderr: StdioPolicy = .inherit
    /// Open descriptors of the supervisor passed to the child as 3, 4, ... in this order (at
    /// most 64); -1 leaves a gap (`/dev/null` with ``SpawnMethod/pidfd``, nothing with
    /// ``SpawnMethod/libuv``). With ``SpawnMethod/pidfd`` nothing else is inherited (the child closes every other
    /// descriptor before `execve`); see ``SpawnMethod/libuv`` for that method.
    public var extraDescriptors: [Int32] = []
    /// Run the child in its own session and process group (`setsid`), so that stopping it
    /// signals the whole group and no grandchild is left behind. Default: `true`.
    public var newProcessGroup: Bool = true
    /// When the child (the group leader) exits, SIGKILL whatever is left in its group.
    /// Only with ``newProcessGroup``. Default: `true`.
    public var killGroupOnExit: Bool = true
    /// How to start the child. Default: ``SpawnMethod/pidfd`` where the kernel supports it
    /// (Linux 5.4+), else ``SpawnMethod/libuv``.
    public var spawnMethod: SpawnMethod = .preferred
    /// A signal the kernel sends the child when the thread that spawned it (the loop thread)
    /// ends, even by SIGKILL (`PR_SET_PDEATHSIG`). Only with ``SpawnMethod/pidfd``; `nil` for none.
    public var parentDeathSignal: Int32? = nil
    /// Let the new program run before the spawning thread goes on (default `false`; only with
    /// ``SpawnMethod/pidfd``). The spawning thread is suspended until the child calls `execve`;
    /// woken then, it would normally preempt the new program on the CPU they share and finish
    /// its own bookkeeping first, which delays the program's start (a restart's gap) by that
    /// much. With this set, the child first makes a spawning thread that is in the default
    /// policy (`SCHED_OTHER`) `SCHED_BATCH`, its nice value and reset-on-fork flag kept: the
    /// thread's wake-up then does not preempt, so it waits until the program sleeps or has used
    /// its time slice (or another CPU takes it), and it takes its own policy back as soon as it
    /// runs. The program keeps the thread's policy; a thread in any other policy is left alone.
    /// Two side effects on the thread: a custom time slice (`sched_setattr`'s `sched_runtime`,
    /// Linux 6.12+) is reset to the kernel's default, and a renice of the thread from outside
    /// while it waits for the `execve` is undone. Costs `gettid` in the thread, two system calls
    /// in the child, and one when the thread resumes.
    public var childRunsFirst: Bool = false
    /// Run the child as this user id (requires privileges).
    public var userID: UInt32? = nil
    /// Run the child as this group id (requires privileges).
    public var groupID: UInt32? = nil
    /// The child's supplementary groups (requires privileges); `nil` keeps the supervisor's, or
    /// clears them when ``groupID`` is set. Only with ``SpawnMethod/pidfd``.
    public var supplementaryGroups: [UInt32]? = nil
    /// The child's file mode creation mask (`umask`); `nil` inherits the supervisor's. Only with
    /// ``SpawnMethod/pidfd``.
    public var fileModeMask: UInt32? = nil
    /// Resource limits set in the child before it runs the program (as systemd's `LimitNOFILE=`
    /// and friends). Only with ``SpawnMethod/pidfd``.
    public var resourceLimits: [ResourceLimit] = []

    /// One `setrlimit` for the child.
    public struct ResourceLimit: Sendable, Equatable {
        /// `RLIMIT_NOFILE`, `RLIMIT_NPROC`, ...
        public var resource: Int32
        /// The soft and hard limits; `UInt64.max` is unlimited (`RLIM_INFINITY`).
        public var soft: UInt64
        public var hard: UInt64

        /// A limit on `resource`.
        public init(resource: Int32, soft: UInt64, hard: UInt64) {
            self.resource = resource
            self.soft = soft
            self.hard = hard
        }
    }

    /// Options for `argv`, with the defaults above.
    public init(argv: [String]) {
        self.argv = argv
    }
}

/// How a child process is started and watched.
public enum SpawnMethod: Sendable, Equatable {
    /// `uv_spawn` and libuv's SIGCHLD handling: portable, but no hook between fork and exec
    /// (so no parent-death signal), signals go by pid, and libuv closes nothing in the child:
    /// it inherits every descriptor of this process that lacks `FD_CLOEXEC` besides 0-2 and
    /// ``ProcessOptions/extraDescriptors``. (Every descriptor this library opens is
    /// close-on-exec; a host's own ones are its business, and this layer does not change their
    /// flags behind its back.) Prefer ``pidfd`` where the kernel has it.
    case libuv
    /// Linux: a `vfork`-style spawn in the C shim that sets the session, the parent-death signal
    /// and the descriptors in the child and closes every other descriptor; the exit is watched
    /// through a pidfd (in the loop's epoll set of child exits) and reaped with
    /// `waitid(P_PIDFD)`; signals to the child go through `pidfd_send_signal`, immune to pid
    /// reuse.
    case pidfd

    /// ``pidfd`` when the kernel supports pidfds, else ``libuv``.
    public static var preferred: SpawnMethod { ChildProcess.pidfdSupported ? .pidfd : .libuv }
}
