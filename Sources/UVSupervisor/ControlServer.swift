#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Supervision
import UVLoop

/// Where and how ``SupervisorDaemon`` serves its control socket (``DaemonOptions/controlSocket``),
/// the one `uvsctl` talks to.
public struct ControlSocketOptions: Sendable, Equatable {
    /// The socket's path: at most 107 bytes, in a directory whose path is at most 93 (the
    /// socket is first bound under a temporary name there). `PATH.lock` next to it is locked
    /// while the daemon serves it (and left in place).
    public var path: String
    /// Its permissions (default `0600`: the daemon's user only). Whatever they allow, a peer is
    /// served only if its uid is the daemon's or root's, as the kernel reports it.
    public var mode: UInt32 = 0o600
    /// Clients connected at once; one more gets an error and is disconnected (default 64).
    public var maxClients: Int = 64
    /// Bytes queued for a client that does not read before it is disconnected (default 1 MiB;
    /// a single response larger than this is still sent whole).
    public var maxQueuedBytesPerClient: Int = 1 << 20
    /// Recent events kept for `uvsctl events` (default 1,000).
    public var eventHistory: Int = 1000
    /// A client that sends nothing for this long, with no answer pending and not following
    /// events, is told `idleTimeout` and disconnected, so that silent connections cannot hold
    /// every place (default 60 s; `nil`: never). Its timer runs only while clients are connected.
    public var idleTimeout: Duration? = .seconds(60)

    /// A control socket at `path`.
    public init(path: String) {
        self.path = path
    }

    /// The socket `uvsctl` looks for when given none: `$UVS_CONTROL_SOCKET` if set, else
    /// `/run/uv-supervisor.sock` for root and `$XDG_RUNTIME_DIR/uv-supervisor.sock` (or
    /// `/tmp/uv-supervisor-UID.sock`) for other users.
    public static var defaultPath: String {
        if let path = getenv("UVS_CONTROL_SOCKET").map({ String(cString: $0) }), !path.isEmpty { return path }
        if geteuid() == 0 { return "/run/uv-supervisor.sock" }
        if let runtime = getenv("XDG_RUNTIME_DIR").map({ String(cString: $0) }), !runtime.isEmpty {
            return runtime + "/uv-supervisor.sock"
        }
        return "/tmp/uv-supervisor-\(geteuid()).sock"
    }
}

