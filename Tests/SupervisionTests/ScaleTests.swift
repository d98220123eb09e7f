import Supervision
import SupervisionTesting
import Testing

@Suite("Scale: many dynamic children")
struct ScaleTests {
    @Test("100,000 dynamic children: half temporary and ending, the rest stopped in reverse start order")
    func hundredThousandChildren() throws {
        let count = 100_000
        let runtime = ManualRuntime()
        let root = try Supervisor(.dynamic(), runtime: runtime)
        root.start()
        var stopOrder: [String] = []
        stopOrder.reserveCapacity(count / 2)
        let staying = ChildSpec(id: "stay", .loopTask { context in
            let path = context.path
            context.onStop = {
                stopOrder.append(path)
                context.finish()
            }
        })
        let passing = ChildSpec(id: "pass", .loopTask { context in context.finish() }, restart: .temporary)
        var stayingIDs: [String] = []
        stayingIDs.reserveCapacity(count / 2)
        for index in 0..<count {
            if index % 2 == 0 {
                stayingIDs.append(try root.startChild(from: staying))
            } else {
                try root.startChild(from: passing)
            }
        }
        runtime.runUntilIdle()
        // The temporary ones ended and were removed; the others run, in start order.
        #expect(root.countChildren() == ChildCounts(specs: count / 2, active: count / 2, supervisors: 0, workers: count / 2))
        #expect(root.childIDs == stayingIDs)
        // Lookup by id still works after the removals (and their compactions).
        let middle = stayingIDs[stayingIDs.count / 2]
        try root.terminateChild(middle)
        runtime.runUntilIdle()
        #expect(stopOrder == ["root/\(middle)"])
        #expect(root.childIDs.count == count / 2 - 1)
        #expect(throws: SupervisionError.self) { try root.terminateChild("pass-2") }
        stopOrder.removeAll()
        root.shutdown()
        runtime.runUntilIdle()
        #expect(root.finalReason == .shutdown)
        let expected = stayingIDs.filter { $0 != middle }.reversed().map { "root/\($0)" }
        #expect(stopOrder.count == expected.count)
        #expect(stopOrder == expected, "stopped last-started first")
    }

    @Test("restForOne finds its group after removals; a group restart starts the group in start order")
    func restForOneAfterRemovals() throws {
        let runtime = ManualRuntime()
        var starts: [String] = []
        var contexts: [String: LoopTaskContext] = [:]
        func task(_ id: String, restart: RestartType = .permanent) -> ChildSpec {
            ChildSpec(id: id, .loopTask { context in
                starts.append(id)
                contexts[id] = context
                context.onStop = { context.finish() }
            }, restart: restart)
        }
        let root = try Supervisor(SupervisorSpec(strategy: .restForOne, children: []), runtime: runtime)
        root.start()
        // Enough temporary children removed to compact the list at least once.
        for index in 0..<200 { try root.startChild(task("t\(index)", restart: .temporary)) }
        try root.startChild(task("a"))
        try root.startChild(task("b"))
        try root.startChild(task("c"))
        for index in 0..<200 { try root.terminateChild("t\(index)") }
        runtime.runUntilIdle()
        #expect(root.childIDs == ["a", "b", "c"])
        // b fails: restForOne restarts b and what was started after it (c), in start order.
        starts.removeAll()
        contexts["b"]?.fail("boom")
        runtime.runUntilIdle()
        #expect(starts == ["b", "c"])
        // a fails: all three, in start order.
        starts.removeAll()
        contexts["a"]?.fail("boom")
        runtime.runUntilIdle()
        #expect(starts == ["a", "b", "c"])
        #expect(root.children().allSatisfy { $0.state == .running })
    }

