import Testing
import UVSupervisor
import UVLoop
import DispatchSupervisor
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Regression tests for bugs found in review: each failed on the code before its fix.
@Suite("Soundness regressions")
struct SoundnessTests {
    @Test("a start handler that drops the whole tree (two roots and their runtime) mid-turn frees nothing in use")
    func treeDroppedDuringItsOwnTurn() async throws {
        let report = try await withCheckedLoop { loop in
            var runtime: UVRuntime? = UVRuntime(loop: loop)
            var roots: [Supervisor] = []
            var starts = 0
            var dropped = false
            weak var weakRuntime: UVRuntime?
            weak var weakFirst: Supervisor?
            weak var weakSecond: Supervisor?
            // Each child fails at its first start and is restarted on the next turn: the two
            // roots' restart passes share one runtime turn. The first restart drops everything.
            func child() -> ChildSpec {
                ChildSpec(id: "task", .loopTask { context in
                    starts += 1
                    if context.restartCount == 0 {
                        context.fail("first start fails")
                    } else if !dropped {
                        dropped = true
                        roots.removeAll()
                        runtime = nil
                    }
                })
            }
            let spec = SupervisorSpec(strategy: .oneForOne, intensity: RestartIntensity(maxRestarts: 10, period: .seconds(1)),
                                      children: [child()])
            roots = [try Supervisor(spec, name: "first", runtime: runtime!), try Supervisor(spec, name: "second", runtime: runtime!)]
            weakRuntime = runtime
            weakFirst = roots[0]
            weakSecond = roots[1]
            for root in roots { root.start() }
            #expect(starts == 2)
            let settled = runLoop(loop, timeout: .seconds(5)) { dropped && weakRuntime == nil && weakFirst == nil && weakSecond == nil }
            #expect(settled, "the runtime and both roots go away once their turn is over")
            #expect(starts == 4, "the second root still got its restart in the same turn")
        }
        #expect(report == .clean)
    }

    @Test("durations at the edge of Int64 saturate instead of trapping (libuv runtime)")
    func hugeDurationsOnTheLoop() async throws {
        let report = try await withCheckedLoop { loop in
            // A timer armed for Int64.max seconds is simply never due.
            let timer = LoopTimer(loop: loop) {}
            try timer.start(after: .seconds(Int64.max))
            #expect(timer.isActive)
            timer.close()

            let huge = Backoff(initial: .seconds(10_000_000_000), multiplier: 2, maximum: .seconds(10_000_000_000),
                               jitter: 0.5, resetAfter: .seconds(Int64.max))
            let tree = try LiveTree(loop, SupervisorSpec(strategy: .oneForOne, children: [
                ChildSpec(id: "slow", .loopTask { $0.fail("crash") }, backoff: huge),
            ]))
            tree.root.start()
            let scheduled = tree.run {
                tree.events.contains { if case .restartScheduled = $0.kind { return true }; return false }
            }
            #expect(scheduled)
            let delay = tree.events.compactMap { event -> Duration? in
                if case .restartScheduled(let delay, _) = event.kind { return delay }
                return nil
            }.first
            #expect(delay.map { $0 > .seconds(1_000_000_000) } == true, "the delay is huge, not wrapped or zero")
            #expect(tree.status("slow")?.state == .restarting)
            tree.root.shutdown(within: .seconds(Int64.max))
            #expect(tree.run { tree.root.finalReason != nil })
            #expect(tree.root.finalReason == .shutdown)
        }
        #expect(report == .clean)
    }

    @Test("captured lines carry the loop's clock and the restart count of the incarnation that wrote them")
    func outputEventsOnTheSupervisorsClock() async throws {
        let report = try await withCheckedLoop { loop in
            var spec = ProcessSpec(argv: ["/bin/sh", "-c", "echo line; exit 3"])
            spec.stdout = .capture
            let tree = try LiveTree(loop, SupervisorSpec(strategy: .oneForOne, intensity: RestartIntensity(maxRestarts: 10, period: .seconds(10)),
                                                         children: [ChildSpec(id: "writer", .process(spec), restart: .transient)]))
            tree.root.start()
            let twice = tree.run {
                tree.events.filter { if case .output = $0.kind { return true }; return false }.count >= 2
            }
            #expect(twice)
            let outputs = tree.events.filter { if case .output = $0.kind { return true }; return false }
            #expect(outputs.map(\.restartCount).prefix(2) == [0, 1])
            // Same clock as the other events: between the first start and the last event.
            let first = tree.events.first!.time
            let last = tree.events.last!.time
            #expect(outputs.allSatisfy { $0.time >= first && $0.time <= last })
            _ = tree.stop()
        }
        #expect(report == .clean)
    }

    @Test("the Dispatch runtime caps captured lines like the libuv runtime")
    func dispatchLineCap() async throws {
        let report = try await withLiveHarness(.dispatch) { harness in
            var spec = ProcessSpec(argv: ["/bin/sh", "-c", "head -c 75535 /dev/zero | tr '\\0' a; echo; echo after"])
            spec.stdout = .capture
            try harness.start(SupervisorSpec(strategy: .oneForOne, children: [ChildSpec(id: "long", .process(spec), restart: .temporary)]))
            let done = harness.run { _, events in
                events.contains { if case .output(_, "after") = $0.kind { return true }; return false }
            }
            #expect(done)
            let lengths = harness.onRuntime { _, events in
                events.compactMap { event -> Int? in
                    if case .output(_, let line) = event.kind { return line.utf8.count }
                    return nil
                }
            }
            #expect(lengths == [65_536, 75_535 - 65_536, 5])
        }
        #expect(report.newDescriptors.isEmpty && report.zombies.isEmpty)
    }

    @Test("posix_spawn (the Dispatch runtime's spawn) in a process started with fd 0 closed keeps stdout on its file")
    func posixSpawnWithStdinClosed() async throws {
        let directory = makeTemporaryDirectory()
        let file = directory + "/out"
        let status = try await runHelper([childHelperPath, "posix-spawn-stdin-closed", file])
        #expect(status == 0, "the child's echo must succeed")
        #expect(readSmallFile(file) == "hello\n")
        unlink(file)
        rmdir(directory)
    }
}

/// Runs a helper program on a fresh loop and returns its exit status.
private func runHelper(_ argv: [String]) async throws -> Int32? {
    final class StatusBox: @unchecked Sendable { var status: Int32? }   // touched on the test's thread only
    let box = StatusBox()
    let report = try await withCheckedLoop { loop in
        var options = ProcessOptions(argv: argv)
        options.stdin = .inherit
        _ = try ChildProcess.spawn(on: loop, options) { exit in
            if case .exited(let code) = exit { box.status = code } else { box.status = -1 }
        }
        #expect(runLoop(loop, timeout: .seconds(10)) { box.status != nil })
    }
    #expect(report == .clean)
    return box.status
}
