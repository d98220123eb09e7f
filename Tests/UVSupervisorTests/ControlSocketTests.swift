import Testing
import UVSupervisor
@testable import UVLoop
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The path of the built `uvsctl`.
private let uvsctlPath = buildDirectory + "/uvsctl"

/// Runs `argv` to its end on `loop` (bounded), collecting its output.
private func runCommand(_ loop: EventLoop, _ argv: [String], timeout: Duration = .seconds(15)) throws -> CommandResult {
    let result = try runCommandToEnd(loop, argv, timeout: timeout)
    #expect(result.finished, "\(argv) did not finish")
    return result
}

/// A long-running client's output, filled in by its callbacks.
private final class CommandBox {
    var value = CommandResult()
}

/// `uvsctl ARGS --socket PATH`, optionally as another user (`setpriv`).
private func uvsctl(_ loop: EventLoop, _ socket: String, _ arguments: [String], asUser user: String? = nil) throws -> CommandResult {
    // The socket option right after the subcommand: whatever follows `--` belongs to the child.
    let command = [uvsctlPath] + arguments.prefix(1) + ["--socket", socket] + arguments.dropFirst()
    guard let user else { return try runCommand(loop, command) }
    return try runCommand(loop, ["/usr/bin/setpriv", "--reuid=\(user)", "--regid=nogroup", "--clear-groups"] + command)
}

/// The test daemon serving a control socket, its standard output collected.
private func controlledDaemon(_ loop: EventLoop, socket: String, mode: String? = nil,
                              environment: [String: String?] = [:]) throws -> BackgroundCommand {
    try BackgroundCommand(loop, [daemonHelperPath, "control", socket] + (mode.map { [$0] } ?? []),
                          collecting: .standardOutput, environment: environment)
}

/// A directory others may traverse (for the `nobody` client), with the socket's path in it.
private func socketInSharedDirectory() -> (directory: String, socket: String) {
    let directory = makeTemporaryDirectory()
    chmod(directory, 0o755)
    return (directory, directory + "/control.sock")
}

/// Restart count of `path` in a `uvsctl status --json` tree.
private func restarts(of path: String, in json: String) -> Int64? {
    guard let tree = try? JSONValue.parse(json) else { return nil }
    func find(_ node: JSONValue) -> JSONValue? {
        if node["path"]?.stringValue == path { return node }
        for child in node["children"]?.arrayValue ?? [] { if let found = find(child) { return found } }
        return nil
    }
    return find(tree)?["restarts"]?.integerValue
}

private func descriptorCount(of pid: Int32) -> Int {
    guard let directory = opendir("/proc/\(pid)/fd") else { return -1 }
    defer { closedir(directory) }
    var count = 0
    while readdir(directory) != nil { count += 1 }
    return count - 2
}

/// The `SigIgn` mask of a process.
private func ignoredSignals(of pid: Int32) -> UInt64 {
    let status = readSmallFile("/proc/\(pid)/status") ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("SigIgn:") } ?? ""
    return UInt64(line.split(separator: "\t").last ?? "", radix: 16) ?? UInt64.max
}

private func residentKilobytes(of pid: Int32) -> Int {
    let status = readSmallFile("/proc/\(pid)/status") ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
}

@Suite("Control socket and uvsctl", .serialized)
struct ControlSocketTests {
    @Test("uvsctl against a real daemon: status while a child crash-loops, restart/stop/start by path, spawn from a template, ready and live exit codes, events follow, errors for unknown paths and a missing socket")
    func uvsctlEndToEnd() async throws {
        let report = try await withCheckedLoop { loop in
            try runEndToEnd(loop)
        }
        #expect(report == .clean)
    }

    @Test("a peer that is not the daemon's uid or root is refused: by the socket's 0600 mode, and by SO_PEERCRED when the mode lets it connect")
    func unauthorisedPeer() async throws {
        let report = try await withCheckedLoop { loop in
            try runUnauthorised(loop)
        }
        #expect(report == .clean)
    }

    @Test("two daemons started at once on a stale socket: exactly one serves it; a stuck daemon (stopped, its queue full) makes uvsctl give up at its timeout and a second daemon refuse at once")
    func contention() async throws {
        let report = try await withCheckedLoop { loop in
            try runContention(loop)
        }
        #expect(report == .clean)
    }