/// The daemon's side of the control protocol (version 1, described in the README): one JSON
/// object per line each way. Each request gets exactly one response line with `"ok"`; an
/// `events` request with `"follow": true` is then followed by one `{"event": ...}` line per
/// event until the client disconnects.
///
/// Defences: only peers with the daemon's uid or root (`SO_PEERCRED`); lines of at most 64 KiB
/// (a longer one gets an error and the connection is closed); at most
/// ``ControlSocketOptions/maxClients``; a client with more than
/// ``ControlSocketOptions/maxQueuedBytesPerClient`` unread is dropped. Malformed requests get
/// an error and the connection stays usable.
package final class ControlServer {
    package static let protocolVersion: Int64 = 1

    private let loop: EventLoop
    private let root: Supervisor
    private let options: ControlSocketOptions
    private let shutdownTimeout: Duration
    private let readyWhen: DaemonOptions.ReadyCondition
    private let reload: ((_ done: @escaping (_ error: String?, _ summary: String) -> Void) -> Void)?
    private var listener: UnixStreamListener?
    private var clients: [ObjectIdentifier: ConnectedClient] = [:]
    private var followers: [ObjectIdentifier: ConnectedClient] = [:]
    private var idleTimer: LoopTimer?
    private var history: [SupervisorEvent] = []
    private var historyNext = 0
    private let startedAt = EventLoop.hrtime()
    /// Peers refused for their uid, clients dropped for not reading, refused for the limit.
    package private(set) var refusedPeers = 0
    package private(set) var droppedClients = 0
    package private(set) var refusedForLimit = 0

    /// Listens at `options.path`.
    /// - Throws: `UVError` (`EADDRINUSE`: another daemon serves that socket).
    package init(loop: EventLoop, root: Supervisor, options: ControlSocketOptions, shutdownTimeout: Duration,
                 readyWhen: DaemonOptions.ReadyCondition,
                 reload: ((_ done: @escaping (_ error: String?, _ summary: String) -> Void) -> Void)? = nil) throws(UVError) {
        self.loop = loop
        self.reload = reload
        self.root = root
        self.options = options
        self.shutdownTimeout = shutdownTimeout
        self.readyWhen = readyWhen
        history.reserveCapacity(min(options.eventHistory, 1024))
        var accept: ((UnixStreamConnection) -> Void)?
        do {
            listener = try UnixStreamListener(loop: loop, path: options.path, mode: options.mode) { accept?($0) }
        } catch {
            let why: String
            switch error.name {
            case "EADDRINUSE": why = "another daemon is serving it"
            case "EEXIST": why = "something that is not a socket is at that path (not removed)"
            case "ENAMETOOLONG": why = "the path is longer than a Unix socket allows (107 bytes, its directory 93)"
            default: why = error.message
            }
            throw UVError(code: error.code, operation: "control socket \(options.path): \(why)")
        }
        accept = { [weak self] connection in
            guard let self else { return connection.close() }
            self.accept(connection)
        }
        root.onEvent { [weak self] event in self?.record(event) }
    }

    /// Stops listening (the path is removed) and closes every client once what was written to
    /// it has gone.
    package func close() {
        idleTimer?.close()
        idleTimer = nil
        listener?.close()
        listener = nil
        for client in clients.values { client.connection.closeAfterWriting() }
        clients.removeAll()
        followers.removeAll()
    }

    package var clientCount: Int { clients.count }

    // MARK: Connections

    private func accept(_ connection: UnixStreamConnection) {
        let myUID = geteuid()
        guard let peer = connection.peer, peer.uid == myUID || peer.uid == 0 else {
            refusedPeers += 1
            let who = connection.peer.map { "uid \($0.uid) (pid \($0.pid))" } ?? "a peer of unknown uid"
            root.events.logger?.warning("control socket: refused \(who): only uid \(myUID) and root are served")
            refuse(connection, code: "permissionDenied",
                   message: "permission denied: only uid \(myUID) and root may use this daemon's control socket")
            return
        }
        guard clients.count < options.maxClients else {
            refusedForLimit += 1
            refuse(connection, code: "tooManyClients", message: "too many clients (at most \(options.maxClients) at once)")
            return
        }
        let client = ConnectedClient(connection: connection)
        let key = ObjectIdentifier(client)
        clients[key] = client
        armIdleTimer()
        let limit = options.maxQueuedBytesPerClient
        connection.onWriteError = { [weak self, weak client] _ in
            guard let self, let client else { return }
            self.forget(client)
        }
        // Backpressure: a client that sends faster than it reads is paused, not dropped.
        connection.onWritten = { [weak connection] in
            guard let connection, connection.isPaused, connection.pendingWriteBytes <= limit / 2 else { return }
            connection.resumeReading()
        }
        do {
            try connection.startReading(onLine: { [weak self, weak client] line in
                guard let self, let client else { return }
                self.handle(line, from: client)
            }, onEnd: { [weak self, weak client] end in
                guard let self, let client else { return }
                self.ended(client, end)
            })
        } catch {
            drop(client)
        }
    }

    private func refuse(_ connection: UnixStreamConnection, code: String, message: String) {
        connection.write(Self.line(.object(["v": .integer(Self.protocolVersion), "ok": .bool(false),
                                            "error": .object(["code": .string(code), "message": .string(message)])])))
        connection.closeAfterWriting()
    }

    private func ended(_ client: ConnectedClient, _ end: UnixStreamConnection.End) {
        switch end {
        case .peerFinished:
            // A half-closed peer (`echo ... | socat`) still gets its answers, then the end; a
            // follower that closed (uvsctl events -f interrupted) follows no more.
            client.peerFinished = true
            if client.following {
                client.following = false
                followers.removeValue(forKey: ObjectIdentifier(client))
            }
            if client.pendingRequests == 0 { finish(client) }
        case .lineTooLong:
            send(.object(["v": .integer(Self.protocolVersion), "ok": .bool(false),
                          "error": .object(["code": .string("lineTooLong"),
                                            "message": .string("a request line is longer than \(client.connection.maxLineLength) bytes")])]),
                 to: client)
            finish(client)
        case .failed:
            drop(client)
        }
    }

    /// Closes once written.
    private func finish(_ client: ConnectedClient) {
        forget(client)
        client.connection.closeAfterWriting()
    }

    /// Closes at once.
    private func drop(_ client: ConnectedClient) {
        forget(client)
        client.connection.close()
    }

    private func forget(_ client: ConnectedClient) {
        let key = ObjectIdentifier(client)
        clients.removeValue(forKey: key)
        followers.removeValue(forKey: key)
        if clients.isEmpty {
            idleTimer?.close()
            idleTimer = nil
        }
    }

    /// While clients are connected, checks every half timeout for silent ones.
    private func armIdleTimer() {
        guard idleTimer == nil, let timeout = options.idleTimeout, timeout > .zero else { return }
        let timer = LoopTimer(loop: loop) { [weak self] in self?.disconnectIdleClients() }
        let period = max(timeout / 2, .milliseconds(10))
        do {
            try timer.start(after: period, repeating: period)
            idleTimer = timer
        } catch {
            timer.close()
        }
    }

    private func disconnectIdleClients() {
        guard let timeout = options.idleTimeout else { return }
        let now = EventLoop.hrtime()
        let limit = UInt64(clamping: timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000)
        for client in Array(clients.values)
        where !client.following && client.pendingRequests == 0 && now - client.lastActivity > limit {
            send(.object(["v": .integer(Self.protocolVersion), "ok": .bool(false),
                          "error": .object(["code": .string("idleTimeout"),
                                            "message": .string("no request for \(formatDuration(timeout)): disconnected")])]),
                 to: client)
            finish(client)
        }
    }

    /// Queues a line for `client`. An answer always goes (reading from a client whose unread
    /// answers pass the limit is paused until it catches up); an event for a follower with that
    /// much unread is not, and the follower is dropped: events cannot wait.
    private func send(_ message: JSONValue, to client: ConnectedClient, isEvent: Bool = false) {
        guard client.connection.isOpen else { return }
        if client.connection.pendingWriteBytes > options.maxQueuedBytesPerClient {
            if isEvent {
                droppedClients += 1
                root.events.logger?.warning("control socket: dropped a follower that does not read (\(client.connection.pendingWriteBytes) bytes unread)")
                drop(client)
                return
            }
            client.connection.pauseReading()
        }
        if !client.connection.write(Self.line(message)) { drop(client) }
    }

    private static func line(_ message: JSONValue) -> [UInt8] {
        var bytes: [UInt8] = []
        message.write(to: &bytes)
        bytes.append(UInt8(ascii: "\n"))
        return bytes
    }

    // MARK: Events

    private func record(_ event: SupervisorEvent) {
        if options.eventHistory > 0 {
            if history.count < options.eventHistory {
                history.append(event)
            } else {
                history[historyNext] = event
                historyNext = (historyNext + 1) % options.eventHistory
            }
        }
        guard !followers.isEmpty else { return }
        let message = JSONValue.object(["v": .integer(Self.protocolVersion), "event": ControlEncoding.event(event)])
        for follower in followers.values { send(message, to: follower, isEvent: true) }
    }

    private func recentEvents(_ count: Int) -> [SupervisorEvent] {
        let ordered = Array(history[historyNext...] + history[..<historyNext])
        return Array(ordered.suffix(count))
    }

    // MARK: Requests

    private func handle(_ line: [UInt8], from client: ConnectedClient) {
        client.lastActivity = EventLoop.hrtime()
        let request: JSONValue
        do {
            request = try JSONValue.parse(line)
        } catch {
            return reply(to: client, id: nil, failure: ControlFailure("malformedJSON", "\(error)"))
        }
        let id = request["id"]
        guard case .object = request else {
            return reply(to: client, id: nil, failure: ControlFailure("badRequest", "a request is a JSON object, not \(request.typeName)"))
        }
        if let version = request["v"], version.integerValue != Self.protocolVersion {
            return reply(to: client, id: id, failure: ControlFailure("unsupportedVersion",
                "protocol version \(version.serialized) is not supported (this daemon speaks \(Self.protocolVersion))"))
        }
        guard let op = request["op"]?.stringValue else {
            return reply(to: client, id: id, failure: ControlFailure("badRequest", "\"op\" (a string) is missing"))
        }
        do throws(ControlFailure) {
            switch op {
            case "status": reply(to: client, id: id, ["tree": try status(request)])
            case "ready":
                let waiting = notReady()
                let ready = root.state == .running && root.isReady(readyWhen)
                reply(to: client, id: id, ["ready": .bool(ready), "waiting": .array(waiting.map { .string($0) })])
            case "live":
                reply(to: client, id: id, ["live": .bool(root.state == .running), "state": .string(ControlEncoding.state(root.state)),
                                           "pid": .integer(Int64(getpid())),
                                           "uptimeMs": .integer(Int64((EventLoop.hrtime() - startedAt) / 1_000_000))])
            case "start":
                let (parent, childID) = try resolve(request)
                try perform { () throws(SupervisionError) in try parent.restartChild(childID) }
                reply(to: client, id: id, ["path": .string(parent.path + "/" + childID)])
            case "stop": try stop(request, client: client, id: id, thenStart: false)
            case "restart": try stop(request, client: client, id: id, thenStart: true)
            case "delete":
                let (parent, childID) = try resolve(request)
                try perform { () throws(SupervisionError) in try parent.deleteChild(childID) }
                reply(to: client, id: id, ["path": .string(parent.path + "/" + childID)])
            case "spawn": reply(to: client, id: id, ["path": .string(try spawn(request))])
            case "shutdown":
                reply(to: client, id: id, [:])
                root.shutdown(within: shutdownTimeout)
            case "reload":
                guard let reload else { throw ControlFailure("unknownOp", "this daemon has nothing to reload (its tree is built in code)") }
                client.pendingRequests += 1
                reload { [weak self, weak client] error, summary in
                    guard let self, let client else { return }
                    client.pendingRequests -= 1
                    if let error {
                        self.reply(to: client, id: id, failure: ControlFailure("reloadFailed", error))
                    } else {
                        self.reply(to: client, id: id, ["summary": .string(summary)])
                    }
                }
            case "events":
                let last = min(try integer(request, "last", default: 20, range: 0...Int64.max), Int64(max(options.eventHistory, 0)))
                let follow = try bool(request, "follow", default: false)
                reply(to: client, id: id, ["events": .array(recentEvents(Int(last)).map(ControlEncoding.event)),
                                           "following": .bool(follow)])
                if follow {
                    client.following = true
                    followers[ObjectIdentifier(client)] = client
                }
            default:
                throw ControlFailure("unknownOp", "unknown op \"\(op)\" (status, ready, live, start, stop, restart, delete, spawn, shutdown, events, reload)")
            }
        } catch {
            reply(to: client, id: id, failure: error)
        }
    }

    private func reply(to client: ConnectedClient, id: JSONValue?, _ fields: [String: JSONValue]) {
        var members = [JSONValue.Member("v", .integer(Self.protocolVersion))]
        if let id { members.append(.init("id", id)) }
        members.append(.init("ok", .bool(true)))
        for key in fields.keys.sorted() { members.append(.init(key, fields[key]!)) }
        send(.object(members), to: client)
        if client.peerFinished && client.pendingRequests == 0 && !client.following { finish(client) }
    }

    private func reply(to client: ConnectedClient, id: JSONValue?, failure: ControlFailure) {
        var members = [JSONValue.Member("v", .integer(Self.protocolVersion))]
        if let id { members.append(.init("id", id)) }
        members.append(.init("ok", .bool(false)))
        members.append(.init("error", .object(["code": .string(failure.code), "message": .string(failure.message)])))
        send(.object(members), to: client)
        if client.peerFinished && client.pendingRequests == 0 && !client.following { finish(client) }
    }

    private func perform(_ body: () throws(SupervisionError) -> Void) throws(ControlFailure) {
        do { try body() } catch { throw ControlFailure(error) }
    }

    /// A request's `path`: the parent supervisor and the child's id. Paths are absolute
    /// (`root/db/worker`) or relative to the root (`db/worker`).
    private func resolve(_ request: JSONValue) throws(ControlFailure) -> (Supervisor, String) {
        guard let path = request["path"]?.stringValue, !path.isEmpty else {
            throw ControlFailure("badRequest", "\"path\" (a string such as \(root.path)/name) is missing")
        }
        var components = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        if components.first == root.path { components.removeFirst() }
        guard let childID = components.popLast(), !childID.isEmpty, !components.contains("") else {
            throw ControlFailure("unknownPath", "\"\(path)\" names no child (paths look like \(root.path)/name)")
        }
        let parentPath = components.joined(separator: "/")
        guard let parent = root.supervisor(at: parentPath) else {
            throw ControlFailure("unknownPath", "no running supervisor at \(root.path)\(parentPath.isEmpty ? "" : "/" + parentPath)")
        }
        return (parent, childID)
    }

    private func status(_ request: JSONValue) throws(ControlFailure) -> JSONValue {
        if let path = request["path"], path != .null, path.stringValue != root.path {
            let (parent, childID) = try resolve(request)
            do { return ControlEncoding.child(try parent.child(childID)) } catch { throw ControlFailure(error) }
        }
        return ControlEncoding.root(root)
    }

    private func notReady() -> [String] {
        func collect(_ statuses: [ChildStatus]) -> [String] {
            statuses.flatMap { status -> [String] in
                let own = status.isSettled || status.kind == .supervisor ? [] : [status.path]
                return own + collect(status.children)
            }
        }
        return collect(root.children())
    }

    private func stop(_ request: JSONValue, client: ConnectedClient, id: JSONValue?, thenStart: Bool) throws(ControlFailure) {
        let (parent, childID) = try resolve(request)
        let path = parent.path + "/" + childID
        let state: ChildState
        do { state = try parent.child(childID).state } catch { throw ControlFailure(error) }
        if thenStart && (state == .terminated || state == .idle) {
            try perform { () throws(SupervisionError) in try parent.restartChild(childID) }
            return reply(to: client, id: id, ["path": .string(path)])
        }
        if !thenStart && (state == .terminated || state == .idle) {
            throw ControlFailure("notRunning", "\(path) is not running (\(state))")
        }
        client.pendingRequests += 1
        var failedToStop = true
        defer { if failedToStop { client.pendingRequests -= 1 } }
        try perform { () throws(SupervisionError) in
            try parent.terminateChild(childID) { [weak self, weak client] reason in
                guard let self, let client else { return }
                client.pendingRequests -= 1
                var fields: [String: JSONValue] = ["path": .string(path), "exit": .string("\(reason)")]
                if thenStart {
                    do throws(SupervisionError) {
                        try parent.restartChild(childID)
                    } catch {
                        let hint = error.code == .unknownID ? " (a temporary or dynamic child is removed when it stops)" : ""
                        return self.reply(to: client, id: id, failure: ControlFailure(error.code.name, "stopped, but not started again: \(error.message)\(hint)"))
                    }
                    if let pid = try? parent.child(childID).pid { fields["pid"] = .integer(Int64(pid)) }
                }
                self.reply(to: client, id: id, fields)
            }
            failedToStop = false
        }
    }

    private func spawn(_ request: JSONValue) throws(ControlFailure) -> String {
        let (parent, templateID) = try resolve(request)
        var arguments = ChildArguments()
        if let argv = request["argv"] {
            guard let values = argv.arrayValue, values.allSatisfy({ $0.stringValue != nil }) else {
                throw ControlFailure("badRequest", "\"argv\" is an array of strings, not \(argv.typeName)")
            }
            arguments.argv = values.compactMap(\.stringValue)
        }
        if let environment = request["env"] {
            guard case .object(let members) = environment else {
                throw ControlFailure("badRequest", "\"env\" is an object of strings (or null to remove), not \(environment.typeName)")
            }
            for member in members {
                switch member.value {
                case .string(let value): arguments.environment[member.key] = .some(value)
                case .null: arguments.environment[member.key] = .some(nil)
                default: throw ControlFailure("badRequest", "\"env\".\"\(member.key)\" is a string or null, not \(member.value.typeName)")
                }
            }
        }
        do {
            let newID = try parent.startChild(fromTemplate: templateID, with: arguments)
            return parent.path + "/" + newID
        } catch {
            throw ControlFailure(error)
        }
    }

    private func integer(_ request: JSONValue, _ key: String, default value: Int64, range: ClosedRange<Int64>) throws(ControlFailure) -> Int64 {
        guard let field = request[key] else { return value }
        guard let number = field.integerValue, range.contains(number) else {
            throw ControlFailure("badRequest", "\"\(key)\" is a whole number in \(range.lowerBound)...\(range.upperBound), not \(field.serialized)")
        }
        return number
    }

    private func bool(_ request: JSONValue, _ key: String, default value: Bool) throws(ControlFailure) -> Bool {
        guard let field = request[key] else { return value }
        guard let flag = field.boolValue else { throw ControlFailure("badRequest", "\"\(key)\" is true or false, not \(field.serialized)") }
        return flag
    }
}

