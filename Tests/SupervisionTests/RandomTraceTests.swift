import Testing
import Supervision
import SupervisionTesting

/// Live loop-task contexts by path, filled by the tasks themselves.
private final class TaskRegistry {
    var live: [String: LoopTaskContext] = [:]
}

/// Builds a random tree and remembers each supervisor's intensity and child order.
private struct TreeBuilder {
    var random: SplitMix64
    let registry: TaskRegistry
    var intensities: [String: RestartIntensity] = [:]
    var childOrder: [String: [String]] = [:]
    var stopBehaviours: [String: ManualRuntime.StopBehaviour] = [:]

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }

    mutating func supervisor(path: String, depth: Int) -> SupervisorSpec {
        let strategies: [RestartStrategy] = [.oneForOne, .oneForAll, .restForOne]
        let strategy = strategies[int(0...2)]
        let intensity = RestartIntensity(maxRestarts: int(1...5), period: .seconds(int(1...10)))
        intensities[path] = intensity
        var children: [ChildSpec] = []
        for index in 0..<int(2...5) {
            let id = "c\(index)"
            let childPath = path + "/" + id
            let restarts: [RestartType] = [.permanent, .transient, .temporary]
            let restart = restarts[int(0...2)]
            let backoff: Backoff = int(0...1) == 0 ? .none
                : .exponential(initial: .milliseconds(int(100...2_000)), maximum: .seconds(10), jitter: 0.2)
            let roll = int(0...9)
            let kind: WorkerKind
            if roll < 2 && depth < 2 {
                kind = .supervisor(supervisor(path: childPath, depth: depth + 1))
            } else if roll < 4 {
                let registry = self.registry
                let honoursStop = int(0...1) == 0
                kind = .loopTask { context in
                    registry.live[context.path] = context
                    if honoursStop { context.onStop = { context.finish() } }
                }
            } else {
                kind = .process(ProcessSpec(argv: ["/bin/true"]))
                let behaviours: [ManualRuntime.StopBehaviour] = [.exitsPromptly, .exitsAfter(.milliseconds(500)), .ignores]
                stopBehaviours[childPath] = behaviours[int(0...2)]
            }
            children.append(ChildSpec(id: id, kind, restart: restart,
                                      shutdown: kind.name == "supervisor" ? nil : .timeout(.seconds(int(1...5))),
                                      backoff: backoff))
        }
        childOrder[path] = children.map(\.id)
        return SupervisorSpec(strategy: strategy, intensity: intensity, children: children)
    }
}

private func parent(of path: String) -> String {
    String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
}

/// Checks the trace invariants over an event log; returns the violations.
private func violations(in events: [SupervisorEvent], builder: TreeBuilder, finished: Bool) -> [String] {
    var problems: [String] = []
    var active: [String: Bool] = [:]
    var stoppedSupervisors: Set<String> = []
    var decisions: [String: [Int64]] = [:]
    var shutdownStops: [String: [String]] = [:]
    var shuttingDown: Set<String> = []
    for event in events {
        let path = event.path
        switch event.kind {
        case .started, .startFailed:
            if case .startFailed = event.kind, active[path] == true { break }   // startFailed follows no started
            if active[path] == true { problems.append("\(path) started twice without an exit") }
            active[path] = true
            if stoppedSupervisors.contains(parent(of: path)) { problems.append("\(path) started after its supervisor stopped") }
            if builder.intensities[path] != nil {
                stoppedSupervisors.remove(path)
                decisions[path] = []
            }
        case .exited:
            if active[path] != true { problems.append("\(path) exited without running") }
            active[path] = false
        case .restartScheduled(_, let why):
            if !why.contains(" with ") {
                let supervisor = parent(of: path)
                decisions[supervisor, default: []].append(event.time)
                if let intensity = builder.intensities[supervisor] {
                    let period = intensity.period.nanosecondsClamped
                    let inWindow = decisions[supervisor]!.filter { event.time - $0 < period }.count
                    if inWindow > intensity.maxRestarts {
                        problems.append("\(supervisor): \(inWindow) restarts in the window, max \(intensity.maxRestarts)")
                    }
                }
            }
        case .supervisorStopping:
            shuttingDown.insert(path)
            shutdownStops[path] = []
        case .stopping:
            let supervisor = parent(of: path)
            if shuttingDown.contains(supervisor) {
                shutdownStops[supervisor, default: []].append(String(path.split(separator: "/").last!))
            }
        case .supervisorStopped:
            stoppedSupervisors.insert(path)
            shuttingDown.remove(path)
            let order = builder.childOrder[path] ?? []
            let positions = (shutdownStops[path] ?? []).compactMap { order.firstIndex(of: $0) }
            if positions != positions.sorted(by: >) {
                problems.append("\(path) stopped its children in the order \(shutdownStops[path] ?? [])")
            }
        default:
            break
        }
    }
    if finished {
        for (path, isActive) in active where isActive { problems.append("\(path) never reported its exit") }
    }
    return problems
}

