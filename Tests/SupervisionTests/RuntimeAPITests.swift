import Testing
import Supervision
import SupervisionTesting

@Suite("Run-time API and dynamic supervisors")
struct RuntimeAPITests {
    @Test("a dynamic supervisor refuses children past maxChildren")
    func maxChildren() throws {
        let harness = try Harness(.dynamic(maxChildren: 2))
        harness.start()
        let template = process("worker")
        let first = try harness.root.startChild(from: template)
        let second = try harness.root.startChild(from: template)
        #expect([first, second] == ["worker-1", "worker-2"])
        let error = #expect(throws: SupervisionError.self) { try harness.root.startChild(from: template) }
        #expect(error?.code == .maxChildren)
        #expect(harness.root.countChildren() == ChildCounts(specs: 2, active: 2, supervisors: 0, workers: 2))
        try harness.root.terminateChild(first)
        harness.runtime.runUntilIdle()
        #expect(harness.root.childIDs == ["worker-2"], "a dynamic child is removed when terminated")
        #expect(try harness.root.startChild(from: template) == "worker-3")
    }

    @Test("templates in the spec: children start from one by its id with arguments; an unknown template or duplicate template ids are errors")
    func templates() throws {
        var spec = SupervisorSpec.dynamic(templates: [process("worker"), process("indexer")])
        let harness = try Harness(spec)
        harness.start()
        #expect(harness.root.templateIDs == ["worker", "indexer"])
        let first = try harness.root.startChild(fromTemplate: "worker", with: ChildArguments(argv: ["--shard", "1"]))
        let second = try harness.root.startChild(fromTemplate: "indexer")
        #expect([first, second] == ["worker-1", "indexer-2"], "one numbering per supervisor")
        guard case .process(let started) = try harness.root.childSpec(first).kind else {
            Issue.record("not a process")
            return
        }
        #expect(started.argv.suffix(2) == ["--shard", "1"])
        let unknown = #expect(throws: SupervisionError.self) { try harness.root.startChild(fromTemplate: "nope") }
        #expect(unknown?.code == .unknownID)
        #expect(unknown?.message.contains("worker, indexer") == true)
        #expect(harness.root.childIDs == ["worker-1", "indexer-2"])
        spec.templates.append(process("worker"))
        let duplicate = #expect(throws: SupervisionError.self) { try Harness(spec) }
        #expect(duplicate?.code == .duplicateID)
    }

    @Test("terminate, restart and delete by id; unknown ids are errors that change nothing")
    func byID() throws {
        let harness = try Harness(SupervisorSpec(children: [process("a"), process("b")]))
        harness.start()
        #expect((#expect(throws: SupervisionError.self) { try harness.root.terminateChild("nope") })?.code == .unknownID)
        #expect((#expect(throws: SupervisionError.self) { try harness.root.restartChild("nope") })?.code == .unknownID)
        #expect((#expect(throws: SupervisionError.self) { try harness.root.deleteChild("nope") })?.code == .unknownID)
        #expect((#expect(throws: SupervisionError.self) { try harness.root.deleteChild("a") })?.code == .childRunning)
        #expect((#expect(throws: SupervisionError.self) { try harness.root.restartChild("a") })?.code == .childRunning)
        #expect(harness.root.children().map(\.state) == [.running, .running])

        try harness.root.terminateChild("a")
        harness.runtime.runUntilIdle()
        #expect(harness.status("a")?.state == .terminated)
        try harness.root.restartChild("a")
        #expect(harness.status("a")?.state == .running)
        try harness.root.terminateChild("a")
        harness.runtime.runUntilIdle()
        try harness.root.deleteChild("a")
        #expect(harness.root.childIDs == ["b"])

        try harness.root.startChild(process("c"))
        #expect(harness.root.childIDs == ["b", "c"])
        #expect((#expect(throws: SupervisionError.self) { try harness.root.startChild(process("c")) })?.code == .duplicateID)
        #expect((#expect(throws: SupervisionError.self) { try harness.root.startChild(process("")) })?.code == .invalidID)
        #expect(harness.root.childIDs == ["b", "c"])
    }

