import Testing
import UVSupervisor
import UVLoop
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// How long the chaos run lasts: about 20 s in CI (less under sanitizers), longer on demand
/// with UVS_CHAOS_SECONDS.
let chaosSeconds: Int = {
    if let value = getenv("UVS_CHAOS_SECONDS"), let seconds = Int(String(cString: value)), seconds > 0 { return seconds }
    return underSanitizer ? 6 : 20
}()

@Suite("Chaos")
struct ChaosTests {
    @Test("a seeded random schedule of kills, task failures, additions and removals leaves a consistent tree")
    func chaos() async throws {
        let seed = UInt64(getenv("UVS_CHAOS_SEED").flatMap { UInt64(String(cString: $0)) } ?? 2026)
        let report = try await withCheckedLoop { loop in
            var random = SplitMix64(seed: seed)
            var contexts: [String: LoopTaskContext] = [:]
            func task(_ id: String) -> ChildSpec {
                ChildSpec(id: id, .loopTask { context in
                    contexts[context.path] = context
                    context.onStop = { contexts[context.path] = nil; context.finish() }
                }, restart: .permanent)
            }
            func process(_ id: String) -> ChildSpec {
                ChildSpec(id: id, .process(ProcessSpec(argv: [childHelperPath, "sleep", "600"])),
                          shutdown: .timeout(.milliseconds(300)), backoff: .exponential(initial: .milliseconds(5), maximum: .milliseconds(50), jitter: 0.2))
            }
            let pool = SupervisorSpec.dynamic(maxChildren: 12, intensity: RestartIntensity(maxRestarts: 10_000, period: .seconds(1)))
            let group = SupervisorSpec(strategy: .oneForAll, intensity: RestartIntensity(maxRestarts: 10_000, period: .seconds(1)),
                                       children: [process("g0"), task("g1"), process("g2")])
            let spec = SupervisorSpec(strategy: .oneForOne, intensity: RestartIntensity(maxRestarts: 10_000, period: .seconds(1)), children: [
                process("p0"), task("t0"), ChildSpec(id: "group", .supervisor(group)), ChildSpec(id: "pool", .supervisor(pool)),
                ChildSpec(id: "rest", .supervisor(SupervisorSpec(strategy: .restForOne, intensity: RestartIntensity(maxRestarts: 10_000, period: .seconds(1)),
                                                                 children: [task("r0"), process("r1"), task("r2")]))),
            ])
            let tree = try LiveTree(loop, spec, seed: seed)
            tree.root.start()
            // A fixed number of actions (about chaosSeconds of chaos on an idle machine), bounded
            // by a generous deadline: a count, not a rate, so a loaded machine cannot fail it.
            let targetActions = chaosSeconds * 60
            let deadline = EventLoop.hrtime() + UInt64(chaosSeconds) * 10_000_000_000
            var actions = 0
            var pause = false
            let ticker = LoopTimer(loop: loop) { pause = false }
            while actions < targetActions && EventLoop.hrtime() < deadline {
                actions += 1
                let choice = Int.random(in: 0...9, using: &random)
                switch choice {
                case 0...3:
                    // SIGKILL a random running process of the tree.
                    var pids: [Int32] = []
                    func collect(_ children: [ChildStatus]) { for child in children { if let pid = child.pid { pids.append(pid) }; collect(child.children) } }
                    collect(tree.root.children())
                    if let pid = pids.randomElement(using: &random) { kill(pid, SIGKILL) }
                case 4, 5:
                    let live = contexts.sorted { $0.key < $1.key }
                    if let (path, context) = live.randomElement(using: &random) {
                        contexts[path] = nil
                        if Bool.random(using: &random) { context.fail("chaos") } else { context.finish() }
                    }
                case 6:
                    _ = try? tree.root.supervisor(at: "pool")?.startChild(from: Bool.random(using: &random) ? process("w") : task("w"))
                case 7:
                    if let pool = tree.root.supervisor(at: "pool"), let id = pool.childIDs.randomElement(using: &random) {
                        try? pool.terminateChild(id)
                    }
                default:
                    break
                }
                // Let the tree react for a few milliseconds between actions. (Repeating: in
                // UV_RUN_ONCE, a timer that is already due fires before the poll, which then
                // blocks for I/O; a repeating timer bounds that wait.)
                pause = true
                try ticker.start(after: .milliseconds(Int.random(in: 1...15, using: &random)), repeating: .milliseconds(2))
                while pause { loop.run(.once) }
                ticker.stop()
            }
            ticker.close()
            #expect(tree.root.state == .running, "the tree gave up during chaos: \(String(describing: tree.root.finalReason))")
            // Consistent: every event stream per path alternates start/exit.
            var active: [String: Bool] = [:]
            var problems: [String] = []
            for event in tree.events {
                switch event.kind {
                case .started, .startFailed:
                    if active[event.path] == true, case .started = event.kind { problems.append("\(event.path) started twice") }
                    active[event.path] = true
                case .exited:
                    if active[event.path] != true { problems.append("\(event.path) exited without running") }
                    active[event.path] = false
                default: break
                }
            }
            #expect(problems.isEmpty, "\(problems.prefix(5))")
            #expect(tree.stop() == .shutdown)
            let stillActive = tree.events.reduce(into: [String: Bool]()) { state, event in
                switch event.kind {
                case .started, .startFailed: state[event.path] = true
                case .exited: state[event.path] = false
                default: break
                }
            }.filter(\.value)
            #expect(stillActive.isEmpty, "never reported their exit: \(stillActive.keys.sorted())")
            #expect(actions == targetActions, "the tree kept up with \(actions) of \(targetActions) actions")
        }
        #expect(report == .clean, "leaks after chaos with seed \(seed): \(report)")
    }
}
