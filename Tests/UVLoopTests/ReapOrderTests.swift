import Testing
import UVLoop
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Whether `pid` is a child of this process not reaped yet (running, or a zombie).
private func isUnreapedChild(_ pid: Int32) -> Bool {
    var info = siginfo_t()
    return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0
}

/// Whether `pid` is no child of this process any more (reaped).
private func isReaped(_ pid: Int32) -> Bool {
    var info = siginfo_t()
    return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == -1 && errno == ECHILD
}

@Suite("A pidfd child's exit is reported first and reaped a moment later")
struct ReapOrderTests {
    @Test("the exit is reported while the child is a zombie; a successor started from the report starts before the reap, which follows within milliseconds, then what waited for it runs")
    func reportedBeforeReaped() async throws {
        let report = try await withCheckedLoop { loop in
            let handlesBefore = loop.liveHandleCount
            var firstPID: Int32 = 0
            var exit: ProcessExit?
            var zombieAtReport = false
            var zombieAfterSuccessorStarted = false
            var successor: ChildProcess?
            var successorExit: ProcessExit?
            var reapedForWhatWaited: Bool?
            let first = try ChildProcess.spawn(on: loop, ProcessOptions(.pidfd, argv: ["/bin/sh", "-c", "exit 7"])) { reason in
                exit = reason
                zombieAtReport = isUnreapedChild(firstPID)
                successor = try? ChildProcess.spawn(on: loop, ProcessOptions(.pidfd, argv: ["/bin/sh", "-c", "exit 8"])) {
                    successorExit = $0
                }
                zombieAfterSuccessorStarted = isUnreapedChild(firstPID)
                loop.afterChildrenReaped { reapedForWhatWaited = isReaped(firstPID) }
            }
            firstPID = first.pid
            #expect(loop.spawnedChild(firstPID))
            #expect(runLoop(loop) { exit != nil })
            #expect(exit == .exited(7))
            #expect(zombieAtReport, "the exit is reported before the reap")
            #expect(successor != nil && zombieAfterSuccessorStarted, "what the report starts comes before the reap")
            #expect(loop.spawnedChild(firstPID), "an unreaped zombie is still the loop's (an orphan reaper leaves it alone)")
            #expect(runLoop(loop) { reapedForWhatWaited != nil && successorExit != nil })
            #expect(reapedForWhatWaited == true, "what waits for the reaps runs after them")
            #expect(successorExit == .exited(8))
            #expect(isReaped(firstPID))
            #expect(!loop.spawnedChild(firstPID))
            loop.run(.noWait)   // (runLoop's own timer closes)
            #expect(loop.liveHandleCount == handlesBefore, "the handle closes with the reap")
        }
        #expect(report == .clean)
    }

    @Test("a child with an RLIMIT_NPROC is reaped before its exit is reported (the kernel counts a zombie against its user)")
    func processLimitReapsFirst() async throws {
        let report = try await withCheckedLoop { loop in
            var options = ProcessOptions(.pidfd, argv: ["/bin/sh", "-c", "exit 3"])
            var current = rlimit()
            getrlimit(__rlimit_resource_t(__RLIMIT_NPROC.rawValue), &current)
            options.resourceLimits = [.init(resource: Int32(__RLIMIT_NPROC.rawValue), soft: UInt64(current.rlim_cur), hard: UInt64(current.rlim_max))]
            var pid: Int32 = 0
            var exit: ProcessExit?
            var reapedAtReport = false
            let child = try ChildProcess.spawn(on: loop, options) { reason in
                exit = reason
                reapedAtReport = isReaped(pid)
            }
            pid = child.pid
            #expect(runLoop(loop) { exit != nil })
            #expect(exit == .exited(3))
            #expect(reapedAtReport)
            #expect(!loop.spawnedChild(pid))
        }
        #expect(report == .clean)
    }

    @Test("a zombie still waiting for its reap is reaped by the loop's teardown, and what waited for it runs")
    func teardownReaps() async throws {
        let report = try await withCheckedLoop { loop in
            var exit: ProcessExit?
            let child = try ChildProcess.spawn(on: loop, ProcessOptions(.pidfd, argv: ["/bin/sh", "-c", "exit 0"])) { exit = $0 }
            #expect(runLoop(loop) { exit != nil })
            // Checked on the turn that reported the exit, before the reap timer's.
            #expect(isUnreapedChild(child.pid))
            var ranAfterReaps = false
            loop.afterChildrenReaped { ranAfterReaps = true }
            try loop.close()
            #expect(ranAfterReaps)
            #expect(isReaped(child.pid))
        }
        #expect(report == .clean)
    }

    @Test("closing the handle of a zombie waiting for its reap reaps it")
    func closeReaps() async throws {
        let report = try await withCheckedLoop { loop in
            let handlesBefore = loop.liveHandleCount
            var exit: ProcessExit?
            let child = try ChildProcess.spawn(on: loop, ProcessOptions(.pidfd, argv: ["/bin/sh", "-c", "exit 0"])) { exit = $0 }
            #expect(runLoop(loop) { exit != nil })
            #expect(isUnreapedChild(child.pid))
            child.close()
            #expect(runLoop(loop) { isReaped(child.pid) })
            loop.run(.noWait)   // (runLoop's own timer closes)
            #expect(loop.liveHandleCount == handlesBefore)
        }
        #expect(report == .clean)
    }
}