/// The replayed activity must match the status tree.
private func replayMismatches(_ events: [SupervisorEvent], _ status: [ChildStatus]) -> [String] {
    var active: [String: Bool] = [:]
    for event in events {
        switch event.kind {
        case .started, .startFailed: active[event.path] = true
        case .exited: active[event.path] = false
        default: break
        }
    }
    var problems: [String] = []
    func walk(_ children: [ChildStatus]) {
        for child in children {
            let isActive = child.state == .running || child.state == .stopping
            if (active[child.path] ?? false) != isActive {
                problems.append("\(child.path): status \(child.state), events say \(active[child.path] ?? false ? "active" : "inactive")")
            }
            walk(child.children)
        }
    }
    walk(status)
    return problems
}

@Suite("Randomised failure traces")
struct RandomTraceTests {
    static let traceCount = 1_000

    @Test("1,000 seeded traces keep every invariant", arguments: [0, 1, 2, 3])
    func traces(shard: Int) throws {
        for seed in stride(from: UInt64(shard), to: UInt64(Self.traceCount), by: 4) {
            try runTrace(seed: seed)
        }
    }

    @Test("a trace is reproducible: the same seed gives the same events")
    func reproducible() throws {
        #expect(try runTrace(seed: 77) == runTrace(seed: 77))
    }

    @discardableResult
    private func runTrace(seed: UInt64) throws -> [SupervisorEvent] {
        let registry = TaskRegistry()
        var builder = TreeBuilder(random: SplitMix64(seed: seed &* 0x9E37_79B9 &+ 1), registry: registry)
        let spec = builder.supervisor(path: "root", depth: 0)
        let runtime = ManualRuntime()
        runtime.stopBehaviour = builder.stopBehaviours
        let root = try Supervisor(spec, runtime: runtime, randomSeed: seed)
        var events: [SupervisorEvent] = []
        root.onEvent { events.append($0) }
        root.start()
        runtime.runUntilIdle()
        var random = SplitMix64(seed: seed)
        let terminations: [WorkerTermination] = [.exited(0), .exited(1), .signaled(9), .signaled(15)]
        for _ in 0..<50 {
            guard root.state == .running else { break }
            switch Int.random(in: 0...9, using: &random) {
            case 0...3:
                if let path = runtime.runningPaths.randomElement(using: &random) {
                    runtime.exit(path, terminations.randomElement(using: &random)!)
                }
            case 4, 5:
                let live = registry.live.filter { !$0.value.stopRequested }.sorted { $0.key < $1.key }
                if let (_, context) = live.randomElement(using: &random) {
                    registry.live[context.path] = nil
                    if Bool.random(using: &random) { context.fail("random failure") } else { context.finish() }
                    runtime.runUntilIdle()
                }
            case 6, 7:
                runtime.advance(by: .milliseconds(Int64.random(in: 0...3_000, using: &random)))
            case 8:
                if let id = root.childIDs.randomElement(using: &random) {
                    if Bool.random(using: &random) { try? root.terminateChild(id) } else { try? root.restartChild(id) }
                    runtime.runUntilIdle()
                }
            default:
                runtime.advance(by: .milliseconds(100))
            }
            // The maintained counts agree with the status snapshot at every step.
            let status = root.children()
            let expected = ChildCounts(
                specs: status.count,
                active: status.filter { $0.state == .running || $0.state == .stopping }.count,
                supervisors: status.filter { !$0.kind.isWorker }.count,
                workers: status.filter { $0.kind.isWorker }.count)
            #expect(root.countChildren() == expected, "seed \(seed)")
            let problems = violations(in: events, builder: builder, finished: false)
                + replayMismatches(events, root.children())
            try #require(problems.isEmpty, "seed \(seed): \(problems)")
        }
        var final: ExitReason?
        root.shutdown(within: .seconds(10)) { final = $0 }
        runtime.advance(by: .seconds(20))
        #expect(final != nil, "seed \(seed): the tree did not stop")
        #expect(runtime.runningPaths.isEmpty, "seed \(seed): \(runtime.runningPaths) still running")
        let problems = violations(in: events, builder: builder, finished: true)
        #expect(problems.isEmpty, "seed \(seed): \(problems)")
        return events
    }
}
