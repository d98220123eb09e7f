#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CLibUV
import CUVShims
import ProcessSpawning

/// A child process watched on the loop, started with `uv_spawn` or the Linux pidfd fast path
/// (see ``SpawnMethod``).
///
/// Lifetime: the handle (`uv_process_t`, or an idle handle that only carries the lifetime while
/// the pidfd is watched in the loop's set of child exits) is closed right after the exit was
/// reported; closing a `uv_process_t` earlier would leave a zombie libuv never
/// reaps. After the exit was reported the pid may belong to another process, so ``signal(_:)``
/// refuses with `ESRCH` instead of signalling it.
///
/// ```swift
/// let child = try ChildProcess.spawn(on: loop, ProcessOptions(argv: ["/bin/sh", "-c", "exit 3"])) { exit in
///     print(exit)   // exit code 3
/// }
/// ```
public final class ChildProcess: LoopHandle {
    /// Lines longer than this many bytes are delivered in pieces, so memory stays bounded.
    public static let maxLineLength = LineSplitter.defaultMaxLineLength

    /// Whether this kernel supports what the pidfd method needs (probed once): `pidfd_open`
    /// (Linux 5.3) and `waitid(P_PIDFD)` (Linux 5.4).
    public static let pidfdSupported: Bool = cuvs_pidfd_wait_supported() == 1

    /// The child's process id (also its process group id when it has its own group).
    public let pid: Int32
    /// Its number among the loop's children (see `EventLoop.liveProcesses`).
    let serial: UInt64
    /// Whether the child leads its own process group (``ProcessOptions/newProcessGroup``).
    public let hasOwnProcessGroup: Bool
    /// How it was started.
    public let spawnMethod: SpawnMethod
    /// How the child ended, once the exit was reported.
    public private(set) var exit: ProcessExit?

    private let killGroupOnExit: Bool
    private var onExit: ((ProcessExit) -> Void)?
    /// The pidfd (pidfd method), closed after the handle's close callback (which takes it out
    /// of the loop's set of child exits).
    private var pidfd: Int32

    init(loop: EventLoop, memory: UnsafeMutableRawPointer, serial: UInt64, pid: Int32, pidfd: Int32,
         method: SpawnMethod, options: ProcessOptions, onExit: @escaping (ProcessExit) -> Void) {
        self.serial = serial
        self.pid = pid
        self.pidfd = pidfd
        spawnMethod = method
        hasOwnProcessGroup = options.newProcessGroup
        killGroupOnExit = options.newProcessGroup && options.killGroupOnExit
        self.onExit = onExit
        super.init(loop: loop, initialisedHandle: memory)
    }

    /// Starts a child process on `loop`.
    ///
    /// - Parameters:
    ///   - loop: the loop that watches it (the calling thread's).
    ///   - options: the program, arguments, environment, stdio and spawn method.
    ///   - onOutput: receives lines from streams configured as ``StdioPolicy/pipe``.
    ///   - onExit: called once on the loop with the exit code or signal.
    /// - Throws: ``UVError`` naming the program and libuv's error (`ENOENT` for a missing
    ///   executable or working directory, `EACCES`, `EINVAL` for empty argv, ...; with
    ///   ``SpawnMethod/pidfd`` an error from the child names the step that failed, `execve`
    ///   with the path, `chdir`, limits, credentials). `EINVAL` for ``SpawnMethod/libuv`` on a
    ///   loop that takes SIGCHLD through a signalfd (a `SupervisorDaemon`'s). On failure
    ///   no handle stays open and no process is left behind.
    public static func spawn(
        on loop: EventLoop,
        _ options: ProcessOptions,
        onOutput: ((ProcessOutput) -> Void)? = nil,
        onExit: @escaping (ProcessExit) -> Void
    ) throws(UVError) -> ChildProcess {
        try spawn(on: loop, options, reusing: nil, onOutput: onOutput, onExit: onExit)
    }