    @Test("a silent client is disconnected after the idle timeout; a follower and a client that keeps asking are not")
    func idleClients() async throws {
        let report = try await withCheckedLoop { loop in
            try runIdle(loop)
        }
        #expect(report == .clean)
    }

    @Test("hostile clients: malformed JSON, a 10 MB line, a client that never reads, 1,000 clients at once, disconnects mid-request; the daemon keeps supervising, its descriptors return and its memory stays bounded")
    func hostileClients() async throws {
        let report = try await withCheckedLoop { loop in
            try runHostile(loop)
        }
        #expect(report == .clean)
    }
}

private func startDaemon(_ loop: EventLoop, socket: String, mode: String? = nil,
                         environment: [String: String?] = [:]) throws -> BackgroundCommand {
    let daemon = try controlledDaemon(loop, socket: socket, mode: mode, environment: environment)
    let listening = runLoop(loop) { daemon.lines.contains("listening") || daemon.exit != nil }
    #expect(listening && daemon.exit == nil, "the daemon did not come up: \(daemon.lines)")
    return daemon
}

private func stopDaemon(_ loop: EventLoop, _ daemon: BackgroundCommand) throws {
    if daemon.exit == nil { try daemon.process.signal(SIGTERM) }
    let stopped = runLoop(loop) { daemon.exit != nil && daemon.ended }
    #expect(stopped)
}

