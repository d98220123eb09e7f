import Testing
import UVLoop
import TestSupport
import CUVShims
#if canImport(Glibc)
import Glibc
#endif

/// Spawns `options`, runs the loop until the exit and every piped stream's end arrived,
/// and returns what was seen.
private func runToCompletion(_ loop: EventLoop, _ options: ProcessOptions) throws -> (exit: ProcessExit?, stdout: [String], stderr: [String]) {
    var exit: ProcessExit?
    var stdout: [String] = []
    var stderr: [String] = []
    var openStreams = (options.stdout == .pipe ? 1 : 0) + (options.stderr == .pipe ? 1 : 0)
    _ = try ChildProcess.spawn(on: loop, options, onOutput: { output in
        switch output {
        case .line(.standardOutput, let line): stdout.append(line)
        case .line(.standardError, let line): stderr.append(line)
        case .end: openStreams -= 1
        }
    }, onExit: { exit = $0 })
    let finished = runLoop(loop, timeout: .seconds(10)) { exit != nil && openStreams == 0 }
    #expect(finished, "the child did not finish in time")
    return (exit, stdout, stderr)
}

extension ProcessOptions {
    init(_ method: SpawnMethod, argv: [String]) {
        self.init(argv: argv)
        spawnMethod = method
    }
}

@Suite("Child processes")
struct ChildProcessTests {
    @Test("exit codes and terminating signals are reported", arguments: [SpawnMethod.libuv, .pidfd])
    func exitCodeAndSignal(method: SpawnMethod) async throws {
        let report = try await withCheckedLoop { loop in
            let three = try runToCompletion(loop, ProcessOptions(method, argv: ["/bin/sh", "-c", "exit 3"]))
            #expect(three.exit == .exited(3))
            let killed = try runToCompletion(loop, ProcessOptions(method, argv: ["/bin/sh", "-c", "kill -9 $$"]))
            #expect(killed.exit == .signaled(9))
            let aborted = try runToCompletion(loop, ProcessOptions(method, argv: ["/bin/sh", "-c", "kill -ABRT $$"]))
            #expect(aborted.exit == .signaled(SIGABRT))
        }
        #expect(report == .clean)
    }

