import Testing
import Supervision
import SupervisionTesting

@Suite("Shutdown")
struct ShutdownTests {
    @Test("children stop in reverse start order, each before the next")
    func reverseOrder() throws {
        let harness = try Harness(SupervisorSpec(children: [process("a"), process("b"), process("c")]))
        harness.runtime.stopBehaviour["root/b"] = .exitsAfter(.seconds(1))
        harness.start()
        var final: ExitReason?
        let mark = harness.mark
        harness.root.shutdown { final = $0 }
        harness.runtime.runUntilIdle()
        #expect(harness.actions(since: mark) == [.requestStop("root/c"), .requestStop("root/b")])
        harness.runtime.advance(by: .seconds(1))
        #expect(harness.actions(since: mark) == [.requestStop("root/c"), .requestStop("root/b"), .requestStop("root/a")])
        #expect(final == .shutdown)
        #expect(harness.root.children().allSatisfy { $0.state == .idle && $0.lastExit == .shutdown })
    }

    @Test("a child that ignores its stop request is killed at its timeout")
    func timeoutThenKill() throws {
        let harness = try Harness(SupervisorSpec(children: [process("a"), process("stubborn", shutdown: .timeout(.seconds(2)))]))
        harness.runtime.stopBehaviour["root/stubborn"] = .ignores
        harness.start()
        let mark = harness.mark
        harness.root.shutdown()
        harness.runtime.advance(by: .milliseconds(1_999))
        #expect(harness.actions(since: mark) == [.requestStop("root/stubborn")])
        harness.runtime.advance(by: .milliseconds(1))
        #expect(harness.actions(since: mark) == [.requestStop("root/stubborn"), .kill("root/stubborn"), .requestStop("root/a")])
        #expect(harness.status("stubborn")?.lastExit == .killed)
        #expect(harness.root.state == .stopped(.shutdown))
    }

    @Test("brutalKill kills without asking")
    func brutalKill() throws {
        let harness = try Harness(SupervisorSpec(children: [process("a", shutdown: .brutalKill)]))
        harness.start()
        let mark = harness.mark
        harness.root.shutdown()
        harness.runtime.runUntilIdle()
        #expect(harness.actions(since: mark) == [.kill("root/a")])
        #expect(harness.status("a")?.lastExit == .killed)
    }

    @Test("a nested supervisor (infinity) is waited for however long its children take")
    func infinityForSupervisors() throws {
        let nested = SupervisorSpec(children: [process("slow", shutdown: .timeout(.seconds(60)))])
        let harness = try Harness(SupervisorSpec(children: [process("first"), ChildSpec(id: "sub", .supervisor(nested))]))
        harness.runtime.stopBehaviour["root/sub/slow"] = .exitsAfter(.seconds(30))
        harness.start()
        let mark = harness.mark
        harness.root.shutdown()
        harness.runtime.advance(by: .seconds(29))
        #expect(harness.root.state == .shuttingDown(.shutdown))
        #expect(harness.actions(since: mark) == [.requestStop("root/sub/slow")])
        harness.runtime.advance(by: .seconds(1))
        #expect(harness.actions(since: mark) == [.requestStop("root/sub/slow"), .requestStop("root/first")])
        #expect(harness.root.state == .stopped(.shutdown))
    }

    @Test("one overall deadline bounds the whole tree's shutdown")
    func overallDeadline() throws {
        let nested = SupervisorSpec(children: [process("deep", shutdown: .timeout(.seconds(60)))])
        let harness = try Harness(SupervisorSpec(children: [
            process("a", shutdown: .timeout(.seconds(60))), ChildSpec(id: "sub", .supervisor(nested)),
        ]))
        harness.runtime.stopBehaviour["root/sub/deep"] = .ignores
        harness.runtime.stopBehaviour["root/a"] = .ignores
        harness.start()
        var stoppedAt: Int64?
        harness.root.shutdown(within: .seconds(3)) { _ in stoppedAt = harness.runtime.nowNanoseconds }
        harness.runtime.advance(by: .milliseconds(2_999))
        #expect(stoppedAt == nil)
        harness.runtime.advance(by: .milliseconds(1))
        #expect(stoppedAt == 3_000_000_000)
        #expect(harness.runtime.actions.contains(.kill("root/sub/deep")))
        #expect(harness.runtime.actions.contains(.kill("root/a")))
    }

