import Testing
import UVLoop
import TestSupport
import CUVShims
#if canImport(Glibc)
import Glibc
#endif

private func disposition(_ signal: Int32) -> UInt {
    var current = sigaction()
    sigaction(signal, nil, &current)
    return unsafeBitCast(current.__sigaction_handler.sa_handler, to: UInt.self)
}

@Suite("Signal watchers")
struct SignalWatcherTests {
    @Test("a SIGCHLD signalfd is drained by one call: the pending signal is counted, and nothing is left for the next")
    func signalfdDrain() throws {
        var counts: [Int32] = []
        var opened: Int32 = -1
        // On a thread of its own: the signal is directed at that thread only, blocked there.
        try runOnFreshThread {
            var wasBlocked: Int32 = 0
            let fd = cuvs_sigchld_fd_open(&wasBlocked)
            opened = fd
            guard fd >= 0 else { return }
            counts.append(cuvs_signalfd_drain(fd))
            pthread_kill(pthread_self(), SIGCHLD)
            counts.append(cuvs_signalfd_drain(fd))
            counts.append(cuvs_signalfd_drain(fd))
            close(fd)
            if wasBlocked == 0 { cuvs_sigchld_unblock() }
        }
        #expect(opened >= 0)
        #expect(counts == [0, 1, 0])
    }

    @Test("SIGUSR1 sent to the process arrives on the loop; stopping restores the old disposition")
    func receivesAndRestores() async throws {
        let report = try await withCheckedLoop { loop in
            let ignored = unsafeBitCast(SIG_IGN, to: UInt.self)
            let defaultAction = unsafeBitCast(SIG_DFL, to: UInt.self)
            signal(SIGUSR1, SIG_IGN)
            var received: [Int32] = []
            let watcher = try SignalWatcher(loop: loop, signal: SIGUSR1) { received.append($0) }
            #expect(disposition(SIGUSR1) != ignored)
            kill(getpid(), SIGUSR1)
            #expect(runLoop(loop) { received == [SIGUSR1] })
            watcher.stop()
            #expect(!watcher.isWatching)
            #expect(disposition(SIGUSR1) == ignored, "the ignored disposition must come back")
            watcher.close()
            signal(SIGUSR1, SIG_DFL)
            #expect(disposition(SIGUSR1) == defaultAction)
        }
        #expect(report == .clean)
    }

    @Test("signals that cannot be watched are refused")
    func refusesBadSignals() async throws {
        let report = try await withCheckedLoop { loop in
            for bad: Int32 in [0, -1, 65, 999, SIGKILL, SIGSTOP] {
                let error = #expect(throws: UVError.self) { _ = try SignalWatcher(loop: loop, signal: bad) { _ in } }
                #expect(error?.name == "EINVAL")
            }
        }
        #expect(report == .clean)
    }
}
