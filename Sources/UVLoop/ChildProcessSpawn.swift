#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CLibUV
import CUVShims
import ProcessSpawning

extension ChildProcess {
    /// `uv_spawn`: libuv forks, sets up the child and reports the exit from its SIGCHLD handler.
    static func spawnWithLibUV(
        on loop: EventLoop, _ options: ProcessOptions, prepared: SpawnPreparation,
        stdio: inout StdioSetup, onExit: @escaping (ProcessExit) -> Void
    ) throws(UVError) -> ChildProcess {
        let description = prepared.description
        var containers = [uv_stdio_container_t](repeating: uv_stdio_container_t(), count: 3 + options.extraDescriptors.count)
        for fd in 0..<3 {
            switch stdio.sources[fd] {
            case .inherit(let source), .descriptor(let source):
                containers[fd].flags = UV_INHERIT_FD
                containers[fd].data.fd = source
            case .null:
                containers[fd].flags = UV_IGNORE
            case .pipe(let pipe):
                containers[fd].flags = uv_stdio_flags(rawValue: UV_CREATE_PIPE.rawValue | UV_WRITABLE_PIPE.rawValue)
                containers[fd].data.stream = pipe.streamHandle
            }
        }
        for (index, fd) in options.extraDescriptors.enumerated() {
            // -1: nothing there (libuv's UV_IGNORE opens /dev/null only for 0-2; above, the slot stays closed).
            containers[3 + index].flags = fd < 0 ? UV_IGNORE : UV_INHERIT_FD
            containers[3 + index].data.fd = fd
        }
        var flags: UInt32 = 0
        if options.newProcessGroup { flags |= UV_PROCESS_DETACHED.rawValue }
        if options.userID != nil { flags |= UV_PROCESS_SETUID.rawValue }
        if options.groupID != nil { flags |= UV_PROCESS_SETGID.rawValue }

        let memory = LoopHandle.allocate(uv_process_t.self, on: loop)
        let process = memory.assumingMemoryBound(to: uv_process_t.self)
        let argv = prepared.argv.pointer
        let envp = prepared.environmentPointer
        let result: Int32 = prepared.resolvedPath.withCString { file in
            let directory = prepared.workingDirectory.map { strdup($0) } ?? nil
            defer { free(directory) }
            return containers.withUnsafeMutableBufferPointer { stdio in
                var uvOptions = uv_process_options_t()
                uvOptions.exit_cb = { process, status, signal in
                    guard let data = process?.pointee.data else { return }
                    let child = Unmanaged<ChildProcess>.fromOpaque(data).takeUnretainedValue()
                    child.didExit(signal != 0 ? .signaled(signal) : .exited(Int32(truncatingIfNeeded: status)))
                }
                uvOptions.file = file
                uvOptions.args = argv
                uvOptions.env = envp
                uvOptions.cwd = UnsafePointer(directory)
                uvOptions.flags = flags
                uvOptions.stdio_count = Int32(stdio.count)
                uvOptions.stdio = stdio.baseAddress
                uvOptions.uid = options.userID ?? 0
                uvOptions.gid = options.groupID ?? 0
                return uv_spawn(loop.rawLoop, process, &uvOptions)
            }
        }
        let child = ChildProcess(loop: loop, memory: memory, serial: loop.nextProcessSerial(),
                                 pid: process.pointee.pid, pidfd: -1, method: .libuv, options: options, onExit: onExit)
        if result < 0 {
            // uv_spawn initialised the handle even though it failed: close it, and the pipes.
            child.markSpawnFailed()
            child.close()
            stdio.closePipes()
            throw UVError(code: result, operation: description)
        }
        loop.processStarted(child)
        stdio.startReading()
        return child
    }

