#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import UVLoop

/// A workload: its name, sizes, rounds, and whether the C floor implements it.
struct Workload {
    let name: String
    let fullSize: Int
    let quickSize: Int
    let hasC: Bool
    /// Rounds when not the default: process workloads measure many samples per run (3 rounds
    /// are enough), an idle window or a memory reading one (1 round).
    let fixedRounds: Int?
    let what: String
}

let workloads: [Workload] = [
    Workload(name: "timers_1m", fullSize: 1_000_000, quickSize: 20_000, hasC: true, fixedRounds: nil,
             what: "one-shot timers, random 0-1000 ms, until all fired: CPU ns per timer"),
    Workload(name: "timer_rearm", fullSize: 100_000, quickSize: 10_000, hasC: true, fixedRounds: nil,
             what: "timers re-armed 10 times each: ns per re-arm"),
    Workload(name: "submit_cross_thread", fullSize: 1_000_000, quickSize: 100_000, hasC: true, fixedRounds: nil,
             what: "another thread submits jobs to the loop: ns per job"),
    Workload(name: "submit_same_thread", fullSize: 1_000_000, quickSize: 100_000, hasC: true, fixedRounds: nil,
             what: "the loop schedules jobs to itself: ns per job"),
    Workload(name: "task_restart", fullSize: 1_000_000, quickSize: 100_000, hasC: true, fixedRounds: nil,
             what: "a supervised task that fails at once, zero backoff: ns per restart"),
    Workload(name: "task_restart_metrics", fullSize: 1_000_000, quickSize: 100_000, hasC: false, fixedRounds: nil,
             what: "task_restart with SupervisorMetrics attached (swift-metrics' no-op backend): ns per restart"),
    Workload(name: "task_restart_events", fullSize: 1_000_000, quickSize: 100_000, hasC: false, fixedRounds: nil,
             what: "task_restart with an empty event handler (the events are built): ns per restart"),
    Workload(name: "process_restart_gap", fullSize: 200, quickSize: 20, hasC: true, fixedRounds: 3,
             what: "a child that exits after 50 ms: its exit to the replacement's main, µs"),
    Workload(name: "process_restart_to_ready", fullSize: 200, quickSize: 20, hasC: false, fixedRounds: 3,
             what: "a child that says READY=1 at once and exits after 50 ms: its exit to the replacement's READY=1 received, µs"),
    Workload(name: "daemon_restart_gap", fullSize: 200, quickSize: 20, hasC: false, fixedRounds: 3,
             what: "process_restart_gap inside SupervisorDaemon.run without the descendant sentinel (libuv only), µs"),
    Workload(name: "daemon_restart_gap_sentinel", fullSize: 200, quickSize: 20, hasC: false, fixedRounds: 3,
             what: "the same with the sentinel (the default), µs"),
    Workload(name: "process_crash_loop", fullSize: 5_000, quickSize: 1_000, hasC: true, fixedRounds: 3,
             what: "a child that exits at once, zero backoff: restarts per second"),
    Workload(name: "idle_wakeups", fullSize: 10_000, quickSize: 1_000, hasC: false, fixedRounds: 1,
             what: "100 idle tasks + 10 sleeping children: the supervisor threads' wakeups and CPU time in the window"),
    Workload(name: "idle_wakeups_ready", fullSize: 10_000, quickSize: 1_000, hasC: false, fixedRounds: 1,
             what: "the same with readiness on (tasks ready(), processes READY=1 on their notify sockets)"),
    Workload(name: "idle_wakeups_probe_1s", fullSize: 10_000, quickSize: 1_000, hasC: false, fixedRounds: 1,
             what: "the same plus one child with a 1 s TCP liveness probe: about one wakeup per probe"),
    Workload(name: "memory_per_task", fullSize: 10_000, quickSize: 2_000, hasC: false, fixedRounds: nil,
             what: "RSS growth per supervised loop task"),
    Workload(name: "memory_per_process", fullSize: 200, quickSize: 20, hasC: false, fixedRounds: 1,
             what: "RSS growth of the supervisor per supervised process"),
    Workload(name: "start_stop_10k_tasks", fullSize: 10_000, quickSize: 2_000, hasC: false, fixedRounds: nil,
             what: "start then gracefully stop the task workers: ms"),
    Workload(name: "one_for_all_500", fullSize: 500, quickSize: 100, hasC: false, fixedRounds: nil,
             what: "oneForAll of loop tasks, one fails: ms until all run again"),
    Workload(name: "dynamic_start_1k", fullSize: 1_000, quickSize: 1_000, hasC: false, fixedRounds: nil,
             what: "startChild(from:) on a dynamic supervisor, 1,000 loop-task children: ns per child"),
    Workload(name: "dynamic_start_100k", fullSize: 100_000, quickSize: 10_000, hasC: false, fixedRounds: nil,
             what: "the same with 100,000 children: ns per child"),
    Workload(name: "dynamic_start_1m", fullSize: 1_000_000, quickSize: 10_000, hasC: false, fixedRounds: 3,
             what: "the same with 1,000,000 children: ns per child (flat in N when starts are O(1))"),
    Workload(name: "temporary_churn", fullSize: 100_000, quickSize: 10_000, hasC: false, fixedRounds: nil,
             what: "temporary children that end at once, started one after another: ns per child"),
    Workload(name: "temporary_end_1k", fullSize: 1_000, quickSize: 1_000, hasC: false, fixedRounds: nil,
             what: "1,000 temporary children up, then all ending in a shuffled order: ns per ending"),
    Workload(name: "temporary_end_1m", fullSize: 1_000_000, quickSize: 10_000, hasC: false, fixedRounds: 3,
             what: "the same with 1,000,000 children: ns per ending"),
    Workload(name: "restart_among_1k", fullSize: 1_000, quickSize: 1_000, hasC: false, fixedRounds: nil,
             what: "one child of a dynamic supervisor with 1,000 fails at once 100,000 times, zero backoff: ns per restart"),
    Workload(name: "restart_among_1m", fullSize: 1_000_000, quickSize: 10_000, hasC: false, fixedRounds: 3,
             what: "the same among 1,000,000 children: ns per restart (flat in N when restarts are O(1))"),
    Workload(name: "memory_per_dynamic_child", fullSize: 1_000_000, quickSize: 10_000, hasC: false, fixedRounds: 1,
             what: "RSS growth per loop-task child of a dynamic supervisor, 1,000,000 children"),
]

