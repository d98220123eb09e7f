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
