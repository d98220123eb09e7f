#if canImport(Glibc)
import Glibc
#endif
@testable import Supervision
import SupervisionTesting
import Testing

private func notifying(_ id: String, readyTimeout: Duration = .seconds(30), backoff: Backoff = .none,
                       liveness: Liveness = .none) -> ChildSpec {
    ChildSpec(id: id, .process(ProcessSpec(argv: ["/bin/true", id])), backoff: backoff,
              readiness: .notify, readyTimeout: readyTimeout, liveness: liveness)
}

private func started(_ harness: Harness) -> [String] {
    harness.runtime.actions.compactMap { if case .start(let path) = $0 { return path } else { return nil } }
}

@Suite("Readiness: ordered starts wait for each child to be ready")
struct ReadinessTests {
    @Test("the next sibling starts only once the child before it said READY=1, as OTP's start_link")
    func startWaitsForReady() throws {
        let harness = try Harness(SupervisorSpec(children: [notifying("db"), process("app")]))
        harness.start()
        #expect(started(harness) == ["root/db"], "app waits for db")
        #expect(harness.status("db")?.ready == false && harness.status("db")?.state == .running)
        #expect(harness.runtime.worker(at: "root/db")?.notifySetup == NotifySetup(notifySocket: true, watchdog: nil, readyDescriptor: nil))
        harness.runtime.advance(by: .milliseconds(300))
        harness.runtime.notify("root/db", .ready)
        #expect(started(harness) == ["root/db", "root/app"])
        #expect(harness.events(for: "root/db").contains(.ready(after: .milliseconds(300))))
        #expect(harness.status("db")?.ready == true && harness.status("app")?.ready == true)
        // A second READY=1 changes nothing.
        let before = harness.events.count
        harness.runtime.notify("root/db", .ready)
        #expect(harness.events.count == before)
    }

    @Test("a child not ready within readyTimeout fails its start: stopped, counted, restarted with backoff; the sequence goes on")
    func readyTimeout() throws {
        let harness = try Harness(SupervisorSpec(children: [
            notifying("db", readyTimeout: .seconds(1), backoff: .exponential(initial: .seconds(2), jitter: 0)),
            process("app"),
        ]))
        harness.start()
        harness.runtime.advance(by: .milliseconds(999))
        #expect(started(harness) == ["root/db"])
        harness.runtime.advance(by: .milliseconds(1))
        let db = harness.events(for: "root/db")
        #expect(db.contains(.notReady("not ready within 1s (no READY=1 / ready())")) || db.contains { if case .notReady = $0 { return true } else { return false } })
        let exit = db.compactMap { if case .exited(let reason) = $0 { return reason } else { return nil } }.first
        guard case .startFailed(let why)? = exit else { Issue.record("expected a failed start, got \(String(describing: exit))"); return }
        #expect(why.contains("not ready within"))
        #expect(harness.runtime.actions.contains(.requestStop("root/db")), "stopped by its shutdown policy")
        // oneForOne: its failure concerns only itself, so app starts now.
        #expect(started(harness) == ["root/db", "root/app"])
        #expect(harness.scheduledDelays("root/db") == [2000])
        harness.runtime.advance(by: .seconds(2))
        #expect(started(harness) == ["root/db", "root/app", "root/db"], "restarted after its backoff")
    }

    @Test("restForOne: a dependant waits for its dependency at the first start and at every group restart")
    func restForOneWaits() throws {
        let harness = try Harness(SupervisorSpec(strategy: .restForOne, children: [notifying("cache"), process("app")]))
        harness.start()
        #expect(started(harness) == ["root/cache"])
        harness.runtime.notify("root/cache", .ready)
        #expect(started(harness) == ["root/cache", "root/app"])
        harness.runtime.exit("root/cache", .exited(1))
        // Both restarted: cache first, app only once cache is ready again.
        #expect(started(harness) == ["root/cache", "root/app", "root/cache"])
        #expect(harness.status("app")?.state == .restarting)
        harness.runtime.advance(by: .milliseconds(40))
        harness.runtime.notify("root/cache", .ready)
        #expect(started(harness) == ["root/cache", "root/app", "root/cache", "root/app"])
    }