/// One figure of one side.
struct Sample {
    var metric: String
    var unit: String
    var values: [Double] = []
    var median: Double { percentile(values, 50) }
    var min: Double { values.min() ?? .nan }
    var max: Double { values.max() ?? .nan }
}

/// Runs each side of each workload in its own process and prints the comparison.
struct Driver {
    var quick = false
    var json = false
    var only: String?
    var rounds = 5

    func run() throws -> Int32 {
        let loop = try EventLoop()
        defer { try? loop.close() }
        let selected = workloads.filter { only == nil || $0.name == only }
        if selected.isEmpty {
            fputs("unknown workload \(only ?? ""); known: \(workloads.map(\.name).joined(separator: ", "))\n", stderr)
            return 64
        }
        if selected.contains(where: { $0.name.hasPrefix("process_") || $0.name.hasPrefix("daemon_") || $0.name.hasPrefix("idle_wakeups") || $0.name == "memory_per_process" }) {
            buildPlainChildHelper(loop: loop)
        }
        var results: [(workload: Workload, side: String, samples: [Sample])] = []
        var failed = false
        for workload in selected {
            let size = quick ? workload.quickSize : workload.fullSize
            let roundCount = quick ? (workload.fixedRounds == nil ? 3 : 1) : (workload.fixedRounds ?? rounds)
            if !json { fputs("running \(workload.name) (size \(size), \(roundCount) round\(roundCount == 1 ? "" : "s"))...\n", stderr) }
            let sides = workload.name.hasPrefix("daemon_") ? ["uv"] : workload.hasC ? ["c", "uv", "dispatch"] : ["uv", "dispatch"]
            var samples: [String: [String: Sample]] = [:]
            var order: [String: [String]] = [:]
            // Round-robin over the sides, so that a machine that drifts (turbo, neighbours on
            // a shared host) drifts for every side alike.
            for round in 0..<roundCount {
                for side in sides {
                    let file = "/tmp/uvs-bench-\(getpid())-\(workload.name)-\(side)-\(round).txt"
                    unlink(file)
                    guard let lines = runSide(side, workload: workload.name, size: size, file: file, loop: loop) else {
                        failed = true
                        continue
                    }
                    var parsed = lines.compactMap(parse)
                    if workload.name == "process_restart_gap" || workload.name == "process_restart_to_ready"
                        || workload.name.hasPrefix("daemon_restart_gap") {
                        let gaps = restartGaps(fromPulseFile: file)
                        parsed.append(("gap_p50", "µs", percentile(gaps, 50)))
                        parsed.append(("gap_p99", "µs", percentile(gaps, 99)))
                    }
                    unlink(file)
                    for (metric, unit, value) in parsed {
                        if samples[side, default: [:]][metric] == nil {
                            samples[side, default: [:]][metric] = Sample(metric: metric, unit: unit)
                            order[side, default: []].append(metric)
                        }
                        samples[side]![metric]!.values.append(value)
                    }
                }
            }
            for side in sides {
                results.append((workload, side, (order[side] ?? []).map { samples[side]![$0]! }))
            }
        }
        if json { printJSON(results) } else { printTable(results) }
        return failed ? 1 : 0
    }

