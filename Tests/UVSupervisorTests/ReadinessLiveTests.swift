#if canImport(Glibc)
import Glibc
#endif
import CUVShims
import Testing
import TestSupport
import UVLoop
import UVSupervisor
import DispatchSupervisor

/// A Python child speaking systemd's notify protocol by hand: `NOTIFY_SOCKET` with its
/// abstract `@` name, `script` run with `send(bytes)` defined.
private func pythonNotifier(_ script: String) -> ProcessSpec {
    let prelude = """
    import os, socket, sys, time
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\\0" + address[1:]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    def send(data):
        sock.sendto(data, address)

    """
    var spec = ProcessSpec(argv: ["/usr/bin/env", "python3", "-u", "-c", prelude + script])
    spec.stdout = .capture
    return spec
}

private func startTime(_ tree: LiveTree, _ path: String, occurrence: Int = 0) -> Int64? {
    tree.events.filter { $0.path == path && { if case .started = $0.kind { return true } else { return false } }($0) }
        .dropFirst(occurrence).first?.time
}

private func readyEvent(_ tree: LiveTree, _ path: String) -> (time: Int64, after: Duration)? {
    for event in tree.events where event.path == path {
        if case .ready(let after) = event.kind { return (event.time, after) }
    }
    return nil
}

private let sleeper = ProcessSpec(argv: ["/bin/sleep", "60"])

private func livenessFailures(_ tree: LiveTree, _ path: String) -> Int {
    tree.events.filter { event in
        guard event.path == path, case .livenessFailed = event.kind else { return false }
        return true
    }.count
}

@Suite("Readiness and liveness with real programs")
struct ReadinessLiveTests {
    @Test("a Python child that sends READY=1 after 300 ms gates its sibling's start; its STATUS= shows")
    func pythonReadyGatesSibling() async throws {
        let report = try await withCheckedLoop { loop in
            let db = pythonNotifier("time.sleep(0.3)\nsend(b'STATUS=warming up\\nREADY=1')\ntime.sleep(60)")
            let tree = try LiveTree(loop, SupervisorSpec(children: [
                ChildSpec(id: "db", .process(db), readiness: .notify),
                ChildSpec(id: "app", .process(sleeper)),
            ]))
            tree.root.start()
            #expect(tree.run { startTime(tree, "root/app") != nil })
            let ready = try #require(readyEvent(tree, "root/db"))
            #expect(ready.after >= .milliseconds(300))
            #expect(try #require(startTime(tree, "root/app")) >= ready.time, "app started after db was ready")
            #expect(tree.status("db")?.statusText == "warming up")
            #expect(tree.status("db")?.ready == true)
            _ = tree.stop()
        }
        #expect(report == .clean)
    }

    @Test("systemd-notify --ready from a shell child works unchanged (a helper in the child's session)")
    func systemdNotify() async throws {
        let report = try await withCheckedLoop { loop in
            let shell = ProcessSpec(argv: ["/bin/sh", "-c", "sleep 0.1; systemd-notify --ready --status=serving; exec sleep 60"])
            let tree = try LiveTree(loop, SupervisorSpec(children: [
                ChildSpec(id: "svc", .process(shell), readiness: .notify),
                ChildSpec(id: "after", .process(sleeper)),
            ]))
            tree.root.start()
            #expect(tree.run { startTime(tree, "root/after") != nil })
            #expect(readyEvent(tree, "root/svc") != nil)
            #expect(tree.status("svc")?.statusText == "serving")
            _ = tree.stop()
        }
        #expect(report == .clean)
    }

