import Testing
import UVSupervisor
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A root supervisor on a real loop, with its events recorded.
final class LiveTree {
    let loop: EventLoop
    let runtime: UVRuntime
    let root: Supervisor
    var events: [SupervisorEvent] = []

    init(_ loop: EventLoop, _ spec: SupervisorSpec, method: SpawnMethod = .preferred) throws {
        self.loop = loop
        runtime = UVRuntime(loop: loop, spawnMethod: method)
        root = try Supervisor(spec, runtime: runtime, randomSeed: 1)
        root.onEvent { [unowned self] in self.events.append($0) }
    }

    func pid(_ id: String) -> Int32? { root.children().first { $0.id == id }?.pid }

    func status(_ id: String) -> ChildStatus? { root.children().first { $0.id == id } }

    /// Runs the loop until `condition` (bounded).
    @discardableResult
    func run(timeout: Duration = .seconds(10), until condition: () -> Bool) -> Bool {
        runLoop(loop, timeout: timeout, until: condition)
    }

    /// Shuts the tree down and runs until it has stopped.
    func stop() -> ExitReason? {
        root.shutdown(within: .seconds(5))
        run { root.finalReason != nil }
        return root.finalReason
    }

    func delays(_ path: String) -> [Int64] {
        events.compactMap {
            if $0.path == path, case .restartScheduled(let delay, _) = $0.kind { return delay.nanosecondsClamped / 1_000_000 }
            return nil
        }
    }
}

func sleeper(_ id: String, shutdown: ShutdownPolicy? = nil) -> ChildSpec {
    ChildSpec(id: id, .process(ProcessSpec(argv: ["/bin/sleep", "60"])), shutdown: shutdown)
}

@Suite("libuv runtime: real processes")
struct RuntimeProcessTests {
    @Test("a crashing permanent child is restarted with backoff until intensity escalates", arguments: [SpawnMethod.libuv, .pidfd])
    func crashLoopEscalates(method: SpawnMethod) async throws {
        let report = try await withCheckedLoop { loop in
            let backoff = Backoff.exponential(initial: .milliseconds(10), multiplier: 2, maximum: .seconds(1), jitter: 0)
            let tree = try LiveTree(loop, SupervisorSpec(intensity: RestartIntensity(maxRestarts: 3, period: .seconds(10)), children: [
                ChildSpec(id: "crasher", .process(ProcessSpec(argv: ["/bin/sh", "-c", "exit 1"])), backoff: backoff)]), method: method)
            let started = loop.now
            tree.root.start()
            #expect(tree.run { tree.root.finalReason != nil })
            loop.updateTime()
            #expect(tree.root.finalReason == .intensityExceeded)
            #expect(tree.delays("root/crasher") == [10, 20, 40])
            #expect(loop.now - started >= 70, "the backoff delays were not waited")
            #expect(tree.status("crasher")?.lastExit == .exited(1))
            #expect(tree.status("crasher")?.restartCount == 3)
        }
        #expect(report == .clean)
    }

