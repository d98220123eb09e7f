import UVSupervisor
import UVLoop

/// State shared by the demo's workers across their restarts (the supervisor restarts a worker
/// with a fresh start; what should survive a crash lives out here).
final class StoryState {
    var nextTaskFactor = 1
    var databaseIncarnation = 0
    var cacheFailed = false
    var parserFailed = false
    var monitorHung = false
}

/// Builds the demo's tree. `note` prints a worker's own remark (not a supervisor event).
func makeStoryTree(loop: EventLoop, duration: Double, state: StoryState,
                   note: @escaping (String, String) -> Void) -> SupervisorSpec {
    // A loop task that calls `tick` every `interval` until it fails or is asked to stop.
    func periodic(every interval: Duration, _ tick: @escaping (LoopTaskContext) -> Bool) -> WorkerKind {
        .loopTask { context in
            let timer = LoopTimer(loop: loop) {}
            timer.setHandler {
                if !tick(context) { timer.close() }
            }
            try? timer.start(after: interval, repeating: interval)
            context.onStop = {
                timer.close()
                context.finish()
            }
        }
    }
    // A loop task that does nothing but wait (and fails once, at `failAt`, if given).
    func idle(failAt: Double? = nil, ifFirst flag: ReferenceWritableKeyPath<StoryState, Bool>? = nil, message: String = "") -> WorkerKind {
        .loopTask { context in
            var timer: LoopTimer?
            if let failAt, let flag, !state[keyPath: flag] {
                let failure = LoopTimer(loop: loop) {
                    state[keyPath: flag] = true
                    timer?.close()
                    context.fail(message)
                }
                timer = failure
                try? failure.start(after: .milliseconds(Int(failAt * 1000)))
            }
            context.onStop = {
                timer?.close()
                context.finish()
            }
        }
    }

    let taskBackoff = Backoff.exponential(initial: .milliseconds(250), multiplier: 2, maximum: .seconds(2), jitter: 0.1, resetAfter: .seconds(5))
    let calcTask = ChildSpec(id: "calc-task", periodic(every: .milliseconds(700)) { context in
        let factor = state.nextTaskFactor
        state.nextTaskFactor += 1
        if factor % 3 == 0 {
            context.fail("job ×\(factor) is a multiple of 3")
            return false
        }
        note(context.path, "job ×\(factor) done")
        return true
    }, backoff: taskBackoff)

    var workerProcess = ProcessSpec(argv: [ownExecutablePath(), "--worker-process"])
    workerProcess.stdout = .capture
    workerProcess.environment = .inheritWithOverrides(["SWIFT_BACKTRACE": "enable=no"])
    let calcProcess = ChildSpec(id: "calc-process", .process(workerProcess), shutdown: .timeout(.seconds(2)),
                                backoff: .exponential(initial: .milliseconds(300), multiplier: 2, maximum: .seconds(2), jitter: 0.1, resetAfter: .seconds(5)))

    let workers = SupervisorSpec(strategy: .oneForOne, intensity: RestartIntensity(maxRestarts: 20, period: .seconds(10)),
                                 children: [calcTask, calcProcess])

    let connection = ChildSpec(id: "connection", .loopTask { context in
        if context.restartCount == 0 { state.databaseIncarnation += 1 }
        let attempt = state.databaseIncarnation
        let timer = LoopTimer(loop: loop) {}
        if attempt <= 2 {
            timer.setHandler {
                timer.close()
                context.fail("connection refused (db subtree run \(attempt))")
            }
            try? timer.start(after: .milliseconds(300))
        } else {
            note(context.path, "connected on db subtree run \(attempt): the escalation healed it")
        }
        context.onStop = {
            timer.close()
            context.finish()
        }
    })
    let database = SupervisorSpec(strategy: .oneForOne, intensity: RestartIntensity(maxRestarts: 2, period: .seconds(3)),
                                  children: [connection])

    let cache = SupervisorSpec(strategy: .oneForAll, intensity: .default, children: [
        ChildSpec(id: "cache-a", idle()),
        ChildSpec(id: "cache-b", idle(failAt: duration * 0.33, ifFirst: \.cacheFailed, message: "corrupted entry")),
        ChildSpec(id: "cache-c", idle()),
    ])
    let pipeline = SupervisorSpec(strategy: .restForOne, intensity: .default, children: [
        ChildSpec(id: "reader", idle()),
        ChildSpec(id: "parser", idle(failAt: duration * 0.55, ifFirst: \.parserFailed, message: "unexpected token")),
        ChildSpec(id: "writer", idle()),
    ])

    // Ready and alive: store is a real process that takes a moment to load and says READY=1;
    // api starts only then; monitor's heartbeat stops once (a hang, not a crash) and its
    // watchdog has it replaced.
    var store = ProcessSpec(argv: [ownExecutablePath(), "--store-process"])
    store.environment = .inheritWithOverrides(["SWIFT_BACKTRACE": "enable=no"])
    let monitor = ChildSpec(id: "monitor", .loopTask { context in
        let beat = LoopTimer(loop: loop) {}
        let hangsNow = !state.monitorHung
        let startedAt = loop.now
        beat.setHandler {
            if hangsNow && Double(loop.now - startedAt) / 1000 >= duration * 0.45 {
                state.monitorHung = true
                note(context.path, "stuck (a deadlock, say): no more heartbeats")
                beat.close()   // hung: no heartbeat, no crash
                return
            }
            context.heartbeat()
        }
        try? beat.start(after: .milliseconds(200), repeating: .milliseconds(200))
        context.onStop = {
            beat.close()
            context.finish()
        }
    }, shutdown: .timeout(.milliseconds(300)), liveness: .watchdog(.seconds(1)))
    let service = SupervisorSpec(strategy: .restForOne, intensity: .default, children: [
        ChildSpec(id: "store", .process(store), shutdown: .timeout(.seconds(2)), readiness: .notify, readyTimeout: .seconds(5)),
        ChildSpec(id: "api", idle()),
        monitor,
    ])

    return SupervisorSpec(strategy: .oneForOne, intensity: RestartIntensity(maxRestarts: 10, period: .seconds(10)), children: [
        ChildSpec(id: "workers", .supervisor(workers)),
        ChildSpec(id: "db", .supervisor(database), backoff: .exponential(initial: .milliseconds(500), multiplier: 2, maximum: .seconds(2), jitter: 0)),
        ChildSpec(id: "cache", .supervisor(cache)),
        ChildSpec(id: "pipeline", .supervisor(pipeline)),
        ChildSpec(id: "service", .supervisor(service)),
    ])
}

/// Strategy labels for the live view, by path.
let strategyLabels: [String: String] = [
    "root": "oneForOne", "root/workers": "oneForOne", "root/db": "oneForOne, 2 restarts in 3s",
    "root/cache": "oneForAll", "root/pipeline": "restForOne", "root/service": "restForOne, readiness and a watchdog",
]
