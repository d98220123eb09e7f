// The README's code examples, compiled with the package so they cannot rot.
// Each function is one README section; keep the two in step.
import UVSupervisor
import UVLoop
import SupervisionTesting
import Logging
import ServiceLifecycle
import UVSupervisorServiceLifecycle

// MARK: - The tree and its workers

func workerKinds(loop: EventLoop) -> SupervisorSpec {
    // A process: argv, never a shell; its own process group; SIGTERM then SIGKILL to stop it.
    var web = ProcessSpec(argv: ["/usr/bin/python3", "-m", "http.server", "8080"])
    web.stdout = .capture                      // lines arrive as events (and in the log)
    web.environment = .inheritWithOverrides(["PYTHONUNBUFFERED": "1"])

    // A loop task: callbacks on the loop, the cheapest worker. It must never block.
    let heartbeat = WorkerKind.loopTask { context in
        let timer = LoopTimer(loop: loop) { print("\(context.path): alive") }
        try? timer.start(after: .seconds(1), repeating: .seconds(1))
        context.onStop = { timer.close(); context.finish() }
    }

    // An async task on the loop's executor: return = normal, throw = failure,
    // cancellation = the stop request.
    let poller = WorkerKind.asyncTask {
        while !Task.isCancelled {
            try await Task.sleep(for: .seconds(5))
        }
    }

    return SupervisorSpec(strategy: .oneForOne, children: [
        ChildSpec(id: "web", .process(web)),
        ChildSpec(id: "heartbeat", heartbeat),
        ChildSpec(id: "poller", poller),
        ChildSpec(id: "jobs", .supervisor(SupervisorSpec.dynamic(maxChildren: 100))),
    ])
}

// MARK: - Dynamic children

func dynamicChildren(jobs: Supervisor) throws {
    // One template per kind of child; each child gets its own arguments on top of it.
    let handler = ChildSpec(id: "conn", .process(ProcessSpec(argv: ["/usr/local/bin/handler"])),
                            restart: .temporary)
    let id = try jobs.startChild(from: handler, with: ChildArguments(
        argv: ["--peer", "10.0.0.7:5000"],          // appended: handler --peer 10.0.0.7:5000
        environment: ["TRACE": "1"]))               // applied over the template's environment
    print(id, try jobs.childSpec(id).kind.name)     // conn-1 process (the spec as started)

    // A task template gets a value: context.argument (loop task), ChildArgument.current (async).
    let device = ChildSpec(id: "device", .loopTask { context in
        let port = context.argument as? String ?? "/dev/null"
        print("\(context.path) watches \(port)")
        context.onStop = { context.finish() }
    })
    for port in ["/dev/ttyUSB0", "/dev/ttyUSB1"] {
        try jobs.startChild(from: device, with: ChildArguments(value: port))
    }
    print(jobs.countChildren())                     // specs: 3, active: 3, ... in O(1)
}

// MARK: - Restart types

func restartTypes() -> [ChildSpec] {
    let job = ProcessSpec(argv: ["/usr/local/bin/nightly-report"])
    return [
        ChildSpec(id: "always", .process(job), restart: .permanent),   // restarted whatever happened
        ChildSpec(id: "on-crash", .process(job), restart: .transient), // restarted after a failure only
        ChildSpec(id: "once", .process(job), restart: .temporary),     // never restarted
    ]
}

// MARK: - Ready and alive