    /// The Linux fast path: `cuvs_spawn` (vfork semantics, parent-death signal, descriptors
    /// closed in the child), the exit watched through a pidfd.
    static func spawnWithPidfd(
        on loop: EventLoop, _ options: ProcessOptions, prepared: SpawnPreparation,
        stdio: inout StdioSetup, onExit: @escaping (ProcessExit) -> Void
    ) throws(UVError) -> ChildProcess {
        let description = prepared.description
        // Pipes: we make them (close-on-exec); the child gets the write end as its stdout/err.
        for fd in 1..<3 {
            if case .pipe(let pipe) = stdio.sources[fd] {
                do {
                    try stdio.makePipe(for: fd, pipe: pipe, description: description)
                } catch {
                    stdio.closePipes()
                    throw error
                }
            }
        }
        var spawnOptions = cuvs_spawn_options()
        spawnOptions.stdio_fds = (stdio.childDescriptor(0, on: loop), stdio.childDescriptor(1, on: loop), stdio.childDescriptor(2, on: loop))
        spawnOptions.new_session = options.newProcessGroup ? 1 : 0
        spawnOptions.parent_death_signal = options.parentDeathSignal ?? 0
        spawnOptions.child_runs_first = options.childRunsFirst ? 1 : 0
        spawnOptions.set_uid = options.userID == nil ? 0 : 1
        spawnOptions.uid = Int32(bitPattern: options.userID ?? 0)
        spawnOptions.set_gid = options.groupID == nil ? 0 : 1
        spawnOptions.gid = Int32(bitPattern: options.groupID ?? 0)
        spawnOptions.set_groups = options.supplementaryGroups == nil ? 0 : 1
        spawnOptions.set_umask = options.fileModeMask == nil ? 0 : 1
        spawnOptions.umask_value = options.fileModeMask ?? 0
        spawnOptions.argv = UnsafePointer(prepared.argv.pointer)
        spawnOptions.envp = UnsafePointer(prepared.environmentPointer)
        var pidfd: Int32 = -1
        var failedStep = cuvs_spawn_step(rawValue: 0)
        let extra = options.extraDescriptors
        let groups = options.supplementaryGroups ?? []
        let limits = options.resourceLimits.map {
            cuvs_resource_limit(resource: $0.resource, soft: $0.soft, hard: $0.hard)
        }
        let result: Int32 = prepared.resolvedPath.withCString { file in
            let directory = prepared.workingDirectory.map { strdup($0) } ?? nil
            defer { free(directory) }
            return extra.withUnsafeBufferPointer { extraFDs in
                groups.withUnsafeBufferPointer { groupIDs in
                    limits.withUnsafeBufferPointer { limitList in
                        spawnOptions.file = file
                        spawnOptions.cwd = UnsafePointer(directory)
                        spawnOptions.extra_fds = extraFDs.baseAddress
                        spawnOptions.extra_count = Int32(extraFDs.count)
                        spawnOptions.groups = groupIDs.baseAddress
                        spawnOptions.group_count = Int32(groupIDs.count)
                        spawnOptions.limits = limitList.baseAddress
                        spawnOptions.limit_count = Int32(limitList.count)
                        return cuvs_spawn(&spawnOptions, &pidfd, &failedStep)
                    }
                }
            }
        }
        stdio.closeChildEnds()
        if result < 0 {
            stdio.closePipes()
            throw UVError(errno: -result, operation: failureDescription(failedStep, description, options, prepared))
        }
        if pidfd < 0 {
            // No pidfd: we cannot watch it, so do not leave it running unwatched.
            Glibc.kill(result, SIGKILL)
            cuvs_reap_child(result)
            stdio.closePipes()
            throw UVError(errno: ENOSYS, operation: "\(description): pidfd_open")
        }
        let serial = loop.nextProcessSerial()
        do {
            try loop.childExits.watch(pidfd: pidfd, serial: serial)
        } catch {
            Glibc.kill(result, SIGKILL)
            cuvs_reap_child(result)
            Glibc.close(pidfd)
            stdio.closePipes()
            throw UVError(code: error.code, operation: "\(description): \(error.operation)")
        }
        // The handle only carries the child's lifetime (an idle handle, never started: no
        // system call); its exit arrives through the loop's set of child exits.
        let memory = LoopHandle.allocate(uv_idle_t.self, on: loop)
        // Bound once here, as every handle's memory (uv_idle_init cannot fail: it only fills in
        // the struct).
        uv_idle_init(loop.rawLoop, memory.bindMemory(to: uv_idle_t.self, capacity: 1))
        let child = ChildProcess(loop: loop, memory: memory, serial: serial,
                                 pid: result, pidfd: pidfd, method: .pidfd, options: options, onExit: onExit)
        loop.processStarted(child)
        stdio.startReading()
        return child
    }
}