    @Test("a task that ignores its stop request is reported abandoned at its timeout")
    func abandonedTask() throws {
        var stopAsked = false
        let stubborn = ChildSpec(id: "stubborn", .loopTask { context in
            context.onStop = { stopAsked = true }   // and never finishes
        }, shutdown: .timeout(.seconds(1)))
        let harness = try Harness(SupervisorSpec(children: [stubborn, asyncTask("cancels-late", shutdown: .timeout(.seconds(1)))]))
        harness.runtime.stopBehaviour["root/cancels-late"] = .ignores
        harness.start()
        harness.root.shutdown()
        harness.runtime.advance(by: .seconds(1))
        #expect(harness.status("cancels-late")?.lastExit == .abandoned)
        harness.runtime.advance(by: .seconds(1))
        #expect(stopAsked)
        #expect(harness.status("stubborn")?.lastExit == .abandoned)
        #expect(harness.events(for: "root/stubborn").contains(.abandoned))
        #expect(harness.root.state == .stopped(.shutdown))
    }
}

@Suite("Auto shutdown with significant children")
struct AutoShutdownTests {
    @Test("anySignificant: the supervisor ends when a significant child ends for good")
    func anySignificant() throws {
        var spec = SupervisorSpec(children: [process("main", restart: .transient, significant: true), process("helper")])
        spec.autoShutdown = .anySignificant
        let harness = try Harness(spec)
        harness.start()
        harness.runtime.exit("root/main", .exited(1))   // abnormal: restarted, not the end
        #expect(harness.root.state == .running)
        harness.runtime.exit("root/main", .exited(0))   // normal: not restarted: the end
        #expect(harness.root.state == .stopped(.shutdown))
    }

    @Test("allSignificant: the supervisor ends when the last significant child ends")
    func allSignificant() throws {
        var spec = SupervisorSpec(children: [
            process("one", restart: .temporary, significant: true),
            process("two", restart: .temporary, significant: true),
            process("other")])
        spec.autoShutdown = .allSignificant
        let harness = try Harness(spec)
        harness.start()
        harness.runtime.exit("root/one", .exited(0))
        #expect(harness.root.state == .running)
        harness.runtime.exit("root/two", .exited(3))
        #expect(harness.root.state == .stopped(.shutdown))
    }

    @Test("allSignificant counts a significant child waiting for its restart as alive, and works among thousands of dynamic children")
    func allSignificantWithRestartingAndMany() throws {
        var spec = SupervisorSpec(children: [
            process("one", restart: .transient, backoff: .exponential(initial: .seconds(1), jitter: 0), significant: true),
            process("two", restart: .transient, significant: true)])
        spec.autoShutdown = .allSignificant
        let harness = try Harness(spec)
        harness.start()
        harness.runtime.exit("root/one", .exited(1))        // abnormal: waits 1 s for its restart
        harness.runtime.exit("root/two", .exited(0))        // normal: stays down
        #expect(harness.root.state == .running, "one is still alive: it waits for its restart")
        harness.runtime.advance(by: .seconds(1))
        #expect(harness.status("one")?.state == .running)
        harness.runtime.exit("root/one", .exited(0))
        #expect(harness.root.state == .stopped(.shutdown))

        // A dynamic supervisor whose children are all significant and temporary ends with the last.
        var dynamic = SupervisorSpec.dynamic()
        dynamic.autoShutdown = .allSignificant
        let many = try Harness(dynamic)
        many.start()
        var ids: [String] = []
        for _ in 0..<5_000 {
            ids.append(try many.root.startChild(from: process("job", restart: .temporary, significant: true)))
        }
        for id in ids.dropLast() { many.runtime.exit("root/\(id)", .exited(0)) }
        #expect(many.root.state == .running && many.root.countChildren().active == 1)
        many.runtime.exit("root/\(ids.last!)", .exited(0))
        #expect(many.root.state == .stopped(.shutdown))
    }
}