    @Test("status reports path, kind, pid, restarts, last exit and uptime, nested children included")
    func status() throws {
        let nested = SupervisorSpec(children: [process("inner")])
        let harness = try Harness(SupervisorSpec(children: [
            process("p"),
            ChildSpec(id: "t", .loopTask { _ in }, restart: .transient, shutdown: .brutalKill, significant: true),
            ChildSpec(id: "sub", .supervisor(nested), restart: .temporary)]))
        harness.start()
        harness.runtime.advance(by: .seconds(2))
        harness.runtime.exit("root/p", .signaled(9))
        harness.runtime.advance(by: .seconds(1))
        let status = harness.root.children()
        #expect(status.map(\.kind) == [.process, .loopTask, .supervisor])
        #expect(status.map(\.kind.isWorker) == [true, true, false])
        #expect(status.map(\.restart) == [.permanent, .transient, .temporary])
        #expect(status.map(\.shutdown) == [.timeout(.seconds(5)), .brutalKill, .infinity], "the policy in force, defaults included")
        #expect(status.map(\.significant) == [false, true, false])
        #expect(status[0].restartCount == 1 && status[0].lastExit == .signaled(9) && status[0].pid != nil)
        #expect(status[0].uptime == .seconds(1))
        #expect(status[1].uptime == .seconds(3) && status[1].pid == nil)
        #expect(status[2].children.map(\.path) == ["root/sub/inner"])
        #expect(harness.root.supervisor(at: "sub")?.path == "root/sub")
    }

    @Test("start failures are failed starts: backoff, intensity, a clear reason")
    func startFailures() throws {
        let harness = try Harness(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 2, period: .seconds(60)), children: [
            process("missing", backoff: .exponential(initial: .seconds(1), jitter: 0))]))
        harness.runtime.startFailures["root/missing"] = "spawn \"/nope\": ENOENT"
        harness.start()
        #expect(harness.events(for: "root/missing").first == .startFailed("spawn \"/nope\": ENOENT"))
        #expect(harness.status("missing")?.lastExit == .startFailed("spawn \"/nope\": ENOENT"))
        harness.runtime.advance(by: .seconds(10))
        #expect(harness.root.state == .stopped(.intensityExceeded))
        #expect(harness.scheduledDelays("root/missing") == [1_000, 2_000])
    }

    @Test("loop tasks: a failing task is restarted, reports from an old incarnation are ignored")
    func loopTasks() throws {
        var contexts: [LoopTaskContext] = []
        let harness = try Harness(SupervisorSpec(intensity: generous, children: [
            ChildSpec(id: "t", .loopTask { contexts.append($0) })]))
        harness.start()
        contexts[0].fail("boom")
        harness.runtime.runUntilIdle()
        #expect(contexts.count == 2)
        #expect(harness.status("t")?.lastExit == .failure("boom"))
        contexts[0].fail("stale")   // ignored: that incarnation already ended
        harness.runtime.runUntilIdle()
        #expect(contexts.count == 2)
        contexts[1].finish()        // permanent: restarted even after a normal end
        harness.runtime.runUntilIdle()
        #expect(contexts.count == 3)
        #expect(harness.status("t")?.restartCount == 2)
    }

    @Test("a report through a weak reference to an ended incarnation's context is ignored")
    func weakContextOfEndedIncarnation() throws {
        // A timer closure typically holds its task's context weakly. After that incarnation
        // failed and the task restarted, the old closure must not reach the new incarnation.
        var starts = 0
        weak var first: LoopTaskContext?
        let harness = try Harness(SupervisorSpec(intensity: generous, children: [
            ChildSpec(id: "t", .loopTask { context in
                starts += 1
                if starts == 1 {
                    first = context
                    context.fail("first incarnation")
                }
            })]))
        harness.start()
        #expect(starts == 2)
        #expect(harness.status("t")?.state == .running)
        first?.fail("stale, through a weak reference")
        harness.runtime.runUntilIdle()
        #expect(starts == 2, "the second incarnation must not be failed by the first one's context")
        #expect(harness.status("t")?.state == .running)
        #expect(harness.status("t")?.lastExit == .failure("first incarnation"))
    }

    @Test("a task failing inside its own start is handled after the start returns, never re-entrantly")
    func failsInsideStart() throws {
        var starts = 0
        let harness = try Harness(SupervisorSpec(strategy: .oneForAll, intensity: RestartIntensity(maxRestarts: 5, period: .seconds(1)), children: [
            process("a"), ChildSpec(id: "t", .loopTask { context in starts += 1; context.fail("at once") }), process("c")]))
        harness.start()
        #expect(harness.root.state == .stopped(.intensityExceeded))
        #expect(starts == 6)
        #expect(harness.runtime.runningPaths.isEmpty)
    }
}

