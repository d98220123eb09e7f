import Testing
import UVLoop
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Loop-confined state reached from jobs; only the loop thread touches it.
private final class Recorder: @unchecked Sendable {
    var perThread: [[Int]] = Array(repeating: [], count: 4)
    var offLoop = 0
}

/// A job that records its thread's sequence number on the loop.
private final class SequencedJob: LoopRunnable, @unchecked Sendable {
    let recorder: Recorder
    let remote: LoopRemote
    let thread: Int
    let value: Int
    init(recorder: Recorder, remote: LoopRemote, thread: Int, value: Int) {
        self.recorder = recorder
        self.remote = remote
        self.thread = thread
        self.value = value
    }
    func runOnLoop() {
        if !remote.inLoopThread { recorder.offLoop += 1 }
        recorder.perThread[thread].append(value)
    }
}

/// Loop-confined values appended to by jobs (only the loop thread touches it).
private final class OrderLog: @unchecked Sendable {
    var values: [Int] = []
}

/// A runnable for same-thread submissions.
private final class SameThreadJob: LoopRunnable, @unchecked Sendable {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
    func runOnLoop() { body() }
}

private actor LoopPinned {
    let remote: LoopRemote
    var counter = 0
    init(remote: LoopRemote) { self.remote = remote }
    nonisolated var unownedExecutor: UnownedSerialExecutor { remote.asUnownedSerialExecutor() }
    func bump() -> (Bool, Int) {
        counter += 1
        return (remote.inLoopThread, counter)
    }
}

private func startThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) -> [pthread_t] {
    final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }
    return (0..<count).map { index in
        var thread = pthread_t()
        let box = Unmanaged.passRetained(Box { body(index) }).toOpaque()
        pthread_create(&thread, nil, { argument in
            Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue().body()
            return nil
        }, box)
        return thread
    }
}