    @Test("oneForAll and restForOne restart the right sleeping children with new pids",
          arguments: [RestartStrategy.oneForAll, .restForOne])
    func groupStrategies(strategy: RestartStrategy) async throws {
        let report = try await withCheckedLoop { loop in
            let tree = try LiveTree(loop, SupervisorSpec(strategy: strategy, children: [sleeper("a"), sleeper("b"), sleeper("c")]))
            tree.root.start()
            let before = ["a", "b", "c"].map { tree.pid($0)! }
            kill(before[1], SIGKILL)
            #expect(tree.run { ["a", "b", "c"].allSatisfy { tree.status($0)?.state == .running } && tree.pid("b") != before[1] })
            let after = ["a", "b", "c"].map { tree.pid($0)! }
            #expect(after[1] != before[1] && after[2] != before[2])
            #expect((after[0] != before[0]) == (strategy == .oneForAll))
            #expect(tree.status("b")?.lastExit == .signaled(SIGKILL))
            for pid in before where pid != after[0] { #expect(!isAlive(pid)) }
            #expect(tree.stop() == .shutdown)
            for pid in after { #expect(!isAlive(pid)) }
        }
        #expect(report == .clean)
    }

    @Test("a child that ignores SIGTERM is killed with SIGKILL at its shutdown timeout", arguments: [SpawnMethod.libuv, .pidfd])
    func ignoresTerm(method: SpawnMethod) async throws {
        let report = try await withCheckedLoop { loop in
            var spec = ProcessSpec(argv: [childHelperPath, "ignore-term"])
            spec.stdout = .capture
            let tree = try LiveTree(loop, SupervisorSpec(children: [
                ChildSpec(id: "stubborn", .process(spec), shutdown: .timeout(.milliseconds(200)))]), method: method)
            tree.root.start()
            #expect(tree.run { tree.events.contains { $0.kind == .output(stream: "stdout", line: "ready") } })
            loop.updateTime()
            let stopAt = loop.now
            tree.root.shutdown()
            #expect(tree.run { tree.root.finalReason != nil })
            loop.updateTime()
            #expect(tree.status("stubborn")?.lastExit == .killed)
            #expect(loop.now - stopAt >= 200)
            #expect(tree.events.contains { $0.path == "root/stubborn" && $0.kind == .killed })
        }
        #expect(report == .clean)
    }

    @Test("grandchildren are gone after their parent is stopped or crashes", arguments: [SpawnMethod.libuv, .pidfd])
    func grandchildren(method: SpawnMethod) async throws {
        let report = try await withCheckedLoop { loop in
            var spec = ProcessSpec(argv: [childHelperPath, "grandchildren", "2"])
            spec.stdout = .capture
            let tree = try LiveTree(loop, SupervisorSpec(intensity: RestartIntensity(maxRestarts: 10, period: .seconds(60)), children: [
                ChildSpec(id: "forker", .process(spec))]), method: method)
            func grandchildPids() -> [Int32] {
                tree.events.compactMap { if case .output(_, let line) = $0.kind { return Int32(line) } else { return nil } }
            }
            tree.root.start()
            #expect(tree.run { grandchildPids().count == 2 })
            let firstGeneration = grandchildPids()
            #expect(firstGeneration.allSatisfy(isAlive))
            // Crash: the child dies by SIGKILL; its group goes with it.
            kill(tree.pid("forker")!, SIGKILL)
            #expect(tree.run { firstGeneration.allSatisfy { !isAlive($0) } && grandchildPids().count == 4 })
            let secondGeneration = Array(grandchildPids().suffix(2))
            // Stop: SIGTERM to the group.
            #expect(tree.stop() == .shutdown)
            #expect(tree.run { secondGeneration.allSatisfy { !isAlive($0) } })
        }
        #expect(report == .clean)
    }

    @Test("a missing executable is a failed start with ENOENT and the path, restarted with backoff")
    func missingExecutable() async throws {
        let report = try await withCheckedLoop { loop in
            let tree = try LiveTree(loop, SupervisorSpec(intensity: RestartIntensity(maxRestarts: 2, period: .seconds(10)), children: [
                ChildSpec(id: "ghost", .process(ProcessSpec(argv: ["/nonexistent/uvs-ghost"])),
                          backoff: .exponential(initial: .milliseconds(5), jitter: 0))]))
            tree.root.start()
            #expect(tree.run { tree.root.finalReason != nil })
            #expect(tree.root.finalReason == .intensityExceeded)
            guard case .startFailed(let message)? = tree.status("ghost")?.lastExit else {
                Issue.record("expected startFailed, got \(String(describing: tree.status("ghost")?.lastExit))")
                return
            }
            #expect(message.contains("ENOENT") && message.contains("/nonexistent/uvs-ghost"))
            #expect(tree.delays("root/ghost") == [5, 10])
        }
        #expect(report == .clean)
    }
}