    @Test("a child that never gets ready fails its start at readyTimeout and is restarted with backoff")
    func neverReady() async throws {
        let report = try await withCheckedLoop { loop in
            let tree = try LiveTree(loop, SupervisorSpec(intensity: RestartIntensity(maxRestarts: 10, period: .seconds(60)), children: [
                ChildSpec(id: "mute", .process(sleeper), shutdown: .timeout(.seconds(1)),
                          backoff: .exponential(initial: .milliseconds(100), jitter: 0),
                          readiness: .notify, readyTimeout: .milliseconds(300)),
            ]))
            tree.root.start()
            #expect(tree.run { startTime(tree, "root/mute", occurrence: 1) != nil })
            let exits = tree.events.compactMap { event -> ExitReason? in
                if event.path == "root/mute", case .exited(let reason) = event.kind { return reason }
                return nil
            }
            guard case .startFailed(let why)? = exits.first else { Issue.record("no failed start: \(exits)"); return }
            #expect(why.contains("not ready within 300ms"))
            let first = try #require(startTime(tree, "root/mute"))
            let second = try #require(startTime(tree, "root/mute", occurrence: 1))
            #expect(second - first >= 400_000_000, "300 ms of waiting, then 100 ms of backoff")
            _ = tree.stop()
        }
        #expect(report == .clean)
    }

    @Test("python3 -m http.server with a TCP readiness probe: the dependant starts once the port accepts")
    func httpServerProbe() async throws {
        let report = try await withCheckedLoop { loop in
            let port = try #require(freeLoopbackPort())
            let server = ProcessSpec(argv: ["/usr/bin/env", "python3", "-m", "http.server", "\(port)", "--bind", "127.0.0.1"])
            var web = ChildSpec(id: "web", .process(server))
            web.readiness = .probe(.tcp(port: port, interval: .milliseconds(50), timeout: .milliseconds(500)))
            let tree = try LiveTree(loop, SupervisorSpec(children: [web, ChildSpec(id: "client", .process(sleeper))]))
            tree.root.start()
            #expect(tree.run { startTime(tree, "root/client") != nil })
            let ready = try #require(readyEvent(tree, "root/web"))
            #expect(try #require(startTime(tree, "root/client")) >= ready.time)
            #expect(canConnect(port: port), "the port accepts once the dependant runs")
            _ = tree.stop()
        }
        #expect(report == .clean)
    }

    @Test("a command readiness probe: ready once the command exits 0")
    func commandProbe() async throws {
        let directory = makeTemporaryDirectory()
        let flag = directory + "/up"
        let report = try await withCheckedLoop { loop in
            var spec = ChildSpec(id: "svc", .process(ProcessSpec(argv: ["/bin/sh", "-c", "sleep 0.2; : > \(flag); exec sleep 60"])))
            spec.readiness = .probe(.command(["/bin/test", "-e", flag], interval: .milliseconds(50)))
            let tree = try LiveTree(loop, SupervisorSpec(children: [spec, ChildSpec(id: "next", .process(sleeper))]))
            tree.root.start()
            #expect(tree.run { startTime(tree, "root/next") != nil })
            #expect(try #require(readyEvent(tree, "root/svc")).after >= .milliseconds(200))
            _ = tree.stop()
        }
        unlink(flag)
        rmdir(directory)
        #expect(report == .clean)
    }

    @Test("s6-style readiness: a newline on descriptor 3")
    func descriptorReadiness() async throws {
        let report = try await withCheckedLoop { loop in
            let shell = ProcessSpec(argv: ["/bin/sh", "-c", "sleep 0.2; echo >&3; exec 3>&-; exec sleep 60"])
            let tree = try LiveTree(loop, SupervisorSpec(children: [
                ChildSpec(id: "svc", .process(shell), readiness: .descriptor(3)),
                ChildSpec(id: "after", .process(sleeper)),
            ]))
            tree.root.start()
            #expect(tree.run { startTime(tree, "root/after") != nil })
            #expect(try #require(readyEvent(tree, "root/svc")).after >= .milliseconds(200))
            _ = tree.stop()
        }
        #expect(report == .clean)
    }

