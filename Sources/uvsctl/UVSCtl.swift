#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import ArgumentParser
import UVSupervisor

/// `uvsctl`: asks a running uv-supervisor daemon through its control socket.
@main
struct UVSCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "uvsctl",
        abstract: "Ask and steer a running uv-supervisor daemon through its control socket.",
        discussion: """
            Paths name children as the daemon does: root/db, root/pool/worker-3 (or relative \
            to the root: db). Exit status: 0 done, 1 the daemon refused (or is not ready or \
            live), 3 no daemon could be asked (no socket, permission denied, no answer), 64 a \
            usage error.
            """,
        subcommands: [Status.self, Start.self, Stop.self, Restart.self, Delete.self, Spawn.self,
                      Shutdown.self, Reload.self, Events.self, Ready.self, Live.self])
}

/// Options every subcommand takes.
struct Connection: ParsableArguments {
    @Option(name: .long, help: "The daemon's control socket (default: $UVS_CONTROL_SOCKET, /run/uv-supervisor.sock for root, else $XDG_RUNTIME_DIR/uv-supervisor.sock).")
    var socket: String?

    @Option(name: .long, help: "Seconds to wait for an answer (stop, restart and reload wait at least 120: a stop takes the child's shutdown timeout).")
    var timeout: Double = 5

    func validate() throws {
        guard timeout.isFinite, timeout > 0 else { throw ValidationError("--timeout takes a positive number of seconds") }
    }

    func ask(_ fields: [JSONValue.Member], patience: Double? = nil) throws(ClientFailure) -> JSONValue {
        let client = try ControlClient(path: socket ?? ControlSocketOptions.defaultPath, timeout: timeout)
        return try client.request(fields, timeout: max(timeout, patience ?? 0))
    }

    /// Sends a request and returns the response when it is `ok`; prints the daemon's error
    /// and exits 1 otherwise (3 when no daemon could be asked).
    func run(_ fields: [JSONValue.Member], patience: Double? = nil) -> JSONValue {
        do {
            let response = try ask(fields, patience: patience)
            guard response["ok"] == .bool(true) else {
                let message = response["error"]?["message"]?.stringValue ?? response.serialized
                fail(1, message)
            }
            return response
        } catch {
            fail(error.status, error.description)
        }
    }
}

func fail(_ status: Int32, _ message: String) -> Never {
    fputs("uvsctl: \(message)\n", stderr)
    Glibc.exit(status)
}

extension UVSCtl {
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the tree (or one child) as a table.")
        @OptionGroup var connection: Connection
        @Argument(help: "A child's path (default: the whole tree).") var path: String?
        @Flag(name: .long, help: "Print the daemon's JSON instead of a table.") var json = false

