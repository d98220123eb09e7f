import Testing
import Supervision
import SupervisionTesting

@Suite("Restart intensity and escalation")
struct IntensityTests {
    @Test("exactly maxRestarts restarts in the window survive; one more escalates")
    func limit() throws {
        let harness = try Harness(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 3, period: .seconds(5)),
                                                 children: [process("a"), process("b")]))
        harness.start()
        for _ in 0..<3 {
            harness.runtime.advance(by: .milliseconds(100))
            #expect(harness.runtime.exit("root/a", .exited(1)))
        }
        #expect(harness.root.state == .running)
        #expect(harness.status("a")?.restartCount == 3)
        let mark = harness.mark
        harness.runtime.advance(by: .milliseconds(100))
        harness.runtime.exit("root/a", .exited(1))
        #expect(harness.root.state == .stopped(.intensityExceeded))
        // All children stopped in reverse order: b (a already ended).
        #expect(harness.actions(since: mark) == [.requestStop("root/b")])
        #expect(harness.runtime.runningPaths.isEmpty)
        #expect(harness.events.contains { $0.kind == .intensityExceeded(maxRestarts: 3, period: .seconds(5)) })
    }

    @Test("restarts that left the window no longer count")
    func slidingWindow() throws {
        let harness = try Harness(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 3, period: .seconds(5)),
                                                 children: [process("a")]))
        harness.start()
        for _ in 0..<3 { harness.runtime.exit("root/a", .exited(1)) }   // 3 restarts at t = 0
        harness.runtime.advance(by: .milliseconds(4_999))
        #expect(harness.root.state == .running)
        harness.runtime.advance(by: .milliseconds(1))                    // t = 5 s: they left the window
        for _ in 0..<3 { harness.runtime.exit("root/a", .exited(1)) }
        #expect(harness.root.state == .running)
        #expect(harness.status("a")?.restartCount == 6)
        harness.runtime.exit("root/a", .exited(1))
        #expect(harness.root.state == .stopped(.intensityExceeded))
    }

    @Test("maxRestarts 0 allows no restart at all")
    func zeroRestarts() throws {
        let harness = try Harness(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 0, period: .seconds(1)),
                                                 children: [process("a")]))
        harness.start()
        harness.runtime.exit("root/a", .exited(1))
        #expect(harness.root.state == .stopped(.intensityExceeded))
    }

    @Test("escalation through three levels of nesting ends at the root with intensityExceeded")
    func threeLevels() throws {
        let one = RestartIntensity(maxRestarts: 1, period: .seconds(60))
        let leaf = SupervisorSpec(intensity: one, children: [process("w")])
        let middle = SupervisorSpec(intensity: one, children: [ChildSpec(id: "leaf", .supervisor(leaf))])
        let harness = try Harness(SupervisorSpec(intensity: one, children: [ChildSpec(id: "mid", .supervisor(middle))]))
        harness.start()
        var crashes = 0
        while harness.root.state == .running && crashes < 100 {
            #expect(harness.runtime.exit("root/mid/leaf/w", .exited(1)))
            crashes += 1
        }
        #expect(harness.root.state == .stopped(.intensityExceeded))
        // Each leaf incarnation runs w twice, each middle runs leaf twice, the root runs middle twice.
        let starts = harness.runtime.actions.filter { $0 == .start("root/mid/leaf/w") }.count
        #expect(starts == 8)
        #expect(crashes == 8)
        let leafStops = harness.events.filter { $0.path == "root/mid/leaf" && $0.kind == .supervisorStopped(.intensityExceeded) }
        #expect(leafStops.count == 4)
        let middleStops = harness.events.filter { $0.path == "root/mid" && $0.kind == .supervisorStopped(.intensityExceeded) }
        #expect(middleStops.count == 2)
        #expect(harness.runtime.runningPaths.isEmpty)
    }
}

@Suite("Backoff")
struct BackoffTests {
    @Test("delays double from the initial delay and stop at the maximum")
    func exponential() throws {
        let backoff = Backoff.exponential(initial: .seconds(1), multiplier: 2, maximum: .seconds(8), jitter: 0, resetAfter: .seconds(60))
        let harness = try Harness(SupervisorSpec(intensity: generous, children: [process("a", backoff: backoff)]))
        harness.start()
        for expected in [1, 2, 4, 8, 8] {
            harness.runtime.exit("root/a", .exited(1))
            let delay = Duration.seconds(expected)
            harness.runtime.advance(by: delay - .nanoseconds(1))
            #expect(harness.runtime.worker(at: "root/a") == nil, "restarted before its \(expected) s delay")
            harness.runtime.advance(by: .nanoseconds(1))
            #expect(harness.runtime.worker(at: "root/a") != nil, "not restarted after its \(expected) s delay")
        }
        #expect(harness.scheduledDelays("root/a") == [1_000, 2_000, 4_000, 8_000, 8_000])
    }