private func runEndToEnd(_ loop: EventLoop) throws {
    let (directory, socket) = socketInSharedDirectory()
    defer { rmdir(directory) }
    let daemon = try startDaemon(loop, socket: socket)

    // Not ready until root/late says READY=1 (1.5 s after its start).
    let early = try uvsctl(loop, socket, ["ready"])
    #expect(early.exit == .exited(1), "\(early)")
    #expect(early.err.joined().contains("root/late"), "\(early.err)")
    let live = try uvsctl(loop, socket, ["live"])
    #expect(live.exit == .exited(0) && live.out.first?.hasPrefix("live") == true, "\(live)")

    // status while root/crasher crash-loops: its restart count grows between two asks.
    let table = try uvsctl(loop, socket, ["status"])
    #expect(table.exit == .exited(0))
    #expect(table.out.first?.hasPrefix("PATH") == true)
    #expect(table.out.contains { $0.contains("root/db") && $0.contains("running") }, "\(table.out)")
    let first = try uvsctl(loop, socket, ["status", "--json"])
    let firstCount = restarts(of: "root/crasher", in: first.out.joined()) ?? -1
    #expect(firstCount >= 0, "\(first.out)")
    var laterCount: Int64 = -1
    let grew = runLoop(loop, timeout: .seconds(5)) {
        laterCount = (try? uvsctl(loop, socket, ["status", "--json"])).flatMap { restarts(of: "root/crasher", in: $0.out.joined()) } ?? -1
        return laterCount > firstCount
    }
    #expect(grew, "restarts did not grow: \(firstCount) then \(laterCount)")

    // restart by path: a new pid.
    let dbBefore = daemon.lines.last { $0.hasPrefix("started root/db ") }
    let restart = try uvsctl(loop, socket, ["restart", "root/db"])
    #expect(restart.exit == .exited(0), "\(restart)")
    let dbAfter = daemon.lines.last { $0.hasPrefix("started root/db ") }
    #expect(dbAfter != nil && dbAfter != dbBefore, "\(dbBefore ?? "-") then \(dbAfter ?? "-")")
    #expect(restart.out.first?.contains(String(dbAfter?.split(separator: " ").last ?? "?")) == true, "\(restart.out)")

    // The daemon ignores SIGPIPE (a vanished client must not kill it); its children do not.
    let dbPID = Int32(dbAfter?.split(separator: " ").last ?? "") ?? -1
    #expect(ignoredSignals(of: daemon.process.pid) & (1 << (SIGPIPE - 1)) != 0)
    #expect(ignoredSignals(of: dbPID) & (1 << (SIGPIPE - 1)) == 0, "a child inherited SIGPIPE ignored")

    // stop, a second stop is refused, start (relative path too).
    let stop = try uvsctl(loop, socket, ["stop", "root/db"])
    #expect(stop.exit == .exited(0) && stop.out.first == "stopped root/db: shutdown", "\(stop)")
    let again = try uvsctl(loop, socket, ["stop", "db"])
    #expect(again.exit == .exited(1) && again.err.first?.contains("not running") == true, "\(again)")
    let start = try uvsctl(loop, socket, ["start", "db"])
    #expect(start.exit == .exited(0), "\(start)")

    // spawn from the pool's template, with arguments.
    let spawn = try uvsctl(loop, socket, ["spawn", "root/pool/worker", "--", "601"])
    #expect(spawn.exit == .exited(0) && spawn.out == ["root/pool/worker-1"], "\(spawn)")
    let worker = try uvsctl(loop, socket, ["status", "root/pool/worker-1", "--json"])
    #expect(worker.out.joined().contains("\"state\":\"running\""), "\(worker.out)")

    // Unknown paths and templates: exit 1 with the daemon's message.
    let unknown = try uvsctl(loop, socket, ["restart", "root/nope"])
    #expect(unknown.exit == .exited(1) && unknown.err.first?.contains("nope") == true, "\(unknown)")
    let noSupervisor = try uvsctl(loop, socket, ["stop", "root/nowhere/x"])
    #expect(noSupervisor.exit == .exited(1) && noSupervisor.err.first?.contains("no running supervisor at root/nowhere") == true, "\(noSupervisor)")
    let noTemplate = try uvsctl(loop, socket, ["spawn", "root/pool/nothing"])
    #expect(noTemplate.exit == .exited(1) && noTemplate.err.first?.contains("has no template") == true, "\(noTemplate)")

    // events --follow, as a long-running client: sees the crasher's next exits as they happen.
    var followOptions = ProcessOptions(argv: [uvsctlPath, "events", "--follow", "--last", "0", "--socket", socket])
    followOptions.stdout = .pipe
    let followed = CommandBox()
    let follower = try ChildProcess.spawn(on: loop, followOptions, onOutput: { output in
        if case .line(_, let line) = output { followed.value.out.append(line) }
    }, onExit: { followed.value.exit = $0 })
    let sawExits = runLoop(loop) { followed.value.out.filter { $0.hasPrefix("root/crasher: exited") }.count >= 2 }
    #expect(sawExits, "\(followed.value.out)")

    // Ready once root/late is.
    let becameReady = runLoop(loop, timeout: .seconds(5)) { (try? uvsctl(loop, socket, ["ready", "--quiet"]))?.exit == .exited(0) }
    #expect(becameReady)

    // shutdown through the socket: the follower sees the end, the daemon exits 0, the path is gone.
    let shutdown = try uvsctl(loop, socket, ["shutdown"])
    #expect(shutdown.exit == .exited(0))
    #expect(runLoop(loop) { daemon.exit != nil && daemon.ended && followed.value.exit != nil })
    #expect(daemon.exit == .exited(0))
    #expect(followed.value.exit == .exited(0), "the follower ends when the daemon does")
    #expect(followed.value.out.contains { $0.contains("root: supervisor stopping") }, "\(followed.value.out.suffix(5))")
    _ = follower
    #expect(access(socket, F_OK) != 0, "the socket is removed at exit")

    let missing = try uvsctl(loop, socket, ["status"])
    #expect(missing.exit == .exited(3) && missing.err.first?.contains("no daemon serves") == true, "\(missing)")
}

