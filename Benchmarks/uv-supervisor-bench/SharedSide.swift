#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Dispatch
import DispatchSupervisor
import UVSupervisor
import UVLoop

/// Where a supervision workload runs: the libuv runtime or the Dispatch runtime.
enum Host {
    case uv(EventLoop)
    case dispatch(DispatchRuntime)

    var runtime: any SupervisorRuntime {
        switch self {
        case .uv(let loop): return UVRuntime(loop: loop)
        case .dispatch(let runtime): return runtime
        }
    }
}

/// Drives a host: code on its thread, and waiting for a condition set by event handlers.
final class HostDriver: @unchecked Sendable {
    let host: Host
    let runtime: any SupervisorRuntime
    private let wake = DispatchSemaphore(value: 0)

    init(_ host: Host) {
        self.host = host
        runtime = host.runtime
    }

    /// Runs `body` on the runtime's thread.
    func sync<T>(_ body: () throws -> T) rethrows -> T {
        switch host {
        case .uv: return try body()
        case .dispatch(let runtime): return try runtime.queue.sync(execute: body)
        }
    }

    /// Wakes a pending ``wait(until:)`` (call from event handlers).
    func poke() {
        if case .dispatch = host { wake.signal() }
    }

    /// Runs (libuv) or waits (Dispatch) until `condition` holds on the runtime's thread.
    func wait(until condition: () -> Bool) {
        switch host {
        case .uv(let loop):
            let guardTimer = LoopTimer(loop: loop) {}
            try? guardTimer.start(after: .milliseconds(50), repeating: .milliseconds(50))
            while !condition() { loop.run(.once) }
            guardTimer.close()
        case .dispatch(let runtime):
            while !runtime.queue.sync(execute: condition) { _ = wake.wait(timeout: .now() + .milliseconds(50)) }
        }
    }

    /// What the supervisor's threads did while the host sat idle for `seconds`: their wakeups
    /// and CPU time, measured from a separate thread as the whole process minus that thread, so
    /// the measurement's own sleeping and waking is not charged to the supervisor.
    func measureIdle(seconds: Double) -> (wakeups: Int, cpuNanoseconds: Double) {
        var result = (wakeups: 0, cpuNanoseconds: 0.0)
        func window() {
            sleep(seconds: 0.05)   // let the supervisor's thread settle into its wait
            let before = OtherThreadsUsage()
            sleep(seconds: seconds)
            let after = OtherThreadsUsage()
            result = (after.switches - before.switches, after.cpuTime - before.cpuTime)
        }
        switch host {
        case .uv(let loop):
            let remote = loop.remote
            let measurer = Thread {
                window()
                try? remote.stop()
            }
            measurer.start()
            loop.run(.untilStopped)
            measurer.join()
        case .dispatch:
            window()
        }
        return result
    }

    /// Lets the host run for `seconds` without doing anything itself.
    func idle(seconds: Double) {
        switch host {
        case .uv(let loop):
            var done = false
            let timer = LoopTimer(loop: loop) { done = true }
            // Repeating: in UV_RUN_ONCE a timer already due fires before the poll, which then
            // blocks for I/O; the repeat bounds that wait.
            try? timer.start(after: .milliseconds(Int(seconds * 1000)), repeating: .milliseconds(1))
            while !done { loop.run(.once) }
            timer.close()
        case .dispatch:
            var pause = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
            nanosleep(&pause, nil)
        }
    }
}