    @Test("a nested supervisor is ready once its own children have started, so its next sibling waits for them")
    func nestedSupervisorReadiness() throws {
        let nested = SupervisorSpec(children: [notifying("inner")])
        let harness = try Harness(SupervisorSpec(children: [ChildSpec(id: "sub", .supervisor(nested)), process("after")]))
        harness.start()
        #expect(started(harness) == ["root/sub/inner"])
        #expect(harness.status("sub")?.ready == false)
        harness.runtime.notify("root/sub/inner", .ready)
        #expect(started(harness) == ["root/sub/inner", "root/after"])
        #expect(harness.status("sub")?.ready == true)
    }

    @Test("EXTEND_TIMEOUT_USEC pushes the ready deadline back")
    func extendTimeout() throws {
        let harness = try Harness(SupervisorSpec(children: [notifying("slow", readyTimeout: .seconds(1))]))
        harness.start()
        harness.runtime.advance(by: .milliseconds(800))
        harness.runtime.notify("root/slow", .extendTimeout(.seconds(2)))
        harness.runtime.advance(by: .milliseconds(1_900))
        #expect(harness.status("slow")?.state == .running, "deadline now at 2.8 s")
        harness.runtime.advance(by: .milliseconds(150))
        #expect(harness.runtime.actions.contains(.requestStop("root/slow")))
    }

    @Test("loop tasks get ready with context.ready(), synchronously in their start or later")
    func loopTaskReady() throws {
        var contexts: [String: LoopTaskContext] = [:]
        func task(_ id: String, readyAtOnce: Bool) -> ChildSpec {
            ChildSpec(id: id, .loopTask { context in
                contexts[id] = context
                context.onStop = { context.finish() }
                if readyAtOnce { context.ready() }
            }, readiness: .notify)
        }
        var order: [String] = []
        let harness = try Harness(SupervisorSpec(children: [task("a", readyAtOnce: true), task("b", readyAtOnce: false), task("c", readyAtOnce: true)]))
        harness.root.onEvent { if case .started = $0.kind { order.append($0.path) } }
        harness.start()
        #expect(order == ["root/a", "root/b"])
        contexts["b"]?.ready()
        harness.runtime.runUntilIdle()
        #expect(order == ["root/a", "root/b", "root/c"])
    }

    @Test("a readiness probe retries until it succeeds; its timeout counts as a failed attempt")
    func readinessProbe() throws {
        let check = ProbeCheck.tcp(host: "127.0.0.1", port: 8080)
        var spec = process("web")
        spec.readiness = .probe(Probe(check, interval: .milliseconds(100), timeout: .milliseconds(50)))
        let harness = try Harness(SupervisorSpec(children: [spec, process("after")]))
        harness.start()
        harness.runtime.advance(by: .zero)
        #expect(harness.runtime.probeAttempts == [check], "the first attempt at once")
        harness.runtime.advance(by: .milliseconds(50))     // times out (no answer scripted)
        harness.runtime.advance(by: .milliseconds(100))    // the next attempt
        #expect(harness.runtime.probeAttempts.count == 2)
        harness.runtime.probeAnswers[check] = .failure("ECONNREFUSED")
        harness.runtime.advance(by: .milliseconds(150))
        #expect(harness.runtime.probeAttempts.count == 3)
        #expect(started(harness) == ["root/web"])
        harness.runtime.probeAnswers[check] = .success
        harness.runtime.advance(by: .milliseconds(100))
        #expect(started(harness) == ["root/web", "root/after"])
        let attempts = harness.runtime.probeAttempts.count
        harness.runtime.advance(by: .seconds(5))
        #expect(harness.runtime.probeAttempts.count == attempts, "a readiness probe stops once ready")
    }

    @Test("shutting down while the start sequence waits: the children after the gate never start")
    func shutdownWhileGated() throws {
        let harness = try Harness(SupervisorSpec(children: [notifying("db"), process("app"), process("web")]))
        harness.start()
        harness.root.shutdown()
        harness.runtime.runUntilIdle()
        #expect(harness.root.finalReason == .shutdown)
        #expect(started(harness) == ["root/db"])
        #expect(harness.root.children().allSatisfy { $0.state == .idle })
    }
}

