/// A child as its supervisor sees it at one moment.
public struct ChildStatus: Sendable, Equatable {
    /// The child's id.
    public var id: String
    /// `root/db/worker-2`.
    public var path: String
    /// What it is: a process, a loop task, an async task or a supervisor.
    public var kind: ChildKind
    /// When it is restarted (OTP's `restart`).
    public var restart: RestartType
    /// How it is stopped: the policy in force, its spec's or the kind's default (OTP's `shutdown`).
    public var shutdown: ShutdownPolicy
    /// Whether its end can end its supervisor (OTP's `significant`).
    public var significant: Bool
    /// Its state.
    public var state: ChildState
    /// Whether it is ready (see ``Readiness``): running and, where it has to say so, said so.
    public var ready: Bool
    /// The last status line it sent (`STATUS=`, ``LoopTaskContext/status(_:)``), if any.
    public var statusText: String?
    /// The process id while a process runs.
    public var pid: Int32?
    /// How many times it was restarted.
    public var restartCount: Int
    /// Why it last ended.
    public var lastExit: ExitReason?
    /// How long it has been running (while running).
    public var uptime: Duration?
    /// A nested supervisor's children (empty for workers).
    public var children: [ChildStatus]
}

/// Child counts, as OTP's `count_children`.
public struct ChildCounts: Sendable, Equatable {
    /// All child specs.
    public var specs: Int
    /// Children running (or stopping).
    public var active: Int
    /// Children that are supervisors.
    public var supervisors: Int
    /// Children that are workers.
    public var workers: Int

    /// Counts with every field given.
    public init(specs: Int, active: Int, supervisors: Int, workers: Int) {
        self.specs = specs
        self.active = active
        self.supervisors = supervisors
        self.workers = workers
    }
}

extension Supervisor {
    /// Stops the tree: every child in reverse start order (nested supervisors stop theirs
    /// first), each asked to stop and killed at its shutdown timeout. With `within`, the whole
    /// tree ends within that time: children still running at the deadline are killed (tasks
    /// abandoned). `completion` receives the final reason.
    public func shutdown(within deadline: Duration? = nil, completion: ((ExitReason) -> Void)? = nil) {
        runtime.preconditionOnRuntimeThread("Supervisor.shutdown")
        if let completion {
            if case .stopped(let reason) = state { completion(reason) } else { addTerminationHandler(completion) }
        }
        requestShutdown(deadline: deadline.map { now.addingSaturating($0.nanosecondsClamped) })
    }

    /// Calls `handler` once with the final reason when the supervisor has stopped.
    public func onTermination(_ handler: @escaping (ExitReason) -> Void) {
        if case .stopped(let reason) = state { handler(reason) } else { addTerminationHandler(handler) }
    }

    /// The final reason, once stopped.
    public var finalReason: ExitReason? {
        if case .stopped(let reason) = state { return reason }
        return nil
    }

    /// Adds an event handler for the whole tree (called on the runtime's thread).
    public func onEvent(_ handler: @escaping (SupervisorEvent) -> Void) {
        events.addHandler(handler)
    }

    /// A stream of the whole tree's events from now on; it finishes when the root stops.
    public func eventStream() -> AsyncStream<SupervisorEvent> {
        events.makeStream()
    }

    /// Adds `spec` as a new child (after the existing ones) and starts it.
    /// - Throws: ``SupervisionError`` for an invalid spec, a duplicate id, a dynamic supervisor
    ///   at its ``SupervisorSpec/maxChildren``, or a supervisor that is not running.
    public func startChild(_ spec: ChildSpec) throws(SupervisionError) {
        runtime.preconditionOnRuntimeThread("Supervisor.startChild")
        guard isAcceptingWork else {
            throw SupervisionError(.supervisorStopped, "\(path): not running, cannot start \"\(spec.id)\"")
        }
        try Validation.validate(spec, parentPath: path)
        if childList[spec.id] != nil {
            throw SupervisionError(.duplicateID, "\(path): a child with the id \"\(spec.id)\" exists")
        }
        if let maxChildren = self.spec.maxChildren, childList.count >= maxChildren {
            throw SupervisionError(.maxChildren, "\(path): already has \(childList.count) children (maxChildren \(maxChildren))")
        }
        addAndStart(spec)
    }

    /// Adds a checked spec (valid, its id free, room for it) and starts it.
    private func addAndStart(_ spec: ChildSpec) {
        let record = addRecord(spec)
        perform { startRecord(record, isRestart: false) }
    }