/// One connected, authorised client.
private final class ConnectedClient {
    let connection: UnixStreamConnection
    var following = false
    var peerFinished = false
    /// Requests answered later (a stop waits for the child to end).
    var pendingRequests = 0
    /// When it last sent a request (or connected).
    var lastActivity = EventLoop.hrtime()

    init(connection: UnixStreamConnection) {
        self.connection = connection
    }
}

/// An error answered to a request: a stable code for programs, a message for people.
struct ControlFailure: Error {
    var code: String
    var message: String

    init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }

    init(_ error: SupervisionError) {
        self.init(error.code.name, error.message)
    }
}

extension SupervisionError.Code {
    /// The code's name in the control protocol (`unknownPath` for an unknown id, `childRunning`, ...).
    var name: String {
        switch self {
        case .duplicateID: return "duplicateID"
        case .invalidID: return "invalidID"
        case .invalidDuration: return "invalidDuration"
        case .invalidIntensity: return "invalidIntensity"
        case .invalidBackoff: return "invalidBackoff"
        case .invalidSpec: return "invalidSpec"
        case .unknownID: return "unknownPath"
        case .childRunning: return "childRunning"
        case .childRestarting: return "childRestarting"
        case .maxChildren: return "maxChildren"
        case .wrongSupervisorKind: return "wrongSupervisorKind"
        case .supervisorStopped: return "supervisorStopped"
        case .startFailed: return "startFailed"
        }
    }
}

