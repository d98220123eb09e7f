import Testing
import UVLoop
import TestSupport
import CUVShims
import CTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// What `uvs-test-child sched TID` saw when it started: the spawning thread's policy at that
/// moment, its own policy and nice value.
private struct SchedulingSeen: Equatable {
    var spawner: Int32
    var program: Int32
    var nice: Int32
}

/// Runs the helper's `sched` mode on `loop` and waits for its report and exit.
private func spawnSchedReport(_ loop: EventLoop, childRunsFirst: Bool) throws -> SchedulingSeen? {
    var options = ProcessOptions(.pidfd, argv: [childHelperPath, "sched", String(ctest_thread_id())])
    options.stdout = .pipe
    options.childRunsFirst = childRunsFirst
    var line: String?
    var exit: ProcessExit?
    var open = true
    _ = try ChildProcess.spawn(on: loop, options, onOutput: { output in
        switch output {
        case .line(_, let text): line = text
        case .end: open = false
        }
    }, onExit: { exit = $0 })
    #expect(runLoop(loop, timeout: .seconds(10)) { exit != nil && !open }, "the helper did not finish in time")
    #expect(exit == .exited(0))
    guard let line else { return nil }
    var fields: [String: Int32] = [:]
    for field in line.split(separator: " ") {
        let parts = field.split(separator: ":")
        if parts.count == 2, let value = Int32(parts[1]) { fields[String(parts[0])] = value }
    }
    guard let spawner = fields["spawner"], let program = fields["self"], let nice = fields["nice"] else { return nil }
    return SchedulingSeen(spawner: spawner, program: program, nice: nice)
}

/// The calling thread's policy (with `CTEST_SCHED_RESET_ON_FORK`) and nice value.
private func ownScheduling() -> (policy: Int32, nice: Int32) {
    (sched_getscheduler(0), getpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(ctest_thread_id())))
}

@Suite("A child that runs first")
struct ChildRunsFirstTests {
    @Test("while a childRunsFirst child has not exec'd yet, the spawning thread is SCHED_BATCH; once the spawn returned it is itself again")
    func batchUntilExec() throws {
        // The child is held just before its execve (a test-only descriptor it reads a byte
        // from) while another thread reads this thread's policy; the spawning thread cannot
        // resume before the execve, so what that thread sees does not depend on scheduling.
        let own = sched_getscheduler(0)
        try #require(own & ~CTEST_SCHED_RESET_ON_FORK == SCHED_OTHER, "the test needs a thread in SCHED_OTHER")
        if cuvs_spawn_shares_memory() == 1 {
            let with = ctest_spawn_watching_policy(1, CTEST_SCHED_BATCH, 10_000)
            #expect(with.spawned > 0)
            #expect(with.during == CTEST_SCHED_BATCH | (own & CTEST_SCHED_RESET_ON_FORK))
            #expect(with.after == own)
        }
        // Without the option (and under ThreadSanitizer's fork fallback, where it has no
        // effect) the thread never changes.
        let without = ctest_spawn_watching_policy(0, CTEST_SCHED_BATCH, 100)
        #expect(without.spawned > 0)
        #expect(without.during == own && without.after == own)
    }

    @Test("with childRunsFirst the spawning thread has its policy, nice value and reset-on-fork back, and the program gets the thread's own")
    func attributesKept() async throws {
        let report = try await withCheckedLoop { loop in
            // A nice value and reset-on-fork that must survive the switch.
            let saved = ownScheduling()
            var noPriority = sched_param(sched_priority: 0)
            #expect(sched_setscheduler(0, SCHED_OTHER | CTEST_SCHED_RESET_ON_FORK, &noPriority) == 0)
            #expect(setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(ctest_thread_id()), 3) == 0)
            defer {
                // Root may lower the nice value again (the tests run as root).
                setpriority(__priority_which_t(PRIO_PROCESS.rawValue), id_t(ctest_thread_id()), saved.nice)
                var restore = sched_param(sched_priority: 0)
                sched_setscheduler(0, saved.policy, &restore)
            }
            let own = ownScheduling()
            #expect(own == (SCHED_OTHER | CTEST_SCHED_RESET_ON_FORK, 3))
            for childRunsFirst in [false, true, true] {
                let seen = try spawnSchedReport(loop, childRunsFirst: childRunsFirst)
                // The program has the thread's own attributes (reset-on-fork is not inherited),
                // and the thread has them back once the spawn returned. (What the program sees
                // of the thread depends on who ran first: batch, or already itself again.)
                #expect(seen?.program == SCHED_OTHER && seen?.nice == 3)
                #expect(ownScheduling() == own)
                if !childRunsFirst { #expect(seen?.spawner == SCHED_OTHER | CTEST_SCHED_RESET_ON_FORK) }
            }
        }
        #expect(report == .clean)
    }

    @Test("a spawning thread in another policy than SCHED_OTHER is left alone, and so is its program")
    func otherPolicyLeftAlone() async throws {
        let report = try await withCheckedLoop { loop in
            // CTEST_SCHED_BATCH itself: a spawn that switched every thread, or restored SCHED_OTHER
            // whatever the thread had, would show here. (Not SCHED_IDLE, which a busy machine
            // could starve for seconds.)
            let saved = ownScheduling()
            var noPriority = sched_param(sched_priority: 0)
            #expect(sched_setscheduler(0, CTEST_SCHED_BATCH, &noPriority) == 0)
            defer {
                var restore = sched_param(sched_priority: 0)
                sched_setscheduler(0, saved.policy, &restore)
            }
            let seen = try spawnSchedReport(loop, childRunsFirst: true)
            #expect(seen?.spawner == CTEST_SCHED_BATCH && seen?.program == CTEST_SCHED_BATCH)
            #expect(sched_getscheduler(0) == CTEST_SCHED_BATCH)
        }
        #expect(report == .clean)
    }

    @Test("childRunsFirst with the libuv method is refused")
    func libuvMethodRefused() async throws {
        let report = try await withCheckedLoop { loop in
            var options = ProcessOptions(.libuv, argv: ["/bin/true"])
            options.childRunsFirst = true
            #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, options) { _ in } }
            do {
                _ = try ChildProcess.spawn(on: loop, options) { _ in }
            } catch let error as UVError {
                #expect(error.description.contains("childRunsFirst needs the pidfd spawn method"))
            }
        }
        #expect(report == .clean)
    }
}
