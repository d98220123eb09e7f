#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import UVSupervisor
import CoreMetrics
import UVLoop

/// A cross-thread job: counts on the loop, stops it at the target (no closure per job).
/// Touched only in `run()`, on the loop thread.
final class CountingRemoteJob: LoopJob, @unchecked Sendable {
    let remote: LoopRemote
    let target: Int
    var count = 0
    init(remote: LoopRemote, target: Int) {
        self.remote = remote
        self.target = target
        super.init()
    }
    override func run() {
        count += 1
        if count == target { try? remote.stop() }
    }
}

/// A job for the allocation-free run-soon path.
final class CountingJob: LoopJob {
    var count = 0
    override func run() { count += 1 }
}

/// The `uv` side: the loop layer and the libuv runtime.
enum UVSide {
    static func run(_ workload: String, size: Int, file: String) throws {
        let loop = try EventLoop()
        defer { try? loop.close() }
        switch workload {
        case "timers_1m":
            var random = XorShift()
            var fired = 0
            let cpu0 = cpuNanoseconds()
            var timers: [LoopTimer] = []
            timers.reserveCapacity(size)
            for _ in 0..<size {
                let timer = LoopTimer(loop: loop) { fired += 1 }
                try timer.start(afterMilliseconds: UInt64(random.next() % 1001))
                timers.append(timer)
            }
            loop.run()
            let cpu = cpuNanoseconds() - cpu0
            precondition(fired == size)
            report("cpu_per_timer", "ns", cpu / Double(size))
            timers.forEach { $0.close() }
        case "timer_rearm":
            var random = XorShift()
            let timers = (0..<size).map { _ in LoopTimer(loop: loop) {} }
            for timer in timers { try timer.start(afterMilliseconds: UInt64(1000 + random.next() % 1000)) }
            let t0 = now()
            for _ in 0..<10 {
                for timer in timers { try timer.start(afterMilliseconds: UInt64(1000 + random.next() % 1000)) }
            }
            report("per_rearm", "ns", Double(now() - t0) / Double(size * 10))
            timers.forEach { $0.close() }
        case "submit_same_thread":
            let job = CountingJob()
            let t0 = now()
            for _ in 0..<size { loop.runSoon(job) }
            loop.run()
            precondition(job.count == size)
            report("per_job", "ns", Double(now() - t0) / Double(size))
        case "submit_cross_thread":
            let remote = loop.remote
            let job = CountingRemoteJob(remote: remote, target: size)
            var t0: UInt64 = 0
            let producer = Thread {
                for _ in 0..<size { try? remote.execute(job) }
            }
            t0 = now()
            producer.start()
            loop.run(.untilStopped)
            report("per_job", "ns", Double(now() - t0) / Double(size))
            producer.join()
        case "task_restart", "task_restart_metrics", "task_restart_events":
            var starts = 0
            let runtime = UVRuntime(loop: loop)
            let spec = SupervisorSpec(intensity: RestartIntensity(maxRestarts: 100_000_000, period: .milliseconds(1)), children: [
                ChildSpec(id: "crasher", .loopTask { context in
                    starts += 1
                    if starts > size { loop.stop(); return }
                    context.fail("crash")
                })])
            let root = try Supervisor(spec, runtime: runtime)
            // With metrics reported (to swift-metrics' no-op backend: the reporter's own cost),
            // or with an empty event handler (what building the events costs).
            if workload == "task_restart_metrics" { root.reportMetrics(to: NOOPMetricsHandler.instance) }
            if workload == "task_restart_events" { root.onEvent { _ in } }
            let t0 = now()
            root.start()
            loop.run(.untilStopped)
            report("per_restart", "ns", Double(now() - t0) / Double(size))
            root.shutdown()
            loop.run()
        case "daemon_restart_gap", "daemon_restart_gap_sentinel":
            // process_restart_gap inside SupervisorDaemon.run, without and with the descendant
            // sentinel (a pipe write per start and per exit, the cookie in the environment).
            var options = DaemonOptions()
            options.logger = nil
            options.killDescendants = workload.hasSuffix("_sentinel")
            options.reapOrphans = options.killDescendants
            options.configure = { root, _ in
                var starts = 0
                root.onEvent { event in
                    guard case .started = event.kind, event.path == "root/pulse" else { return }
                    starts += 1
                    if starts > size { root.shutdown() }
                }
            }
            _ = try SupervisorDaemon.run(options: options) { _ in
                SupervisorSpec(intensity: RestartIntensity(maxRestarts: 100_000_000, period: .milliseconds(1)), children: [
                    ChildSpec(id: "pulse", .process(ProcessSpec(argv: [childHelper, "pulse", file])))])
            }
        default:
            try SharedSide.run(workload, size: size, file: file, on: .uv(loop))
        }
    }
}

/// A pthread with a closure, joinable.
final class Thread: @unchecked Sendable {
    private let body: () -> Void
    private var thread = pthread_t()
    init(_ body: @escaping () -> Void) { self.body = body }
    func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { argument in
            let me = Unmanaged<Thread>.fromOpaque(argument!).takeRetainedValue()
            me.body()
            return nil
        }, box)
    }
    func join() { pthread_join(thread, nil) }
}
