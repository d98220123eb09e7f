import Supervision
import SupervisionTesting
import Testing

/// Values at the edges that a user can pass: nothing may trap. And captured output on the
/// supervisor's own terms. (Manual runtime: exact times.)
@Suite("Edge values and captured output")
struct EdgeValueTests {
    @Test("shutdown(within: .seconds(Int64.max)) saturates its deadline and stops the tree normally")
    func hugeShutdownDeadline() throws {
        let harness = try Harness(SupervisorSpec(strategy: .oneForOne, children: [process("web")]))
        harness.start()
        harness.runtime.stopBehaviour["root/web"] = .exitsAfter(.seconds(1))
        harness.root.shutdown(within: .seconds(Int64.max))
        harness.runtime.advance(by: .seconds(2))
        #expect(harness.root.finalReason == .shutdown)
        #expect(harness.events(for: "root/web").contains(.exited(.shutdown)))
    }

    @Test("a backoff of 1e10 s passes validation and schedules a huge delay instead of trapping")
    func hugeBackoff() throws {
        let huge = Backoff(initial: .seconds(10_000_000_000), multiplier: 3, maximum: .seconds(10_000_000_000),
                           jitter: 0.5, resetAfter: .seconds(Int64.max))
        let harness = try Harness(SupervisorSpec(strategy: .oneForOne, children: [process("web", backoff: huge)]))
        harness.start()
        for _ in 0..<3 {
            harness.runtime.exit("root/web", .exited(1))
            harness.runtime.advance(by: .seconds(Int64.max))
        }
        let delays = harness.scheduledDelays("root/web")
        #expect(delays.count == 3)
        // The first delay, decided before the clock saturated: huge, neither wrapped nor zero.
        #expect(delays.first.map { $0 > 1_000_000_000_000 } == true, "milliseconds: \(delays)")
        // Then the clock saturated at Int64.max; the child was still restarted each time.
        #expect(harness.status("web")?.restartCount == 3)
        #expect(harness.root.finalReason == nil)
    }

    @Test("a timer armed past Int64.max on the manual clock never fires, and the clock does not wrap")
    func manualClockSaturates() throws {
        let runtime = ManualRuntime()
        var fired = 0
        let timer = runtime.makeTimer { fired += 1 }
        runtime.advance(by: .seconds(1))
        timer.arm(afterNanoseconds: .max)
        runtime.advance(by: .seconds(Int64.max))
        runtime.advance(by: .seconds(Int64.max))
        #expect(runtime.nowNanoseconds == .max)
        #expect(fired <= 1)
    }

    @Test("captured lines are events on the supervisor's clock with the restart count of their writer")
    func outputEvents() throws {
        var spec = ProcessSpec(argv: ["/bin/true"])
        spec.stdout = .capture
        let harness = try Harness(SupervisorSpec(strategy: .oneForOne, children: [ChildSpec(id: "web", .process(spec))]))
        harness.start()
        harness.runtime.advance(by: .milliseconds(250))
        #expect(harness.runtime.write("root/web", line: "first"))
        harness.runtime.exit("root/web", .exited(1))
        harness.runtime.advance(by: .milliseconds(500))
        #expect(harness.runtime.write("root/web", stream: "stderr", line: "second"))
        let outputs = harness.events.filter { if case .output = $0.kind { return true }; return false }
        #expect(outputs.map(\.kind) == [.output(stream: "stdout", line: "first"), .output(stream: "stderr", line: "second")])
        #expect(outputs.map(\.restartCount) == [0, 1])
        #expect(outputs.map(\.time) == [250_000_000, 750_000_000])
    }
}

/// Runs its action when it goes away (a user object captured by a child's start closure).
private final class Reviver {
    let action: () -> Void
    init(_ action: @escaping () -> Void) { self.action = action }
    deinit { action() }
}

@Suite("Re-entrant user code")
struct ReentrancyTests {
    @Test("a deinit run by the supervisor's own cleanup may start children: none is lost or left half-started")
    func deinitStartsChildren() throws {
        let runtime = ManualRuntime()
        let root = try Supervisor(SupervisorSpec(strategy: .oneForAll, intensity: RestartIntensity(maxRestarts: 100, period: .seconds(1)),
                                                 children: []), runtime: runtime)
        var ended: [String] = []
        root.onEvent { if case .exited = $0.kind { ended.append($0.path) } }
        root.start()
        var lateStarts = 0
        var y: LoopTaskContext?
        var z: LoopTaskContext?
        try root.startChild(ChildSpec(id: "z", .loopTask { context in z = context; context.onStop = { context.finish() } }))
        try root.startChild(ChildSpec(id: "y", .loopTask { context in y = context }, restart: .temporary))
        do {
            // The only reference to the reviver is x's start closure: it goes when x's record
            // goes, which happens inside the supervisor's own bookkeeping.
            let reviver = Reviver {
                for index in 0..<3 {
                    try? root.startChild(ChildSpec(id: "late-\(index)", .loopTask { context in
                        lateStarts += 1
                        context.finish()
                    }, restart: .temporary))
                }
            }
            try root.startChild(ChildSpec(id: "x", .loopTask { [reviver] context in
                _ = reviver
                context.onStop = { y?.finish(); context.finish() }
            }, restart: .temporary))
        }
        // z fails; oneForAll stops x, whose stop ends y too: two ends in one pass.
        z?.fail("boom")
        runtime.runUntilIdle()
        #expect(lateStarts == 3)
        for index in 0..<3 {
            #expect(ended.contains("root/late-\(index)"), "late-\(index) ended and was handled")
        }
        let states = root.children().map { "\($0.id):\($0.state)" }
        #expect(!root.children().contains { $0.id.hasPrefix("late-") }, "temporary children that ended are removed: \(states)")
        #expect(root.children().first { $0.id == "z" }?.state == .running)
    }

    @Test("restartChild or terminateChild from a child's own exited event decides instead of the supervisor")
    func handlersDecide() throws {
        let runtime = ManualRuntime()
        var contexts: [LoopTaskContext] = []
        var live = 0
        let root = try Supervisor(SupervisorSpec(children: [ChildSpec(id: "app", .loopTask { context in
            live += 1
            contexts.append(context)
            context.onStop = { live -= 1; context.finish() }
        })]), runtime: runtime)
        var action = "restart"
        root.onEvent { event in
            guard event.path == "root/app", case .exited = event.kind else { return }
            if action == "restart" { action = ""; try? root.restartChild("app") }
            if action == "terminate" { action = ""; try? root.terminateChild("app") }
        }
        root.start()
        runtime.runUntilIdle()
        live -= 1
        contexts[0].fail("boom")
        runtime.runUntilIdle()
        #expect(contexts.count == 2, "one new incarnation, started by the handler; the supervisor adds none")
        #expect(live == 1)
        action = "terminate"
        live -= 1
        contexts[1].fail("boom again")
        runtime.runUntilIdle()
        #expect(root.children().first?.state == .terminated, "the handler's terminate stands")
        #expect(contexts.count == 2)
        root.shutdown()
        runtime.runUntilIdle()
        #expect(live == 0, "no incarnation left running after shutdown")
    }
}
