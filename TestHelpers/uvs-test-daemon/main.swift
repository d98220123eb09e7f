// A daemon built on the one-call API, for tests that need a supervisor in its own process:
// killing it with SIGKILL, sending it SIGTERM. It prints one line per event:
//   started <path> <pid>      stopping <path>      exited <path> <reason>      final <reason>
// Usage: uvs-test-daemon CHILDREN   (CHILDREN sleeping process children c0, c1, ...)
//        uvs-test-daemon systemd    (under a test-played systemd: see below)
//        uvs-test-daemon family     (a child with a grandchild and a setsid'd great-grandchild)
//        uvs-test-daemon pid1       (for a PID namespace: a storm of orphans and a crashing child)
//        uvs-test-daemon control PATH [MODE]   (a control socket at PATH; see below)
//        uvs-test-daemon service-group  (a ServiceLifecycle group with the tree, stopped by SIGTERM)
//        uvs-test-daemon memory tasks N
//        uvs-test-daemon memory processes N PROGRAM
//            N restarts of one crashing loop task (or of PROGRAM exiting 0), alone in this
//            process, then prints "restarts R", "rss-growth BYTES" (from the first tenth to the
//            end) and "descriptor-growth D": memory checks that no other test can disturb.
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import UVSupervisor
import UVLoop
import ServiceLifecycle
import UVSupervisorServiceLifecycle
import Logging

setvbuf(stdout, nil, _IOLBF, 0)

func residentBytes() -> Int {
    let fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 256)
    let count = read(fd, &buffer, buffer.count)
    guard count > 0 else { return 0 }
    let fields = String(decoding: buffer[0..<count], as: UTF8.self).split(separator: " ")
    return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
}

func openDescriptorCount() -> Int {
    guard let directory = opendir("/proc/self/fd") else { return -1 }
    var count = 0
    while readdir(directory) != nil { count += 1 }
    closedir(directory)
    return count
}

func measureRestarts(kind: String, restarts: Int, program: String?) throws -> Never {
    let loop = try EventLoop()
    var starts = 0
    var memoryAtTenth = 0
    var descriptorsAtTenth = 0
    func sample() {
        if starts == restarts / 10 {
            memoryAtTenth = residentBytes()
            descriptorsAtTenth = openDescriptorCount()
        }
    }
    let worker: WorkerKind
    if kind == "tasks" {
        worker = .loopTask { context in
            starts += 1
            sample()
            if starts <= restarts { context.fail("again") } else { loop.stop() }
        }
    } else {
        worker = .process(ProcessSpec(argv: [program ?? "/bin/true", "exit", "0"]))
    }
    let root = try Supervisor(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 100_000_000, period: .milliseconds(1)),
                                             children: [ChildSpec(id: "crasher", worker)]), runtime: UVRuntime(loop: loop))
    if kind != "tasks" {
        root.onEvent { event in
            guard case .started = event.kind else { return }
            starts += 1
            sample()
            if starts > restarts { loop.stop() }
        }
    }
    root.start()
    loop.run(.untilStopped)
    let memoryGrowth = residentBytes() - memoryAtTenth
    let descriptorGrowth = openDescriptorCount() - descriptorsAtTenth
    let restartCount = root.children().first?.restartCount ?? -1
    root.shutdown()
    loop.run()
    try loop.close()
    print("restarts \(restartCount)")
    print("rss-growth \(memoryGrowth)")
    print("descriptor-growth \(descriptorGrowth)")
    exit(0)
}

if CommandLine.arguments.count >= 4 && CommandLine.arguments[1] == "memory" {
    do {
        try measureRestarts(kind: CommandLine.arguments[2], restarts: Int(CommandLine.arguments[3]) ?? 1000,
                            program: CommandLine.arguments.count > 4 ? CommandLine.arguments[4] : nil)
    } catch {
        print("error \(error)")
        exit(2)
    }
}
if CommandLine.arguments.count >= 2 && CommandLine.arguments[1] == "systemd" {
    // Under a (test-played) systemd: a child that gets ready after 300 ms (READY=1 on its own
    // notify socket), and a heartbeat loop task built on the daemon's loop, as the README's.
    // SIGUSR2 blocks the loop for 1.5 s (a stalled loop must stop the watchdog pings).
    var options = DaemonOptions()
    options.logger = nil
    options.lagThreshold = .milliseconds(100)
    var blocker: SignalWatcher?
    options.configure = { root, loop in
        blocker = try? SignalWatcher(loop: loop, signal: SIGUSR2) { _ in
            print("blocking")
            usleep(1_500_000)
            print("unblocked")
        }
        root.onEvent { event in
            switch event.kind {
            case .ready: print("ready \(event.path)")
            case .supervisorStopping: print("stopping \(event.path)")
            default: break
            }
        }
        root.onTermination { _ in blocker?.close() }
    }
    let script = "import os, socket, time\na = os.environ['NOTIFY_SOCKET']\na = '\\0' + a[1:]\ntime.sleep(0.3)\n"
        + "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b'READY=1', a)\ntime.sleep(600)\n"
    do {
        let reason = try SupervisorDaemon.run(options: options) { loop in
            SupervisorSpec(children: [
                ChildSpec(id: "db", .process(ProcessSpec(argv: ["/usr/bin/env", "python3", "-c", script])), readiness: .notify),
                ChildSpec(id: "heartbeat", .loopTask { context in
                    let timer = LoopTimer(loop: loop) { context.heartbeat() }
                    try? timer.start(after: .milliseconds(100), repeating: .milliseconds(100))
                    context.onStop = { timer.close(); context.finish() }
                }),
            ])
        }
        print("final \(reason)")
        exit(reason.exitStatus)
    } catch {
        print("error \(error)")
        exit(2)
    }
}
/// Prints the events the tests read, output lines included.
func printEvents(_ root: Supervisor) {
    root.onEvent { event in
        switch event.kind {
        case .started(let pid): print("started \(event.path) \(pid ?? 0)")
        case .stopping: print("stopping \(event.path)")
        case .exited(let reason): print("exited \(event.path) \(reason)")
        case .output(_, let line): print("output \(event.path) \(line)")
        case .supervisorStarted where event.path == "root": print("ready")
        default: break
        }
    }
}