    private func parse(_ line: String) -> (String, String, Double)? {
        var metric: String?, unit: String?, value: Double?
        for field in line.split(separator: " ") {
            let parts = field.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            switch parts[0] {
            case "metric": metric = String(parts[1])
            case "unit": unit = String(parts[1])
            case "value": value = Double(parts[1])
            default: break
            }
        }
        guard let metric, let unit, let value else { return nil }
        return (metric, unit, value)
    }

    /// Runs one side in its own process (signal handling and SIGCHLD are process-wide).
    private func runSide(_ side: String, workload: String, size: Int, file: String, loop: EventLoop) -> [String]? {
        var argv: [String]
        if side == "c" {
            argv = [executableDirectory + "/uvs-bench-c", workload, "\(size)"]
            if workload.hasPrefix("process_") { argv += [childHelper, file] }
        } else {
            argv = [executableDirectory + "/uv-supervisor-bench", "--side", side, workload, "\(size)", file]
        }
        var options = ProcessOptions(argv: argv)
        options.stdout = .pipe
        var lines: [String] = []
        var exit: ProcessExit?
        var ended = false
        do {
            _ = try ChildProcess.spawn(on: loop, options, onOutput: { output in
                switch output {
                case .line(_, let line): lines.append(line)
                case .end: ended = true
                }
            }, onExit: { exit = $0 })
        } catch {
            fputs("\(workload)/\(side): \(error)\n", stderr)
            return nil
        }
        while exit == nil || !ended { loop.run(.once) }
        if exit != .exited(0) {
            fputs("\(workload)/\(side): \(exit!)\n", stderr)
            return nil
        }
        return lines
    }

    private func format(_ value: Double) -> String {
        if value.isNaN { return "-" }
        if value >= 100 { return String(Int(value.rounded())) }
        if value >= 10 { return String((value * 10).rounded() / 10) }
        return String((value * 100).rounded() / 100)
    }

    private func printTable(_ results: [(workload: Workload, side: String, samples: [Sample])]) {
        var rows: [[String]] = [["workload", "metric", "unit", "c", "uv", "dispatch", "uv/c", "dispatch/uv"]]
        var seen: [String] = []
        for result in results where !seen.contains(result.workload.name) {
            seen.append(result.workload.name)
            let sides = results.filter { $0.workload.name == result.workload.name }
            let metrics = sides.first { $0.side == "uv" }?.samples.map(\.metric) ?? []
            for metric in metrics {
                func sample(_ side: String) -> Sample? { sides.first { $0.side == side }?.samples.first { $0.metric == metric } }
                func cell(_ side: String) -> String {
                    guard let sample = sample(side) else { return "-" }
                    if sample.values.count == 1 { return format(sample.median) }
                    return "\(format(sample.median)) (\(format(sample.min))-\(format(sample.max)))"
                }
                func ratio(_ top: String, _ bottom: String) -> String {
                    guard let a = sample(top)?.median, let b = sample(bottom)?.median, !a.isNaN else { return "-" }
                    if a == b { return "1.0x" }   // both zero included
                    guard b > 0 else { return "-" }
                    return String((a / b * 100).rounded() / 100) + "x"
                }
                let unit = sample("uv")?.unit ?? ""
                rows.append([result.workload.name, metric, unit, cell("c"), cell("uv"), cell("dispatch"), ratio("uv", "c"), ratio("dispatch", "uv")])
            }
        }
        let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
        for (index, row) in rows.enumerated() {
            print(zip(row, widths).map { $0 + String(repeating: " ", count: $1 - $0.count) }.joined(separator: "  "))
            if index == 0 { print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")) }
        }
        print("")
        print(quick
              ? "Medians of 3 rounds (min-max); process, idle and memory_per_process workloads: one run."
              : "Medians of \(rounds) rounds (min-max), the sides taking turns; process workloads: 3 runs of many samples each; idle_wakeups and memory_per_process: one run.")
        print("Ratios: uv/c below 1 is faster than C; dispatch/uv above 1 means Dispatch is slower (for rates, read them inverted).")
    }

    private func printJSON(_ results: [(workload: Workload, side: String, samples: [Sample])]) {
        var uts = utsname()
        uname(&uts)
        let kernel = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        var items: [String] = []
        for result in results {
            for sample in result.samples {
                func number(_ value: Double) -> String { value.isNaN ? "null" : String(value) }
                items.append("{\"workload\":\"\(result.workload.name)\",\"runtime\":\"\(result.side)\",\"metric\":\"\(sample.metric)\",\"unit\":\"\(sample.unit)\",\"value\":\(number(sample.median)),\"min\":\(number(sample.min)),\"max\":\(number(sample.max))}")
            }
        }
        print("{\"machine\":{\"cpus\":\(sysconf(Int32(_SC_NPROCESSORS_ONLN))),\"kernel\":\"\(kernel)\",\"libuv\":\"\(EventLoop.libuvVersion)\",\"quick\":\(quick)},\"results\":[\(items.joined(separator: ","))]}")
    }
}
