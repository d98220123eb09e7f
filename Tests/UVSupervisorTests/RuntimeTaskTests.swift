import Testing
import UVSupervisor
import UVLoop
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

private struct Boom: Error, CustomStringConvertible { var description: String { "boom" } }

@Suite("libuv runtime: loop tasks and async tasks")
struct RuntimeTaskTests {
    @Test("10,000 loop-task workers start and stop")
    func tenThousandTasks() async throws {
        let report = try await withCheckedLoop { loop in
            var running = 0
            var stopped = 0
            let children = (0..<10_000).map { index in
                ChildSpec(id: "t\(index)", .loopTask { context in
                    running += 1
                    context.onStop = {
                        running -= 1
                        stopped += 1
                        context.finish()
                    }
                })
            }
            let tree = try LiveTree(loop, SupervisorSpec(children: children))
            tree.root.start()
            #expect(running == 10_000)
            #expect(tree.root.countChildren().active == 10_000)
            #expect(tree.stop() == .shutdown)
            #expect(stopped == 10_000 && running == 0)
            #expect(tree.root.children().allSatisfy { $0.lastExit == .shutdown })
        }
        #expect(report == .clean)
    }

    @Test("a loop task that fails is restarted on a later loop turn")
    func failingTaskRestarts() async throws {
        let report = try await withCheckedLoop { loop in
            var starts = 0
            let tree = try LiveTree(loop, SupervisorSpec(intensity: RestartIntensity(maxRestarts: 100, period: .seconds(10)), children: [
                ChildSpec(id: "flaky", .loopTask { context in
                    starts += 1
                    if starts < 3 { context.fail(Boom()) }
                })]))
            tree.root.start()
            #expect(starts == 1, "a restart must not run inside the start")
            #expect(tree.run { starts == 3 })
            #expect(tree.status("flaky")?.restartCount == 2)
            #expect(tree.status("flaky")?.lastExit == .failure("boom"))
            #expect(tree.stop() == .shutdown)
        }
        #expect(report == .clean)
    }

    @Test("async tasks: a throw is a failure, return is normal, and one that ignores cancellation is abandoned")
    func asyncTasks() async throws {
        let report = try await withCheckedLoop { loop in
            let counter = LockedValue(0)
            let stubbornDone = LockedValue(false)
            let tree = try LiveTree(loop, SupervisorSpec(intensity: RestartIntensity(maxRestarts: 100, period: .seconds(10)), children: [
                ChildSpec(id: "thrower", .asyncTask {
                    let count = counter.withLock { value -> Int in value += 1; return value }
                    if count < 3 { throw Boom() }
                    while !Task.isCancelled { await Task.yield() }
                }),
                ChildSpec(id: "stubborn", .asyncTask {
                    // Ignores cancellation: spins on the loop's executor without yielding to it.
                    let until = EventLoop.hrtime() + 600_000_000
                    while EventLoop.hrtime() < until { await Task.yield() }
                    stubbornDone.withLock { $0 = true }
                }, shutdown: .timeout(.milliseconds(100))),
            ]))
            tree.root.start()
            #expect(tree.run { counter.withLock { $0 } >= 3 })
            #expect(tree.status("thrower")?.lastExit == .failure("boom"))
            #expect(tree.root.children().allSatisfy { $0.state == .running })
            #expect(tree.stop() == .shutdown)
            #expect(tree.status("stubborn")?.lastExit == .abandoned)
            #expect(tree.status("thrower")?.lastExit == .shutdown)
            // Let the abandoned task run out so nothing outlives the test's loop.
            #expect(tree.run(timeout: .seconds(5)) { stubbornDone.withLock { $0 } })
        }
        #expect(report == .clean)
    }

    @Test("the lag watchdog reports a callback that blocks the loop, and the tree carries on")
    func lagWatchdog() async throws {
        let report = try await withCheckedLoop { loop in
            var lags: [Duration] = []
            let watchdog = try LoopLagWatchdog(loop: loop, threshold: .milliseconds(100)) { lags.append($0) }
            var ticks = 0
            let tree = try LiveTree(loop, SupervisorSpec(children: [
                ChildSpec(id: "blocker", .loopTask { context in
                    let timer = LoopTimer(loop: loop) {
                        // Blocks the loop for 250 ms: exactly what a worker must never do.
                        let until = EventLoop.hrtime() + 250_000_000
                        while EventLoop.hrtime() < until {}
                        ticks += 1
                    }
                    try? timer.start(after: .milliseconds(1), repeating: .milliseconds(20))
                    context.onStop = { timer.close(); context.finish() }
                }, restart: .permanent)]))
            // An idle wait on a timer is not lag.
            var waited = false
            let idleWait = LoopTimer(loop: loop) { waited = true }
            try idleWait.start(after: .milliseconds(300))
            // One poll that blocks for the whole 300 ms (no guard timer waking it).
            var turns = 0
            while !waited && turns < 10 { loop.run(.once); turns += 1 }
            #expect(waited)
            #expect(lags.isEmpty, "an idle wait was reported as lag: \(lags)")
            idleWait.close()
            // Nor is a wait without timeout that a signal interrupts (libuv 1.44 counts it partly).
            var signalled = false
            let watcher = try SignalWatcher(loop: loop, signal: SIGUSR2) { _ in signalled = true }
            var sender = ProcessOptions(argv: ["/bin/sh", "-c", "sleep 0.3; kill -USR2 \(getpid())"])
            sender.newProcessGroup = false
            _ = try ChildProcess.spawn(on: loop, sender) { _ in }
            turns = 0
            while !signalled && turns < 20 { loop.run(.once); turns += 1 }
            #expect(signalled)
            #expect(lags.isEmpty, "a signal-interrupted wait was reported as lag: \(lags)")
            watcher.close()
            tree.root.start()
            #expect(tree.run { !lags.isEmpty && ticks >= 2 })
            #expect(lags.allSatisfy { $0 >= .milliseconds(200) })
            #expect(tree.stop() == .shutdown)
            watchdog.close()
        }
        #expect(report == .clean)
    }
}
