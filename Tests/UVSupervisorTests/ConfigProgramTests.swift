import Testing
import UVSupervisor
@testable import UVSupervisorConfig
@testable import UVLoop
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

private let programPath = buildDirectory + "/uv-supervisor"
private let toolPath = buildDirectory + "/uv-supervisor-config"

/// Writes `text` to a new file in a fresh directory; returns its path.
private func writeConfig(_ text: String, name: String = "config.yaml", in directory: String? = nil) -> String {
    writeTextFile(text, name: name, in: directory ?? makeTemporaryDirectory())
}

/// Runs a command to its end on `loop`, collecting its output.
private func runToEnd(_ loop: EventLoop, _ argv: [String]) throws -> CommandResult {
    let result = try runCommandToEnd(loop, argv)
    #expect(result.finished, "\(argv) did not finish")
    return result
}

/// One invalid config and what its error must say.
struct BadConfig: CustomTestStringConvertible, Sendable {
    let yaml: String
    let place: String
    let message: String
    var testDescription: String { message }
}

private let badConfigs: [BadConfig] = [
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    restrat: permanent\n", place: ":4:5: children[0].restrat:", message: "unknown key (did you mean restart?)"),
    BadConfig(yaml: "children:\n  - id: a\n    command: /bin/true\n", place: ":3:14: children[0].command:", message: "expected a list, not a single value"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n  - id: a\n    command: [/bin/true]\n", place: ":4:5: children[1].id:", message: "the id \"a\" is used twice in root (first on line 2)"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    ready-timeout: -5s\n", place: ":4:20: children[0].ready-timeout:", message: "a duration cannot be negative (-5s)"),
    BadConfig(yaml: "children:\n  - id: a\n    command: []\n", place: ":3:14: children[0].command:", message: "the command is empty"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    user: no-such-user-uvs\n", place: ":4:11: children[0].user:", message: "unknown user \"no-such-user-uvs\""),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    shutdown: 10\n", place: ":4:15: children[0].shutdown:", message: "10 needs a unit"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    significant: yes\n", place: ":4:18: children[0].significant:", message: "expected true or false, not \"yes\""),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    supervisor: {children: []}\n", place: ":2:5: children[0]:", message: "not both"),
    BadConfig(yaml: "children:\n  - id: a\n    restart: transient\n", place: ":2:5: children[0]:", message: "a child needs `command`"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    limits: {files: 10}\n", place: ":4:14: children[0].limits.files:", message: "unknown resource"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    limits: {nofile: {soft: 20, hard: 10}}\n", place: ":4:22: children[0].limits.nofile:", message: "the soft limit is above the hard limit"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    memory-max: 1G\n", place: ":4:17: children[0].memory-max:", message: "need a delegated cgroup v2"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true\n", place: ":4:1:", message: "did not find expected"),
    BadConfig(yaml: "children:\n  - id: a\n    id: b\n    command: [/bin/true]\n", place: ":2:5:", message: "the key id is given twice"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    significant: true\n", place: ":2:5: children[0]:", message: "significant"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    umask: \"0999\"\n", place: ":4:12: children[0].umask:", message: "expected an octal mode"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    stop-signal: TERMINATE\n", place: ":4:18: children[0].stop-signal:", message: "expected a signal"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    working-directory: srv\n", place: ":4:24: children[0].working-directory:", message: "expected an absolute path"),
    BadConfig(yaml: "intensity: {max-restarts: 3}\nchildren: []\n", place: ":1:12: intensity:", message: "`period` is missing"),
    BadConfig(yaml: "strategy: one_for_all\n", place: ":1:11: strategy:", message: "expected one-for-one, one-for-all, rest-for-one"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    readiness: {probe: {tcp: localhost}}\n", place: ":4:30: children[0].readiness.probe.tcp:", message: "expected HOST:PORT"),
    BadConfig(yaml: "children:\n  - id: a/b\n    command: [/bin/true]\n", place: ":2:9: children[0].id:", message: "not a valid id"),
    BadConfig(yaml: "children:\n  - id: a\n    command: [/bin/true]\n    restart: always\n", place: ":4:14: children[0].restart:", message: "expected permanent, transient, temporary"),
    BadConfig(yaml: "daemon:\n  shutdown-timeout: soon\n", place: ":2:21: daemon.shutdown-timeout:", message: "expected a duration"),
]

@Suite("uv-supervisor: config files and the program", .serialized)
struct ConfigProgramTests {
    @Test("every error names the file, line, column and key, and says what was expected; check exits 2", arguments: badConfigs)
    func badConfig(_ bad: BadConfig) async throws {
        let report = try await withCheckedLoop { loop in
            let path = writeConfig(bad.yaml)
            let result = try runToEnd(loop, [programPath, "check", path])
            #expect(result.exit == .exited(2))
            let message = result.err.joined(separator: "\n")
            #expect(message.hasPrefix(path), "\(message)")
            #expect(message.contains(path + bad.place), "expected \(bad.place) in: \(message)")
            #expect(message.contains(bad.message), "expected \"\(bad.message)\" in: \(message)")
            unlink(path)
        }
        #expect(report == .clean)
    }

    @Test("the example configs in Examples/configs are valid", arguments: ["web-behind-cache", "worker-pool", "container-entrypoint"])
    func examples(_ name: String) async throws {
        let root = String(#filePath.split(separator: "/Tests/").first!)
        let report = try await withCheckedLoop { loop in
            let result = try runToEnd(loop, [programPath, "check", root + "/Examples/configs/\(name).yaml"])
            #expect(result.exit == .exited(0), "\(result.err)")
            #expect(result.out.first?.hasPrefix("root") == true)
        }
        #expect(report == .clean)
    }

    @Test("every key: a config using them all compiles, and the daemon's decoded tree has every value")
    func everyKey() async throws {
        let report = try await withCheckedLoop { loop in
            let path = writeConfig(everyKeyConfig)
            let result = try runToEnd(loop, [toolPath, "compile", path])
            #expect(result.exit == .exited(0), "\(result.err)")
            let json = try JSONValue.parse(result.out.joined(separator: "\n"))
            let config = try ConfigDecoder(file: path, accounts: NumericAccounts()).decode(ConfigNode(json: json))
            try checkEveryKey(config)
            unlink(path)
        }
        #expect(report == .clean)
    }

    @Test("uv-supervisor run as a user runs it: a crashing child and a Python HTTP server with readiness, uvsctl status, kill -HUP after editing (added, removed, changed, unchanged pids), an invalid edit changes nothing, SIGUSR1 reopens log files, kill -TERM exits 0")
    func endToEnd() async throws {
        let report = try await withCheckedLoop { loop in
            try runEndToEnd(loop)
        }
        #expect(report == .clean)
    }
}

private let everyKeyConfig = """
    name: main
    daemon:
      control-socket: /run/uvs-test.sock
      control-socket-mode: "0660"
      shutdown-timeout: 7s
      log-level: debug
      output-log-level: notice
      ready-when: significant-children
      lag-threshold: 100ms
      kill-descendants: false
      child-runs-first: false
      trim-code-pages: 5s
      forward-signals: [USR2, WINCH]
    strategy: rest-for-one
    intensity: {max-restarts: 9, period: 1m}
    auto-shutdown: any-significant
    children:
      - id: web
        command: [/usr/bin/web, --port, "8080"]
        environment: {inherit: true, set: {PORT: "8080"}, unset: [DEBUG]}
        working-directory: /srv
        user: "1000"
        group: "1001"
        groups: ["27", "100"]
        umask: "0027"
        limits: {nofile: 65536, core: 0, nproc: {soft: 100, hard: unlimited}, memlock: 64K}
        stdin: "null"
        stdout: {file: /var/log/web.out, append: false}
        stderr: log
        stop-signal: SIGINT
        success-exit-codes: [0, 143]
        restart: transient
        shutdown: 3s
        significant: true
        backoff: {initial: 50ms, max: 5s, multiplier: 3, jitter: 0.2, reset-after: 2m}
        readiness: {probe: {tcp: "[::1]:8080", interval: 250ms, timeout: 2s, failure-threshold: 5, initial-delay: 1s}}
        ready-timeout: 45s
        liveness: {watchdog: 20s}
      - id: logger
        command: [/usr/bin/logger-daemon]
        environment: {inherit: false, set: {ONLY: "this"}}
        log-file: /var/log/logger.log
        readiness: notify
        liveness: {probe: {command: [/usr/bin/check, --quick]}}
        shutdown: brutal-kill
      - id: pool
        shutdown: infinity
        supervisor:
          strategy: one-for-one
          dynamic: true
          max-children: 20
          templates:
            - id: worker
              command: [/usr/bin/worker]
              readiness: {descriptor: 3}
              restart: temporary
    """

private func checkEveryKey(_ config: LoadedConfig) throws {
    #expect(config.name == "main")
    let daemon = config.daemon
    #expect(daemon.controlSocket == "/run/uvs-test.sock" && daemon.controlSocketMode == 0o660)
    #expect(daemon.shutdownTimeout == .seconds(7) && daemon.logLevel == .debug && daemon.outputLogLevel == .notice)
    #expect(daemon.readyWhen == .significantChildren && daemon.lagThreshold == .milliseconds(100) && !daemon.killDescendants)
    #expect(!daemon.childRunsFirst && DaemonSettings().childRunsFirst)
    #expect(daemon.trimCodePages == .seconds(5) && DaemonSettings().trimCodePages == .seconds(30))
    #expect(daemon.forwardSignals == [SIGUSR2, SIGWINCH])
    let root = config.root
    #expect(root.strategy == .restForOne && root.intensity == RestartIntensity(maxRestarts: 9, period: .seconds(60)))
    #expect(root.autoShutdown == .anySignificant)
    #expect(root.children.map(\.id) == ["web", "logger", "pool"])
    let web = root.children[0]
    guard case .process(let process) = web.kind else { Issue.record("web is not a process"); return }
    #expect(process.argv == ["/usr/bin/web", "--port", "8080"])
    let overrides: [String: String?] = ["PORT": "8080", "DEBUG": nil]
    #expect(process.environment == .inheritWithOverrides(overrides))
    #expect(process.workingDirectory == "/srv" && process.userID == 1000 && process.groupID == 1001)
    #expect(process.supplementaryGroups == [27, 100] && process.umask == 0o027)
    #expect(process.resourceLimits == [ResourceLimit(.openFiles, 65536), ResourceLimit(.coreSize, 0),
                                       ResourceLimit(.processes, soft: 100, hard: ResourceLimit.unlimited),
                                       ResourceLimit(.lockedMemory, 65536)])
    #expect(process.stdin == .null && process.stdout == .file(path: "/var/log/web.out", append: false) && process.stderr == .capture)
    #expect(process.stopSignal == SIGINT && process.successExitCodes == [0, 143])
    #expect(web.restart == .transient && web.shutdown == .timeout(.seconds(3)) && web.significant)
    #expect(web.backoff == Backoff(initial: .milliseconds(50), multiplier: 3, maximum: .seconds(5), jitter: 0.2, resetAfter: .seconds(120)))
    #expect(web.readiness == .probe(Probe(.tcp(host: "::1", port: 8080), interval: .milliseconds(250), timeout: .seconds(2),
                                          failureThreshold: 5, initialDelay: .seconds(1))))
    #expect(web.readyTimeout == .seconds(45) && web.liveness == .watchdog(.seconds(20)))
    let logger = root.children[1]
    guard case .process(let loggerProcess) = logger.kind else { Issue.record("logger is not a process"); return }
    #expect(loggerProcess.environment == .replace(["ONLY": "this"]))
    #expect(loggerProcess.stdout == .capture && loggerProcess.stderr == .capture)
    #expect(config.logFiles == ["main/logger": "/var/log/logger.log"])
    #expect(logger.readiness == .notify && logger.liveness == .probe(Probe(.command(["/usr/bin/check", "--quick"]))))
    #expect(logger.shutdown == .brutalKill)
    let pool = root.children[2]
    guard case .supervisor(let poolSpec) = pool.kind else { Issue.record("pool is not a supervisor"); return }
    #expect(pool.shutdown == .infinity && poolSpec.isDynamic && poolSpec.maxChildren == 20)
    #expect(poolSpec.templates.map(\.id) == ["worker"] && poolSpec.templates[0].readiness == .descriptor(3))
    #expect(poolSpec.templates[0].restart == .temporary)
}

