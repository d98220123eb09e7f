import Testing
import UVLoop
import TestSupport
import CUVShims
#if canImport(Glibc)
import Glibc
#endif

/// Spawns `options` with `cache` and returns the child's stdout lines once it has ended.
private func outputLines(_ loop: EventLoop, _ options: ProcessOptions, cache: SpawnCache) throws -> [String] {
    var exit: ProcessExit?
    var lines: [String] = []
    var ended = false
    _ = try ChildProcess.spawn(on: loop, options, reusing: cache, onOutput: { output in
        switch output {
        case .line(_, let line): lines.append(line)
        case .end: ended = true
        }
    }, onExit: { exit = $0 })
    #expect(runLoop(loop, timeout: .seconds(10)) { exit != nil && ended }, "the child did not finish in time")
    #expect(exit == .exited(0))
    return lines
}

@Suite("Spawns kept between restarts")
struct SpawnCacheTests {
    @Test("a kept preparation is used again while environ is unchanged")
    func reusedWhileEnvironUnchanged() async throws {
        // (Changing environ is tested in a process of its own: DaemonTests, "environ".)
        let report = try await withCheckedLoop { loop in
            var options = ProcessOptions(.pidfd, argv: ["/bin/sh", "-c", "echo \"$UVS_CACHE_TEST_A\""])
            options.environment = .inheritWithOverrides(["UVS_CACHE_TEST_A": "a"])
            options.stdout = .pipe
            let cache = SpawnCache()
            let run1 = try outputLines(loop, options, cache: cache)
            let run2 = try outputLines(loop, options, cache: cache)
            #expect(run1 == ["a"] && run2 == ["a"])
            #expect(cache.preparations == 1, "the second spawn reuses the first one's argv and environment")
        }
        #expect(report == .clean)
    }

    @Test("a program looked up in PATH is looked up at every spawn")
    func pathLookupIsNotKept() async throws {
        let report = try await withCheckedLoop { loop in
            var options = ProcessOptions(.pidfd, argv: ["sh", "-c", "echo found"])
            options.stdout = .pipe
            let cache = SpawnCache()
            let run6 = try outputLines(loop, options, cache: cache)
            #expect(run6 == ["found"])
            let run7 = try outputLines(loop, options, cache: cache)
            #expect(run7 == ["found"])
            #expect(cache.preparations == 2)
        }
        #expect(report == .clean)
    }

    @Test("errors from the child's side of a spawn name the step that failed")
    func childStepErrors() async throws {
        let report = try await withCheckedLoop { loop in
            var badLimit = ProcessOptions(argv: ["/bin/true"])
            badLimit.spawnMethod = .pidfd
            badLimit.resourceLimits = [ProcessOptions.ResourceLimit(resource: 999, soft: 1, hard: 1)]
            let limitError = #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, badLimit, onExit: { _ in }) }
            #expect(limitError?.name == "EINVAL")
            #expect(limitError?.description.contains("resource limits") == true)
            // A program removed after the first start: the restart reuses the checked path and
            // execve reports it, naming the path.
            let directory = makeTemporaryDirectory()
            let program = directory + "/program"
            #expect(symlink("/bin/true", program) == 0)
            defer { unlink(program); rmdir(directory) }
            let options = ProcessOptions(.pidfd, argv: [program])
            let cache = SpawnCache()
            var exit: ProcessExit?
            _ = try ChildProcess.spawn(on: loop, options, reusing: cache, onExit: { exit = $0 })
            #expect(runLoop(loop) { exit != nil })
            #expect(exit == .exited(0))
            unlink(program)
            let execError = #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, options, reusing: cache, onExit: { _ in }) }
            #expect(cache.preparations == 1, "the path was not checked again")
            #expect(execError?.name == "ENOENT")
            #expect(execError?.description.contains("\"\(program)\"") == true)
            // A working directory removed after the first start: chdir's error names it.
            let workDirectory = makeTemporaryDirectory()
            defer { rmdir(workDirectory) }
            var inDirectory = ProcessOptions(argv: ["/bin/true"])
            inDirectory.spawnMethod = .pidfd
            inDirectory.workingDirectory = workDirectory
            let directoryCache = SpawnCache()
            exit = nil
            _ = try ChildProcess.spawn(on: loop, inDirectory, reusing: directoryCache, onExit: { exit = $0 })
            #expect(runLoop(loop) { exit != nil })
            #expect(exit == .exited(0))
            #expect(rmdir(workDirectory) == 0)
            let chdirError = #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, inDirectory, reusing: directoryCache, onExit: { _ in }) }
            #expect(chdirError?.name == "ENOENT")
            #expect(chdirError?.description.contains("working directory \"\(workDirectory)\"") == true)
        }
        #expect(report == .clean)
    }

    @Test("a loop that takes SIGCHLD through a signalfd refuses the libuv method (its handler may never run)")
    func libuvNeedsSIGCHLD() async throws {
        let report = try await withCheckedLoop { loop in
            loop.takesChildSignalsThroughDescriptor = true
            defer { loop.takesChildSignalsThroughDescriptor = false }
            let handlesBefore = loop.liveHandleCount
            var options = ProcessOptions(.libuv, argv: ["/bin/true"])
            let error = #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, options, onExit: { _ in }) }
            #expect(error?.name == "EINVAL")
            #expect(error?.description.contains("SIGCHLD") == true)
            #expect(loop.liveHandleCount == handlesBefore)
            // The pidfd method does not need the handler.
            options.spawnMethod = .pidfd
            var exit: ProcessExit?
            _ = try ChildProcess.spawn(on: loop, options, onExit: { exit = $0 })
            #expect(runLoop(loop) { exit != nil })
            #expect(exit == .exited(0))
        }
        #expect(report == .clean)
    }
}
