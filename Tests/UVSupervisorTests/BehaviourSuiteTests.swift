import Testing
import UVSupervisor
import UVLoop
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

func sleeper(_ id: String, shutdown: ShutdownPolicy? = nil) -> ChildSpec {
    ChildSpec(id: id, .process(ProcessSpec(argv: ["/bin/sleep", "60"])), shutdown: shutdown)
}

/// One behaviour suite, run on every runtime: real processes, bounded waits on events.
@Suite("Behaviour suite on every runtime")
struct BehaviourSuiteTests {
    @Test("a crashing permanent child is restarted with backoff until intensity escalates", arguments: RuntimeKind.allCases)
    func crashLoopEscalates(kind: RuntimeKind) async throws {
        let report = try await withLiveHarness(kind) { harness in
            let backoff = Backoff.exponential(initial: .milliseconds(10), multiplier: 2, maximum: .seconds(1), jitter: 0)
            let started = EventLoop.hrtime()
            try harness.start(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 3, period: .seconds(10)), children: [
                ChildSpec(id: "crasher", .process(ProcessSpec(argv: ["/bin/sh", "-c", "exit 1"])), backoff: backoff)]))
            #expect(harness.run { root, _ in root.finalReason != nil })
            #expect(harness.finalReason == .intensityExceeded)
            #expect(harness.delays("root/crasher") == [10, 20, 40])
            #expect(EventLoop.hrtime() - started >= 70_000_000, "the backoff delays were not waited")
            #expect(harness.status("crasher")?.lastExit == .exited(1))
            #expect(harness.status("crasher")?.restartCount == 3)
        }
        #expect(report == .clean)
    }

    @Test("oneForAll and restForOne restart the right sleeping children with new pids",
          arguments: RuntimeKind.allCases, [RestartStrategy.oneForAll, .restForOne])
    func groupStrategies(kind: RuntimeKind, strategy: RestartStrategy) async throws {
        let report = try await withLiveHarness(kind) { harness in
            try harness.start(SupervisorSpec(strategy: strategy, children: [sleeper("a"), sleeper("b"), sleeper("c")]))
            let before = ["a", "b", "c"].map { harness.pid($0)! }
            kill(before[1], SIGKILL)
            #expect(harness.run { root, _ in
                let children = root.children()
                return children.allSatisfy { $0.state == .running } && children[1].pid != before[1]
            })
            let after = ["a", "b", "c"].map { harness.pid($0)! }
            #expect(after[1] != before[1] && after[2] != before[2])
            #expect((after[0] != before[0]) == (strategy == .oneForAll))
            #expect(harness.status("b")?.lastExit == .signaled(SIGKILL))
            #expect(harness.shutDownAndWait() == .shutdown)
            for pid in before + after { #expect(!isAlive(pid)) }
        }
        #expect(report == .clean)
    }

    @Test("a child that ignores SIGTERM is killed with SIGKILL at its shutdown timeout", arguments: RuntimeKind.allCases)
    func ignoresTerm(kind: RuntimeKind) async throws {
        let report = try await withLiveHarness(kind) { harness in
            var spec = ProcessSpec(argv: [childHelperPath, "ignore-term"])
            spec.stdout = .capture
            try harness.start(SupervisorSpec(children: [
                ChildSpec(id: "stubborn", .process(spec), shutdown: .timeout(.milliseconds(200)))]))
            #expect(harness.run { _, events in events.contains { $0.kind == .output(stream: "stdout", line: "ready") } })
            let stopAt = EventLoop.hrtime()
            #expect(harness.shutDownAndWait() == .shutdown)
            #expect(harness.status("stubborn")?.lastExit == .killed)
            #expect(EventLoop.hrtime() - stopAt >= 190_000_000)
            #expect(harness.onRuntime { _, events in events.contains { $0.path == "root/stubborn" && $0.kind == .killed } })
        }
        #expect(report == .clean)
    }

    @Test("grandchildren are gone after their parent crashes or is stopped", arguments: RuntimeKind.allCases)
    func grandchildren(kind: RuntimeKind) async throws {
        let report = try await withLiveHarness(kind) { harness in
            var spec = ProcessSpec(argv: [childHelperPath, "grandchildren", "2"])
            spec.stdout = .capture
            try harness.start(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 10, period: .seconds(60)), children: [
                ChildSpec(id: "forker", .process(spec))]))
            let grandchildren: @Sendable (Supervisor, [SupervisorEvent]) -> [Int32] = { _, events in
                events.compactMap { if case .output(_, let line) = $0.kind { return Int32(line) } else { return nil } }
            }
            #expect(harness.run { grandchildren($0, $1).count == 2 })
            let first = harness.onRuntime(grandchildren)
            #expect(first.allSatisfy(isAlive))
            kill(harness.pid("forker")!, SIGKILL)   // a crash: its group goes with it
            #expect(harness.run { root, events in first.allSatisfy { !isAlive($0) } && grandchildren(root, events).count == 4 })
            let second = Array(harness.onRuntime(grandchildren).suffix(2))
            #expect(harness.shutDownAndWait() == .shutdown)
            #expect(harness.run { _, _ in second.allSatisfy { !isAlive($0) } })
        }
        #expect(report == .clean)
    }

    @Test("a missing executable is a failed start naming ENOENT and the path, retried with backoff", arguments: RuntimeKind.allCases)
    func missingExecutable(kind: RuntimeKind) async throws {
        let report = try await withLiveHarness(kind) { harness in
            try harness.start(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 2, period: .seconds(10)), children: [
                ChildSpec(id: "ghost", .process(ProcessSpec(argv: ["/nonexistent/uvs-ghost"])),
                          backoff: .exponential(initial: .milliseconds(5), jitter: 0))]))
            #expect(harness.run { root, _ in root.finalReason != nil })
            #expect(harness.finalReason == .intensityExceeded)
            guard case .startFailed(let message)? = harness.status("ghost")?.lastExit else {
                Issue.record("expected startFailed, got \(String(describing: harness.status("ghost")?.lastExit))")
                return
            }
            #expect(message.contains("ENOENT") && message.contains("/nonexistent/uvs-ghost"))
            #expect(harness.delays("root/ghost") == [5, 10])
        }
        #expect(report == .clean)
    }

    @Test("exit codes in successExitCodes are normal; a transient child then stays down", arguments: RuntimeKind.allCases)
    func successExitCodes(kind: RuntimeKind) async throws {
        let report = try await withLiveHarness(kind) { harness in
            var spec = ProcessSpec(argv: ["/bin/sh", "-c", "exit 7"])
            spec.successExitCodes = [0, 7]
            try harness.start(SupervisorSpec(children: [ChildSpec(id: "done", .process(spec), restart: .transient), sleeper("other")]))
            #expect(harness.run { root, _ in root.children()[0].lastExit != nil })
            #expect(harness.status("done")?.lastExit == .normal)
            #expect(harness.status("done")?.state == .idle)
            #expect(harness.status("done")?.restartCount == 0)
        }
        #expect(report == .clean)
    }
}