/// How the tree and its events look in the control protocol.
enum ControlEncoding {
    static func state(_ state: Supervisor.State) -> String {
        switch state {
        case .idle: return "idle"
        case .running: return "running"
        case .shuttingDown: return "stopping"
        case .stopped: return "stopped"
        }
    }

    static func root(_ root: Supervisor) -> JSONValue {
        .object([
            "id": .string(root.path), "path": .string(root.path), "kind": .string("supervisor"),
            "state": .string(state(root.state)), "ready": .bool(root.state == .running && root.isReady(.allChildren)),
            "children": .array(root.children().map(child)),
        ])
    }

    static func child(_ status: ChildStatus) -> JSONValue {
        .object([
            "id": .string(status.id),
            "path": .string(status.path),
            "kind": .string(status.kind.rawValue),
            "state": .string(status.state.description),
            "ready": .bool(status.ready),
            "pid": status.pid.map { .integer(Int64($0)) },
            "restarts": .integer(Int64(status.restartCount)),
            "lastExit": status.lastExit.map { .string("\($0)") },
            "uptimeMs": status.uptime.map { .integer(milliseconds($0)) },
            "status": status.statusText.map { .string($0) },
            "restart": .string("\(status.restart)"),
            "significant": status.significant ? .bool(true) : nil,
            "children": status.kind == .supervisor ? .array(status.children.map(child)) : nil,
        ])
    }