    /// Starts a child from `template` with a generated id (`template.id-1`, `-2`, ...), as
    /// Elixir's `DynamicSupervisor`. Returns the new id.
    @discardableResult
    public func startChild(from template: ChildSpec) throws(SupervisionError) -> String {
        runtime.preconditionOnRuntimeThread("Supervisor.startChild")
        // Everything that can refuse the start is checked before an id is generated, so a
        // refused start neither uses up a number nor names a child that never existed.
        guard isAcceptingWork else {
            throw SupervisionError(.supervisorStopped, "\(path): not running, cannot start from template \"\(template.id)\"")
        }
        if let maxChildren = self.spec.maxChildren, childList.count >= maxChildren {
            throw SupervisionError(.maxChildren, "\(path): already has \(childList.count) children (maxChildren \(maxChildren))")
        }
        try Validation.validate(template, parentPath: path)
        var spec = template
        // The template was checked; a generated id (`id-N`) is as valid as its base and free.
        repeat { spec.id = nextDynamicID(template.id) } while childList[spec.id] != nil
        addAndStart(spec)
        return spec.id
    }

    /// Starts a child from `template` with arguments of its own and a generated id, as OTP's
    /// `start_child(Sup, ExtraArgs)` for `simple_one_for_one`: a process template gets
    /// `arguments.argv` appended and `arguments.environment` applied; a task template gets
    /// `arguments.value` as its ``ChildSpec/argument``. ``childSpec(_:)`` returns the spec as
    /// started, arguments included. Returns the new id.
    /// - Throws: ``SupervisionError/Code/invalidSpec`` for argv or environment given to a task or
    ///   supervisor template, a value given to a process or supervisor template, or an
    ///   environment name or value the spawn could not pass on; the errors of
    ///   ``startChild(from:)`` otherwise.
    @discardableResult
    public func startChild(from template: ChildSpec, with arguments: ChildArguments) throws(SupervisionError) -> String {
        runtime.preconditionOnRuntimeThread("Supervisor.startChild")
        var spec = template
        let templatePath = path + "/" + template.id
        if !arguments.argv.isEmpty || !arguments.environment.isEmpty {
            guard case .process(var process) = template.kind else {
                let hint = template.kind.takesArgument ? "; pass a value instead" : ""
                throw SupervisionError(.invalidSpec, "\(templatePath): argv and environment arguments apply to process "
                    + "templates only, not to a \(template.kind.name)\(hint)")
            }
            process.argv += arguments.argv
            process.environment = process.environment.applying(arguments.environment)
            spec.kind = .process(process)
        }
        if let value = arguments.value {
            guard template.kind.takesArgument else {
                let hint = template.kind.isSupervisor ? "" : "; pass argv or environment to a process"
                throw SupervisionError(.invalidSpec, "\(templatePath): a value argument is handed to task templates only, "
                    + "not to a \(template.kind.name)\(hint)")
            }
            spec.argument = value
        }
        return try startChild(from: spec)
    }

    /// Starts a child from the template `templateID` of this supervisor's spec
    /// (``SupervisorSpec/templates``) with `arguments` and a generated id (`templateID-1`, ...),
    /// as ``startChild(from:with:)``. Returns the new id.
    /// - Throws: ``SupervisionError/Code/unknownID`` when the spec has no such template; the
    ///   errors of ``startChild(from:with:)`` otherwise.
    @discardableResult
    public func startChild(fromTemplate templateID: String, with arguments: ChildArguments = ChildArguments()) throws(SupervisionError) -> String {
        runtime.preconditionOnRuntimeThread("Supervisor.startChild")
        guard let template = spec.templates.first(where: { $0.id == templateID }) else {
            let known = spec.templates.map(\.id)
            throw SupervisionError(.unknownID, "\(path) has no template \"\(templateID)\""
                + (known.isEmpty ? " (it has none)" : " (it has \(known.joined(separator: ", ")))"))
        }
        return try startChild(from: template, with: arguments)
    }

    /// The ids of this supervisor's templates (``SupervisorSpec/templates``).
    public var templateIDs: [String] { spec.templates.map(\.id) }

    /// Stops a child by its shutdown policy and keeps its spec (``ChildState/terminated``),
    /// except temporary children and a dynamic supervisor's children, which are removed. It is
    /// not restarted. `completion` receives its exit reason once stopped.
    /// - Throws: ``SupervisionError/Code/unknownID``.
    public func terminateChild(_ id: String, completion: ((ExitReason) -> Void)? = nil) throws(SupervisionError) {
        runtime.preconditionOnRuntimeThread("Supervisor.terminateChild")
        let record = try self.record(id)
        guard isAcceptingWork else {
            throw SupervisionError(.supervisorStopped, "\(path): not running, cannot terminate \"\(id)\"")
        }
        perform { terminate(record, completion: completion) }
    }

