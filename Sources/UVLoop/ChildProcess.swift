#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import CLibUV
import CUVShims

/// A child process started with `uv_spawn`, watched on the loop.
///
/// Lifetime: the `uv_process_t` is closed right after its exit callback (closing it earlier
/// would leave a zombie libuv never reaps). After the exit was reported the pid may belong to
/// another process, so ``signal(_:)`` refuses with `ESRCH` instead of signalling it.
///
/// ```swift
/// let child = try ChildProcess.spawn(on: loop, ProcessOptions(argv: ["/bin/sh", "-c", "exit 3"])) { exit in
///     print(exit)   // exit code 3
/// }
/// ```
public final class ChildProcess: LoopHandle {
    /// Lines longer than this many bytes are delivered in pieces, so memory stays bounded.
    public static let maxLineLength = 64 * 1024

    /// The child's process id (also its process group id when it has its own group).
    public let pid: Int32
    /// Whether the child leads its own process group (``ProcessOptions/newProcessGroup``).
    public let hasOwnProcessGroup: Bool
    /// How the child ended, once the exit was reported.
    public private(set) var exit: ProcessExit?

    private let killGroupOnExit: Bool
    private var onExit: ((ProcessExit) -> Void)?
    private var pipes: [OutputPipe] = []

    private var processPointer: UnsafeMutablePointer<uv_process_t> {
        UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_process_t.self)
    }

    private init(loop: EventLoop, memory: UnsafeMutableRawPointer, options: ProcessOptions, onExit: @escaping (ProcessExit) -> Void) {
        let process = memory.assumingMemoryBound(to: uv_process_t.self)
        pid = process.pointee.pid
        hasOwnProcessGroup = options.newProcessGroup
        killGroupOnExit = options.newProcessGroup && options.killGroupOnExit
        self.onExit = onExit
        super.init(loop: loop, initialisedHandle: memory, byteCount: MemoryLayout<uv_process_t>.size)
    }

    /// Starts a child process on `loop`.
    ///
    /// - Parameters:
    ///   - onOutput: receives lines from streams configured as ``StdioPolicy/pipe``.
    ///   - onExit: called once on the loop with the exit code or signal.
    /// - Throws: ``UVError`` naming the program and libuv's error (`ENOENT` for a missing
    ///   executable or working directory, `EACCES`, `EINVAL` for empty argv, ...). On failure
    ///   no handle stays open and no process is left behind.
    public static func spawn(
        on loop: EventLoop,
        _ options: ProcessOptions,
        onOutput: ((ProcessOutput) -> Void)? = nil,
        onExit: @escaping (ProcessExit) -> Void
    ) throws(UVError) -> ChildProcess {
        loop.preconditionInLoop("ChildProcess.spawn")
        let prepared = try SpawnPreparation(options)
        let description = prepared.description
        if options.stdin == .pipe {
            throw UVError(code: UV_EINVAL.rawValue, operation: "\(description): stdin cannot be a pipe")
        }
        if (options.stdout == .pipe || options.stderr == .pipe) && onOutput == nil {
            throw UVError(code: UV_EINVAL.rawValue, operation: "\(description): a piped stream needs an onOutput handler")
        }

        // Descriptors opened here are close-on-exec and closed again after the spawn.
        var openedFiles: [Int32] = []
        defer { for fd in openedFiles { Glibc.close(fd) } }
        var pipes: [OutputPipe] = []
        var containers = [uv_stdio_container_t](repeating: uv_stdio_container_t(), count: 3 + options.extraDescriptors.count)
        let policies = [options.stdin, options.stdout, options.stderr]
        for (fd, policy) in policies.enumerated() {
            switch policy {
            case .inherit:
                containers[fd].flags = UV_INHERIT_FD
                containers[fd].data.fd = Int32(fd)
            case .null:
                containers[fd].flags = UV_IGNORE
            case .file(let path, let append):
                let opened: Int32
                do {
                    opened = try openStdioFile(path: path, append: append, forInput: fd == 0, description: description)
                } catch {
                    for pipe in pipes { pipe.close() }
                    throw error
                }
                openedFiles.append(opened)
                containers[fd].flags = UV_INHERIT_FD
                containers[fd].data.fd = opened
            case .pipe:
                let stream: OutputStream = fd == 1 ? .standardOutput : .standardError
                let pipe = OutputPipe(loop: loop, stream: stream, maxLineLength: maxLineLength, handler: onOutput ?? { _ in })
                pipes.append(pipe)
                containers[fd].flags = uv_stdio_flags(rawValue: UV_CREATE_PIPE.rawValue | UV_WRITABLE_PIPE.rawValue)
                containers[fd].data.stream = pipe.streamPointer
            }
        }
        for (index, fd) in options.extraDescriptors.enumerated() {
            containers[3 + index].flags = UV_INHERIT_FD
            containers[3 + index].data.fd = fd
        }

        var flags: UInt32 = 0
        if options.newProcessGroup { flags |= UV_PROCESS_DETACHED.rawValue }
        if options.userID != nil { flags |= UV_PROCESS_SETUID.rawValue }
        if options.groupID != nil { flags |= UV_PROCESS_SETGID.rawValue }

        // libuv closes nothing in the child: any descriptor without FD_CLOEXEC would leak into
        // it, including ones this process inherited from its own parent. A supervisor's children
        // get 0-2 and what was configured, so mark every descriptor >= 3 close-on-exec first
        // (one close_range call). A descriptor another thread opens without O_CLOEXEC between
        // this call and the fork can still leak; the fast-path spawn closes them in the child.
        _ = cuvs_cloexec_from(3)

        let memory = LoopHandle.allocate(uv_process_t.self)
        let process = memory.assumingMemoryBound(to: uv_process_t.self)
        let result: Int32 = prepared.resolvedPath.withCString { file in
            let directory = prepared.workingDirectory.map { strdup($0) } ?? nil
            defer { free(directory) }
            return containers.withUnsafeMutableBufferPointer { stdio in
                var uvOptions = uv_process_options_t()
                uvOptions.exit_cb = { process, status, signal in
                    guard let data = process?.pointee.data else { return }
                    Unmanaged<ChildProcess>.fromOpaque(data).takeUnretainedValue()
                        .didExit(status: status, signal: signal)
                }
                uvOptions.file = file
                uvOptions.args = prepared.argv.pointer
                uvOptions.env = prepared.envp.pointer
                uvOptions.cwd = UnsafePointer(directory)
                uvOptions.flags = flags
                uvOptions.stdio_count = Int32(stdio.count)
                uvOptions.stdio = stdio.baseAddress
                uvOptions.uid = options.userID ?? 0
                uvOptions.gid = options.groupID ?? 0
                return uv_spawn(loop.rawLoop, process, &uvOptions)
            }
        }
        let child = ChildProcess(loop: loop, memory: memory, options: options, onExit: onExit)
        if result < 0 {
            // uv_spawn initialised the handle even though it failed: close it, and the pipes.
            child.exit = .exited(127)
            child.onExit = nil
            child.close()
            for pipe in pipes { pipe.close() }
            throw UVError(code: result, operation: description)
        }
        child.pipes = pipes
        loop.liveProcesses[ObjectIdentifier(child)] = child
        for pipe in pipes {
            do { try pipe.startReading() } catch { pipe.close() }
        }
        return child
    }

    /// Whether the child is still running (its exit has not been reported).
    public var isRunning: Bool { exit == nil }

    /// Sends `signal` to the child only.
    /// - Throws: ``UVError`` `ESRCH` once the exit was reported; `EINVAL` for a bad signal number.
    public func signal(_ signal: Int32) throws(UVError) {
        loop.preconditionInLoop("ChildProcess.signal")
        try Self.validate(signal: signal, operation: "signal pid \(pid)")
        guard exit == nil, isOpen else {
            throw UVError(errno: ESRCH, operation: "signal pid \(pid): the process has exited")
        }
        try UVError.check(uv_process_kill(processPointer, signal), "signal \(signal) to pid \(pid)")
    }

    /// Sends `signal` to the child's whole process group (or to the child alone when it shares
    /// the supervisor's group).
    /// - Throws: ``UVError`` `ESRCH` once the exit was reported; `EINVAL` for a bad signal number.
    public func signalGroup(_ signal: Int32) throws(UVError) {
        guard hasOwnProcessGroup else { return try self.signal(signal) }
        loop.preconditionInLoop("ChildProcess.signalGroup")
        try Self.validate(signal: signal, operation: "signal group \(pid)")
        guard exit == nil else {
            throw UVError(errno: ESRCH, operation: "signal group \(pid): the process has exited")
        }
        if Glibc.kill(-pid, signal) != 0 {
            throw UVError(errno: cuvs_errno(), operation: "signal \(signal) to process group \(pid)")
        }
    }

    static func validate(signal: Int32, operation: String) throws(UVError) {
        if signal < 0 || signal >= 65 {
            throw UVError(code: UV_EINVAL.rawValue, operation: "\(operation): signal \(signal) is out of range")
        }
    }

    private func didExit(status: Int64, signal: Int32) {
        let reason: ProcessExit = signal != 0 ? .signaled(signal) : .exited(Int32(truncatingIfNeeded: status))
        exit = reason
        // The group outlives its leader while grandchildren live, so -pid cannot be reused yet.
        if killGroupOnExit { _ = Glibc.kill(-pid, SIGKILL) }
        loop.liveProcesses[ObjectIdentifier(self)] = nil
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
}