if CommandLine.arguments.count >= 2 && ["family", "pid1"].contains(CommandLine.arguments[1]) {
    var options = DaemonOptions()
    options.logger = nil
    options.configure = { root, _ in printEvents(root) }
    var children: [ChildSpec] = []
    if CommandLine.arguments[1] == "family" {
        // A child with a grandchild in its group and a great-grandchild that left for a
        // session of its own (setsid): none may survive a SIGKILLed daemon.
        var family = ProcessSpec(argv: ["/bin/sh", "-c", """
            sleep 600 & echo "grandchild $!"
            sh -c 'setsid sleep 601 & echo "great-grandchild $!"; exec sleep 602' & echo "grandchild $!"
            exec sleep 603
            """])
        family.stdout = .capture
        children = [ChildSpec(id: "family", .process(family))]
    } else {
        // PID 1 of a PID namespace: a storm of orphans (each subshell exits and leaves its
        // sleep to PID 1) while another child crashes and is restarted over and over.
        // It ignores SIGHUP (as do its sleeps), so that the forwarded SIGHUP cannot restart it
        // just when the test stops the tree and checks the order of the stops.
        var storm = ProcessSpec(argv: ["/bin/sh", "-c", "trap '' HUP; i=0; while [ $i -lt 40 ]; do (sleep 0.01 &); i=$((i+1)); sleep 0.02; done; echo storm done; exec sleep 600"])
        storm.stdout = .capture
        let crasher = ProcessSpec(argv: ["/bin/sh", "-c", "sleep 0.02; exit 1"])
        // Says "hangup" for each SIGHUP: a container runtime signals PID 1 only, and PID 1
        // passes it on to its workers.
        var hangupListener = ProcessSpec(argv: ["/bin/sh", "-c", "trap 'echo hangup' HUP; echo listening; while :; do sleep 0.05; done"])
        hangupListener.stdout = .capture
        children = [
            ChildSpec(id: "storm", .process(storm)),
            ChildSpec(id: "crasher", .process(crasher)),
            ChildSpec(id: "last", .process(hangupListener)),
        ]
    }
    do {
        let reason = try SupervisorDaemon.run(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 10_000, period: .seconds(1)),
                                                             children: children), options: options)
        print("final \(reason)")
        exit(reason.exitStatus)
    } catch {
        print("error \(error)")
        exit(2)
    }
}

if CommandLine.arguments.count >= 2 && CommandLine.arguments[1] == "environ" {
    // A child restarted with its kept argv and environment (the daemon's cookie is an override,
    // so the block is built from environ): a variable this process sets after two starts must
    // reach the next ones. In a process of its own, as setenv is not thread-safe against the
    // other tests' spawns.
    var options = DaemonOptions()
    options.logger = nil
    var starts = 0
    options.configure = { root, _ in
        root.onEvent { event in
            switch event.kind {
            case .output(_, let line):
                print("output \(line)")
                starts += 1
                if starts == 2 { setenv("UVS_ENVIRON_TEST", "set", 1) }
                if starts == 4 { unsetenv("UVS_ENVIRON_TEST") }
                if starts == 6 { root.shutdown() }
            default: break
            }
        }
    }
    unsetenv("UVS_ENVIRON_TEST")
    var echo = ProcessSpec(argv: ["/bin/sh", "-c", "echo \"value=$UVS_ENVIRON_TEST\"; exit 1"])
    echo.stdout = .capture
    var child = ChildSpec(id: "echo", .process(echo))
    child.backoff = Backoff(initial: .milliseconds(100), multiplier: 1, maximum: .milliseconds(100), jitter: 0, resetAfter: .seconds(60))
    do {
        let reason = try SupervisorDaemon.run(SupervisorSpec(intensity: RestartIntensity(maxRestarts: 10_000, period: .seconds(1)),
                                                             children: [child]), options: options)
        print("final \(reason)")
        exit(0)
    } catch {
        print("error \(error)")
        exit(2)
    }
}

