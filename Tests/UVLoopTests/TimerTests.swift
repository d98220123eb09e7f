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
