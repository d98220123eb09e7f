#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// Command-line options of the demo.
struct DemoOptions {
    var duration: Double = 15
    var json = false
    var color: Bool
    var live: Bool
    var workerProcess = false
    /// Internal: run as the demo's store process (says READY=1 after loading).
    var storeProcess = false

    static let usage = """
    uv-supervisor-demo: a supervision tree that crashes on purpose and heals itself.

    USAGE: uv-supervisor-demo [--duration SECONDS] [--json] [--no-color] [--plain | --live]

    OPTIONS:
      --duration SECONDS  how long the story runs before the graceful shutdown (default 15)
      --json              print every event as one JSON object per line, for tools
      --no-color          no ANSI colours (also when NO_COLOR is set or stdout is not a terminal)
      --plain             event lines instead of the live tree, even on a terminal
      --live              the live tree even when stdout is not a terminal
      -h, --help          show this help

    Ctrl-C shuts the tree down gracefully at any time; a second Ctrl-C kills what is left.
    The exit status is 0 when the tree ended cleanly.
    """

    /// Parses the arguments; prints usage and exits on `--help` or an error.
    static func parse(_ arguments: [String]) -> DemoOptions {
        let terminal = isatty(1) == 1
        let noColorEnv = getenv("NO_COLOR").map { String(cString: $0).isEmpty == false } ?? false
        var options = DemoOptions(color: terminal && !noColorEnv, live: terminal)
        var index = 1
        func fail(_ message: String) -> Never {
            fputs("error: \(message)\n\n\(usage)\n", stderr)
            exit(64)
        }
        while index < arguments.count {
            switch arguments[index] {
            case "-h", "--help":
                print(usage)
                exit(0)
            case "--duration":
                index += 1
                guard index < arguments.count, let value = Double(arguments[index]), value > 0, value < 86_400 else {
                    fail("--duration needs a number of seconds between 0 and 86400")
                }
                options.duration = value
            case "--json":
                options.json = true
                options.live = false
                options.color = false
            case "--no-color":
                options.color = false
            case "--plain":
                options.live = false
            case "--live":
                options.live = !options.json
            case "--worker-process":
                options.workerProcess = true
            case "--store-process":
                options.storeProcess = true
            default:
                fail("unknown argument \(arguments[index])")
            }
            index += 1
        }
        return options
    }
}

/// ANSI styling that disappears when colour is off.
struct Style {
    let enabled: Bool
    func paint(_ text: String, _ code: String) -> String { enabled ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }
    func red(_ text: String) -> String { paint(text, "31") }
    func green(_ text: String) -> String { paint(text, "32") }
    func yellow(_ text: String) -> String { paint(text, "33") }
    func blue(_ text: String) -> String { paint(text, "34") }
    func dim(_ text: String) -> String { paint(text, "2") }
    func bold(_ text: String) -> String { paint(text, "1") }
}
