import Testing
import UVSupervisor
import UVLoop
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Starts the daemon helper with piped stdout and collects its lines on the loop.
private final class DaemonUnderTest {
    var lines: [String] = []
    var exit: ProcessExit?
    var outputEnded = false
    private(set) var process: ChildProcess!

    init(loop: EventLoop, children: Int) throws {
        var options = ProcessOptions(argv: [daemonHelperPath, "\(children)"])
        options.stdout = .pipe
        // Weak: the loop's teardown can still deliver the pipe's end after the test let go.
        process = try ChildProcess.spawn(on: loop, options, onOutput: { [weak self] output in
            switch output {
            case .line(_, let line): self?.lines.append(line)
            case .end: self?.outputEnded = true
            }
        }, onExit: { [weak self] reason in self?.exit = reason })
    }

    func childPids() -> [String: Int32] {
        var pids: [String: Int32] = [:]
        for line in lines where line.hasPrefix("started ") {
            let parts = line.split(separator: " ")
            if parts.count == 3, let pid = Int32(parts[2]) { pids[String(parts[1])] = pid }
        }
        return pids
    }
}

@Suite("A daemon in its own process")
struct DaemonTests {
    @Test("a supervisor killed with SIGKILL leaves none of its children alive")
    func sigkillLeavesNoChildren() async throws {
        let report = try await withCheckedLoop { loop in
            let daemon = try DaemonUnderTest(loop: loop, children: 3)
            #expect(runLoop(loop) { daemon.lines.contains("ready") })
            let children = daemon.childPids()
            #expect(children.count == 3)
            #expect(children.values.allSatisfy(isAlive))
            try daemon.process.signal(SIGKILL)
            #expect(runLoop(loop) { daemon.exit != nil })
            #expect(daemon.exit == .signaled(SIGKILL))
            // The kernel delivers the parent-death signal; wait (bounded) until they are gone.
            #expect(runLoop(loop) { children.values.allSatisfy { !isAlive($0) } }, "children outlived their supervisor")
        }
        #expect(report == .clean)
    }

    @Test("SIGTERM shuts the tree down in reverse order and the daemon exits 0")
    func sigtermGraceful() async throws {
        let report = try await withCheckedLoop { loop in
            let daemon = try DaemonUnderTest(loop: loop, children: 3)
            #expect(runLoop(loop) { daemon.lines.contains("ready") })
            let children = daemon.childPids()
            try daemon.process.signal(SIGTERM)
            #expect(runLoop(loop) { daemon.exit != nil && daemon.outputEnded })
            #expect(daemon.exit == .exited(0))
            let stops = daemon.lines.filter { $0.hasPrefix("stopping ") }
            #expect(stops == ["stopping root/c2", "stopping root/c1", "stopping root/c0"])
            #expect(daemon.lines.last == "final shutdown")
            #expect(children.values.allSatisfy { !isAlive($0) })
        }
        #expect(report == .clean)
    }
}