/// pids by path from `uvsctl status --json`.
private func pids(_ loop: EventLoop, socket: String) throws -> [String: Int64] {
    let result = try runToEnd(loop, [buildDirectory + "/uvsctl", "status", "--json", "--socket", socket])
    guard let tree = try? JSONValue.parse(result.out.joined()) else { return [:] }
    var found: [String: Int64] = [:]
    func walk(_ node: JSONValue) {
        if let path = node["path"]?.stringValue, let pid = node["pid"]?.integerValue { found[path] = pid }
        for child in node["children"]?.arrayValue ?? [] { walk(child) }
    }
    walk(tree)
    return found
}

private func runEndToEnd(_ loop: EventLoop) throws {
    let directory = makeTemporaryDirectory()
    let socket = directory + "/control.sock"
    let port = 20000 + Int(getpid() % 20000)
    func config(crashCode: Int, third: String) -> String {
        """
        daemon:
          control-socket: \(socket)
          log-level: warning
        intensity: {max-restarts: 1000, period: 10s}
        children:
          - id: web
            command: [/usr/bin/python3, -m, http.server, "\(port)", --bind, 127.0.0.1]
            readiness: {probe: {tcp: "127.0.0.1:\(port)", interval: 50ms}}
            log-file: \(directory)/web.log
          - id: crasher
            command: [/bin/sh, -c, "echo crash \(crashCode); sleep 0.2; exit \(crashCode)"]
            log-file: \(directory)/crasher.log
          - id: \(third)
            command: [/bin/sleep, "600"]
        """
    }
    let path = writeConfig(config(crashCode: 3, third: "steady"), in: directory)
    let daemon = try BackgroundCommand(loop, [programPath, "run", path])
    let ready = runLoop(loop, timeout: .seconds(15)) { (try? runToEnd(loop, [buildDirectory + "/uvsctl", "ready", "--quiet", "--socket", socket]))?.exit == .exited(0) }
    #expect(ready, "never ready: \(daemon.lines)")
    let before = try pids(loop, socket: socket)
    #expect(Set(before.keys) == ["root/web", "root/crasher", "root/steady"], "\(before)")
    // The crashing child is restarted (its log file collects each incarnation's line).
    #expect(runLoop(loop) { (readSmallFile(directory + "/crasher.log") ?? "").components("crash 3") >= 2 })
    let status = try runToEnd(loop, [buildDirectory + "/uvsctl", "status", "--socket", socket])
    #expect(status.out.contains { $0.contains("root/crasher") && $0.contains("exited(3)") }, "\(status.out)")

    // Edit: crasher changes, steady goes, newcomer comes; web is untouched.
    _ = writeConfig(config(crashCode: 4, third: "newcomer"), in: directory)
    try daemon.process.signal(SIGHUP)
    var after: [String: Int64] = [:]
    let reloaded = runLoop(loop, timeout: .seconds(10)) {
        after = (try? pids(loop, socket: socket)) ?? [:]
        return Set(after.keys) == ["root/web", "root/crasher", "root/newcomer"]
    }
    #expect(reloaded, "\(after) \(daemon.lines)")
    #expect(after["root/web"] == before["root/web"], "an unchanged child keeps its process")
    #expect(after["root/crasher"] != before["root/crasher"])
    #expect(runLoop(loop) { crasherLogContains(directory, "crash 4") }, "the changed child runs its new command")

    // An invalid edit: reported, nothing changes.
    _ = writeConfig("children: [\n", in: directory)
    let refused = try runToEnd(loop, [buildDirectory + "/uvsctl", "reload", "--socket", socket])
    #expect(refused.exit == .exited(1) && refused.err.joined().contains("nothing changed"), "\(refused)")
    #expect(try pids(loop, socket: socket)["root/web"] == before["root/web"])

    // Log rotation: move the file away, SIGUSR1, new lines go to a new file at the path.
    rename(directory + "/crasher.log", directory + "/crasher.log.1")
    try daemon.process.signal(SIGUSR1)
    #expect(runLoop(loop) { access(directory + "/crasher.log", F_OK) == 0 }, "reopened at its path")

    try daemon.process.signal(SIGTERM)
    #expect(runLoop(loop, timeout: .seconds(15)) { daemon.exit != nil && daemon.ended })
    #expect(daemon.exit == .exited(0), "\(daemon.lines)")
    #expect(access(socket, F_OK) != 0)
    for file in ["config.yaml", "web.log", "crasher.log", "crasher.log.1"] { unlink(directory + "/" + file) }
    rmdir(directory)
}

private func crasherLogContains(_ directory: String, _ text: String) -> Bool {
    (readSmallFile(directory + "/crasher.log") ?? "").contains(text)
}

extension String {
    /// How many times `part` occurs.
    fileprivate func components(_ part: String) -> Int {
        split(separator: "\n").filter { $0.contains(part) }.count
    }
}
