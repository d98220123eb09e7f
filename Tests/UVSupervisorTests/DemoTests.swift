import Testing
import UVSupervisor
import TestSupport

/// Runs the demo to its end and returns its exit and output lines.
private func runDemo(_ arguments: [String], loop: EventLoop) throws -> (ProcessExit?, [String]) {
    var options = ProcessOptions(argv: [demoPath] + arguments)
    options.stdout = .pipe
    options.stderr = .pipe
    var lines: [String] = []
    var ended = 0
    var exit: ProcessExit?
    _ = try ChildProcess.spawn(on: loop, options, onOutput: { output in
        switch output {
        case .line(_, let line): lines.append(line)
        case .end: ended += 1
        }
    }, onExit: { exit = $0 })
    #expect(runLoop(loop, timeout: .seconds(30)) { exit != nil && ended == 2 })
    return (exit, lines)
}

@Suite("The demo")
struct DemoTests {
    @Test("it tells the whole story and ends by itself with status 0")
    func plainRun() async throws {
        let report = try await withCheckedLoop { loop in
            let (exit, lines) = try runDemo(["--duration", "4", "--plain", "--no-color"], loop: loop)
            #expect(exit == .exited(0))
            let text = lines.joined(separator: "\n")
            #expect(text.contains("root/workers/calc-process   ✗ crashed: signaled(SIGABRT)"))
            #expect(text.contains("root/workers/calc-task      ✗ crashed: failure(job ×3 is a multiple of 3)"))
            #expect(text.contains("↻ restart in"))
            #expect(text.contains("root/db                     ‼ more than 2 restarts in 3s"))
            #expect(text.contains("(oneForAll with cache-b)"))
            #expect(text.contains("Summary"))
            #expect(!text.contains("\u{1B}["), "no colour when asked")
            // Reverse order at the end: pipeline first, workers last.
            let stops = lines.filter { $0.hasSuffix("… stopping") && $0.split(separator: " ").count == 4 }
                .compactMap { $0.split(separator: " ").dropFirst().first.map(String.init) }
                .filter { $0.split(separator: "/").count == 2 }
            #expect(stops.suffix(4) == ["root/pipeline", "root/cache", "root/db", "root/workers"])
        }
        #expect(report == .clean)
    }

    @Test("--json prints one JSON object per line; --help explains the options")
    func jsonAndHelp() async throws {
        let report = try await withCheckedLoop { loop in
            let (exit, lines) = try runDemo(["--duration", "2", "--json"], loop: loop)
            #expect(exit == .exited(0))
            #expect(!lines.isEmpty && lines.allSatisfy { $0.hasPrefix("{") && $0.hasSuffix("}") })
            #expect(lines.contains { $0.contains("\"event\":\"started\"") })
            #expect(lines.last?.contains("\"event\":\"summary\"") == true)
            let (helpExit, help) = try runDemo(["--help"], loop: loop)
            #expect(helpExit == .exited(0))
            #expect(help.contains { $0.contains("--duration SECONDS") })
            let (badExit, _) = try runDemo(["--duration", "-3"], loop: loop)
            #expect(badExit == .exited(64))
        }
        #expect(report == .clean)
    }
}