private func runUnauthorised(_ loop: EventLoop) throws {
    // Mode 0600: nobody cannot even connect.
    let (directory, socket) = socketInSharedDirectory()
    defer { rmdir(directory) }
    let daemon = try startDaemon(loop, socket: socket)
    let denied = try uvsctl(loop, socket, ["status"], asUser: "nobody")
    #expect(denied.exit == .exited(3) && denied.err.first?.contains("permission denied") == true, "\(denied)")
    // A second daemon on a live socket refuses to start (and leaves it alone).
    let second = try runCommand(loop, [daemonHelperPath, "control", socket])
    #expect(second.exit == .exited(2), "\(second)")
    #expect(second.out.contains { $0.contains("another daemon is serving it") } || second.err.contains { $0.contains("another daemon is serving it") },
            "\(second)")
    #expect(try uvsctl(loop, socket, ["live"]).exit == .exited(0), "the first daemon still serves")
    try stopDaemon(loop, daemon)

    // Mode 0666: nobody connects, and the daemon refuses it by its credentials.
    let open = try startDaemon(loop, socket: socket, mode: "666")
    let refused = try uvsctl(loop, socket, ["status"], asUser: "nobody")
    #expect(refused.exit == .exited(3), "\(refused)")
    #expect(refused.err.first?.contains("only uid 0 and root may use") == true, "\(refused.err)")
    #expect(try uvsctl(loop, socket, ["live"]).exit == .exited(0), "root is still served")
    try stopDaemon(loop, open)
}