@Suite("Liveness: hung workers are found and replaced")
struct LivenessTests {
    @Test("a watchdog child that stops sending WATCHDOG=1 is stopped as unresponsive and restarted")
    func watchdog() throws {
        var spec = process("worker")
        spec.liveness = .watchdog(.seconds(1))
        let harness = try Harness(SupervisorSpec(children: [spec]))
        harness.start()
        #expect(harness.runtime.worker(at: "root/worker")?.notifySetup.watchdog == .seconds(1))
        harness.runtime.advance(by: .milliseconds(900))
        harness.runtime.notify("root/worker", .watchdog)
        harness.runtime.advance(by: .milliseconds(900))
        #expect(!harness.runtime.actions.contains(.requestStop("root/worker")), "pinged in time")
        harness.runtime.advance(by: .milliseconds(100))
        #expect(harness.runtime.actions.contains(.requestStop("root/worker")))
        let events = harness.events(for: "root/worker")
        #expect(events.contains(.livenessFailed("watchdog: no WATCHDOG=1 within 1s")))
        #expect(events.contains(.exited(.unresponsive("watchdog: no WATCHDOG=1 within 1s"))))
        #expect(harness.root.children()[0].restartCount == 1, "restarted like any failure")
    }

    @Test("a SIGSTOPped child (it ignores the stop signal) is killed at its shutdown timeout and still ends unresponsive")
    func stoppedChildIsKilled() throws {
        var spec = process("frozen", shutdown: .timeout(.seconds(2)))
        spec.liveness = .watchdog(.seconds(1))
        let harness = try Harness(SupervisorSpec(children: [spec]))
        harness.runtime.stopBehaviour["root/frozen"] = .ignores
        harness.start()
        harness.runtime.advance(by: .seconds(1))
        harness.runtime.advance(by: .seconds(2))
        #expect(harness.runtime.actions.contains(.kill("root/frozen")))
        #expect(harness.events(for: "root/frozen").contains(.exited(.unresponsive("watchdog: no WATCHDOG=1 within 1s"))))
        #expect(harness.status("frozen")?.state == .running, "and replaced")
    }

    @Test("WATCHDOG=trigger fails the child at once; WATCHDOG=1 without a watchdog is ignored")
    func watchdogTrigger() throws {
        var watched = process("watched")
        watched.liveness = .watchdog(.seconds(10))
        let harness = try Harness(SupervisorSpec(children: [watched, process("plain")]))
        harness.start()
        harness.runtime.notify("root/plain", .watchdog)
        harness.runtime.notify("root/plain", .watchdogTrigger)
        #expect(!harness.runtime.actions.contains(.requestStop("root/plain")))
        harness.runtime.notify("root/watched", .watchdogTrigger)
        #expect(harness.events(for: "root/watched").contains(.livenessFailed("watchdog triggered by the child (WATCHDOG=trigger)")))
    }

    @Test("a liveness probe fails the child after failureThreshold failures in a row; a success resets the count")
    func livenessProbe() throws {
        let check = ProbeCheck.command(["/usr/bin/check"])
        var spec = process("svc")
        spec.liveness = .probe(Probe(check, interval: .seconds(1), timeout: .milliseconds(500), failureThreshold: 3))
        let harness = try Harness(SupervisorSpec(children: [spec]))
        harness.runtime.probeAnswers[check] = .failure("exited 1")
        harness.start()
        harness.runtime.advance(by: .seconds(1))    // attempt 1 failed at once, 2 after 1 s
        harness.runtime.probeAnswers[check] = .success
        harness.runtime.advance(by: .seconds(1))    // 3 succeeds: count back to 0
        harness.runtime.probeAnswers[check] = .failure("exited 1")
        harness.runtime.advance(by: .seconds(2))    // 4, 5 fail
        #expect(!harness.runtime.actions.contains(.requestStop("root/svc")))
        harness.runtime.advance(by: .seconds(1))    // 6 fails: three in a row
        #expect(harness.runtime.actions.contains(.requestStop("root/svc")))
        #expect(harness.events(for: "root/svc").contains(.exited(.unresponsive("command /usr/bin/check failed 3 times in a row: exited 1"))))
    }