if CommandLine.arguments.count >= 3 && CommandLine.arguments[1] == "control" {
    // Serves a control socket at the given path: db (sleeps), crasher (crash-loops every
    // 200 ms), pool (a dynamic supervisor with a "worker" template), and late, which gets
    // ready (READY=1 by systemd-notify) 1.5 s after it starts, so that `uvsctl ready` says no
    // first and yes later. A fourth argument sets the socket's mode (octal).
    var options = DaemonOptions()
    options.logger = nil
    var socket = ControlSocketOptions(path: CommandLine.arguments[2])
    if CommandLine.arguments.count >= 4, let mode = UInt32(CommandLine.arguments[3], radix: 8) { socket.mode = mode }
    socket.maxClients = 16
    if let idle = getenv("UVS_TEST_IDLE_MS").flatMap({ Int(String(cString: $0)) }) { socket.idleTimeout = .milliseconds(idle) }
    options.controlSocket = socket
    options.configure = { root, _ in
        printEvents(root)
        print("listening")
    }
    var crasher = ProcessSpec(argv: ["/bin/sh", "-c", "sleep 0.2; echo crashing; exit 3"])
    crasher.stdout = .capture
    let late = ProcessSpec(argv: ["/bin/sh", "-c", "sleep 1.5; systemd-notify --ready; exec sleep 600"])
    let pool = SupervisorSpec.dynamic(maxChildren: 100, templates: [
        ChildSpec(id: "worker", .process(ProcessSpec(argv: ["/bin/sleep", "600"]))),
    ])
    SupervisorDaemon.main(options: options) { _ in
        SupervisorSpec(intensity: RestartIntensity(maxRestarts: 1000, period: .seconds(1)), children: [
            ChildSpec(id: "db", .process(ProcessSpec(argv: ["/bin/sleep", "600"]))),
            ChildSpec(id: "crasher", .process(crasher), backoff: .none),
            ChildSpec(id: "pool", .supervisor(pool)),
            ChildSpec(id: "late", .process(late), readiness: .notify),
        ])
    }
}

if CommandLine.arguments.count >= 2 && CommandLine.arguments[1] == "service-group" {
    // A ServiceGroup with the tree and another service, SIGTERM as its graceful shutdown
    // signal: the other service stops first (reverse order), then the tree in reverse order.
    struct OtherService: Service {
        func run() async throws {
            print("other running")
            try? await gracefulShutdown()
            print("other stopped")
        }
    }
    let tree = SupervisorService(configure: { root, _ in
        root.onEvent { event in
            switch event.kind {
            case .stopping: print("stopping \(event.path)")
            case .supervisorStarted where event.path == "root": print("tree started")
            default: break
            }
        }
    }) { _ in
        SupervisorSpec(children: [
            ChildSpec(id: "c0", .process(ProcessSpec(argv: ["/bin/sleep", "600"]))),
            ChildSpec(id: "c1", .process(ProcessSpec(argv: ["/bin/sleep", "600"]))),
        ])
    }
    let group = ServiceGroup(services: [tree, OtherService()], gracefulShutdownSignals: [.sigterm],
                             logger: Logger(label: "group", factory: { _ in SwiftLogNoOpLogHandler() }))
    do {
        try await group.run()
        print("group done")
        exit(0)
    } catch {
        print("group failed \(error)")
        exit(1)
    }
}

if CommandLine.arguments.count >= 2 && CommandLine.arguments[1] == "main" {
    // SupervisorDaemon.main's exit statuses: a child that ignores SIGTERM, so a second SIGINT
    // has to force the stop (130).
    var options = DaemonOptions()
    options.logger = nil
    options.configure = { root, _ in printEvents(root) }
    var stubborn = ProcessSpec(argv: ["/bin/sh", "-c", "trap '' TERM INT; echo trapped; while :; do sleep 1; done"])
    stubborn.stdout = .capture
    SupervisorDaemon.main(options: options) { _ in
        SupervisorSpec(children: [ChildSpec(id: "stubborn", .process(stubborn))])
    }
}

let count = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 3 : 3
let children = (0..<count).map { index in
    ChildSpec(id: "c\(index)", .process(ProcessSpec(argv: ["/bin/sleep", "600"])), shutdown: .timeout(.seconds(2)))
}
var options = DaemonOptions()
options.configure = { root, _ in
    root.onEvent { event in
        switch event.kind {
        case .started(let pid): print("started \(event.path) \(pid ?? 0)")
        case .stopping: print("stopping \(event.path)")
        case .exited(let reason): print("exited \(event.path) \(reason)")
        case .supervisorStarted: print("ready")
        default: break
        }
    }
}
do {
    let reason = try SupervisorDaemon.run(SupervisorSpec(children: children), options: options)
    print("final \(reason)")
    exit(reason.exitStatus)
} catch {
    print("error \(error)")
    exit(2)
}