    @Test("20,000 children in backoff at once restart exactly when due, earliest first (ties in start order); terminated waiters never restart")
    func manyChildrenInBackoff() throws {
        let count = 20_000
        let runtime = ManualRuntime()
        let root = try Supervisor(.dynamic(intensity: RestartIntensity(maxRestarts: 10 * count, period: .seconds(1))),
                                  runtime: runtime)
        root.start()
        var restarted: [Int] = []
        var delays: [Int64] = []   // milliseconds, per child index
        for index in 0..<count {
            // 997 distinct delays, so many children share one: ties restart in start order.
            let delay = Int64((index * 7_919) % 997 + 1)
            delays.append(delay)
            try root.startChild(ChildSpec(id: "c\(index)", .loopTask { context in
                // The first incarnation fails inside its start; the restarted one stays up.
                if context.restartCount == 0 { context.fail("first run") } else { restarted.append(index) }
            }, backoff: .exponential(initial: .milliseconds(delay), jitter: 0)))
        }
        runtime.runUntilIdle()
        #expect(root.children().allSatisfy { $0.state == .restarting })
        // Every seventh child is terminated while it waits: it leaves the schedule (and, in a
        // dynamic supervisor, the list) and is never started again.
        for index in stride(from: 0, to: count, by: 7) { try root.terminateChild("c\(index)") }
        runtime.runUntilIdle()
        let survivors = (0..<count).filter { $0 % 7 != 0 }
        #expect(root.countChildren().specs == survivors.count)

        var elapsed: Int64 = 0
        for step: Int64 in [1, 10, 100, 250, 500, 996, 997] {
            runtime.advance(by: .milliseconds(step - elapsed))
            elapsed = step
            let expected = survivors.filter { delays[$0] <= step }
                .sorted { (delays[$0], $0) < (delays[$1], $1) }
            #expect(restarted == expected, "at \(step) ms: the due children, earliest first, ties in start order")
        }
        #expect(root.countChildren().active == survivors.count)
        #expect(runtime.nextTimerDeadline == nil, "nothing left waiting")
    }
}

@Suite("OTP child API")
struct ChildAPITests {
    @Test("childSpec returns the spec a child was started with, run-time and generated ids included")
    func childSpec() throws {
        var template = ProcessSpec(argv: ["/bin/sleep", "60"])
        template.stopSignal = 2
        let harness = try Harness(SupervisorSpec(children: [process("a", restart: .transient)]))
        harness.start()
        #expect(try harness.root.childSpec("a").restart == .transient)
        try harness.root.startChild(ChildSpec(id: "late", .process(template), shutdown: .brutalKill))
        let late = try harness.root.childSpec("late")
        #expect(late.id == "late" && late.shutdown == .brutalKill)
        if case .process(let spec) = late.kind { #expect(spec.stopSignal == 2) } else { Issue.record("not a process") }
        let dynamic = try Harness(.dynamic())
        dynamic.start()
        let id = try dynamic.root.startChild(from: ChildSpec(id: "worker", .process(template)))
        #expect(try dynamic.root.childSpec(id).id == id)
        #expect((#expect(throws: SupervisionError.self) { try harness.root.childSpec("nope") })?.code == .unknownID)
    }

    @Test("a child waiting for its restart is `restarting`, not `running`, as OTP answers")
    func restartingIsItsOwnError() throws {
        let harness = try Harness(SupervisorSpec(children: [
            process("a", backoff: .exponential(initial: .seconds(10), jitter: 0)),
        ]))
        harness.start()
        #expect((#expect(throws: SupervisionError.self) { try harness.root.restartChild("a") })?.code == .childRunning)
        harness.runtime.exit("root/a", .exited(1))
        #expect(harness.status("a")?.state == .restarting)
        #expect((#expect(throws: SupervisionError.self) { try harness.root.restartChild("a") })?.code == .childRestarting)
        #expect((#expect(throws: SupervisionError.self) { try harness.root.deleteChild("a") })?.code == .childRestarting)
        #expect(harness.status("a")?.state == .restarting, "nothing changed")
    }
}

@Suite("Success signals")
struct SuccessSignalTests {
    @Test("a transient process ended by one of its successSignals is normal and stays down; another signal restarts it")
    func successSignals() throws {
        var spec = ProcessSpec(argv: ["/bin/sleep", "60"])
        spec.successSignals = [15]
        let harness = try Harness(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 10, period: .seconds(1)),
                                                 children: [ChildSpec(id: "web", .process(spec), restart: .transient)]))
        harness.start()
        harness.runtime.exit("root/web", .signaled(9))
        #expect(harness.events(for: "root/web").contains(.exited(.signaled(9))))
        #expect(harness.status("web")?.state == .running, "SIGKILL is a failure: restarted")
        harness.runtime.exit("root/web", .signaled(15))
        #expect(harness.events(for: "root/web").contains(.exited(.normal)))
        #expect(harness.status("web")?.state == .idle, "SIGTERM is a success here: a transient child stays down")
    }

    @Test("a success signal out of range is refused before anything starts")
    func badSuccessSignal() throws {
        var spec = ProcessSpec(argv: ["/bin/true"])
        spec.successSignals = [0]
        let error = #expect(throws: SupervisionError.self) {
            _ = try Supervisor(SupervisorSpec(children: [ChildSpec(id: "x", .process(spec))]), runtime: ManualRuntime())
        }
        #expect(error?.code == .invalidSpec)
        #expect(error?.message.contains("root/x: success signal 0") == true)
    }
}