/// What a failed `cuvs_spawn` was doing, for its error: the program's path for `execve` (as the
/// checks before a spawn name it), the directory for `chdir`, the ids for credentials.
private func failureDescription(_ step: cuvs_spawn_step, _ description: String, _ options: ProcessOptions,
                                _ prepared: SpawnPreparation) -> String {
    switch step {
    case CUVS_SPAWN_STEP_EXEC: return "\(description): \"\(prepared.resolvedPath)\""
    case CUVS_SPAWN_STEP_CHDIR: return "\(description): working directory \"\(options.workingDirectory ?? "")\""
    case CUVS_SPAWN_STEP_UID: return "\(description): setuid(\(options.userID ?? 0))"
    case CUVS_SPAWN_STEP_GID: return "\(description): setgid(\(options.groupID ?? 0))"
    case CUVS_SPAWN_STEP_GROUPS: return "\(description): setgroups"
    case CUVS_SPAWN_STEP_LIMITS: return "\(description): resource limits"
    case CUVS_SPAWN_STEP_SESSION: return "\(description): setsid"
    case CUVS_SPAWN_STEP_PARENT_DEATH_SIGNAL: return "\(description): parent-death signal"
    case CUVS_SPAWN_STEP_DESCRIPTORS: return "\(description): stdio and extra descriptors"
    default: return description
    }
}

/// The stdio plumbing of one spawn: files opened, pipes created, what the child gets.
struct StdioSetup {
    enum Source {
        case inherit(Int32)
        case null
        case descriptor(Int32)   // a file we opened (close-on-exec; closed after the spawn)
        case pipe(OutputPipe)
    }

    var sources: [Source] = []
    private var openedDescriptors: [Int32] = []
    private var childEnds: [Int: Int32] = [:]
    private var pipes: [OutputPipe] = []

    init(loop: EventLoop, options: ProcessOptions, onOutput: ((ProcessOutput) -> Void)?, description: String) throws(UVError) {
        sources.reserveCapacity(3)   // one allocation, not two as it grows
        for (fd, policy) in [options.stdin, options.stdout, options.stderr].enumerated() {
            switch policy {
            case .inherit:
                sources.append(.inherit(Int32(fd)))
            case .null:
                sources.append(.null)
            case .file(let path, let append):
                do {
                    let opened = try openStdioFile(path: path, append: append, forInput: fd == 0, description: description)
                    openedDescriptors.append(opened)
                    sources.append(.descriptor(opened))
                } catch {
                    closeParentCopies()
                    closePipes()
                    throw UVError(error)
                }
            case .pipe:
                let stream: StandardStream = fd == 1 ? .standardOutput : .standardError
                let pipe = OutputPipe(loop: loop, stream: stream, maxLineLength: ChildProcess.maxLineLength,
                                      handler: onOutput ?? { _ in })
                pipes.append(pipe)
                sources.append(.pipe(pipe))
            }
        }
    }

    /// pidfd method: creates the OS pipe for `fd`, gives its read end to the loop's pipe handle.
    mutating func makePipe(for fd: Int, pipe: OutputPipe, description: String) throws(UVError) {
        var ends: [Int32] = [-1, -1]
        let made = uv_pipe(&ends, 0, 0)   // close-on-exec, blocking (the loop's end is set by uv_pipe_open)
        if made < 0 {
            throw UVError(code: made, operation: "\(description): pipe")
        }
        let result = uv_pipe_open(UnsafeMutableRawPointer(pipe.rawHandle).assumingMemoryBound(to: uv_pipe_t.self), ends[0])
        if result < 0 {
            Glibc.close(ends[0])
            Glibc.close(ends[1])
            throw UVError(code: result, operation: "\(description): open pipe")
        }
        childEnds[fd] = ends[1]
    }

    /// The descriptor the child installs as `fd` (pidfd method): for a null stream the loop's
    /// `/dev/null` (-1, which the child opens itself, if that could not be opened).
    func childDescriptor(_ fd: Int, on loop: EventLoop) -> Int32 {
        switch sources[fd] {
        case .inherit(let source), .descriptor(let source): return source
        case .null: return loop.nullDevice(forInput: fd == 0)
        case .pipe: return childEnds[fd] ?? -1
        }
    }

    mutating func closeChildEnds() {
        for fd in childEnds.values { Glibc.close(fd) }
        childEnds.removeAll()
    }

    mutating func closeParentCopies() {
        for fd in openedDescriptors { Glibc.close(fd) }
        openedDescriptors.removeAll()
        closeChildEnds()
    }

    func closePipes() {
        for pipe in pipes { pipe.close() }
    }

    func startReading() {
        for pipe in pipes {
            do { try pipe.startReading() } catch { pipe.close() }
        }
    }
}
