import Testing
import UVLoop
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite("Loop lifecycle and handle lifetimes")
struct LoopLifecycleTests {
    @Test("every handle type opens and closes; uv_loop_close returns 0; nothing leaks")
    func everyHandleTypeClosesCleanly() async throws {
        let report = try await withCheckedLoop { loop in
            let baseline = loop.liveHandleCount
            let timer = LoopTimer(loop: loop) {}
            try timer.start(after: .seconds(60))
            let watcher = try SignalWatcher(loop: loop, signal: SIGUSR2) { _ in }
            var options = ProcessOptions(argv: [childHelperPath, "sleep", "60"])
            options.stdout = .pipe
            options.stderr = .pipe
            let child = try ChildProcess.spawn(on: loop, options, onOutput: { _ in }, onExit: { _ in })
            // timer + signal + process + 2 pipes
            #expect(loop.liveHandleCount == baseline + 5)
            #expect(child.isRunning)
            _ = watcher
            // Leave them all open: teardown must kill the child, wait for its exit and close all.
        }
        #expect(report == .clean)
    }

    @Test("closing a handle twice is harmless, and a closed handle refuses use")
    func doubleCloseIsHarmless() async throws {
        let report = try await withCheckedLoop { loop in
            let timer = LoopTimer(loop: loop) {}
            timer.close()
            timer.close()
            #expect(timer.state == .closing)
            #expect(throws: UVError.self) { try timer.start(after: .milliseconds(1)) }
            loop.run(.noWait)
            #expect(timer.state == .closed)
            timer.close()
            timer.stop()
            #expect(!timer.isActive)
        }
        #expect(report == .clean)
    }

    @Test("closing the loop twice is harmless; a dropped loop tears itself down")
    func loopCloseIsIdempotent() async throws {
        let report = try await withCheckedLoop { loop in
            try loop.close()
            try loop.close()
            // A loop that is never closed explicitly still closes its handles on deinit.
            let before = openDescriptors()
            do {
                let other = try EventLoop()
                let timer = LoopTimer(loop: other) {}
                try timer.start(after: .seconds(10))
            }
            #expect(openDescriptors().subtracting(before).isEmpty)
        }
        #expect(report == .clean)
    }

    @Test("run-soon jobs run on the next turn and never starve timers or I/O")
    func runSoonDoesNotStarve() async throws {
        let report = try await withCheckedLoop { loop in
            var turns = 0
            var timerFired = false
            let timer = LoopTimer(loop: loop) { timerFired = true }
            try timer.start(after: .milliseconds(2))
            func again() {
                turns += 1
                if !timerFired && turns < 50_000_000 { loop.runSoon(again) }
            }
            var ranInline = true
            loop.runSoon { ranInline = false; again() }
            #expect(ranInline, "runSoon must not run the job in the caller's stack")
            loop.run()
            #expect(timerFired)
            #expect(turns < 50_000_000)
            #expect(turns > 1)
            timer.close()
        }
        #expect(report == .clean)
    }

    @Test("run-soon runnables run once each, in order, through overrides, next turn only, held until they ran")
    func runnableRunSoon() async throws {
        let report = try await withCheckedLoop { loop in
            var log: [String] = []
            let base = RecordingRunnable(name: "base") { log.append($0) }
            let derived: RecordingRunnable = OverridingRunnable(name: "derived") { log.append($0) }
            // Enqueued through the base type: the call must still reach the subclass override.
            loop.runSoon(base)
            loop.runSoon(derived)
            loop.runSoon(base)
            #expect(log.isEmpty, "nothing runs in the caller's stack")
            loop.run(.noWait)
            #expect(log == ["base", "derived!", "base"])

            // The loop holds a runnable until it has run: dropping the submitter's reference
            // must not free it.
            weak var released: RecordingRunnable?
            do {
                let transient = RecordingRunnable(name: "transient") { log.append($0) }
                released = transient
                loop.runSoon(transient)
            }
            #expect(released != nil, "the queue holds the job")
            loop.run(.noWait)
            #expect(log.last == "transient")
            #expect(released == nil, "and lets it go once it ran")

            // Past the lane's initial capacity (it grows), and a job that re-enqueues itself waits
            // for the next turn.
            log.removeAll()
            var remaining = 1_000
            let counter = RecordingRunnable(name: "n") { _ in remaining -= 1 }
            for _ in 0..<1_000 { loop.runSoon(counter) }
            let again = RecordingRunnable(name: "again") { log.append($0) }
            again.onRun = { [unowned loop, unowned again] in
                if log.count < 3 { loop.runSoon(again) }
            }
            loop.runSoon(again)
            loop.run(.noWait)
            #expect(remaining == 0)
            #expect(log == ["again"])
            loop.run(.noWait)
            loop.run(.noWait)
            #expect(log == ["again", "again", "again"])
        }
        #expect(report == .clean)
    }

    @Test("LoopJobs run once per submission, in one order with closures, held until they ran")
    func loopJobLane() async throws {
        let report = try await withCheckedLoop { loop in
            final class Append: LoopJob {
                let value: Int
                let log: (Int) -> Void
                init(_ value: Int, _ log: @escaping (Int) -> Void) { self.value = value; self.log = log }
                override func run() { log(value) }
            }
            var log: [Int] = []
            let one = Append(1) { log.append($0) }
            loop.runSoon(one)
            loop.runSoon { log.append(2) }
            loop.runSoon(one)
            weak var released: Append?
            do {
                let three = Append(3) { log.append($0) }
                released = three
                loop.runSoon(three)
            }
            #expect(log.isEmpty)
            #expect(released != nil, "the queue holds the job")
            loop.run(.noWait)
            #expect(log == [1, 2, 1, 3])
            #expect(released == nil, "and lets it go once it ran")

            // A job that submits itself again from its own run, dropped by everybody else:
            // the lane keeps it alive exactly as long as it has entries.
            final class Again: LoopJob {
                var runs = 0
                let loop: EventLoop
                init(_ loop: EventLoop) { self.loop = loop }
                override func run() {
                    runs += 1
                    if runs < 3 { loop.runSoon(self); loop.runSoon(self) }
                }
            }
            weak var again: Again?
            do {
                let job = Again(loop)
                again = job
                loop.runSoon(job)
            }
            for _ in 0..<4 where again != nil { loop.run(.noWait) }
            #expect(again == nil, "released after its last entry ran")
        }
        #expect(report == .clean)
    }

    @Test("the loop's clock advances with uv_now and updateTime")
    func clock() async throws {
        let report = try await withCheckedLoop { loop in
            let start = loop.now
            var fired = false
            let timer = LoopTimer(loop: loop) { fired = true }
            try timer.start(after: .milliseconds(15))
            loop.run()
            loop.updateTime()
            #expect(fired)
            #expect(loop.now >= start + 15)
            timer.close()
        }
        #expect(report == .clean)
    }
}

/// A runnable that reports its name, for the run-soon lane tests.
class RecordingRunnable: LoopRunnable {
    let name: String
    let record: (String) -> Void
    var onRun: (() -> Void)?
    init(name: String, record: @escaping (String) -> Void) {
        self.name = name
        self.record = record
    }
    func runOnLoop() {
        record(name)
        onRun?()
    }
}

/// Overrides `runOnLoop`: a runnable queued through its base type must dispatch to it.
final class OverridingRunnable: RecordingRunnable {
    override func runOnLoop() { record(name + "!") }
}