@Suite("Spec validation")
struct ValidationTests {
    func code(_ spec: SupervisorSpec) -> SupervisionError.Code? {
        do {
            _ = try Supervisor(spec, runtime: ManualRuntime())
            return nil
        } catch {
            return error.code
        }
    }

    @Test("invalid specs fail before anything starts, each with its code")
    func invalid() {
        #expect(code(SupervisorSpec(children: [process("a"), process("a")])) == .duplicateID)
        #expect(code(SupervisorSpec(children: [process("")])) == .invalidID)
        #expect(code(SupervisorSpec(children: [process("a/b")])) == .invalidID)
        #expect(code(SupervisorSpec(children: [process("a", shutdown: .timeout(.seconds(-1)))])) == .invalidDuration)
        #expect(code(SupervisorSpec(children: [process("a", shutdown: .timeout(.zero))])) == .invalidDuration)
        #expect(code(SupervisorSpec(intensity: RestartIntensity(maxRestarts: -1, period: .seconds(1)), children: [])) == .invalidIntensity)
        #expect(code(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 1, period: .zero), children: [])) == .invalidDuration)
        #expect(code(SupervisorSpec(children: [process("a", backoff: .exponential(initial: .seconds(5), maximum: .seconds(1)))])) == .invalidBackoff)
        #expect(code(SupervisorSpec(children: [process("a", backoff: .exponential(multiplier: 0.5))])) == .invalidBackoff)
        #expect(code(SupervisorSpec(children: [process("a", backoff: .exponential(jitter: 2))])) == .invalidBackoff)
        #expect(code(SupervisorSpec(children: [process("a", backoff: .exponential(initial: .seconds(-1)))])) == .invalidDuration)
        #expect(code(SupervisorSpec(children: [process("a", significant: true)])) == .invalidSpec)
        #expect(code(SupervisorSpec(children: [ChildSpec(id: "p", .process(ProcessSpec(argv: [])))])) == .invalidSpec)
        var badSignal = ProcessSpec(argv: ["/bin/true"])
        badSignal.stopSignal = 99
        #expect(code(SupervisorSpec(children: [ChildSpec(id: "p", .process(badSignal))])) == .invalidSpec)
        // Nested specs are validated too, before anything starts.
        let badNested = SupervisorSpec(children: [process("x"), process("x")])
        #expect(code(SupervisorSpec(children: [process("ok"), ChildSpec(id: "sub", .supervisor(badNested))])) == .duplicateID)
        #expect(code(SupervisorSpec(children: [process("a"), process("b")])) == nil)
    }

    @Test("an invalid spec starts nothing")
    func startsNothing() {
        let runtime = ManualRuntime()
        #expect(throws: SupervisionError.self) {
            _ = try Supervisor(SupervisorSpec(children: [process("a"), process("a")]), runtime: runtime)
        }
        #expect(runtime.actions.isEmpty)
    }
}
