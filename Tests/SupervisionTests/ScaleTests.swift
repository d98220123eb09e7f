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

@Suite("Per-child arguments (startChild(from:with:))")
struct ChildArgumentTests {
    @Test("a loop task gets its own value, the same at every restart; the template is untouched")
    func loopTaskValue() throws {
        let runtime = ManualRuntime()
        let root = try Supervisor(.dynamic(), runtime: runtime)
        root.start()
        var seen: [String: [Int]] = [:]
        var contexts: [String: LoopTaskContext] = [:]
        let template = ChildSpec(id: "device", .loopTask { context in
            seen[context.path, default: []].append(context.argument as? Int ?? -1)
            contexts[context.path] = context
            context.onStop = { context.finish() }
        })
        let a = try root.startChild(from: template, with: ChildArguments(value: 7))
        let b = try root.startChild(from: template, with: ChildArguments(value: 9))
        let c = try root.startChild(from: template)
        runtime.runUntilIdle()
        contexts["root/\(a)"]?.fail("crash")   // restarted: same argument
        runtime.runUntilIdle()
        #expect(seen["root/\(a)"] == [7, 7])
        #expect(seen["root/\(b)"] == [9])
        #expect(seen["root/\(c)"] == [-1], "no value: nil")
        #expect(try root.childSpec(b).argument as? Int == 9)
        #expect(template.argument == nil)
        // A spec can carry an argument in a static tree as well.
        var values: [String] = []
        let fixed = try Supervisor(SupervisorSpec(children: [
            ChildSpec(id: "x", .loopTask { values.append($0.argument as? String ?? "?") }, argument: "config-x"),
        ]), runtime: runtime)
        fixed.start()
        #expect(values == ["config-x"])
    }

    @Test("a process template gets argv appended and environment changes applied, as childSpec shows")
    func processSpecShape() throws {
        let harness = try Harness(.dynamic())
        harness.start()
        func started(_ environment: ProcessEnvironment, _ arguments: ChildArguments) throws -> ProcessSpec {
            var process = ProcessSpec(argv: ["/bin/worker", "--mode", "fast"])
            process.environment = environment
            let id = try harness.root.startChild(from: ChildSpec(id: "w", .process(process)), with: arguments)
            guard case .process(let spec) = try harness.root.childSpec(id).kind else { throw SupervisionError(.invalidSpec, "not a process") }
            return spec
        }
        let appended = try started(.inherit, ChildArguments(argv: ["--port", "81"], environment: ["A": "1"]))
        #expect(appended.argv == ["/bin/worker", "--mode", "fast", "--port", "81"])
        #expect(appended.environment == .inheritWithOverrides(["A": "1"]))
        let merged = try started(.inheritWithOverrides(["A": "0", "B": "2"]), ChildArguments(environment: ["A": "1", "B": nil]))
        #expect(merged.environment == .inheritWithOverrides(["A": "1", "B": nil]))
        let replaced = try started(.replace(["PATH": "/bin", "OLD": "x"]), ChildArguments(environment: ["OLD": nil, "NEW": "y"]))
        #expect(replaced.environment == .replace(["PATH": "/bin", "NEW": "y"]))
        #expect(harness.runtime.runningPaths.count == 3)
    }

    @Test("bad arguments are refused with invalidSpec before anything starts")
    func badArguments() throws {
        let harness = try Harness(.dynamic())
        harness.start()
        let task = ChildSpec(id: "t", .loopTask { _ in })
        let proc = process("p")
        let nested = ChildSpec(id: "s", .supervisor(SupervisorSpec(children: [])))
        let refused: [(ChildSpec, ChildArguments)] = [
            (task, ChildArguments(argv: ["--x"])),
            (task, ChildArguments(environment: ["A": "1"])),
            (proc, ChildArguments(value: 1)),
            (nested, ChildArguments(value: 1)),
            (nested, ChildArguments(argv: ["x"])),
            (proc, ChildArguments(environment: ["A=B": "1"])),
            (proc, ChildArguments(environment: ["": "1"])),
            (proc, ChildArguments(environment: ["A": "nul\0byte"])),
            (proc, ChildArguments(argv: ["nul\0byte"])),
        ]
        for (template, arguments) in refused {
            let error = #expect(throws: SupervisionError.self) { try harness.root.startChild(from: template, with: arguments) }
            #expect(error?.code == .invalidSpec, "\(template.id) \(arguments.argv) \(arguments.environment)")
        }
        #expect(harness.root.countChildren().specs == 0, "nothing was added")
        #expect(harness.runtime.runningPaths.isEmpty)
        // A spec with an argument for a process is refused in a static tree too, naming the child.
        let error = #expect(throws: SupervisionError.self) {
            try Supervisor(SupervisorSpec(children: [ChildSpec(id: "p", .process(ProcessSpec(argv: ["/bin/true"])), argument: 1)]),
                           runtime: ManualRuntime())
        }
        #expect(error?.code == .invalidSpec && error?.message.contains("root/p") == true)
    }
}