    static func event(_ event: SupervisorEvent) -> JSONValue {
        var members: [JSONValue.Member] = [
            .init("path", .string(event.path)),
            .init("timeNs", .integer(event.time)),
            .init("restarts", .integer(Int64(event.restartCount))),
        ]
        // The kind's name as in log metadata (`event`), and what it carries.
        func add(_ kind: String, _ extra: KeyValuePairs<String, JSONValue?> = [:]) {
            members.insert(.init("kind", .string(kind)), at: 1)
            for (key, value) in extra { if let value { members.append(.init(key, value)) } }
        }
        switch event.kind {
        case .started(let pid): add(event.kindName, ["pid": pid.map { .integer(Int64($0)) }])
        case .startFailed(let why): add(event.kindName, ["reason": .string(why)])
        case .exited(let reason): add(event.kindName, ["reason": .string("\(reason)"), "abnormal": .bool(reason.isAbnormal)])
        case .restartScheduled(let delay, let why): add(event.kindName, ["delayMs": .integer(milliseconds(delay)), "reason": .string(why)])
        case .stopping: add(event.kindName)
        case .killed: add(event.kindName)
        case .abandoned: add(event.kindName)
        case .notRestarted(let why): add(event.kindName, ["reason": .string(why)])
        case .removed: add(event.kindName)
        case .intensityExceeded(let maxRestarts, let period):
            add(event.kindName, ["maxRestarts": .integer(Int64(maxRestarts)), "periodMs": .integer(milliseconds(period))])
        case .supervisorStarted: add(event.kindName)
        case .supervisorStopping(let reason): add(event.kindName, ["reason": .string("\(reason)")])
        case .supervisorStopped(let reason): add(event.kindName, ["reason": .string("\(reason)")])
        case .output(let stream, let line): add(event.kindName, ["stream": .string(stream), "line": .string(line)])
        case .loopLag(let duration): add(event.kindName, ["durationMs": .integer(milliseconds(duration))])
        case .ready(let after): add(event.kindName, ["afterMs": .integer(milliseconds(after))])
        case .notReady(let why): add(event.kindName, ["reason": .string(why)])
        case .livenessFailed(let why): add(event.kindName, ["reason": .string(why)])
        case .status(let text): add(event.kindName, ["text": .string(text)])
        }
        members.append(.init("text", .string(event.description)))
        return .object(members)
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}

extension Supervisor {
    /// Whether the tree is ready by `condition` (the children's own readiness).
    func isReady(_ condition: DaemonOptions.ReadyCondition) -> Bool {
        switch condition {
        case .started: return true
        case .allChildren: return children().allSatisfy(\.isSettled)
        case .significantChildren: return children().allSatisfy { !$0.significant || $0.isSettled }
        }
    }
}

extension ChildStatus {
    /// Ready, or not meant to run: terminated by request, or ended and not restarted (a
    /// transient child that finished). Such children do not hold up the tree's readiness.
    var isSettled: Bool {
        ready || state == .terminated || (state == .idle && lastExit != nil)
    }
}
