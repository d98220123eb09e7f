import Testing
import UVSupervisor
import UVLoop
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

/// `  1.25s root/...` -> 1.25, for event lines.
private func leadingSeconds(_ line: String) -> Double? {
    let first = line.split(separator: " ").first ?? ""
    guard first.hasSuffix("s"), first.contains("."), let value = Double(first.dropLast()) else { return nil }
    return value
}

/// `{"time":1.25,...` -> 1.25.
private func jsonSeconds(_ line: String) -> Double? {
    guard let start = line.firstRange(of: "\"time\":") else { return nil }
    let rest = line[start.upperBound...]
    let number = rest.prefix { (character: Character) -> Bool in
        character == "." || character == "-" || character == "e" || character.isNumber
    }
    return Double(String(number))
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
            // Ready and alive: store says READY=1 after loading, api starts only then; monitor
            // hangs once and its watchdog has it replaced.
            let storeReady = lines.firstIndex { $0.contains("root/service/store") && $0.contains("✓ ready after") }
            let apiStarted = lines.firstIndex { $0.contains("root/service/api") && $0.contains("▶ started") }
            #expect(storeReady != nil && apiStarted != nil && storeReady! < apiStarted!, "api waits for store")
            #expect(text.contains("root/service/monitor        ✗ unresponsive: watchdog: no heartbeat() within 1s"))
            #expect(text.contains("Summary"))
            #expect(!text.contains("\u{1B}["), "no colour when asked")
            // Reverse order at the end: pipeline first, workers last.
            let stops = lines.filter { $0.hasSuffix("… stopping") && $0.split(separator: " ").count == 4 }
                .compactMap { $0.split(separator: " ").dropFirst().first.map(String.init) }
                .filter { $0.split(separator: "/").count == 2 }
            #expect(stops.suffix(4) == ["root/pipeline", "root/cache", "root/db", "root/workers"])
            // Every event line starts with the seconds since the start: small, never wrapped
            // around (the first events once read 18446744073.71s), and in order.
            let times = lines.compactMap(leadingSeconds)
            #expect(times.count > 20)
            #expect(times.allSatisfy { $0 >= 0 && $0 < 30 }, "times: \(times.filter { $0 < 0 || $0 >= 30 })")
            #expect(times == times.sorted())
            #expect(times.last.map { $0 >= 3.9 } == true, "the story lasts its duration")
        }
        #expect(report == .clean)
    }

    @Test("the live view keeps the legend and the narrator's lines on screen and ends with the real time")
    func liveView() async throws {
        let report = try await withCheckedLoop { loop in
            let (exit, lines) = try runDemo(["--duration", "3", "--live", "--no-color"], loop: loop)
            #expect(exit == .exited(0))
            let text = lines.joined(separator: "\n")
            let frames = text.split(separator: "\u{1B}[H\u{1B}[2J", omittingEmptySubsequences: false).map(String.init)
            #expect(frames.count > 5, "frames are redrawn")
            let last = frames.last ?? ""
            #expect(last.contains("A supervision tree on one libuv loop"), "the legend stays in the header")
            #expect(last.contains("Time is up: graceful shutdown"), "the closing narration is on the last frame")
            #expect(!last.contains("0s / 0s"))
            #expect(last.contains(" / 3s"))
            let header = last.split(separator: "\n").first.map(String.init) ?? ""
            let shown = header.split(separator: " ").first { $0.hasSuffix("s") && Int($0.dropLast()) != nil }
            #expect(shown.flatMap { Int($0.dropLast()) }.map { $0 >= 3 && $0 < 30 } == true, "header: \(header)")
            #expect(last.contains("Summary"))
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
            let times = lines.compactMap(jsonSeconds)
            #expect(times.count > 10)
            #expect(times.allSatisfy { $0 >= 0 && $0 < 30 }, "times: \(times.filter { $0 < 0 || $0 >= 30 })")
            #expect(times.last.map { $0 >= 1.9 } == true)
            let (helpExit, help) = try runDemo(["--help"], loop: loop)
            #expect(helpExit == .exited(0))
            #expect(help.contains { $0.contains("--duration SECONDS") })
            let (badExit, _) = try runDemo(["--duration", "-3"], loop: loop)
            #expect(badExit == .exited(64))
        }
        #expect(report == .clean)
    }
}
