/// Why a child (or a supervisor) ended.
public enum ExitReason: Sendable, Equatable, CustomStringConvertible {
    /// It finished its work: a task returned or finished, a process exited with a success code.
    case normal
    /// It ended because its supervisor asked it to.
    case shutdown
    /// A task failed with this error (its description).
    case failure(String)
    /// A process exited with a code outside its success codes.
    case exited(Int32)
    /// A signal ended a process (not the supervisor's own stop request).
    case signaled(Int32)
    /// It could not be started (missing executable, ...): the error's description, with
    /// libuv's error name where there is one.
    case startFailed(String)
    /// It did not stop within its shutdown timeout and was killed.
    case killed
    /// A task did not stop within its shutdown timeout; tasks cannot be killed, so it was left
    /// running and is no longer supervised.
    case abandoned
    /// A supervisor exceeded its restart intensity and gave up.
    case intensityExceeded
    /// It stopped showing it was alive (``Liveness``) and was stopped: which check failed.
    case unresponsive(String)

    /// Whether the exit counts as a failure: everything but ``normal`` and ``shutdown``
    /// (``killed`` during a requested stop is reported but, as in OTP, not restarted).
    public var isAbnormal: Bool {
        switch self {
        case .normal, .shutdown: return false
        default: return true
        }
    }

    /// `normal`, `exited(3)`, `signaled(SIGKILL)`, ...
    public var description: String {
        switch self {
        case .normal: return "normal"
        case .shutdown: return "shutdown"
        case .failure(let message): return "failure(\(message))"
        case .exited(let code): return "exited(\(code))"
        case .signaled(let signal): return "signaled(\(signalName(signal)))"
        case .startFailed(let message): return "startFailed(\(message))"
        case .killed: return "killed"
        case .abandoned: return "abandoned"
        case .intensityExceeded: return "intensityExceeded"
        case .unresponsive(let why): return "unresponsive(\(why))"
        }
    }
}

/// How a worker ended, as its runtime saw it; the supervisor turns it into an ``ExitReason``.
public enum WorkerTermination: Sendable, Equatable {
    /// A process exited with this code.
    case exited(Int32)
    /// A signal ended a process.
    case signaled(Int32)
    /// A task returned.
    case returned
    /// A task threw (the error's description).
    case threw(String)
}

/// `SIGTERM`-style names for the common signals, the number otherwise.
package func signalName(_ signal: Int32) -> String {
    let names: [Int32: String] = [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
                                  7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV",
                                  12: "SIGUSR2", 13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM"]
    return names[signal] ?? "signal \(signal)"
}
