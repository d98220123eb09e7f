import CoreMetrics
import MetricsTestKit
import Testing
import Supervision
import SupervisionTesting

@Suite("Metrics")
struct MetricsTests {
    @Test("restarts, up and ready gauges, the chosen restart delay, intensity exceeded; a removed child's metrics are destroyed")
    func reported() throws {
        let metrics = TestMetrics()
        let runtime = ManualRuntime()
        let db = SupervisorSpec(intensity: RestartIntensity(maxRestarts: 1, period: .seconds(10)), children: [
            ChildSpec(id: "conn", .process(ProcessSpec(argv: ["/srv/conn"])), backoff: .none),
        ])
        let root = try Supervisor(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 10, period: .seconds(10)), children: [
            ChildSpec(id: "app", .process(ProcessSpec(argv: ["/srv/app"])), backoff: .exponential(initial: .milliseconds(250), jitter: 0)),
            ChildSpec(id: "store", .process(ProcessSpec(argv: ["/srv/store"])), readiness: .notify),
            ChildSpec(id: "db", .supervisor(db)),
            ChildSpec(id: "once", .process(ProcessSpec(argv: ["/srv/once"])), restart: .temporary),
            ChildSpec(id: "tick", .loopTask { _ in }),
        ]), runtime: runtime, randomSeed: 1)
        let reporter = root.reportMetrics(to: metrics)
        root.start()
        runtime.runUntilIdle()
        // store is not ready yet, so the rest waits (ordered start).
        #expect(try metrics.expectGauge("uvs_child_up", [("child", "root/app")]).lastValue == 1)
        #expect(try metrics.expectGauge("uvs_child_ready", [("child", "root/app")]).lastValue == 1)
        #expect(try metrics.expectGauge("uvs_child_ready", [("child", "root/store")]).lastValue == 0)
        runtime.notify("root/store", .ready)
        #expect(try metrics.expectGauge("uvs_child_ready", [("child", "root/store")]).lastValue == 1)
        #expect(try metrics.expectGauge("uvs_child_ready", [("child", "root/db")]).lastValue == 1, "a nested supervisor, once started")
        #expect(try metrics.expectGauge("uvs_child_ready", [("child", "root/tick")]).lastValue == 1, "a loop task without a check")

        runtime.exit("root/app", .exited(1))
        #expect(try metrics.expectGauge("uvs_child_up", [("child", "root/app")]).lastValue == 0)
        #expect(try metrics.expectTimer("uvs_restart_delay", [("child", "root/app")]).lastValue == 250_000_000)
        runtime.advance(by: .milliseconds(250))
        #expect(try metrics.expectCounter("uvs_restarts_total", [("child", "root/app")]).lastValue == 1)
        #expect(try metrics.expectGauge("uvs_child_up", [("child", "root/app")]).lastValue == 1)

        // db gives up after two crashes of its connection.
        runtime.exit("root/db/conn", .exited(1))
        runtime.runUntilIdle()
        runtime.exit("root/db/conn", .exited(1))
        runtime.runUntilIdle()
        #expect(try metrics.expectCounter("uvs_intensity_exceeded_total", [("supervisor", "root/db")]).lastValue == 1)

        // A temporary child that ends is removed, and so are its metrics.
        #expect(reporter.reportedChildren == 6)
        runtime.exit("root/once", .exited(0))
        runtime.runUntilIdle()
        #expect(reporter.reportedChildren == 5)
        #expect(metrics.counters(label: "uvs_restarts_total", dimensions: [("child", "root/once")]).isEmpty)
    }

    @Test("the root's own intensityExceeded is counted; a second reporter replaces the first")
    func rootAndReplacement() throws {
        let first = TestMetrics()
        let second = TestMetrics()
        let runtime = ManualRuntime()
        let root = try Supervisor(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 1, period: .seconds(10)), children: [
            ChildSpec(id: "app", .process(ProcessSpec(argv: ["/srv/app"])), backoff: .none),
        ]), runtime: runtime, randomSeed: 1)
        root.reportMetrics(to: first)
        root.start()
        runtime.runUntilIdle()
        root.reportMetrics(to: second, prefix: "two")
        runtime.exit("root/app", .exited(1))
        runtime.runUntilIdle()
        #expect(try second.expectCounter("two_restarts_total", [("child", "root/app")]).totalValue == 1)
        #expect(first.counters(label: "uvs_restarts_total").allSatisfy { $0.totalValue == 0 }, "the first reporter is fed no more")
        runtime.exit("root/app", .exited(1))
        runtime.runUntilIdle()
        #expect(root.finalReason == .intensityExceeded)
        #expect(try second.expectCounter("two_intensity_exceeded_total", [("supervisor", "root")]).totalValue == 1)
    }

    @Test("a second, later shutdown deadline does not push back the first (nor a child's own timeout)")
    func laterDeadline() throws {
        let runtime = ManualRuntime()
        runtime.stopBehaviour["root/app"] = .ignores
        let root = try Supervisor(SupervisorSpec(children: [
            ChildSpec(id: "app", .process(ProcessSpec(argv: ["/srv/app"])), shutdown: .timeout(.seconds(60))),
        ]), runtime: runtime, randomSeed: 1)
        var killed = 0
        root.onEvent { if case .killed = $0.kind { killed += 1 } }
        root.start()
        runtime.runUntilIdle()
        root.shutdown(within: .seconds(2))
        runtime.advance(by: .seconds(1))
        root.shutdown(within: .seconds(2))
        runtime.advance(by: .milliseconds(999))
        #expect(killed == 0)
        runtime.advance(by: .milliseconds(2))
        #expect(killed == 1, "killed at the first deadline (t = 2 s), not the second (t = 3 s)")
    }
}