    @Test("a SIGSTOPped child stops its WATCHDOG=1 pings: found and replaced within the interval plus the shutdown timeout")
    func stoppedChildReplaced() async throws {
        let report = try await withCheckedLoop { loop in
            // Pings every 50 ms against a 500 ms watchdog: a scheduling hiccup of a loaded
            // machine is not a missed ping. The watchdog starts at READY=1, as systemd's does.
            let pinger = pythonNotifier("""
            assert int(os.environ["WATCHDOG_USEC"]) == 500000
            send(b"READY=1")
            while True:
                send(b"WATCHDOG=1")
                time.sleep(0.05)
            """)
            let tree = try LiveTree(loop, SupervisorSpec(children: [
                ChildSpec(id: "worker", .process(pinger), shutdown: .timeout(.milliseconds(200)),
                          readiness: .notify, liveness: .watchdog(.milliseconds(500))),
            ]))
            tree.root.start()
            #expect(tree.run { tree.status("worker")?.ready == true })
            // Alive while it pings: a second passes without a failure.
            // (Each ping wakes the loop, so this polls at least every 50 ms.)
            let quietUntil = EventLoop.hrtime() + 1_000_000_000
            while EventLoop.hrtime() < quietUntil && livenessFailures(tree, "root/worker") == 0 { loop.run(.once) }
            let failedWhilePinging = livenessFailures(tree, "root/worker") > 0
            #expect(!failedWhilePinging, "no failure while it pings: \(tree.events.filter { $0.path == "root/worker" }.map { "\($0.time / 1_000_000) \($0.kind)" })")
            let pid = try #require(tree.status("worker")?.pid)
            let stoppedAt = EventLoop.hrtime()
            kill(pid, SIGSTOP)
            #expect(tree.run(timeout: .seconds(10)) { startTime(tree, "root/worker", occurrence: 1) != nil })
            let replacedAfter = Double(EventLoop.hrtime() - stoppedAt) / 1e9
            #expect(replacedAfter < 0.5 + 0.2 + 1.0, "interval + shutdown timeout, with a second of slack: \(replacedAfter) s")
            let events = tree.events.filter { $0.path == "root/worker" }.map(\.kind)
            #expect(events.contains(.killed), "a stopped process ignores SIGTERM: killed at the timeout")
            #expect(events.contains(.exited(.unresponsive("watchdog: no WATCHDOG=1 within 500ms"))))
            _ = tree.stop()
        }
        #expect(report == .clean)
    }

