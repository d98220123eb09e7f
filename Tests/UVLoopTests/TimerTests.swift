import Testing
import UVLoop
import TestSupport

@Suite("Timers")
struct TimerTests {
    @Test("timers fire in deadline order, not in start order")
    func deadlineOrder() async throws {
        let report = try await withCheckedLoop { loop in
            var fired: [Int] = []
            let delays = [30, 10, 20, 0, 25, 5]
            let timers = delays.map { delay in LoopTimer(loop: loop) { fired.append(delay) } }
            for (timer, delay) in zip(timers, delays) { try timer.start(after: .milliseconds(delay)) }
            loop.run()
            #expect(fired == delays.sorted())
            timers.forEach { $0.close() }
        }
        #expect(report == .clean)
    }

    @Test("re-arming replaces the old deadline")
    func rearmReplacesDeadline() async throws {
        let report = try await withCheckedLoop { loop in
            var order: [String] = []
            let rearmed = LoopTimer(loop: loop) { order.append("rearmed") }
            let witness = LoopTimer(loop: loop) { order.append("witness") }
            try rearmed.start(after: .milliseconds(5))
            try witness.start(after: .milliseconds(20))
            try rearmed.start(after: .milliseconds(40))   // replaces the 5 ms deadline
            loop.run()
            #expect(order == ["witness", "rearmed"])
            rearmed.close(); witness.close()
        }
        #expect(report == .clean)
    }

    @Test("re-arming later defers without firing early; earlier, stop and repeat still apply")
    func deferredRearm() async throws {
        let report = try await withCheckedLoop { loop in
            // Measured on the loop's own clock (uv_now), which the deadlines are relative to.
            let start = loop.now
            var firedAt: [String: [UInt64]] = [:]
            func timer(_ name: String) -> LoopTimer {
                LoopTimer(loop: loop) { firedAt[name, default: []].append(loop.now - start) }
            }
            // Pushed back twice: wakes at 5 and 15 ms internally, fires once, at 30 ms or later.
            let later = timer("later")
            try later.start(afterMilliseconds: 5)
            try later.start(afterMilliseconds: 15)
            try later.start(afterMilliseconds: 30)
            // Pushed back, then brought forward: fires once, at the earlier deadline.
            let forward = timer("forward")
            try forward.start(afterMilliseconds: 10)
            try forward.start(afterMilliseconds: 40)
            try forward.start(afterMilliseconds: 20)
            // Pushed back, then stopped: never fires.
            let stopped = timer("stopped")
            try stopped.start(afterMilliseconds: 5)
            try stopped.start(afterMilliseconds: 25)
            stopped.stop()
            // A repeating timer re-armed later as a one-shot: one firing, no repeats.
            let repeating = timer("repeating")
            try repeating.start(afterMilliseconds: 5, repeatingMilliseconds: 5)
            try repeating.start(afterMilliseconds: 35)
            loop.run()
            #expect(firedAt["later"]?.count == 1)
            #expect((firedAt["later"]?.first ?? 0) >= 30)
            #expect(firedAt["forward"]?.count == 1)
            #expect((firedAt["forward"]?.first ?? 0) >= 20)
            #expect((firedAt["forward"]?.first ?? .max) < 40)
            #expect(firedAt["stopped"] == nil)
            #expect(firedAt["repeating"]?.count == 1)
            #expect((firedAt["repeating"]?.first ?? 0) >= 35)
            #expect(!later.isActive && !forward.isActive && !repeating.isActive)
            [later, forward, stopped, repeating].forEach { $0.close() }
        }
        #expect(report == .clean)
    }

    @Test("a stopped timer never fires; a repeating timer repeats until stopped")
    func stopAndRepeat() async throws {
        let report = try await withCheckedLoop { loop in
            var stoppedFired = false
            let stopped = LoopTimer(loop: loop) { stoppedFired = true }
            try stopped.start(after: .milliseconds(1))
            stopped.stop()
            var ticks = 0
            var repeating: LoopTimer!
            repeating = LoopTimer(loop: loop) {
                ticks += 1
                if ticks == 3 { repeating.stop() }
            }
            try repeating.start(after: .milliseconds(1), repeating: .milliseconds(1))
            let end = LoopTimer(loop: loop) {}
            try end.start(after: .milliseconds(30))
            loop.run()
            #expect(!stoppedFired)
            #expect(ticks == 3)
            #expect(!repeating.isActive)
            [stopped, repeating, end].forEach { $0.close() }
        }
        #expect(report == .clean)
    }
}