private func runHostile(_ loop: EventLoop) throws {
    let directory = makeTemporaryDirectory()
    let socket = directory + "/control.sock"
    defer { rmdir(directory) }
    let daemon = try startDaemon(loop, socket: socket)
    let pid = daemon.process.pid
    _ = runLoop(loop, timeout: .milliseconds(300)) { false }
    let baselineDescriptors = descriptorCount(of: pid)
    let baselineMemory = residentKilobytes(of: pid)

    // Malformed requests: each gets an error with its code; the connection stays usable.
    let client = try #require(UnixTestClient(path: socket))
    let deep = String(repeating: "[", count: 10_000)
    let cases: [(String, String)] = [
        ("{", "malformedJSON"), ("[1,2]", "badRequest"), ("{\"op\":5}", "badRequest"), ("{\"op\":\"nope\"}", "unknownOp"),
        ("{\"v\":2,\"op\":\"status\"}", "unsupportedVersion"), (deep, "malformedJSON"), ("\u{1}\u{2}binary\u{7f}", "malformedJSON"),
        ("{\"op\":\"stop\"}", "badRequest"), ("{\"op\":\"stop\",\"path\":\"root/../db\"}", "unknownPath"),
        ("{\"op\":\"events\",\"last\":-1}", "badRequest"), ("{\"op\":\"spawn\",\"path\":\"root/pool/worker\",\"argv\":[1]}", "badRequest"),
    ]
    for (request, _) in cases { client.send(request + "\n") }
    client.send("{\"op\":\"live\",\"id\":\"after\"}\n")
    #expect(runLoop(loop) { client.lines().count == cases.count + 1 })
    let answers = client.lines().map { try? JSONValue.parse($0) }
    for (index, (request, code)) in cases.enumerated() {
        #expect(answers[index]?["ok"] == .bool(false), "\(request.prefix(40))")
        #expect(answers[index]?["error"]?["code"]?.stringValue == code, "\(request.prefix(40)): \(answers[index]?.serialized ?? "nil")")
    }
    #expect(answers.last??["id"] == .string("after") && answers.last??["ok"] == .bool(true), "still usable after bad requests")

    // A 10 MB line: an error, then the connection is closed (the daemon reads no more of it).
    let flooder = try #require(UnixTestClient(path: socket))
    let huge = [UInt8](repeating: UInt8(ascii: "a"), count: 10 << 20)
    _ = flooder.send(huge)   // may fail part-way once the daemon closes its end
    #expect(runLoop(loop) { flooder.poll(); return flooder.sawEnd })
    #expect(flooder.lines().first?.contains("lineTooLong") == true, "\(flooder.lines())")

    // A client that asks and never reads: once 1 MiB of answers waits for it, the daemon
    // stops reading its requests (they wait in the kernel until its socket buffer is full).
    let sleeper = try #require(UnixTestClient(path: socket))
    let request = Array("{\"op\":\"status\"}\n".utf8)
    var batch: [UInt8] = []
    for _ in 0..<200 { batch += request }
    var accepted = 0
    let filled = runLoop(loop, timeout: .seconds(20)) {
        let taken = sleeper.sendWithoutWaiting(batch)
        accepted += max(taken, 0)
        return taken < batch.count
    }
    #expect(filled, "the daemon kept reading (\(accepted) bytes taken)")
    #expect(accepted < 20 << 20, "requests are not read without end: \(accepted) bytes")
    let meanwhile = try #require(UnixTestClient(path: socket))
    meanwhile.send("{\"op\":\"live\"}\n")
    #expect(runLoop(loop) { meanwhile.lines().first?.contains("\"live\":true") == true }, "others are served meanwhile")
    meanwhile.close()
    // Reading catches up: the paused client is served again, in order.
    var read = 0
    #expect(runLoop(loop, timeout: .seconds(20)) { read = sleeper.lines().count; return read >= 400 }, "read \(read) answers")
    sleeper.close()

    // Followers that disconnect are forgotten (each would hold one of the 16 places).
    for _ in 0..<20 {
        let follower = try #require(UnixTestClient(path: socket))
        follower.send("{\"op\":\"events\",\"follow\":true,\"last\":0}\n")
        #expect(runLoop(loop) { follower.lines().first?.contains("\"following\":true") == true })
        follower.close()
    }
    #expect(runLoop(loop) { descriptorCount(of: pid) <= baselineDescriptors + 1 }, "followers that left still hold descriptors")

    // Disconnects mid-request. Each is first answered once, so that the daemon has accepted it
    // when it leaves: a connection closed while still in the listen backlog holds no descriptor
    // yet, and the daemon would give it a place (until it reads the end) only when the crowd
    // below is already queued behind it (CI saw that: the crowd found every place taken).
    for _ in 0..<20 {
        let quitter = try #require(UnixTestClient(path: socket))
        quitter.send("{\"op\":\"live\"}\n")
        #expect(runLoop(loop) { !quitter.lines().isEmpty })
        quitter.send("{\"op\":\"sta")
        quitter.close()
    }
    // Their places come back (before the crowd arrives, so that it finds them free).
    #expect(runLoop(loop) { descriptorCount(of: pid) <= baselineDescriptors + 1 }, "clients that left mid-request still hold places")

    // 1,000 clients at once: 16 are served, the others told why and disconnected.
    var crowd: [UnixTestClient] = []
    for _ in 0..<1000 {
        guard let member = UnixTestClient(path: socket) else { break }
        member.send("{\"op\":\"live\"}\n")
        crowd.append(member)
    }
    #expect(crowd.count == 1000)
    #expect(runLoop(loop) { crowd.allSatisfy { !$0.lines().isEmpty } }, "every client got an answer")
    let served = crowd.filter { $0.lines().first?.contains("\"live\":true") == true }.count
    let turnedAway = crowd.filter { $0.lines().first?.contains("tooManyClients") == true }.count
    #expect(served >= 1 && served <= 16, "served \(served)")
    #expect(served + turnedAway == 1000, "served \(served), turned away \(turnedAway)")
    crowd.forEach { $0.close() }
    client.close()
    flooder.close()
    sleeper.close()

    // The daemon still supervises, and gave back what the clients took.
    let after = try uvsctl(loop, socket, ["status", "--json"])
    #expect((restarts(of: "root/crasher", in: after.out.joined()) ?? 0) > 0)
    #expect(runLoop(loop) { descriptorCount(of: pid) == baselineDescriptors },
            "descriptors: \(baselineDescriptors) before, \(descriptorCount(of: pid)) after")
    // (Not under AddressSanitizer, whose quarantine keeps freed memory resident by design.)
    let growth = residentKilobytes(of: pid) - baselineMemory
    #expect(getenv("UVS_SANITIZER") != nil || growth < 16 * 1024, "resident memory grew by \(growth) KiB")
    try stopDaemon(loop, daemon)
    #expect(daemon.exit == .exited(0))
}