        func run() {
            var request: [JSONValue.Member] = [.init("op", .string("status"))]
            if let path { request.append(.init("path", .string(path))) }
            let response = connection.run(request)
            guard let tree = response["tree"] else { fail(1, "the daemon's answer has no tree") }
            if json {
                print(tree.serialized)
            } else {
                print(StatusTable.render(tree))
            }
        }
    }

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start a stopped child again.")
        @OptionGroup var connection: Connection
        @Argument(help: "The child's path.") var path: String
        func run() {
            _ = connection.run([.init("op", .string("start")), .init("path", .string(path))])
            print("started \(path)")
        }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop a child by its shutdown policy; it stays stopped until started.")
        @OptionGroup var connection: Connection
        @Argument(help: "The child's path.") var path: String
        func run() {
            let response = connection.run([.init("op", .string("stop")), .init("path", .string(path))], patience: 120)
            print("stopped \(path): \(response["exit"]?.stringValue ?? "?")")
        }
    }

    struct Restart: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop a child (if running) and start it again.")
        @OptionGroup var connection: Connection
        @Argument(help: "The child's path.") var path: String
        func run() {
            let response = connection.run([.init("op", .string("restart")), .init("path", .string(path))], patience: 120)
            let pid = response["pid"]?.integerValue.map { " (pid \($0))" } ?? ""
            print("restarted \(path)\(pid)")
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a stopped child's spec.")
        @OptionGroup var connection: Connection
        @Argument(help: "The child's path.") var path: String
        func run() {
            _ = connection.run([.init("op", .string("delete")), .init("path", .string(path))])
            print("deleted \(path)")
        }
    }

    struct Spawn: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a child from a supervisor's template.",
            discussion: "uvsctl spawn root/pool/worker -- --shard 3   starts root/pool/worker-N with the template's argv plus --shard 3.")
        @OptionGroup var connection: Connection
        @Argument(help: "The template's path: the supervisor's path and the template's id.") var template: String
        @Option(name: .customLong("env"), help: "NAME=VALUE to set, or NAME= to remove, in the child's environment (repeatable).")
        var environment: [String] = []
        @Argument(parsing: .postTerminator, help: "Arguments appended to the template's argv (after --).") var arguments: [String] = []

        func validate() throws {
            for entry in environment where !entry.contains("=") {
                throw ValidationError("--env takes NAME=VALUE (or NAME= to remove), not \(entry)")
            }
        }

        func run() {
            var request: [JSONValue.Member] = [.init("op", .string("spawn")), .init("path", .string(template))]
            if !arguments.isEmpty { request.append(.init("argv", .array(arguments.map { .string($0) }))) }
            if !environment.isEmpty {
                request.append(.init("env", .object(environment.map { entry in
                    let name = String(entry.prefix { $0 != "=" })
                    let value = String(entry.drop { $0 != "=" }.dropFirst())
                    return JSONValue.Member(name, value.isEmpty ? .null : .string(value))
                })))
            }
            let response = connection.run(request)
            print(response["path"]?.stringValue ?? "?")
        }
    }

    struct Shutdown: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the whole tree in order; the daemon then exits.")
        @OptionGroup var connection: Connection
        func run() {
            _ = connection.run([.init("op", .string("shutdown"))])
            print("shutting down")
        }
    }

    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-read the daemon's config file and apply the difference (uv-supervisor only).")
        @OptionGroup var connection: Connection
        func run() {
            let response = connection.run([.init("op", .string("reload"))], patience: 120)
            print(response["summary"]?.stringValue ?? "reloaded")
        }
    }

    struct Events: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print recent events, and with --follow every new one as it happens.")
        @OptionGroup var connection: Connection
        @Option(name: .long, help: "How many recent events to print first.") var last: Int = 20
        @Flag(name: .shortAndLong, help: "Keep printing events until interrupted or the daemon stops.") var follow = false
        @Flag(name: .long, help: "Print each event as the daemon's JSON.") var json = false

        func validate() throws {
            guard last >= 0 else { throw ValidationError("--last is 0 or more") }
            try connection.validate()
        }

        func run() {
            do {
                let client = try ControlClient(path: connection.socket ?? ControlSocketOptions.defaultPath, timeout: connection.timeout)
                let response = try client.request([.init("op", .string("events")), .init("last", .integer(Int64(last))),
                                                   .init("follow", .bool(follow))], timeout: connection.timeout)
                guard response["ok"] == .bool(true) else {
                    fail(1, response["error"]?["message"]?.stringValue ?? response.serialized)
                }
                setvbuf(stdout, nil, _IOLBF, 0)
                for event in response["events"]?.arrayValue ?? [] { printEvent(event) }
                guard follow else { return }
                while let message = try client.readMessage(timeout: -1) {
                    if let event = message["event"] { printEvent(event) }
                }
            } catch {
                fail(error.status, error.description)
            }
        }

        private func printEvent(_ event: JSONValue) {
            print(json ? event.serialized : (event["text"]?.stringValue ?? event.serialized))
        }
    }

    struct Ready: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Exit 0 when the daemon's children are ready, 1 when not (a Kubernetes readiness exec probe).")
        @OptionGroup var connection: Connection
        @Flag(name: .shortAndLong, help: "Print nothing.") var quiet = false
        func run() {
            let response = connection.run([.init("op", .string("ready"))])
            guard response["ready"] == .bool(true) else {
                let waiting = (response["waiting"]?.arrayValue ?? []).compactMap(\.stringValue)
                if !quiet { fputs("not ready" + (waiting.isEmpty ? "" : ": waiting for \(waiting.joined(separator: ", "))") + "\n", stderr) }
                Glibc.exit(1)
            }
            if !quiet { print("ready") }
        }
    }

    struct Live: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Exit 0 when the daemon answers and is supervising, 1 when not (a Kubernetes liveness exec probe).")
        @OptionGroup var connection: Connection
        @Flag(name: .shortAndLong, help: "Print nothing.") var quiet = false
        func run() {
            let response = connection.run([.init("op", .string("live"))])
            guard response["live"] == .bool(true) else {
                if !quiet { fputs("not live: the tree is \(response["state"]?.stringValue ?? "?")\n", stderr) }
                Glibc.exit(1)
            }
            if !quiet { print("live (pid \(response["pid"]?.integerValue ?? 0))") }
        }
    }
}

/// `uvsctl status` as a table, one row per child, nested children indented.
enum StatusTable {
    static func render(_ tree: JSONValue) -> String {
        var rows: [[String]] = [["PATH", "KIND", "STATE", "READY", "PID", "RESTARTS", "UPTIME", "LAST EXIT", "STATUS"]]
        func add(_ node: JSONValue, depth: Int) {
            let uptime = node["uptimeMs"]?.integerValue.map(formatMilliseconds) ?? "-"
            rows.append([
                String(repeating: "  ", count: depth) + (node["path"]?.stringValue ?? "?"),
                node["kind"]?.stringValue ?? "?",
                node["state"]?.stringValue ?? "?",
                node["ready"] == .bool(true) ? "yes" : "no",
                node["pid"]?.integerValue.map(String.init) ?? "-",
                node["restarts"]?.integerValue.map(String.init) ?? "-",
                uptime,
                node["lastExit"]?.stringValue ?? "-",
                node["status"]?.stringValue ?? "",
            ])
            for child in node["children"]?.arrayValue ?? [] { add(child, depth: depth + 1) }
        }
        add(tree, depth: 0)
        var widths = [Int](repeating: 0, count: rows[0].count)
        for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
            }.joined(separator: "  ").trimmingTrailingSpaces()
        }.joined(separator: "\n")
    }

    static func formatMilliseconds(_ milliseconds: Int64) -> String {
        let seconds = milliseconds / 1000
        if seconds >= 86_400 { return "\(seconds / 86_400)d \(seconds % 86_400 / 3600)h" }
        if seconds >= 3600 { return "\(seconds / 3600)h \(seconds % 3600 / 60)m" }
        if seconds >= 60 { return "\(seconds / 60)m \(seconds % 60)s" }
        if seconds >= 1 { return "\(seconds)s" }
        return "\(milliseconds)ms"
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var copy = self
        while copy.last == " " { copy.removeLast() }
        return copy
    }
}