@Suite("Cross-thread entry and executors")
struct CrossThreadTests {
    @Test("4 threads x 10,000 execute calls: each runs once, on the loop thread, in per-thread order")
    func manyThreadsSubmit() async throws {
        try await ExclusiveResources.run {
            let thread = try EventLoopThread()
            let recorder = Recorder()
            let remote = thread.remote
            let threads = startThreads(4) { index in
                for value in 0..<10_000 {
                    try! remote.execute {
                        if !remote.inLoopThread { recorder.offLoop += 1 }
                        recorder.perThread[index].append(value)
                    }
                }
            }
            for handle in threads { pthread_join(handle, nil) }
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                try! remote.execute { done.resume() }
            }
            #expect(recorder.offLoop == 0)
            for values in recorder.perThread {
                #expect(values == Array(0..<10_000))
            }
            #expect(throws: Never.self) { try thread.shutdown().get() }
        }
    }

    @Test("runnable and closure jobs from 4 threads keep one per-thread order")
    func mixedLanesKeepOrder() async throws {
        try await ExclusiveResources.run {
            let thread = try EventLoopThread()
            let recorder = Recorder()
            let remote = thread.remote
            let perThread = 6_000
            let jobs = (0..<4).map { index in
                (0..<perThread).map { SequencedJob(recorder: recorder, remote: remote, thread: index, value: $0) }
            }
            let threads = startThreads(4) { index in
                for value in 0..<perThread {
                    switch value % 2 {
                    case 0: try! remote.execute(jobs[index][value])
                    default: try! remote.execute { recorder.perThread[index].append(value) }
                    }
                }
            }
            for handle in threads { pthread_join(handle, nil) }
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                try! remote.execute { done.resume() }
            }
            #expect(recorder.offLoop == 0)
            for values in recorder.perThread {
                #expect(values == Array(0..<perThread))
            }
            #expect(throws: Never.self) { try thread.shutdown().get() }
            let refused = #expect(throws: UVError.self) { try remote.execute(jobs[0][0]) }
            #expect(refused?.name == "ECANCELED")
        }
    }

    @Test("an actor pinned to the loop and a task under its executor preference run on the loop thread")
    func executors() async throws {
        try await ExclusiveResources.run {
            let thread = try EventLoopThread()
            let remote = thread.remote
            let actor = LoopPinned(remote: remote)
            let first = await actor.bump()
            let second = await actor.bump()
            #expect(first == (true, 1) && second == (true, 2))
            #expect(!remote.inLoopThread)
            let onLoop = await withTaskExecutorPreference(remote) { () async -> Bool in
                await Task.yield()
                return remote.inLoopThread
            }
            #expect(onLoop)
            let viaLoop = await withCheckedContinuation { (done: CheckedContinuation<Int, Never>) in
                try! remote.executeWithLoop { loop in done.resume(returning: loop.liveHandleCount) }
            }
            #expect(viaLoop >= 3)   // check, idle and async handles at least
            #expect(throws: Never.self) { try thread.shutdown().get() }
            let refused = #expect(throws: UVError.self) { try remote.execute {} }
            #expect(refused?.name == "ECANCELED")
            #expect(remote.isClosed)
        }
    }

    @Test("close() runs accepted work and what it queues meanwhile, then refuses the loop thread's own submissions")
    func refusedDuringClose() async throws {
        final class Outcome: @unchecked Sendable { var values: [String] = [] }   // the loop's thread only
        let outcome = Outcome()
        let report = try await withCheckedLoop { loop in
            // Queued before close(): it runs inside close(), and what it queues on this thread
            // runs too (as a task's next step would).
            loop.runSoon {
                try? loop.remote.execute { outcome.values.append("follow-up ran") }
            }
            // A child still running at close() is killed there; its exit arrives once accepted
            // work is done, and a submission from that handler is refused.
            _ = try ChildProcess.spawn(on: loop, ProcessOptions(argv: [childHelperPath, "sleep", "60"])) { _ in
                do {
                    try loop.remote.execute { outcome.values.append("accepted late") }
                    outcome.values.append("late submission accepted")
                } catch {
                    outcome.values.append((error as? UVError)?.name ?? "\(error)")
                }
            }
        }
        #expect(outcome.values == ["follow-up ran", "ECANCELED"])
        #expect(report == .clean)
    }

    @Test("one LoopJob submitted to two loops from their own threads and from outside runs once per submission")
    func oneJobTwoLoops() async throws {
        /// The count is under a lock: the job runs on two loop threads.
        final class Counting: LoopJob, @unchecked Sendable {
            let runs = LockedValue(0)
            override func run() { runs.withLock { $0 += 1 } }
        }
        try await ExclusiveResources.run {
            let first = try EventLoopThread()
            let second = try EventLoopThread()
            let job = Counting()
            let perLoop = 2_000
            for thread in [first, second] {
                let remote = thread.remote
                try remote.execute {
                    // On the loop's own thread (the same-thread lane) ...
                    for _ in 0..<perLoop { try? remote.execute(job) }
                }
                // ... and from outside (the cross-thread lane), at the same time.
                for _ in 0..<perLoop { try remote.execute(job) }
            }
            for thread in [first, second] {
                await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                    try! thread.remote.execute { try? thread.remote.execute { done.resume() } }
                }
            }
            #expect(job.runs.withLock { $0 } == 4 * perLoop)
            #expect(throws: Never.self) { try first.shutdown().get() }
            #expect(throws: Never.self) { try second.shutdown().get() }
        }
    }

    @Test("submissions from the loop thread itself run on a later turn")
    func sameThreadSubmit() async throws {
        let report = try await withCheckedLoop { loop in
            var order: [Int] = []
            try loop.remote.execute { }   // accepted on the owning thread without a wakeup
            loop.runSoon { order.append(1) }
            loop.run(.noWait)
            loop.run(.noWait)
            #expect(order == [1])
            // Same-thread submissions keep their order across the kinds of job.
            let log = OrderLog()
            let second = SameThreadJob { log.values.append(2) }
            try loop.remote.execute { log.values.append(1) }
            try loop.remote.execute(second)
            try loop.remote.execute { log.values.append(3) }
            #expect(log.values.isEmpty)
            loop.run(.noWait)
            #expect(log.values == [1, 2, 3])
        }
        #expect(report == .clean)
    }
}