    @Test("loop tasks keep their watchdog with context.heartbeat(); a silent one is stopped, and abandoned if it ignores the stop")
    func loopTaskHeartbeat() throws {
        var context: LoopTaskContext?
        let harness = try Harness(SupervisorSpec(children: [
            ChildSpec(id: "beat", .loopTask { context = $0; $0.onStop = {} }, shutdown: .timeout(.seconds(1)),
                      liveness: .watchdog(.seconds(2))),
        ]))
        harness.start()
        for _ in 0..<5 {
            harness.runtime.advance(by: .milliseconds(1_500))
            context?.heartbeat()
        }
        #expect(harness.root.children()[0].restartCount == 0)
        harness.runtime.advance(by: .seconds(2))
        harness.runtime.advance(by: .seconds(1))
        let events = harness.events(for: "root/beat")
        #expect(events.contains(.livenessFailed("watchdog: no heartbeat() within 2s")))
        #expect(events.contains(.abandoned))
        #expect(events.contains(.exited(.unresponsive("watchdog: no heartbeat() within 2s"))))
    }

    @Test("status lines show in children() and as events, with or without checks")
    func statusLines() throws {
        let harness = try Harness(SupervisorSpec(children: [process("a"), notifying("b")]))
        harness.start()
        harness.runtime.notify("root/a", .status("warming caches"))
        harness.runtime.notify("root/b", .status("replaying journal"))
        #expect(harness.status("a")?.statusText == "warming caches")
        #expect(harness.status("b")?.statusText == "replaying journal")
        #expect(harness.events(for: "root/a").contains(.status("warming caches")))
    }
}

@Suite("Readiness and liveness: bad settings are refused")
struct HealthValidationTests {
    private static func badSpec(_ index: Int) -> ChildSpec {
        let specs: [ChildSpec] = [
            ChildSpec(id: "x", .process(ProcessSpec(argv: ["/bin/true"])), readyTimeout: .zero),
            ChildSpec(id: "x", .process(ProcessSpec(argv: ["/bin/true"])), readiness: .descriptor(2)),
            ChildSpec(id: "x", .process(ProcessSpec(argv: ["/bin/true"])), readiness: .descriptor(67)),
            ChildSpec(id: "x", .loopTask { _ in }, readiness: .descriptor(3)),
            ChildSpec(id: "x", .supervisor(SupervisorSpec(children: [])), readiness: .notify),
            ChildSpec(id: "x", .process(ProcessSpec(argv: ["/bin/true"])), liveness: .watchdog(.zero)),
            ChildSpec(id: "x", .process(ProcessSpec(argv: ["/bin/true"])), liveness: .probe(Probe(.tcp(host: "", port: 80)))),
            ChildSpec(id: "x", .process(ProcessSpec(argv: ["/bin/true"])), liveness: .probe(Probe(.tcp(host: "::1", port: 0)))),
            ChildSpec(id: "x", .process(ProcessSpec(argv: ["/bin/true"])), liveness: .probe(Probe(.command([]), failureThreshold: 1))),
            ChildSpec(id: "x", .process(ProcessSpec(argv: ["/bin/true"])), liveness: .probe(Probe(.command(["/bin/true"]), failureThreshold: 0))),
            ChildSpec(id: "x", .process(ProcessSpec(argv: ["/bin/true"])), readiness: .probe(Probe(.command(["/bin/true"]), interval: .zero))),
        ]
        return specs[index]
    }

    @Test("invalid readiness and liveness settings name the child and the rule", arguments: 0..<11)
    func refused(_ index: Int) throws {
        let spec = Self.badSpec(index)
        let error = #expect(throws: SupervisionError.self) {
            try Supervisor(SupervisorSpec(children: [spec]), runtime: ManualRuntime())
        }
        #expect(error?.message.hasPrefix("root/x: ") == true, "\(error?.message ?? "")")
    }

    @Test("defaults keep a spec's health box empty, and setting a default back removes it")
    func defaults() {
        var spec = ChildSpec(id: "x", .loopTask { _ in })
        #expect(spec.readiness == .started && spec.liveness == .none && spec.readyTimeout == .seconds(30))
        spec.readiness = .notify
        #expect(spec.readiness == .notify)
        spec.readiness = .started
        #expect(spec.readiness == .started && spec.readyTimeout == .seconds(30))
    }
}