    @Test("a missing executable is ENOENT naming the path, with nothing left behind", arguments: [SpawnMethod.libuv, .pidfd])
    func missingExecutable(method: SpawnMethod) async throws {
        let report = try await withCheckedLoop { loop in
            let handlesBefore = loop.liveHandleCount
            var options = ProcessOptions(method, argv: ["/usr/bin/uvs-no-such-program"])
            options.stdout = .pipe
            let error = #expect(throws: UVError.self) {
                _ = try ChildProcess.spawn(on: loop, options, onOutput: { _ in }, onExit: { _ in })
            }
            #expect(error?.name == "ENOENT")
            #expect(error?.description.contains("/usr/bin/uvs-no-such-program") == true)
            let bare = #expect(throws: UVError.self) {
                _ = try ChildProcess.spawn(on: loop, ProcessOptions(method, argv: ["uvs-no-such-program"]), onExit: { _ in })
            }
            #expect(bare?.name == "ENOENT")
            loop.run(.noWait)
            #expect(loop.liveHandleCount == handlesBefore)
        }
        #expect(report == .clean)
    }

    @Test("a failure inside uv_spawn (bad interpreter) closes the process handle and the pipes", arguments: [SpawnMethod.libuv, .pidfd])
    func failureInsideUVSpawn(method: SpawnMethod) async throws {
        let directory = makeTemporaryDirectory()
        let script = directory + "/bad-interpreter"
        let fd = open(script, O_WRONLY | O_CREAT | O_CLOEXEC, 0o755)
        _ = "#!/nonexistent/interpreter\n".withCString { write(fd, $0, strlen($0)) }
        close(fd)
        let report = try await withCheckedLoop { loop in
            let handlesBefore = loop.liveHandleCount
            var options = ProcessOptions(method, argv: [script])
            options.stdout = .pipe
            options.stderr = .pipe
            let error = #expect(throws: UVError.self) {
                _ = try ChildProcess.spawn(on: loop, options, onOutput: { _ in }, onExit: { _ in })
            }
            #expect(error?.name == "ENOENT")
            #expect(error?.description.contains(script) == true)
            loop.run(.noWait)
            #expect(loop.liveHandleCount == handlesBefore)
        }
        unlink(script); rmdir(directory)
        #expect(report == .clean)
    }

    @Test("stopping a child through its group leaves no grandchild alive", arguments: [SpawnMethod.libuv, .pidfd])
    func groupStopKillsGrandchildren(method: SpawnMethod) async throws {
        let report = try await withCheckedLoop { loop in
            var exit: ProcessExit?
            var options = ProcessOptions(method, argv: ["/bin/sh", "-c", "sleep 60 & sleep 60 & echo started; wait"])
            options.stdout = .pipe
            var started = false
            let child = try ChildProcess.spawn(on: loop, options, onOutput: { output in
                if case .line(_, "started") = output { started = true }
            }, onExit: { exit = $0 })
            #expect(runLoop(loop) { started })
            #expect(livingProcesses(inGroup: child.pid).count == 3)
            try child.signalGroup(SIGTERM)
            #expect(runLoop(loop) { exit != nil })
            #expect(exit == .signaled(SIGTERM))
            #expect(runLoop(loop) { livingProcesses(inGroup: child.pid).isEmpty })
            #expect(throws: UVError.self) { try child.signalGroup(SIGTERM) }
        }
        #expect(report == .clean)
    }

    @Test("a child starts with no blocked signals and keeps the parent's ignored signals, SIGPIPE excepted")
    func signalDispositions() async throws {
        // (Handlers cannot be checked after exec, which resets them anyway, and this helper
        // links the Swift runtime, which installs its own; the reset matters before exec.)
        let report = try await withCheckedLoop { loop in
            let watcher = try SignalWatcher(loop: loop, signal: SIGUSR1) { _ in }
            let oldUSR2 = signal(SIGUSR2, SIG_IGN)
            let oldPIPE = signal(SIGPIPE, SIG_IGN)
            defer {
                signal(SIGUSR2, oldUSR2)
                signal(SIGPIPE, oldPIPE)
                watcher.close()
            }
            var options = ProcessOptions(.pidfd, argv: [childHelperPath, "signals"])
            options.stdout = .pipe
            let result = try runToCompletion(loop, options)
            var masks: [String: UInt64] = [:]
            for line in result.stdout {
                let parts = line.split(separator: ":")
                if parts.count == 2 { masks[String(parts[0])] = UInt64(parts[1].trimmingPrefix("\t"), radix: 16) }
            }
            #expect(masks.count == 3)
            #expect(masks["SigBlk"] == 0, "the spawn blocks every signal around clone; the child must not inherit that")
            #expect((masks["SigIgn"] ?? 0) & (UInt64(1) << UInt64(SIGUSR2 - 1)) != 0, "an ignored signal stays ignored")
            #expect((masks["SigIgn"] ?? 0) & (UInt64(1) << UInt64(SIGPIPE - 1)) == 0, "SIGPIPE is back at its default")
        }
        #expect(report == .clean)
    }

    @Test("null streams are /dev/null, read-only for stdin and read-write for output, restart after restart", arguments: [SpawnMethod.libuv, .pidfd])
    func nullStreams(method: SpawnMethod) async throws {
        // The pidfd method hands every child the loop's own /dev/null descriptors (opened once,
        // closed with the loop: the leak check below sees that); the child sees what opening
        // it itself gave before.
        let report = try await withCheckedLoop { loop in
            for _ in 0..<3 {
                var options = ProcessOptions(method, argv: [childHelperPath, "stdio"])
                options.stdin = .null
                options.stdout = .pipe
                options.stderr = .null
                let result = try runToCompletion(loop, options)
                #expect(result.exit == .exited(0))
                #expect(result.stdout.count == 3)
                #expect(result.stdout.first == "0:/dev/null:r")
                // (libuv's pipes are socket pairs.)
                let stdout = result.stdout.dropFirst().first ?? ""
                #expect(stdout.hasPrefix("1:pipe:") || stdout.hasPrefix("1:socket:"))
                #expect(result.stdout.last == "2:/dev/null:rw")
            }
        }
        #expect(report == .clean)
    }

    @Test("a pidfd-spawned child sees only fds 0, 1, 2 and the descriptors passed to it; the host's flags stay as they were",
          arguments: [SpawnMethod.libuv, .pidfd])
    func onlyExpectedDescriptors(method: SpawnMethod) async throws {
        let report = try await withCheckedLoop { loop in
            // A descriptor of the host's own without FD_CLOEXEC (as a socket handed to a
            // re-exec'd self would be): spawning must not change its flags.
            var hostPipe: [Int32] = [-1, -1]
            #expect(pipe(&hostPipe) == 0)
            defer { close(hostPipe[0]); close(hostPipe[1]) }

            var options = ProcessOptions(method, argv: [childHelperPath, "fds"])
            options.stdout = .pipe
            let inheritable = openDescriptors().filter { $0 > 2 && fcntl($0, F_GETFD) & FD_CLOEXEC == 0 }
            #expect(inheritable.contains(hostPipe[0]))
            let plain = try runToCompletion(loop, options)
            let seen = Set(plain.stdout.compactMap { Int32($0) })
            switch method {
            case .pidfd:
                #expect(seen == [0, 1, 2], "the child closes everything else, in its own table")
            case .libuv:
                // libuv closes nothing in the child: what lacks FD_CLOEXEC is inherited, and
                // nothing this library opened (every one of ours is close-on-exec).
                #expect(seen.subtracting([0, 1, 2]).isSubset(of: inheritable))
                #expect(seen.contains(hostPipe[0]))
            }
            #expect(fcntl(hostPipe[0], F_GETFD) & FD_CLOEXEC == 0, "the host's descriptor flags are not ours to change")
            #expect(fcntl(hostPipe[1], F_GETFD) & FD_CLOEXEC == 0)

            let extra = open("/dev/null", O_RDONLY | O_CLOEXEC)
            defer { close(extra) }
            options.extraDescriptors = [extra]
            let passed = try runToCompletion(loop, options)
            let seenWithExtra = Set(passed.stdout.compactMap { Int32($0) })
            #expect(seenWithExtra.isSuperset(of: [0, 1, 2, 3]))
            if method == .pidfd { #expect(seenWithExtra == [0, 1, 2, 3]) }
        }
        #expect(report == .clean)
    }

    @Test("a descriptor already in its place reaches the child even when close-on-exec")
    func descriptorInPlace() async throws {
        // The pidfd spawn installs a source that already has its target number with F_SETFD,
        // clearing FD_CLOEXEC as dup2 would (a dup3 onto itself is refused). Done by the helper,
        // whose descriptor table holds only 0, 1 and 2 (in this process, another test may hold
        // any number of descriptors): it makes fd 5 a close-on-exec copy of its stdout and
        // spawns itself with 3 and 4 as gaps and 5 as itself.
        let report = try await withCheckedLoop { loop in
            var options = ProcessOptions(.pidfd, argv: [childHelperPath, "spawn-in-place"])
            options.stdout = .pipe
            let result = try runToCompletion(loop, options)
            #expect(result.exit == .exited(0))
            #expect(Set(result.stdout.compactMap { Int32($0) }) == Set(0...5), "fd 5 reached the grandchild")
        }
        #expect(report == .clean)
    }

    @Test("piped output arrives as ordered lines, the final partial line included", arguments: [SpawnMethod.libuv, .pidfd])
    func pipedLines(method: SpawnMethod) async throws {
        let report = try await withCheckedLoop { loop in
            var options = ProcessOptions(method, argv: ["/bin/sh", "-c", "echo one; echo two >&2; echo three; printf 'four'"])
            options.stdout = .pipe
            options.stderr = .pipe
            let result = try runToCompletion(loop, options)
            #expect(result.stdout == ["one", "three", "four"])
            #expect(result.stderr == ["two"])
            #expect(result.exit == .exited(0))

            // Megabytes without a newline arrive in bounded pieces, nothing lost.
            var flood = ProcessOptions(method, argv: [childHelperPath, "flood", "300000"])
            flood.stdout = .pipe
            let flooded = try runToCompletion(loop, flood)
            #expect(flooded.stdout.reduce(0) { $0 + $1.utf8.count } == 300_000)
            #expect(flooded.stdout.allSatisfy { $0.utf8.count <= ChildProcess.maxLineLength })

            // A long line finished by a newline in a later read is capped too (it used to be
            // delivered whole: 75,535 bytes against a 65,536-byte cap).
            var long = ProcessOptions(method, argv: ["/bin/sh", "-c", "head -c 75535 /dev/zero | tr '\\0' a; echo; echo after"])
            long.stdout = .pipe
            let capped = try runToCompletion(loop, long)
            #expect(capped.stdout.map(\.utf8.count) == [ChildProcess.maxLineLength, 75_535 - ChildProcess.maxLineLength, 5])
            #expect(capped.stdout.last == "after")
        }
        #expect(report == .clean)
    }

    @Test("the fast spawn leaves the caller's errno alone, even when the child fails")
    func spawnKeepsErrno() throws {
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/nonexistent/program"), nil]
        var envp: [UnsafeMutablePointer<CChar>?] = [nil]
        defer { free(argv[0]) }
        var options = cuvs_spawn_options()
        options.stdio_fds = (-1, -1, -1)
        var pidfd: Int32 = -1
        var step = cuvs_spawn_step(rawValue: 0)
        errno = 0
        let result = "/nonexistent/program".withCString { file in
            argv.withUnsafeBufferPointer { argvBuffer in
                envp.withUnsafeMutableBufferPointer { envpBuffer in
                    options.file = file
                    options.argv = UnsafePointer(argvBuffer.baseAddress)
                    options.envp = UnsafePointer(envpBuffer.baseAddress)
                    return cuvs_spawn(&options, &pidfd, &step)
                }
            }
        }
        let errnoAfter = errno
        #expect(result == -ENOENT, "execve's error comes back as the result")
        #expect(step == CUVS_SPAWN_STEP_EXEC, "the failed step is named")
        #expect(errnoAfter == 0, "the child's failing system calls must not write the parent's errno")
        #expect(pidfd == -1)
    }

    @Test("environment policies and the working directory hold", arguments: [SpawnMethod.libuv, .pidfd])
    func environmentAndDirectory(method: SpawnMethod) async throws {
        let report = try await withCheckedLoop { loop in
            func env(_ name: String, _ policy: EnvironmentPolicy) throws -> [String] {
                var options = ProcessOptions(method, argv: [childHelperPath, "env", name])
                options.environment = policy
                options.stdout = .pipe
                return try runToCompletion(loop, options).stdout
            }
            let path = String(cString: getenv("PATH"))
            let value1 = try env("PATH", .inherit)
            #expect(value1 == [path])
            let value2 = try env("PATH", .replace(["ONLY": "1"]))
            #expect(value2 == ["<unset>"])
            let value3 = try env("ONLY", .replace(["ONLY": "1"]))
            #expect(value3 == ["1"])
            let value4 = try env("PATH", .inheritWithOverrides(["PATH": nil]))
            #expect(value4 == ["<unset>"])
            let value5 = try env("EXTRA", .inheritWithOverrides(["EXTRA": "yes"]))
            #expect(value5 == ["yes"])

            var options = ProcessOptions(method, argv: [childHelperPath, "cwd"])
            options.workingDirectory = "/usr/lib"
            options.stdout = .pipe
            let value6 = try runToCompletion(loop, options).stdout
            #expect(value6 == ["/usr/lib"])

            // stdout to a file
            let directory = makeTemporaryDirectory()
            var toFile = ProcessOptions(method, argv: ["/bin/sh", "-c", "echo logged"])
            toFile.stdout = .file(path: directory + "/out.log", append: false)
            let value7 = try runToCompletion(loop, toFile).exit
            #expect(value7 == .exited(0))
            #expect(readSmallFile(directory + "/out.log") == "logged\n")
            unlink(directory + "/out.log"); rmdir(directory)
        }
        #expect(report == .clean)
    }

    @Test("twenty pidfd children ending at about the same time are all reported, then the exit set keeps the loop alive no longer")
    func manyExitsAtOnce() async throws {
        let report = try await withCheckedLoop { loop in
            let handlesBefore = loop.liveHandleCount
            var exits: [Int32: ProcessExit] = [:]
            var children: [ChildProcess] = []
            for index in 0..<20 {
                let child = try ChildProcess.spawn(on: loop, ProcessOptions(.pidfd, argv: ["/bin/sh", "-c", "exit \(index)"])) { exit in
                    exits[Int32(index)] = exit
                }
                children.append(child)
            }
            #expect(runLoop(loop) { exits.count == 20 })
            #expect((0..<20).allSatisfy { exits[Int32($0)] == .exited(Int32($0)) })
            #expect(children.allSatisfy { !$0.isRunning && !loop.spawnedChild($0.pid) })
            var sleeperExit: ProcessExit?
            let sleeper = try ChildProcess.spawn(on: loop, ProcessOptions(.pidfd, argv: ["/bin/sleep", "60"])) { sleeperExit = $0 }
            #expect(loop.spawnedChild(sleeper.pid), "a running child is the loop's (the orphan reaper leaves it alone)")
            try sleeper.signal(SIGKILL)
            #expect(runLoop(loop) { sleeperExit != nil })
            #expect(!loop.spawnedChild(sleeper.pid))
            // Nothing watched: the exit set no longer keeps the loop alive (no referenced active handle).
            #expect(loop.run(.noWait) == false)
            #expect(loop.liveHandleCount == handlesBefore)
        }
        #expect(report == .clean)
    }

    @Test("a loop dropped without close() while pidfd children run kills them and reports their exits from its deinit")
    func droppedLoopReapsChildren() async throws {
        let report = try await withCheckedLoop { _ in
            var exits: [ProcessExit] = []
            var pids: [Int32] = []
            do {
                let other = try EventLoop()
                for _ in 0..<2 {
                    let child = try ChildProcess.spawn(on: other, ProcessOptions(.pidfd, argv: ["/bin/sleep", "60"])) { exits.append($0) }
                    pids.append(child.pid)
                }
            }
            #expect(exits == [.signaled(SIGKILL), .signaled(SIGKILL)])
            #expect(pids.allSatisfy { !isAlive($0) })
        }
        #expect(report == .clean)
    }

    @Test("bad input is refused with a clear error and leaves nothing behind", arguments: [SpawnMethod.libuv, .pidfd])
    func badInput(method: SpawnMethod) async throws {
        let report = try await withCheckedLoop { loop in
            let handlesBefore = loop.liveHandleCount
            let empty = #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, ProcessOptions(method, argv: []), onExit: { _ in }) }
            #expect(empty?.name == "EINVAL")
            let blank = #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, ProcessOptions(method, argv: [""]), onExit: { _ in }) }
            #expect(blank?.name == "EINVAL")
            let relative = #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, ProcessOptions(method, argv: ["./uvs-not-here"]), onExit: { _ in }) }
            #expect(relative?.name == "ENOENT")
            #expect(relative?.description.contains("./uvs-not-here") == true)
            var badDirectory = ProcessOptions(method, argv: ["/bin/true"])
            badDirectory.workingDirectory = "/uvs-no-such-directory"
            let directoryError = #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, badDirectory, onExit: { _ in }) }
            #expect(directoryError?.name == "ENOENT")
            #expect(directoryError?.description.contains("working directory \"/uvs-no-such-directory\"") == true)
            var pipeWithoutHandler = ProcessOptions(method, argv: ["/bin/true"])
            pipeWithoutHandler.stdout = .pipe
            #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, pipeWithoutHandler, onExit: { _ in }) }
            var badFD = ProcessOptions(method, argv: ["/bin/true"])
            badFD.extraDescriptors = [9999]
            #expect((#expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, badFD, onExit: { _ in }) })?.name == "EBADF")
            let directory = makeTemporaryDirectory()
            let plainFile = directory + "/not-executable"
            close(open(plainFile, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644))
            defer { unlink(plainFile); rmdir(directory) }
            let noExec = ProcessOptions(method, argv: [plainFile])
            #expect((#expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, noExec, onExit: { _ in }) })?.name == "EACCES")

            var exit: ProcessExit?
            let child = try ChildProcess.spawn(on: loop, ProcessOptions(method, argv: [childHelperPath, "sleep", "60"]), onExit: { exit = $0 })
            let outOfRange = #expect(throws: UVError.self) { try child.signal(999) }
            #expect(outOfRange?.name == "EINVAL")
            #expect(child.isRunning)
            try child.signal(SIGKILL)
            #expect(runLoop(loop) { exit != nil })
            let afterExit = #expect(throws: UVError.self) { try child.signal(SIGTERM) }
            #expect(afterExit?.name == "ESRCH")
            loop.run(.noWait)
            #expect(loop.liveHandleCount == handlesBefore)
        }
        #expect(report == .clean)
    }
}