    @Test("jitter stays within its bounds and is reproducible for a seed")
    func jitter() throws {
        func delays(seed: UInt64) -> [Int64] {
            let backoff = Backoff.exponential(initial: .milliseconds(100), multiplier: 2, maximum: .seconds(10), jitter: 0.5, resetAfter: .seconds(600))
            var random = SplitMix64(seed: seed)
            return (1...12).map { backoff.delay(forAttempt: $0, using: &random) }
        }
        let first = delays(seed: 42)
        #expect(first == delays(seed: 42))
        #expect(first != delays(seed: 43))
        for (index, delay) in first.enumerated() {
            let base = min(100_000_000.0 * pow2(index), 10_000_000_000.0)
            #expect(Double(delay) >= base * 0.5 - 1)
            #expect(Double(delay) <= base * 1.5 + 1)
        }
        // The same through a supervisor: the scheduled delays are reproducible too.
        func scheduled(seed: UInt64) throws -> [Int64] {
            let harness = try Harness(SupervisorSpec(intensity: generous, children: [
                process("a", backoff: .exponential(initial: .seconds(1), jitter: 0.3))]), seed: seed)
            harness.start()
            for _ in 0..<5 {
                harness.runtime.exit("root/a", .exited(1))
                harness.runtime.advance(by: .seconds(40))
            }
            return harness.scheduledDelays("root/a")
        }
        #expect(try scheduled(seed: 9) == scheduled(seed: 9))
    }

    @Test("delays at the cap are spread by the jitter too, evenly around the maximum")
    func jitterAtTheCap() {
        let maximum = 10_000_000_000.0
        let backoff = Backoff.exponential(initial: .milliseconds(100), multiplier: 2, maximum: .seconds(10), jitter: 0.2, resetAfter: .seconds(600))
        var random = SplitMix64(seed: 7)
        let draws = (0..<20_000).map { _ in Double(backoff.delay(forAttempt: 60, using: &random)) }
        let exactlyAtCap = draws.filter { $0 == maximum }.count
        #expect(exactlyAtCap < 20, "draws pinned at the cap: \(exactlyAtCap)")
        #expect(draws.allSatisfy { $0 >= maximum * 0.8 - 1 && $0 <= maximum * 1.2 + 1 })
        let mean = draws.reduce(0, +) / Double(draws.count)
        #expect(abs(mean - maximum) < maximum * 0.01, "mean \(mean)")
        let above = draws.filter { $0 > maximum }.count
        #expect(above > 9_000 && above < 11_000, "half above the maximum, half below: \(above)")
        #expect(draws.min()! < maximum * 0.82 && draws.max()! > maximum * 1.18)
    }

    @Test("the count resets after a stable run of resetAfter")
    func reset() throws {
        let backoff = Backoff.exponential(initial: .seconds(1), multiplier: 2, maximum: .seconds(60), jitter: 0, resetAfter: .seconds(10))
        let harness = try Harness(SupervisorSpec(intensity: generous, children: [process("a", backoff: backoff)]))
        harness.start()
        harness.runtime.exit("root/a", .exited(1)); harness.runtime.advance(by: .seconds(1))
        harness.runtime.exit("root/a", .exited(1)); harness.runtime.advance(by: .seconds(2))
        harness.runtime.advance(by: .milliseconds(9_999))   // up 9.999 s: not yet stable
        harness.runtime.exit("root/a", .exited(1)); harness.runtime.advance(by: .seconds(4))
        harness.runtime.advance(by: .seconds(10))           // up 10 s: stable
        harness.runtime.exit("root/a", .exited(1))
        #expect(harness.scheduledDelays("root/a") == [1_000, 2_000, 4_000, 1_000])
    }

    @Test("a group restart stops the group at once and restarts it after the failing child's delay")
    func groupWaitsForDelay() throws {
        let backoff = Backoff.exponential(initial: .seconds(3), jitter: 0)
        let harness = try Harness(SupervisorSpec(strategy: .oneForAll, intensity: generous, children: [
            process("a"), process("b", backoff: backoff), process("c")]))
        harness.start()
        let mark = harness.mark
        harness.runtime.exit("root/b", .exited(1))
        #expect(harness.actions(since: mark) == [.requestStop("root/c"), .requestStop("root/a")])
        harness.runtime.advance(by: .milliseconds(2_999))
        #expect(harness.runtime.runningPaths.isEmpty)
        #expect(harness.root.children().map(\.state) == [.restarting, .restarting, .restarting])
        harness.runtime.advance(by: .milliseconds(1))
        #expect(harness.actions(since: mark).suffix(3) == [.start("root/a"), .start("root/b"), .start("root/c")])
    }
}

private func pow2(_ exponent: Int) -> Double {
    var value = 1.0
    for _ in 0..<exponent { value *= 2 }
    return value
}
