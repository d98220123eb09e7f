import Testing
import UVLoop
import CUVShims
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite("Parent-death signal (pidfd spawn)")
struct ParentDeathSignalTests {
    @Test("a child spawned with a parent-death signal dies when its spawning thread ends")
    func childDiesWithSpawningThread() async throws {
        try await ExclusiveResources.run {
            final class Result: @unchecked Sendable { var pid: Int32 = -1; var pidfd: Int32 = -1 }
            let result = Result()
            try runOnFreshThread {
                var options = cuvs_spawn_options()
                options.stdio_fds = (-1, -1, -1)
                options.new_session = 1
                options.parent_death_signal = SIGKILL
                let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("60"), nil]
                let envp: [UnsafeMutablePointer<CChar>?] = [nil]
                argv.withUnsafeBufferPointer { args in
                    envp.withUnsafeBufferPointer { env in
                        "/bin/sleep".withCString { file in
                            options.file = file
                            options.argv = args.baseAddress
                            options.envp = env.baseAddress
                            result.pid = cuvs_spawn(&options, &result.pidfd, nil)
                        }
                    }
                }
                argv.forEach { free($0) }
            }
            // The spawning thread has ended: the kernel sends SIGKILL to the child.
            #expect(result.pid > 0 && result.pidfd >= 0)
            var pollfd = pollfd(fd: result.pidfd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pollfd, 1, 5_000)   // bounded wait for the exit, not a sleep
            #expect(ready == 1, "the child outlived its spawning thread")
            var code: Int32 = 0
            var signal: Int32 = 0
            #expect(cuvs_pidfd_reap(result.pidfd, &code, &signal) == 1)
            #expect(signal == SIGKILL)
            close(result.pidfd)
        }
    }

    @Test("a parent-death signal needs the pidfd method; a bad one is refused")
    func validation() async throws {
        let report = try await withCheckedLoop { loop in
            var options = ProcessOptions(argv: ["/bin/true"])
            options.parentDeathSignal = SIGKILL
            options.spawnMethod = .libuv
            let wrongMethod = #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, options, onExit: { _ in }) }
            #expect(wrongMethod?.name == "EINVAL")
            options.spawnMethod = .pidfd
            options.parentDeathSignal = 99
            let badSignal = #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, options, onExit: { _ in }) }
            #expect(badSignal?.name == "EINVAL")
        }
        #expect(report == .clean)
    }
}