    @Test("bad input: a foreign sender, 64 KiB of garbage, binary garbage, READY=1 twice, WATCHDOG=1 without a watchdog")
    func hostileDatagrams() async throws {
        let report = try await withCheckedLoop { loop in
            let child = pythonNotifier("""
            print(os.environ["NOTIFY_SOCKET"], flush=True)
            sys.stdin = None
            time.sleep(0.2)
            send(b"X" * 65536)
            send(b"\\xff\\xfe\\x00garbage")
            send(b"READY=1")
            send(b"READY=1")
            send(b"WATCHDOG=1")
            send(b"STATUS=done")
            time.sleep(60)
            """)
            let runtime = UVRuntime(loop: loop)
            let root = try Supervisor(SupervisorSpec(children: [ChildSpec(id: "c", .process(child), readiness: .notify)]), runtime: runtime)
            var events: [SupervisorEvent] = []
            root.onEvent { events.append($0) }
            root.start()
            var socketName: String?
            #expect(runLoop(loop) {
                for event in events { if case .output(_, let line) = event.kind { socketName = line } }
                return socketName != nil
            })
            // From this process: not the child, not in its session.
            let name = String(try #require(socketName).dropFirst())   // without the "@"
            let sent = "READY=1".withCString { cuvs_notify_send(name, $0, 7) }
            #expect(sent == 0)
            #expect(runLoop(loop) { root.children().first?.statusText == "done" && runtime.droppedNotifications.total >= 3 })
            var expected = DroppedNotifications()
            expected.foreign = 1
            expected.oversized = 1
            expected.malformed = 1
            #expect(runtime.droppedNotifications == expected)
            #expect(events.filter { if case .ready = $0.kind { return true }; return false }.count == 1)
            #expect(root.children().first?.restartCount == 0, "nothing failed the child")
            root.shutdown(within: .seconds(5))
            #expect(runLoop(loop) { root.finalReason != nil })
        }
        #expect(report == .clean)
    }

    @Test("an async task gets ready with SupervisedTask.ready(); its sibling waits")
    func asyncTaskReady() async throws {
        let report = try await withCheckedLoop { loop in
            let tree = try LiveTree(loop, SupervisorSpec(children: [
                ChildSpec(id: "task", .asyncTask {
                    // No Task.sleep: its timers are dispatch's, whose descriptors are made lazily
                    // (per clock and queue) and would read as a leak here. Loop turns instead.
                    for _ in 0..<200 { await Task.yield() }
                    SupervisedTask.status("loaded")
                    SupervisedTask.ready()
                    let (stop, keep) = AsyncStream<Void>.makeStream()
                    for await _ in stop {}   // until cancelled: the stop request
                    keep.finish()
                }, readiness: .notify),
                ChildSpec(id: "after", .process(sleeper)),
            ]))
            tree.root.start()
            #expect(tree.run { startTime(tree, "root/after") != nil })
            let ready = try #require(readyEvent(tree, "root/task"))
            #expect(try #require(startTime(tree, "root/after")) >= ready.time, "after waited for the task")
            #expect(tree.status("task")?.statusText == "loaded")
            _ = tree.stop()
        }
        #expect(report == .clean)
    }
}

/// A loopback TCP port nobody listens on right now.
private func freeLoopbackPort() -> UInt16? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    return bound ? UInt16(bigEndian: address.sin_port) : nil
}

/// Whether a TCP connection to 127.0.0.1:`port` succeeds now (blocking, loopback).
private func canConnect(port: UInt16) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    address.sin_port = port.bigEndian
    return withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

@Suite("Readiness on every runtime")
struct ReadinessOnEveryRuntimeTests {
    private static func startOrder(_ events: [SupervisorEvent]) -> [String] {
        events.compactMap { if case .started = $0.kind { return $0.path } else { return nil } }
    }

    @Test("READY=1 from a Python child gates its sibling; STATUS= shows", arguments: RuntimeKind.allCases)
    func notifyGates(kind: RuntimeKind) async throws {
        let report = try await withLiveHarness(kind) { harness in
            let db = pythonNotifier("time.sleep(0.2)\nsend(b'STATUS=up\\nREADY=1')\ntime.sleep(60)")
            try harness.start(SupervisorSpec(children: [
                ChildSpec(id: "db", .process(db), readiness: .notify),
                ChildSpec(id: "app", .process(sleeper)),
            ]))
            #expect(harness.run { _, events in Self.startOrder(events).contains("root/app") })
            #expect(harness.onRuntime { _, events in Self.startOrder(events) } == ["root/db", "root/app"])
            let readyAfter = harness.onRuntime { _, events in
                events.compactMap { if case .ready(let after) = $0.kind { return after } else { return nil } }.first
            }
            #expect(try #require(readyAfter) >= .milliseconds(200))
            #expect(harness.status("db")?.statusText == "up")
        }
        #expect(report == .clean)
    }

    @Test("a newline on the readiness descriptor gates the sibling", arguments: RuntimeKind.allCases)
    func descriptorGates(kind: RuntimeKind) async throws {
        let report = try await withLiveHarness(kind) { harness in
            let shell = ProcessSpec(argv: ["/bin/sh", "-c", "sleep 0.1; echo >&4; exec 4>&-; exec sleep 60"])
            try harness.start(SupervisorSpec(children: [
                ChildSpec(id: "svc", .process(shell), readiness: .descriptor(4)),
                ChildSpec(id: "after", .process(sleeper)),
            ]))
            #expect(harness.run { _, events in Self.startOrder(events).contains("root/after") })
            #expect(harness.status("svc")?.ready == true)
        }
        #expect(report == .clean)
    }