private func runContention(_ loop: EventLoop) throws {
    let directory = makeTemporaryDirectory()
    let socket = directory + "/control.sock"
    // A stale socket: bound, its owner gone.
    #expect(UnixTestClient.bindStale(at: socket))
    var first = ProcessOptions(argv: [daemonHelperPath, "control", socket])
    first.stdout = .pipe
    var second = first
    second.stdout = .pipe
    var lines: [[String]] = [[], []]
    var exits: [ProcessExit?] = [nil, nil]
    var processes: [ChildProcess] = []
    for (index, options) in [first, second].enumerated() {
        processes.append(try ChildProcess.spawn(on: loop, options, onOutput: { output in
            if case .line(_, let line) = output { lines[index].append(line) }
        }, onExit: { exits[index] = $0 }))
    }
    // One comes up, the other ends with 2 (the lock is held).
    #expect(runLoop(loop) { lines.filter { $0.contains("listening") }.count == 1 && exits.contains(.exited(2)) },
            "\(lines) \(exits)")
    let serving = try #require(lines.firstIndex { $0.contains("listening") })
    let daemon = processes[serving]

    // Stop it, fill its queue: clients give up at their timeout; a newcomer refuses at once.
    try daemon.signal(SIGSTOP)
    var waiting: [UnixTestClient] = []
    while waiting.count < 300, let client = UnixTestClient(path: socket, timeoutMilliseconds: 0) { waiting.append(client) }
    #expect(waiting.count < 300, "the queue never filled")
    let started = EventLoop.hrtime()
    let gaveUp = try runCommandForContention(loop, [buildDirectory + "/uvsctl", "live", "--timeout", "1", "--socket", socket])
    #expect(gaveUp.exit == .exited(3) && gaveUp.err.joined().contains("accepts no connection"), "\(gaveUp)")
    #expect(EventLoop.hrtime() - started < 5_000_000_000)
    let newcomer = try runCommandForContention(loop, [daemonHelperPath, "control", socket])
    #expect(newcomer.exit == .exited(2), "\(newcomer)")
    waiting.forEach { $0.close() }
    try daemon.signal(SIGCONT)
    try daemon.signal(SIGTERM)
    #expect(runLoop(loop) { exits[serving] != nil })
    #expect(exits[serving] == .exited(0))
    unlink(socket + ".lock")
    rmdir(directory)
}

private func runCommandForContention(_ loop: EventLoop, _ argv: [String]) throws -> (exit: ProcessExit?, err: [String]) {
    var options = ProcessOptions(argv: argv)
    options.stderr = .pipe
    var err: [String] = []
    var ended = false
    var exit: ProcessExit?
    _ = try ChildProcess.spawn(on: loop, options, onOutput: { output in
        switch output {
        case .line(_, let line): err.append(line)
        case .end: ended = true
        }
    }, onExit: { exit = $0 })
    #expect(runLoop(loop, timeout: .seconds(15)) { exit != nil && ended }, "\(argv) did not finish")
    return (exit, err)
}

private func runIdle(_ loop: EventLoop) throws {
    let directory = makeTemporaryDirectory()
    let socket = directory + "/control.sock"
    let daemon = try startDaemon(loop, socket: socket, environment: ["UVS_TEST_IDLE_MS": "300"])
    let silent = try #require(UnixTestClient(path: socket))
    let follower = try #require(UnixTestClient(path: socket))
    follower.send("{\"op\":\"events\",\"follow\":true,\"last\":0}\n")
    let busy = try #require(UnixTestClient(path: socket))
    let connectedAt = EventLoop.hrtime()
    var asked = 0
    let timer = LoopTimer(loop: loop) {
        busy.send("{\"op\":\"live\"}\n")
        asked += 1
    }
    try timer.start(after: .milliseconds(100), repeating: .milliseconds(100))
    #expect(runLoop(loop) { silent.poll(); return silent.sawEnd }, "the silent client was not disconnected")
    #expect(EventLoop.hrtime() - connectedAt >= 300_000_000, "not before its timeout")
    #expect(silent.lines().first?.contains("idleTimeout") == true, "\(silent.lines())")
    runLoop(loop, timeout: .milliseconds(700)) { false }
    timer.close()
    follower.poll()
    busy.poll()
    #expect(!follower.sawEnd, "a follower stays")
    #expect(!busy.sawEnd && busy.lines().count >= asked - 1, "a client that keeps asking stays: \(busy.lines().count) of \(asked)")
    [silent, follower, busy].forEach { $0.close() }
    try stopDaemon(loop, daemon)
    unlink(socket + ".lock")
    rmdir(directory)
}
