#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Dispatch
import DispatchSupervisor
import Supervision
import CoreMetrics

/// State the Dispatch side's queue owns.
final class QueueState: @unchecked Sendable {
    var count = 0
}

/// The `dispatch` side: Dispatch itself and the Dispatch runtime.
enum DispatchSide {
    static func run(_ workload: String, size: Int, file: String) throws {
        let queue = DispatchQueue(label: "bench")
        let done = DispatchSemaphore(value: 0)
        let state = QueueState()
        switch workload {
        case "timers_1m":
            var random = XorShift()
            let cpu0 = cpuNanoseconds()
            var sources: [DispatchSourceTimer] = []
            sources.reserveCapacity(size)
            queue.sync {
                for _ in 0..<size {
                    let source = DispatchSource.makeTimerSource(queue: queue)
                    source.setEventHandler {
                        state.count += 1
                        if state.count == size { done.signal() }
                    }
                    source.schedule(deadline: .now() + .milliseconds(Int(random.next() % 1001)))
                    source.activate()
                    sources.append(source)
                }
            }
            done.wait()
            report("cpu_per_timer", "ns", (cpuNanoseconds() - cpu0) / Double(size))
            queue.sync { sources.forEach { $0.cancel() } }
        case "timer_rearm":
            var random = XorShift()
            var elapsed: UInt64 = 0
            queue.sync {
                let sources = (0..<size).map { _ -> DispatchSourceTimer in
                    let source = DispatchSource.makeTimerSource(queue: queue)
                    source.setEventHandler {}
                    source.schedule(deadline: .now() + .milliseconds(1000 + Int(random.next() % 1000)))
                    source.activate()
                    return source
                }
                let t0 = now()
                for _ in 0..<10 {
                    for source in sources { source.schedule(deadline: .now() + .milliseconds(1000 + Int(random.next() % 1000))) }
                }
                elapsed = now() - t0
                sources.forEach { $0.cancel() }
            }
            report("per_rearm", "ns", Double(elapsed) / Double(size * 10))
        case "submit_same_thread":
            let t0 = now()
            queue.async {
                for _ in 0..<size {
                    queue.async {
                        state.count += 1
                        if state.count == size { done.signal() }
                    }
                }
            }
            done.wait()
            report("per_job", "ns", Double(now() - t0) / Double(size))
        case "submit_cross_thread":
            let t0 = now()
            let producer = Thread {
                for _ in 0..<size {
                    queue.async {
                        state.count += 1
                        if state.count == size { done.signal() }
                    }
                }
            }
            producer.start()
            done.wait()
            report("per_job", "ns", Double(now() - t0) / Double(size))
            producer.join()
        case "task_restart", "task_restart_metrics", "task_restart_events":
            let runtime = DispatchRuntime(queue: queue)
            var root: Supervisor?
            let t0 = now()
            queue.sync {
                let spec = SupervisorSpec(intensity: RestartIntensity(maxRestarts: 100_000_000, period: .milliseconds(1)), children: [
                    ChildSpec(id: "crasher", .loopTask { context in
                        state.count += 1
                        if state.count > size { if state.count == size + 1 { done.signal() }; return }
                        context.fail("crash")
                    })])
                root = try? Supervisor(spec, runtime: runtime)
                if workload == "task_restart_metrics" { root?.reportMetrics(to: NOOPMetricsHandler.instance) }
                if workload == "task_restart_events" { root?.onEvent { _ in } }
                root?.start()
            }
            done.wait()
            report("per_restart", "ns", Double(now() - t0) / Double(size))
            queue.sync { root?.shutdown() }
        default:
            try SharedSide.run(workload, size: size, file: file, on: .dispatch(DispatchRuntime(queue: queue)))
        }
    }
}