@Suite("Readiness and liveness: regressions from review")
struct HealthRegressionTests {
    private let generous = RestartIntensity(maxRestarts: 100, period: .seconds(1))

    @Test("a group restart while later siblings queue behind the gate keeps them down until the failed child's turn")
    func groupRestartWhileQueued() throws {
        let h = try Harness(SupervisorSpec(strategy: .oneForAll, intensity: generous, children: [
            ChildSpec(id: "a", .process(ProcessSpec(argv: ["/bin/true"])),
                      backoff: .exponential(initial: .seconds(5), jitter: 0), readiness: .notify),
            process("b"), process("c")]))
        h.start()
        h.runtime.notify("root/a", .ready)
        h.runtime.exit("root/b", .exited(1))
        h.runtime.advance(by: .zero)            // a restarted (the gate), b and c queued behind it
        h.runtime.exit("root/a", .exited(1))    // a fails before READY=1
        #expect(h.runtime.runningPaths.isEmpty, "b and c wait for the group's turn")
        h.runtime.advance(by: .seconds(5))
        #expect(h.runtime.runningPaths == ["root/a"], "a first; the others once it is ready")
        h.runtime.notify("root/a", .ready)
        #expect(h.runtime.runningPaths == ["root/a", "root/b", "root/c"])
    }

    @Test("a failed check of an earlier incarnation does not stop the next one")
    func staleFailedStop() throws {
        var x = ChildSpec(id: "x", .process(ProcessSpec(argv: ["/bin/true"])), restart: .transient)
        x.liveness = .watchdog(.seconds(1))
        let h = try Harness(SupervisorSpec(intensity: generous, children: [process("y", shutdown: .timeout(.seconds(10))), x]))
        h.runtime.stopBehaviour["root/y"] = .ignores
        h.start()
        try h.root.terminateChild("y")            // the stop queue is busy for 10 s
        h.runtime.advance(by: .seconds(1))         // x misses its watchdog: its stop is queued
        h.runtime.exit("root/x", .exited(0))       // then ends by itself (transient, normal)
        try h.root.restartChild("x")               // a new incarnation
        for _ in 0..<19 {
            h.runtime.advance(by: .milliseconds(500))
            h.runtime.notify("root/x", .watchdog)
        }
        h.runtime.advance(by: .milliseconds(100))
        #expect(!h.runtime.actions.contains(.requestStop("root/x")))
    }

    @Test("a restart of a child before the gate goes ahead; status lines do not outlive their incarnation")
    func earlierRestartNotHeldAndStatusCleared() throws {
        let h = try Harness(SupervisorSpec(children: [process("early"), notifying("slow", readyTimeout: .seconds(60))]))
        h.start()
        h.runtime.notify("root/early", .status("warm"))
        h.runtime.exit("root/early", .exited(1))
        h.runtime.advance(by: .zero)
        #expect(h.status("early")?.state == .running, "not held behind slow, which waits for READY=1")
        #expect(h.status("early")?.statusText == nil)
    }

    @Test("lines without = and bad numbers are ignored beside a READY=1, as systemd does; NUL or bad UTF-8 is malformed")
    func lenientParsing() {
        // The parser is the runtimes' (the manual runtime takes notices as they are): checked
        // through the acceptance rule, as if sent by the child itself.
        let parsed = notices(Array("garbage\nEXTEND_TIMEOUT_USEC=abc\nREADY=1".utf8))
        #expect(parsed == [.ready])
        #expect(notices([0x52, 0x00]) == nil)
        #expect(notices([0xff, 0xfe]) == nil)
    }
}

/// The notices the shared parser finds in `bytes` (via the acceptance rule, as the child itself).
private func notices(_ bytes: [UInt8]) -> [WorkerNotice]? {
    let me = getpid()
    guard case .success(let result) = NotifyMessage.accept(bytes, senderPID: me, senderUID: getuid(), truncated: false,
                                                           childPID: me, expectedUID: getuid()) else { return nil }
    return result
}