/// Supervision workloads written once for both runtimes.
enum SharedSide {
    static func run(_ workload: String, size: Int, file: String, on host: Host) throws {
        let driver = HostDriver(host)
        var root: Supervisor!
        var starts = 0
        var exits = 0
        var markedAt: UInt64 = 0
        let intensity = RestartIntensity(maxRestarts: 100_000_000, period: .milliseconds(1))

        func start(_ spec: SupervisorSpec) throws {
            try driver.sync {
                root = try Supervisor(spec, runtime: driver.runtime)
                root.onEvent { event in
                    switch event.kind {
                    case .started: starts += 1
                    case .exited: exits += 1
                    default: break
                    }
                    driver.poke()
                }
                root.start()
            }
        }
        func stop() {
            driver.sync { root.shutdown(within: .seconds(5)) }
            driver.wait { root.finalReason != nil }
        }
        func idleTasks(_ count: Int) -> [ChildSpec] {
            (0..<count).map { ChildSpec(id: "t\($0)", .loopTask { context in context.onStop = { context.finish() } }) }
        }

        switch workload {
        case "process_restart_gap":
            try start(SupervisorSpec(intensity: intensity, children: [
                ChildSpec(id: "pulse", .process(ProcessSpec(argv: [childHelper, "pulse", file])))]))
            driver.wait { starts > size }
            stop()
        case "process_restart_to_ready":
            // The child appends its exit time ("E"); the supervisor side appends the time it
            // received the replacement's READY=1 ("R"): the gaps are R - E, on one clock.
            let fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
            var readies = 0
            try driver.sync {
                root = try Supervisor(SupervisorSpec(intensity: intensity, children: [
                    ChildSpec(id: "pulse", .process(ProcessSpec(argv: [childHelper, "notify-pulse", file])), readiness: .notify),
                ]), runtime: driver.runtime)
                root.onEvent { event in
                    if case .ready = event.kind {
                        readies += 1
                        var line = Array("R \(now())\n".utf8)
                        _ = write(fd, &line, line.count)
                        driver.poke()
                    }
                }
                root.start()
            }
            driver.wait { readies > size }
            stop()
            close(fd)
        case "process_crash_loop":
            try start(SupervisorSpec(intensity: intensity, children: [
                ChildSpec(id: "crasher", .process(ProcessSpec(argv: [childHelper, "exit"])))]))
            let t0 = now()
            let cpu0 = cpuNanoseconds()
            driver.idle(seconds: Double(size) / 1000)
            let restarts = driver.sync { exits }
            let cpu = cpuNanoseconds() - cpu0
            report("restarts_per_second", "1/s", Double(restarts) / (Double(now() - t0) / 1e9))
            // The supervisor's own CPU (its threads; the children are other processes).
            report("supervisor_cpu_per_restart", "µs", cpu / Double(max(1, restarts)) / 1e3)
            stop()
        case "idle_wakeups", "idle_wakeups_ready", "idle_wakeups_probe_1s":
            var children = idleTasks(100)
            for index in 0..<10 { children.append(ChildSpec(id: "sleeper\(index)", .process(ProcessSpec(argv: [childHelper, "sleep"])))) }
            var listener: Int32 = -1
            if workload != "idle_wakeups" {
                // The same tree with readiness on: the tasks say ready() in their start, the
                // processes READY=1 on their notify sockets (kept open, watched, silent).
                children = (0..<100).map { index in
                    ChildSpec(id: "t\(index)", .loopTask { context in context.onStop = { context.finish() }; context.ready() },
                              readiness: .notify)
                }
                for index in 0..<10 {
                    children.append(ChildSpec(id: "sleeper\(index)", .process(ProcessSpec(argv: [childHelper, "notify-sleep"])),
                                              readiness: .notify))
                }
            }
            if workload == "idle_wakeups_probe_1s" {
                // Plus one child with a 1 s TCP liveness probe against a port that listens.
                let (fd, port) = loopbackListener()
                listener = fd
                var probed = ChildSpec(id: "probed", .process(ProcessSpec(argv: [childHelper, "sleep"])))
                probed.liveness = .probe(.tcp(port: port, interval: .seconds(1), timeout: .seconds(1)))
                children.append(probed)
            }
            try start(SupervisorSpec(children: children))
            driver.wait { root.children().allSatisfy(\.ready) }
            defer { if listener >= 0 { close(listener) } }
            driver.idle(seconds: 0.3)   // settle
            let idle = driver.measureIdle(seconds: Double(size) / 1000)
            report("wakeups", "count", Double(idle.wakeups))
            // Whole microseconds: below that the two clock reads are the noise (±0.5 µs).
            let microseconds = (idle.cpuNanoseconds / 1e3).rounded()
            report("cpu_time", "µs", microseconds > 0 ? microseconds : 0)
            stop()
        case "memory_per_task":
            // One warm-up child first, so that first-use costs (code pages, allocator arenas)
            // are not charged to the measured children.
            try start(SupervisorSpec(children: idleTasks(1).map { var spec = $0; spec.id = "warm-up"; return spec }))
            let before = residentBytes()
            try driver.sync { for spec in idleTasks(size) { try root.startChild(spec) } }
            report("bytes_per_task", "B", (residentBytes() - before) / Double(size))
            stop()
        case "memory_per_process":
            // One warm-up child first (first spawn maps code, grows arenas, starts watchers).
            try start(SupervisorSpec(children: [ChildSpec(id: "warm-up", .process(ProcessSpec(argv: [childHelper, "sleep"])))]))
            driver.wait { starts >= 1 }
            let before = residentBytes()
            try driver.sync {
                for index in 0..<size {
                    try root.startChild(ChildSpec(id: "p\(index)", .process(ProcessSpec(argv: [childHelper, "sleep"]))))
                }
            }
            driver.wait { starts >= size + 1 }
            report("bytes_per_process", "B", (residentBytes() - before) / Double(size))
            stop()
        case "start_stop_10k_tasks":
            let t0 = now()
            try start(SupervisorSpec(children: idleTasks(size)))
            stop()
            report("start_and_stop", "ms", Double(now() - t0) / 1e6)
        case "one_for_all_500":
            var contexts: [LoopTaskContext] = []
            let children = (0..<size).map { index in
                ChildSpec(id: "t\(index)", .loopTask { context in
                    if index == 0 { contexts.append(context) }
                    context.onStop = { context.finish() }
                })
            }
            try start(SupervisorSpec(strategy: .oneForAll, intensity: intensity, children: children))
            driver.wait { starts >= size }
            let target = 2 * size
            let t0 = now()
            driver.sync { contexts[0].fail("one fails") }
            driver.wait {
                if starts >= target && markedAt == 0 { markedAt = now() }
                return starts >= target
            }
            report("all_running_again", "ms", Double(markedAt - t0) / 1e6)
            stop()
        case "dynamic_start_1k", "dynamic_start_100k", "dynamic_start_1m", "temporary_churn":
            // No event handler: the supervisor's own cost per child.
            let churn = workload == "temporary_churn"
            let template = churn
                ? ChildSpec(id: "w", .loopTask { context in context.finish() }, restart: .temporary)
                : ChildSpec(id: "w", .loopTask { context in context.onStop = { context.finish() } })
            try driver.sync {
                root = try Supervisor(.dynamic(), runtime: driver.runtime)
                root.start()
            }
            let t0 = now()
            try driver.sync { for _ in 0..<size { try root.startChild(from: template) } }
            driver.wait { churn ? root.countChildren().specs == 0 : root.countChildren().active == size }
            report("per_child", "ns", Double(now() - t0) / Double(size))
            stop()
        case "temporary_end_1k", "temporary_end_1m":
            // Removal by id from anywhere in the list (not only the newest): a fixed shuffle.
            var contexts: [LoopTaskContext] = []
            contexts.reserveCapacity(size)
            let template = ChildSpec(id: "w", .loopTask { context in
                contexts.append(context)
                context.onStop = { context.finish() }
            }, restart: .temporary)
            try driver.sync {
                root = try Supervisor(.dynamic(), runtime: driver.runtime)
                root.start()
                for _ in 0..<size { try root.startChild(from: template) }
            }
            var shuffler = SplitMix(seed: 12)
            if getenv("UVS_BENCH_IN_ORDER") == nil { contexts.shuffle(using: &shuffler) }
            let t0 = now()
            driver.sync { for context in contexts { context.finish() } }
            driver.wait { root.countChildren().specs == 0 }
            report("per_ending", "ns", Double(now() - t0) / Double(size))
            contexts.removeAll()
            stop()
        case "restart_among_1k", "restart_among_1m":
            // `size` children that stay up, then one more that fails at once on every start
            // until it has been restarted `restarts` times: what one restart costs among N.
            let restarts = 100_000
            var failuresLeft = restarts
            var doneAt: UInt64 = 0
            let sibling = ChildSpec(id: "w", .loopTask { context in context.onStop = { context.finish() } })
            let crasher = ChildSpec(id: "crasher", .loopTask { context in
                context.onStop = { context.finish() }
                if failuresLeft > 0 {
                    failuresLeft -= 1
                    context.fail("crash")
                } else {
                    doneAt = now()
                    driver.poke()
                }
            })
            try driver.sync {
                root = try Supervisor(.dynamic(intensity: intensity), runtime: driver.runtime)
                root.start()
                for _ in 0..<size { try root.startChild(from: sibling) }
            }
            let t0 = now()
            try driver.sync { try root.startChild(crasher) }
            driver.wait { doneAt != 0 }
            report("per_restart", "ns", Double(doneAt - t0) / Double(restarts))
            stop()
        case "memory_per_dynamic_child":
            let template = ChildSpec(id: "w", .loopTask { context in context.onStop = { context.finish() } })
            try driver.sync {
                root = try Supervisor(.dynamic(), runtime: driver.runtime)
                root.start()
                // A warm-up child first, so first-use costs are not charged to the measured ones.
                try root.startChild(from: template)
            }
            let before = residentBytes()
            try driver.sync { for _ in 0..<size { try root.startChild(from: template) } }
            report("bytes_per_child", "B", (residentBytes() - before) / Double(size))
            stop()
        default:
            fputs("unknown workload \(workload)\n", stderr)
            exit(64)
        }
        _ = markedAt
    }
}

/// A small seeded generator, so every run ends the children in the same order.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A TCP socket listening on a free loopback port (never accepted from: the kernel completes
/// the handshakes on its own), and the port.
func loopbackListener() -> (Int32, UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && listen(fd, 128) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    precondition(ok, "loopback listener")
    return (fd, UInt16(bigEndian: address.sin_port))
}