    /// Starts a terminated (or ended, not restarted) child again.
    /// - Throws: ``SupervisionError/Code/unknownID``; ``SupervisionError/Code/childRunning``
    ///   when it is running or stopping, ``SupervisionError/Code/childRestarting`` when it is
    ///   waiting for its restart.
    public func restartChild(_ id: String) throws(SupervisionError) {
        runtime.preconditionOnRuntimeThread("Supervisor.restartChild")
        let record = try self.record(id)
        guard isAcceptingWork else {
            throw SupervisionError(.supervisorStopped, "\(path): not running, cannot restart \"\(id)\"")
        }
        guard record.state == .terminated || record.state == .idle else {
            throw Self.notStopped(record)
        }
        perform { startRecord(record, isRestart: true) }
    }

    /// Removes a stopped child's spec.
    /// - Throws: ``SupervisionError/Code/unknownID``; ``SupervisionError/Code/childRunning``
    ///   when it is running or stopping, ``SupervisionError/Code/childRestarting`` when it is
    ///   waiting for its restart.
    public func deleteChild(_ id: String) throws(SupervisionError) {
        runtime.preconditionOnRuntimeThread("Supervisor.deleteChild")
        let record = try self.record(id)
        guard record.state == .terminated || record.state == .idle else {
            throw Self.notStopped(record)
        }
        perform { removeRecordForDelete(record) }
    }

    /// The spec the child `id` was started with, children added at run time included (OTP's
    /// `get_childspec`). A dynamic child's id is the generated one.
    /// - Throws: ``SupervisionError/Code/unknownID``.
    public func childSpec(_ id: String) throws(SupervisionError) -> ChildSpec {
        runtime.preconditionOnRuntimeThread("Supervisor.childSpec")
        return try record(id).spec
    }

    /// The error for a request that needs the child stopped: `running` or `restarting`, as OTP.
    private static func notStopped(_ record: ChildRecord) -> SupervisionError {
        if record.state == .restarting {
            return SupervisionError(.childRestarting, "\(record.path) is waiting for its restart; terminate it first")
        }
        return SupervisionError(.childRunning, "\(record.path) is \(record.state); terminate it first")
    }

    /// A snapshot of the children, nested supervisors included.
    public func children() -> [ChildStatus] {
        runtime.preconditionOnRuntimeThread("Supervisor.children")
        let now = self.now
        return childList.live.map { status(of: $0, now: now) }
    }

    /// A snapshot of the child `id` (its nested children included, for a supervisor), found by
    /// its id in O(1) whatever the number of siblings.
    /// - Throws: ``SupervisionError/Code/unknownID``.
    public func child(_ id: String) throws(SupervisionError) -> ChildStatus {
        runtime.preconditionOnRuntimeThread("Supervisor.child")
        return status(of: try record(id), now: now)
    }

    private func status(of record: ChildRecord, now: Int64) -> ChildStatus {
        var nested: [ChildStatus] = []
        if let supervisor = record.lastNestedSupervisor { nested = supervisor.children() }
        return ChildStatus(
            id: record.id, path: record.path, kind: record.spec.kind.childKind,
            restart: record.spec.restart, shutdown: record.spec.effectiveShutdown,
            significant: record.spec.significant, state: record.state,
            ready: record.state == .running && record.isReady, statusText: record.statusText,
            pid: record.state == .running || record.state == .stopping ? record.pid : nil,
            restartCount: record.restartCount, lastExit: record.lastExit,
            uptime: record.isActive ? .nanoseconds(now - record.startedAt) : nil,
            children: nested)
    }

    /// Child counts (OTP's `count_children`), in O(1): the counts are kept as children are
    /// added, removed, started and stopped.
    public func countChildren() -> ChildCounts {
        ChildCounts(specs: childList.count, active: childList.activeCount.value,
                    supervisors: childList.supervisorCount, workers: childList.count - childList.supervisorCount)
    }

    /// The running nested supervisor at `relativePath` (`db` or `db/pool`), if any.
    public func supervisor(at relativePath: String) -> Supervisor? {
        var current: Supervisor = self
        for component in relativePath.split(separator: "/") {
            guard let record = current.childList[String(component)],
                  case .supervisor(let nested) = record.worker else { return nil }
            current = nested
        }
        return current
    }

    /// The ids of the children, in start order.
    public var childIDs: [String] { childList.live.map(\.id) }
}
