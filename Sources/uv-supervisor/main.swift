// uv-supervisor: runs a supervision tree described in a config file, as a daemon.
#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Logging
import UVLoop
import UVSupervisor
import UVSupervisorConfig

let usage = """
    usage: uv-supervisor run CONFIG     run the tree (SIGTERM stops it in order, SIGHUP reloads CONFIG,
                                        SIGUSR1 reopens the children's log files)
           uv-supervisor check CONFIG   check CONFIG and print the tree it describes
           uv-supervisor --help | --version

    CONFIG is YAML (see the README: "uv-supervisor: a tree from a config file"). Errors name the
    file, line, column and key. `uvsctl --socket PATH` talks to a running daemon when
    daemon.control-socket is set.

    Exit status (run): 0 after a clean stop, 1 when the root gave up, 128+n when a repeated
    signal n forced the stop, 2 when the config is invalid or the daemon cannot start.
    Exit status (check): 0 valid, 2 invalid.
    """

/// Writes a line to standard error.
func printError(_ message: String) {
    let line = message + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

func check(_ file: String) -> Int32 {
    switch ConfigLoading.loadNow(file) {
    case .failure(let failure):
        printError(failure.message)
        return 2
    case .success(let config):
        print(TreeDescription.render(config))
        return 0
    }
}

func run(_ file: String) -> Never {
    let config: LoadedConfig
    switch ConfigLoading.loadNow(file) {
    case .failure(let failure):
        printError(failure.message)
        exit(2)
    case .success(let loaded):
        config = loaded
    }
    var options = DaemonOptions()
    options.name = config.name
    let settings = config.daemon
    if let level = settings.logLevel {
        var logger = Logger(label: "uv-supervisor", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = level
        options.logger = logger
    } else {
        options.logger = nil
    }
    options.outputLogLevel = settings.outputLogLevel
    options.shutdownTimeout = settings.shutdownTimeout
    options.readyWhen = settings.readyWhen
    options.lagThreshold = settings.lagThreshold
    options.killDescendants = settings.killDescendants
    options.childRunsFirst = settings.childRunsFirst
    options.trimCodePages = settings.trimCodePages
    options.forwardedSignals = settings.forwardSignals
    if let path = settings.controlSocket {
        var socket = ControlSocketOptions(path: path)
        socket.mode = settings.controlSocketMode
        options.controlSocket = socket
    }
    let logger = options.logger
    let logFiles = LogFiles { logger?.warning("\($0)") }
    logFiles.use(config.logFiles)
    var reloader: Reloader?
    var reloading = false
    /// Hands children's output lines to their log files from now on (set once the tree exists).
    var listenForLogLines: (() -> Void)?
    var watchers: [SignalWatcher] = []
    /// Re-reads the file and applies the difference; a reload while one runs is refused.
    func reload(on loop: EventLoop, done: @escaping (_ error: String?, _ summary: String) -> Void) {
        guard let current = reloader, !reloading else { return done("a reload is already running", "") }
        reloading = true
        ConfigLoading.load(file, on: loop) { result in
            switch result {
            case .failure(let failure):
                reloading = false
                if settings.trimCodePages != nil { SupervisorDaemon.trimCodePages() }
                done("\(failure.message) (nothing changed)", "")
            case .success(let next):
                logFiles.use(next.logFiles)
                if !next.logFiles.isEmpty { listenForLogLines?() }
                current.apply(next) { error, summary in
                    reloading = false
                    // Decoding and comparing ran code supervising does not: let it go again.
                    if settings.trimCodePages != nil { SupervisorDaemon.trimCodePages() }
                    done(error, summary)
                }
            }
        }
    }
    var loopForReload: EventLoop?
    options.reload = { done in
        guard let loop = loopForReload else { return done("not running yet", "") }
        reload(on: loop, done: done)
    }
    options.configure = { root, loop in
        loopForReload = loop
        reloader = Reloader(root: root, config: config)
        var listening = false
        listenForLogLines = {
            guard !listening else { return }
            listening = true
            root.onEvent { event in
                if case .output(_, let line) = event.kind { logFiles.write(path: event.path, line: line) }
            }
        }
        // Only with a log file: a handler makes the tree build every event (an exit, a
        // restart's delay, a start), which a daemon that logs nothing has no use for.
        if !config.logFiles.isEmpty { listenForLogLines?() }
        if let hangup = try? SignalWatcher(loop: loop, signal: SIGHUP, { _ in
            logger?.info("SIGHUP: reloading \(file)")
            reload(on: loop) { error, summary in
                if let error { logger?.error("reload: \(error)") } else { logger?.info("reload: \(summary)") }
            }
        }) { watchers.append(hangup) }
        if let rotate = try? SignalWatcher(loop: loop, signal: SIGUSR1, { _ in logFiles.reopen() }) { watchers.append(rotate) }
        root.onTermination { _ in watchers.forEach { $0.close() } }
    }
    SupervisorDaemon.main(options: options) { _ in config.root }
}

let arguments = Array(CommandLine.arguments.dropFirst())
switch arguments.first {
case "run" where arguments.count == 2:
    run(arguments[1])
case "check" where arguments.count == 2:
    exit(check(arguments[1]))
case "--help", "-h", "help":
    print(usage)
    exit(0)
case "--version":
    print("uv-supervisor 0.1.0")
    exit(0)
default:
    printError(usage)
    exit(64)
}