    @Test("a command probe gates the sibling; a never-ready child fails its start", arguments: RuntimeKind.allCases)
    func probesAndTimeout(kind: RuntimeKind) async throws {
        let report = try await withLiveHarness(kind) { harness in
            var probed = ChildSpec(id: "probed", .process(sleeper))
            probed.readiness = .probe(.command(["/bin/true"], interval: .milliseconds(20)))
            try harness.start(SupervisorSpec(children: [
                probed,
                ChildSpec(id: "mute", .process(sleeper), readiness: .notify, readyTimeout: .milliseconds(200)),
                ChildSpec(id: "last", .process(sleeper)),
            ]))
            #expect(harness.run { _, events in Self.startOrder(events).contains("root/last") })
            let muteExit = harness.onRuntime { _, events in
                events.compactMap { event -> ExitReason? in
                    if event.path == "root/mute", case .exited(let reason) = event.kind { return reason }
                    return nil
                }.first
            }
            guard case .startFailed(let why)? = muteExit else { Issue.record("no failed start: \(String(describing: muteExit))"); return }
            #expect(why.contains("not ready within 200ms"))
        }
        #expect(report == .clean)
    }
}

@Suite("Readiness regressions on the Dispatch runtime")
struct DispatchReadinessRegressionTests {
    @Test("a readiness pipe closed by the child (s6's echo >&3; exec 3>&-) is closed once: descriptors opened since stay open")
    func pipeClosedOnce() async throws {
        let stillOpen = try await ExclusiveResources.run { () throws -> Bool in
            let runtime = DispatchRuntime()
            let events = LockedEvents()
            let shell = ProcessSpec(argv: ["/bin/sh", "-c", "echo >&3; exec 3>&-; sleep 0.3"])
            let root: Supervisor = try runtime.queue.sync {
                let root = try Supervisor(SupervisorSpec(children: [
                    ChildSpec(id: "svc", .process(shell), restart: .temporary, readiness: .descriptor(3)),
                ]), runtime: runtime)
                root.onEvent { events.append($0.kind) }
                root.start()
                return root
            }
            #expect(events.wait { $0.contains { if case .ready = $0 { return true } else { return false } } })
            // The child closed its end: the read end saw EOF and was closed. Open descriptors now;
            // one of them may reuse that number.
            runtime.queue.sync {}
            let mine = (0..<8).map { _ in open("/dev/null", O_RDONLY | O_CLOEXEC) }
            defer { mine.forEach { close($0) } }
            #expect(events.wait { $0.contains { if case .exited = $0 { return true } else { return false } } })
            runtime.queue.sync { withExtendedLifetime(root) {} }
            return mine.allSatisfy { fcntl($0, F_GETFD) >= 0 }
        }
        #expect(stillOpen, "a descriptor of ours was closed behind our back")
    }
}

/// Events gathered on a Dispatch queue, waited for from the test's thread.
private final class LockedEvents: @unchecked Sendable {
    private var kinds: [SupervisorEvent.Kind] = []
    private let lock = NSLockLike()

    func append(_ kind: SupervisorEvent.Kind) { lock.withLock { kinds.append(kind) } }

    /// Polls (every 10 ms, at most 10 s) until `condition` holds on the events so far.
    func wait(_ condition: ([SupervisorEvent.Kind]) -> Bool) -> Bool {
        for _ in 0..<1000 {
            if lock.withLock({ condition(kinds) }) { return true }
            usleep(10_000)
        }
        return false
    }
}

/// A pthread mutex (the tests use no Foundation).
private final class NSLockLike: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func withLock<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body()
    }
}