    /// ``spawn(on:_:onOutput:onExit:)``, keeping what the spawn prepared in `cache` for the next
    /// spawn with the same `options` (a supervisor restarting the same child).
    package static func spawn(
        on loop: EventLoop,
        _ options: ProcessOptions,
        reusing cache: SpawnCache?,
        onOutput: ((ProcessOutput) -> Void)? = nil,
        onExit: @escaping (ProcessExit) -> Void
    ) throws(UVError) -> ChildProcess {
        loop.preconditionInLoop("ChildProcess.spawn")
        if loop.isClosing {
            throw UVError(code: UV_ECANCELED.rawValue, operation: "spawn: the loop is closing")
        }
        let prepared = try SpawnPreparation.prepare(options, reusing: cache)
        let description = prepared.description
        if options.stdin == .pipe {
            throw UVError(code: UV_EINVAL.rawValue, operation: "\(description): stdin cannot be a pipe")
        }
        if (options.stdout == .pipe || options.stderr == .pipe) && onOutput == nil {
            throw UVError(code: UV_EINVAL.rawValue, operation: "\(description): a piped stream needs an onOutput handler")
        }
        if let signal = options.parentDeathSignal {
            try validate(signal: signal, operation: "\(description): parent-death signal")
            if options.spawnMethod != .pidfd {
                throw UVError(code: UV_EINVAL.rawValue, operation: "\(description): a parent-death signal needs the pidfd spawn method")
            }
        }
        if options.spawnMethod == .libuv && loop.takesChildSignalsThroughDescriptor {
            // libuv learns of the exit from its SIGCHLD handler, which may never run then.
            throw UVError(code: UV_EINVAL.rawValue, operation: "\(description): the libuv spawn method needs libuv's SIGCHLD "
                          + "handler, and this loop's thread reads SIGCHLD from a signalfd (SupervisorDaemon with the pidfd method)")
        }
        if options.spawnMethod != .pidfd
            && (options.supplementaryGroups != nil || options.fileModeMask != nil || !options.resourceLimits.isEmpty) {
            throw UVError(code: UV_EINVAL.rawValue,
                          operation: "\(description): supplementary groups, umask and resource limits need the pidfd spawn method")
        }
        if options.spawnMethod != .pidfd && options.childRunsFirst {
            throw UVError(code: UV_EINVAL.rawValue, operation: "\(description): childRunsFirst needs the pidfd spawn method")
        }
        if options.resourceLimits.count > 64 || (options.supplementaryGroups?.count ?? 0) > 65_536 {
            throw UVError(code: UV_EINVAL.rawValue, operation: "\(description): at most 64 resource limits and 65,536 groups")
        }
        if let mask = options.fileModeMask, mask > 0o777 {
            throw UVError(code: UV_EINVAL.rawValue, operation: "\(description): umask \(String(mask, radix: 8)) is not in 0...0777")
        }
        if options.extraDescriptors.count > 64 {
            throw UVError(code: UV_EINVAL.rawValue, operation: "\(description): at most 64 extra descriptors")
        }
        var stdio = try StdioSetup(loop: loop, options: options, onOutput: onOutput, description: description)
        defer { stdio.closeParentCopies() }
        switch options.spawnMethod {
        case .libuv:
            // libuv closes nothing in the child, and marking the host's descriptors
            // close-on-exec from here would change them for the whole program: with this method
            // the child inherits every descriptor that lacks FD_CLOEXEC (see SpawnMethod.libuv).
            return try spawnWithLibUV(on: loop, options, prepared: prepared, stdio: &stdio, onExit: onExit)
        case .pidfd:
            return try spawnWithPidfd(on: loop, options, prepared: prepared, stdio: &stdio, onExit: onExit)
        }
    }

    /// Whether the child is still running (its exit has not been reported).
    public var isRunning: Bool { exit == nil }