func readyAndAlive(loop: EventLoop) -> SupervisorSpec {
    // A database that says READY=1 (sd_notify) and pings WATCHDOG=1 within its interval.
    let postgres = ChildSpec(id: "db", .process(ProcessSpec(argv: ["/usr/lib/postgresql/15/bin/postgres"])),
                             readiness: .notify, readyTimeout: .seconds(60),
                             liveness: .watchdog(.seconds(10)))
    // An HTTP server that is ready when its port accepts, and alive while a check passes.
    var web = ChildSpec(id: "web", .process(ProcessSpec(argv: ["/srv/web", "--port", "8080"])))
    web.readiness = .probe(.tcp(port: 8080, interval: .milliseconds(100)))
    web.liveness = .probe(.command(["/srv/web-check"], interval: .seconds(5), timeout: .seconds(2),
                                   failureThreshold: 3))
    // A loop task: ready() when set up, heartbeat() while healthy (here: every 500 ms).
    let poller = ChildSpec(id: "poller", .loopTask { context in
        let beat = LoopTimer(loop: loop) { context.heartbeat() }
        try? beat.start(after: .milliseconds(500), repeating: .milliseconds(500))
        context.ready()
        context.onStop = { beat.close(); context.finish() }
    }, readiness: .notify, liveness: .watchdog(.seconds(2)))
    // web starts once db is ready; poller once web's port accepts.
    return SupervisorSpec(strategy: .restForOne, children: [postgres, web, poller])
}

// MARK: - Strategies, intensity, backoff, shutdown

func strategiesAndLimits() -> SupervisorSpec {
    let cache = ProcessSpec(argv: ["/usr/bin/memcached", "-p", "11311"])
    let app = ProcessSpec(argv: ["/srv/app/bin/app"])
    return SupervisorSpec(
        strategy: .restForOne,                                              // app depends on cache
        intensity: RestartIntensity(maxRestarts: 5, period: .seconds(30)),  // then escalate
        children: [
            ChildSpec(id: "cache", .process(cache),
                      shutdown: .timeout(.seconds(2))),                     // SIGTERM, 2 s, SIGKILL
            ChildSpec(id: "app", .process(app),
                      backoff: .exponential(initial: .milliseconds(100), multiplier: 2,
                                            maximum: .seconds(30), jitter: 0.1,
                                            resetAfter: .seconds(60))),
        ])
}

// MARK: - Testing a tree on the manual runtime

func testingATree() throws {
    let runtime = ManualRuntime()
    let spec = SupervisorSpec(children: [
        ChildSpec(id: "app", .process(ProcessSpec(argv: ["/srv/app/bin/app"])),
                  backoff: .exponential(initial: .seconds(1), jitter: 0)),
    ])
    let root = try Supervisor(spec, runtime: runtime, randomSeed: 42)
    root.start()
    runtime.exit("root/app", .exited(1))          // script a crash
    runtime.advance(by: .milliseconds(999))       // nothing yet: the backoff is 1 s
    precondition(runtime.worker(at: "root/app") == nil)
    runtime.advance(by: .milliseconds(1))         // now it is running again
    precondition(root.children()[0].restartCount == 1)
}

// MARK: - Writing a daemon

func daemonMain() -> Never {
    SupervisorDaemon.main { loop in workerKinds(loop: loop) }   // the tree of "The tree and its workers"
}

// MARK: - Seen and steered from outside

func controlledDaemon() throws -> ExitReason {
    var options = DaemonOptions()
    options.controlSocket = ControlSocketOptions(path: "/run/my-daemon.sock")   // 0600 by default
    return try SupervisorDaemon.run(options: options) { _ in
        SupervisorSpec(children: [
            ChildSpec(id: "db", .process(ProcessSpec(argv: ["/usr/bin/my-db"])), readiness: .notify),
            ChildSpec(id: "pool", .supervisor(.dynamic(maxChildren: 50, templates: [
                ChildSpec(id: "worker", .process(ProcessSpec(argv: ["/usr/bin/my-worker"]))),
            ]))),
        ])
    }
}

// MARK: - In the Swift server ecosystem

func runBesideOtherServices(httpServer: some Service, logger: Logger) async throws {
    let tree = SupervisorService(logger: logger) { loop in workerKinds(loop: loop) }
    let group = ServiceGroup(services: [tree, httpServer], gracefulShutdownSignals: [.sigterm], logger: logger)
    try await group.run()   // SIGTERM: httpServer stops first, then the tree in reverse order
}