    /// Sends `signal` to the child only.
    /// - Throws: ``UVError`` `ESRCH` once the exit was reported; `EINVAL` for a bad signal number.
    public func signal(_ signal: Int32) throws(UVError) {
        guard exit == nil, isOpen else {
            throw UVError(errno: ESRCH, operation: "signal pid \(pid): the process has exited")
        }
        loop.preconditionInLoop("ChildProcess.signal")
        try Self.validate(signal: signal, operation: "signal pid \(pid)")
        switch spawnMethod {
        case .libuv:
            let process = UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_process_t.self)
            try UVError.check(uv_process_kill(process, signal), "signal \(signal) to pid \(pid)")
        case .pidfd:
            if cuvs_pidfd_send_signal(pidfd, signal) != 0 {
                throw UVError(errno: cuvs_errno(), operation: "signal \(signal) to pid \(pid)")
            }
        }
    }

    /// Sends `signal` to the child's whole process group (or to the child alone when it shares
    /// the supervisor's group).
    /// - Throws: ``UVError`` `ESRCH` once the exit was reported; `EINVAL` for a bad signal number.
    public func signalGroup(_ signal: Int32) throws(UVError) {
        guard hasOwnProcessGroup else { return try self.signal(signal) }
        guard exit == nil, isOpen else {
            throw UVError(errno: ESRCH, operation: "signal group \(pid): the process has exited")
        }
        loop.preconditionInLoop("ChildProcess.signalGroup")
        try Self.validate(signal: signal, operation: "signal group \(pid)")
        // The leader has not been reaped, so the group id cannot have been reused.
        if Glibc.kill(-pid, signal) != 0 {
            throw UVError(errno: cuvs_errno(), operation: "signal \(signal) to process group \(pid)")
        }
    }

    /// (The operation is built only for the error: a spawn with a parent-death signal, every
    /// restart of a daemon's child, must not format a string.)
    static func validate(signal: Int32, operation: @autoclosure () -> String) throws(UVError) {
        if signal < 0 || signal >= 65 {
            throw UVError(code: UV_EINVAL.rawValue, operation: "\(operation()): signal \(signal) is out of range")
        }
    }

    func didExit(_ reason: ProcessExit) {
        exit = reason
        // The group outlives its leader while grandchildren live, so -pid cannot be reused yet.
        if killGroupOnExit { _ = Glibc.kill(-pid, SIGKILL) }
        loop.processEnded(self)
        let handler = onExit
        onExit = nil
        close()
        handler?(reason)
    }

    func killForTeardown() {
        guard exit == nil else { return }
        _ = hasOwnProcessGroup ? Glibc.kill(-pid, SIGKILL) : Glibc.kill(pid, SIGKILL)
    }

    func abandonForTeardown() {
        onExit = nil
        super.close()
    }

    /// Closes the handle once the exit was reported. Closing a running child is deferred:
    /// it is killed (SIGKILL to its group) and closed when its exit arrives.
    public override func close() {
        if exit == nil && isOpen {
            killForTeardown()
            return
        }
        super.close()
    }

    override func closeForTeardown() {
        if exit == nil { abandonForTeardown() } else { super.close() }
    }

    override func didFinishClosing() {
        if pidfd >= 0 {
            Glibc.close(pidfd)
            pidfd = -1
            loop.childExits.unwatched()
        }
    }

    /// Marks a handle whose spawn failed so that closing it does not try to kill anything.
    func markSpawnFailed() {
        exit = .exited(127)
        onExit = nil
    }

    /// The pidfd method's exit event: the pidfd became readable, the child has exited.
    func pidfdReadable() {
        guard exit == nil else { return }
        var code: Int32 = 0
        var signal: Int32 = 0
        let reaped = cuvs_pidfd_reap(pidfd, &code, &signal)
        if reaped == 0 {
            // Not reapable yet: watch for the next event (the set arms each pidfd once); if
            // that fails, look again on the next turn rather than lose the exit.
            if !loop.childExits.rearm(pidfd: pidfd, serial: serial) {
                loop.runSoon { [weak self] in self?.pidfdReadable() }
            }
            return
        }
        if reaped < 0 {
            // The child is gone but cannot be reaped: the kernel reaped it already, because
            // this process ignores SIGCHLD. Its status is lost; report -1 rather than poll on.
            code = -1
            signal = 0
        }
        didExit(signal != 0 ? .signaled(signal) : .exited(code))
    }
}

/// What spawning one ``ProcessOptions`` prepared (argv and the environment as C arrays, the
/// program's path, checked with `stat` and `access`), kept for the next spawn with the same
/// options: a restart does not build or check them again. It is used only with the options it
/// was made for (its owner makes a new one when they change), and only while `environ` holds
/// the entries a block built from it points to. Only the pidfd method's spawns are kept, whose
/// child reports which step failed (a program removed since its first start is an `execve`
/// error naming its path), with a program given as a path (a name is looked up in `PATH` at
/// every spawn, as a program may be installed meanwhile) and no extra descriptors (checked open
/// at every spawn).
package final class SpawnCache {
    fileprivate var prepared: SpawnPreparation?
    fileprivate var environ: EnvironSnapshot?
    /// How many times a spawn with this cache prepared its input (rather than reusing it).
    package fileprivate(set) var preparations = 0

    /// An empty cache.
    package init() {}
}

extension SpawnPreparation {
    /// The preparation for `options`: the one in `cache` when it is still valid, else a new one
    /// (kept in `cache` when it may be).
    static func prepare(_ options: ProcessOptions, reusing cache: SpawnCache?) throws(UVError) -> SpawnPreparation {
        guard let cache else { return try SpawnPreparation(options: options) }
        if let prepared = cache.prepared, cache.environ?.isCurrent ?? true { return prepared }
        cache.prepared = nil
        cache.preparations += 1
        let keepable = options.spawnMethod == .pidfd && options.extraDescriptors.isEmpty
            && options.argv.first?.utf8.contains(UInt8(ascii: "/")) == true
        // Taken before the block is built from `environ`, so that a change in between is seen.
        var snapshot: EnvironSnapshot?
        if keepable, case .inheritWithOverrides = options.environment { snapshot = EnvironSnapshot() }
        let prepared = try SpawnPreparation(options: options)
        if keepable {
            cache.prepared = prepared
            cache.environ = snapshot
        }
        return prepared
    }

    /// The checks and C strings for `options`, with errors in the loop layer's terms.
    init(options: ProcessOptions) throws(UVError) {
        let environment: SpawnEnvironment
        switch options.environment {
        case .inherit: environment = .inherit
        case .replace(let variables): environment = .replace(variables)
        case .inheritWithOverrides(let overrides): environment = .inheritWithOverrides(overrides)
        }
        do {
            try self.init(argv: options.argv, environment: environment, workingDirectory: options.workingDirectory,
                          extraDescriptors: options.extraDescriptors)
        } catch {
            throw UVError(error)
        }
    }
}

extension UVError {
    /// The same error in the loop layer's terms.
    init(_ error: SpawnError) {
        self.init(errno: error.errno, operation: error.operation)
    }
}
