#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import Logging
import UVSupervisor

/// What the daemon itself is told by a config file (its `daemon:` section).
public struct DaemonSettings: Sendable, Equatable {
    /// The control socket's path; `nil` for none.
    public var controlSocket: String? = nil
    public var controlSocketMode: UInt32 = 0o600
    public var shutdownTimeout: Duration = .seconds(10)
    /// `nil`: no log at all.
    public var logLevel: Logger.Level? = .info
    public var outputLogLevel: Logger.Level = .info
    public var readyWhen: DaemonOptions.ReadyCondition = .allChildren
    public var lagThreshold: Duration? = .milliseconds(250)
    public var killDescendants = true
    /// `DaemonOptions.childRunsFirst`.
    public var childRunsFirst = true
    /// Unmap the code pages start-up, reloads and bursts of restarts used, once the tree is up
    /// and after this long without an event (`DaemonOptions.trimCodePages`); `nil`: never.
    public var trimCodePages: Duration? = .seconds(30)
    /// Signals passed on to the workers (SIGHUP is the program's reload, SIGUSR1 its log reopen).
    public var forwardSignals: [Int32] = []

    public init() {}
}

/// A config file read and checked: the tree, the daemon's settings, and what reload compares.
public struct LoadedConfig {
    /// The root's name (`root` unless `name:` says otherwise).
    public var name: String
    /// The tree.
    public var root: SupervisorSpec
    public var daemon: DaemonSettings
    /// Child path → the file its captured output is written to (`log-file:`).
    public var logFiles: [String: String]
    /// Child path → its config, serialised: equal text, equal child (reload leaves it alone).
    public var fingerprints: [String: String]
    /// Nested supervisor path → its own settings without its children, serialised (reload
    /// descends into a supervisor whose own settings did not change). The root's is under
    /// its name.
    public var ownFingerprints: [String: String]
    /// Child path → its spec as decoded.
    public var specs: [String: ChildSpec]
    /// The checked tree, for the daemon (the config tool prints it as JSON).
    public var node: ConfigNode
}

/// Looks users and groups up by name (the config tool: the system's databases) or refuses names
/// (the daemon: the tool has already turned them into numbers).
public protocol ConfigAccounts {
    /// The uid and primary gid of `name`.
    func user(named name: String) -> (uid: UInt32, gid: UInt32)?
    /// The gid of `name`.
    func group(named name: String) -> UInt32?
    /// Every group `user` belongs to (its primary group included), for `initgroups` semantics.
    func groups(ofUser name: String, primary: UInt32) -> [UInt32]?
}

/// Accounts from the system's user and group databases (`getpwnam_r`, `getgrnam_r`,
/// `getgrouplist`).
public struct SystemAccounts: ConfigAccounts {
    public init() {}

    public func user(named name: String) -> (uid: UInt32, gid: UInt32)? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16_384)
        guard getpwnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return (entry.pw_uid, entry.pw_gid)
    }

    public func group(named name: String) -> UInt32? {
        var entry = Glibc.group()
        var result: UnsafeMutablePointer<Glibc.group>?
        var buffer = [CChar](repeating: 0, count: 65_536)
        guard getgrnam_r(name, &entry, &buffer, buffer.count, &result) == 0, result != nil else { return nil }
        return entry.gr_gid
    }

    public func groups(ofUser name: String, primary: UInt32) -> [UInt32]? {
        var count: Int32 = 64
        while count <= 65_536 {
            var list = [gid_t](repeating: 0, count: Int(count))
            var found = count
            if getgrouplist(name, primary, &list, &found) >= 0 { return Array(list.prefix(Int(found))) }
            count = max(found, count * 2)
        }
        return nil
    }
}

/// Accounts that know no names: for a tree the config tool has already resolved.
public struct NumericAccounts: ConfigAccounts {
    public init() {}
    public func user(named name: String) -> (uid: UInt32, gid: UInt32)? { nil }
    public func group(named name: String) -> UInt32? { nil }
    public func groups(ofUser name: String, primary: UInt32) -> [UInt32]? { nil }
}

/// Reads a config tree into a ``LoadedConfig``, checking every key and value; the first problem
/// is thrown as a ``ConfigError`` naming the file, line, column and key path. Nothing is
/// started or changed here.
public struct ConfigDecoder {
    public let file: String
    public let accounts: any ConfigAccounts
    /// Where cgroup v2 lives (tests point it elsewhere).
    public var cgroupRoot = "/sys/fs/cgroup"

    public init(file: String, accounts: any ConfigAccounts) {
        self.file = file
        self.accounts = accounts
    }

    /// Decodes `node` (the whole file).
    public func decode(_ node: ConfigNode) throws(ConfigError) -> LoadedConfig {
        var state = DecodeState()
        var top = try Mapping(node, path: "", decoder: self)
        let name = try top.optional("name").map { node throws(ConfigError) in try identifier(node, path: "name") } ?? "root"
        var daemon = DaemonSettings()
        if let section = top.optional("daemon") { daemon = try decodeDaemon(section) }
        let root = try decodeSupervisor(&top, path: "", treePath: name, state: &state)
        try top.finish()
        do {
            try root.validate(name: name)
        } catch {
            // A tree-wide rule (duplicate ids, a significant permanent child, ...): point at the child.
            let treePath = error.message.split(separator: ":").first.map(String.init) ?? name
            let place = state.places[treePath]
            var message = error.message
            if message.hasPrefix(treePath + ": ") { message.removeFirst(treePath.count + 2) }
            throw ConfigError(file: file, mark: place?.mark, keyPath: place?.keyPath ?? treePath, message: message)
        }
        var resolved = node
        if !state.resolvedCredentials.isEmpty { resolved = Self.substitute(state.resolvedCredentials, in: node, path: "") }
        state.ownFingerprints[name] = Self.withoutChildren(node.replacing("daemon", with: .scalar("", isNull: true, mark: nil))).json.serialized
        return LoadedConfig(name: name, root: root, daemon: daemon, logFiles: state.logFiles,
                            fingerprints: state.fingerprints, ownFingerprints: state.ownFingerprints,
                            specs: state.specs, node: resolved)
    }

    // MARK: Sections

    private func decodeDaemon(_ node: ConfigNode) throws(ConfigError) -> DaemonSettings {
        var section = try Mapping(node, path: "daemon", decoder: self)
        var settings = DaemonSettings()
        if let value = section.optional("control-socket") {
            if case .scalar("false", false, _) = value {
                settings.controlSocket = nil
            } else {
                let path = try text(value, path: "daemon.control-socket")
                guard path.hasPrefix("/") else { throw error(value, "daemon.control-socket", "expected an absolute path (or false), not \"\(path)\"") }
                settings.controlSocket = path
            }
        }
        if let value = section.optional("control-socket-mode") { settings.controlSocketMode = try octal(value, path: "daemon.control-socket-mode") }
        if let value = section.optional("shutdown-timeout") { settings.shutdownTimeout = try duration(value, path: "daemon.shutdown-timeout") }
        if let value = section.optional("log-level") {
            let level = try text(value, path: "daemon.log-level")
            if level == "off" { settings.logLevel = nil } else { settings.logLevel = try logLevel(value, path: "daemon.log-level") }
        }
        if let value = section.optional("output-log-level") { settings.outputLogLevel = try logLevel(value, path: "daemon.output-log-level") }
        if let value = section.optional("ready-when") {
            settings.readyWhen = try choice(value, path: "daemon.ready-when",
                                            ["all-children": .allChildren, "significant-children": .significantChildren, "started": .started])
        }
        if let value = section.optional("lag-threshold") {
            settings.lagThreshold = try text(value, path: "daemon.lag-threshold") == "off" ? nil : try duration(value, path: "daemon.lag-threshold")
        }
        if let value = section.optional("kill-descendants") { settings.killDescendants = try bool(value, path: "daemon.kill-descendants") }
        if let value = section.optional("child-runs-first") { settings.childRunsFirst = try bool(value, path: "daemon.child-runs-first") }
        if let value = section.optional("trim-code-pages") {
            settings.trimCodePages = try text(value, path: "daemon.trim-code-pages") == "off" ? nil : try duration(value, path: "daemon.trim-code-pages")
        }
        if let value = section.optional("forward-signals") {
            settings.forwardSignals = try list(value, path: "daemon.forward-signals").enumerated().map { index, item throws(ConfigError) in
                try signal(item, path: "daemon.forward-signals[\(index)]")
            }
        }
        try section.finish()
        return settings
    }

    /// A supervisor's own keys, from `mapping` (the file's top level or a `supervisor:` section).
    private func decodeSupervisor(_ mapping: inout Mapping, path: String, treePath: String,
                                  state: inout DecodeState) throws(ConfigError) -> SupervisorSpec {
        let key = { (name: String) in path.isEmpty ? name : "\(path).\(name)" }
        var spec = SupervisorSpec(children: [])
        if let value = mapping.optional("strategy") {
            spec.strategy = try choice(value, path: key("strategy"),
                                       ["one-for-one": .oneForOne, "one-for-all": .oneForAll, "rest-for-one": .restForOne])
        }
        if let value = mapping.optional("intensity") {
            var intensity = try Mapping(value, path: key("intensity"), decoder: self)
            let maxRestarts = try intensity.required("max-restarts")
            let period = try intensity.required("period")
            spec.intensity = RestartIntensity(maxRestarts: Int(try count(maxRestarts, path: key("intensity.max-restarts"), max: 1_000_000_000)),
                                              period: try duration(period, path: key("intensity.period")))
            try intensity.finish()
        }
        if let value = mapping.optional("auto-shutdown") {
            spec.autoShutdown = try choice(value, path: key("auto-shutdown"),
                                           ["never": .never, "any-significant": .anySignificant, "all-significant": .allSignificant])
        }
        if let value = mapping.optional("dynamic"), try bool(value, path: key("dynamic")) {
            spec.isDynamic = true
        }
        if let value = mapping.optional("max-children") {
            spec.maxChildren = Int(try count(value, path: key("max-children"), max: 100_000_000))
        }
        if let value = mapping.optional("children") {
            var firstLine: [String: Int] = [:]
            for (index, child) in try list(value, path: key("children")).enumerated() {
                let decoded = try decodeChild(child, path: key("children[\(index)]"), parentTreePath: treePath, state: &state)
                if let line = firstLine[decoded.id] {
                    throw error(child, key("children[\(index)].id"), "the id \"\(decoded.id)\" is used twice in \(treePath) (first on line \(line))")
                }
                firstLine[decoded.id] = child.mark?.line ?? 0
                spec.children.append(decoded)
            }
        }
        if let value = mapping.optional("templates") {
            for (index, child) in try list(value, path: key("templates")).enumerated() {
                spec.templates.append(try decodeChild(child, path: key("templates[\(index)]"), parentTreePath: treePath + "/template", state: &state))
            }
        }
        return spec
    }

    private func decodeChild(_ node: ConfigNode, path: String, parentTreePath: String,
                             state: inout DecodeState) throws(ConfigError) -> ChildSpec {
        var mapping = try Mapping(node, path: path, decoder: self)
        let idNode = try mapping.required("id")
        let id = try identifier(idNode, path: "\(path).id")
        let treePath = parentTreePath + "/" + id
        state.places[treePath] = (node.mark, path)
        state.fingerprints[treePath] = node.json.serialized
        let kind: WorkerKind
        let command = mapping.optional("command")
        let nested = mapping.optional("supervisor")
        switch (command, nested) {
        case (.some, .some):
            throw error(node, path, "a child has either `command` (a process) or `supervisor` (a nested supervisor), not both")
        case (nil, nil):
            throw error(node, path, "a child needs `command` (a process: its argv as a list) or `supervisor` (a nested supervisor)")
        case (.some(let command), nil):
            kind = .process(try decodeProcess(command, &mapping, path: path, treePath: treePath, state: &state))
        case (nil, .some(let section)):
            state.ownFingerprints[treePath] = node.replacing("supervisor", with: Self.withoutChildren(section)).json.serialized
            var inner = try Mapping(section, path: "\(path).supervisor", decoder: self)
            let spec = try decodeSupervisor(&inner, path: "\(path).supervisor", treePath: treePath, state: &state)
            try inner.finish()
            kind = .supervisor(spec)
        }
        var child = ChildSpec(id: id, kind)
        if let value = mapping.optional("restart") {
            child.restart = try choice(value, path: "\(path).restart", ["permanent": .permanent, "transient": .transient, "temporary": .temporary])
        }
        if let value = mapping.optional("shutdown") {
            switch try text(value, path: "\(path).shutdown") {
            case "brutal-kill": child.shutdown = .brutalKill
            case "infinity": child.shutdown = .infinity
            default: child.shutdown = .timeout(try duration(value, path: "\(path).shutdown", expected: "a duration (5s), brutal-kill or infinity"))
            }
        }
        if let value = mapping.optional("significant") { child.significant = try bool(value, path: "\(path).significant") }
        if let value = mapping.optional("backoff") { child.backoff = try decodeBackoff(value, path: "\(path).backoff") }
        if let value = mapping.optional("readiness") { child.readiness = try decodeReadiness(value, path: "\(path).readiness") }
        if let value = mapping.optional("ready-timeout") { child.readyTimeout = try duration(value, path: "\(path).ready-timeout") }
        if let value = mapping.optional("liveness") { child.liveness = try decodeLiveness(value, path: "\(path).liveness") }
        try mapping.finish()
        state.specs[treePath] = child
        return child
    }

    private func decodeProcess(_ command: ConfigNode, _ mapping: inout Mapping, path: String, treePath: String,
                               state: inout DecodeState) throws(ConfigError) -> ProcessSpec {
        let argv = try strings(command, path: "\(path).command")
        guard let program = argv.first, !program.isEmpty else {
            throw error(command, "\(path).command", "the command is empty: give the program and its arguments as a list")
        }
        var spec = ProcessSpec(argv: argv)
        if let value = mapping.optional("environment") { spec.environment = try decodeEnvironment(value, path: "\(path).environment") }
        if let value = mapping.optional("working-directory") {
            let directory = try text(value, path: "\(path).working-directory")
            guard directory.hasPrefix("/") else { throw error(value, "\(path).working-directory", "expected an absolute path, not \"\(directory)\"") }
            spec.workingDirectory = directory
        }
        var userName: String?
        if let value = mapping.optional("user") {
            let name = try text(value, path: "\(path).user")
            if let number = UInt32(name) {
                spec.userID = number
            } else if let found = accounts.user(named: name) {
                spec.userID = found.uid
                spec.groupID = found.gid
                userName = name
                state.resolvedCredentials[path, default: [:]]["user"] = .scalar(String(found.uid), isNull: false, mark: nil)
                state.resolvedCredentials[path, default: [:]]["group"] = .scalar(String(found.gid), isNull: false, mark: nil)
            } else {
                throw error(value, "\(path).user", "unknown user \"\(name)\" (not in the user database; a number is taken as a uid)")
            }
        }
        if let value = mapping.optional("group") {
            let name = try text(value, path: "\(path).group")
            if let number = UInt32(name) {
                spec.groupID = number
            } else if let gid = accounts.group(named: name) {
                spec.groupID = gid
            } else {
                throw error(value, "\(path).group", "unknown group \"\(name)\"")
            }
            state.resolvedCredentials[path, default: [:]]["group"] = .scalar(String(spec.groupID!), isNull: false, mark: nil)
        }
        if let value = mapping.optional("groups") {
            var groups: [UInt32] = []
            for (index, item) in try list(value, path: "\(path).groups").enumerated() {
                let name = try text(item, path: "\(path).groups[\(index)]")
                if let number = UInt32(name) {
                    groups.append(number)
                } else if let gid = accounts.group(named: name) {
                    groups.append(gid)
                } else {
                    throw error(item, "\(path).groups[\(index)]", "unknown group \"\(name)\"")
                }
            }
            spec.supplementaryGroups = groups
        } else if let userName, let gid = spec.groupID {
            // As systemd's User=: the user's own groups.
            spec.supplementaryGroups = accounts.groups(ofUser: userName, primary: gid)
        }
        if let groups = spec.supplementaryGroups, userName != nil || mapping.has("groups") {
            state.resolvedCredentials[path, default: [:]]["groups"] = .sequence(groups.map { .scalar(String($0), isNull: false, mark: nil) }, mark: nil)
        }
        if let value = mapping.optional("umask") { spec.umask = try octal(value, path: "\(path).umask") }
        if let value = mapping.optional("limits") { spec.resourceLimits = try decodeLimits(value, path: "\(path).limits") }
        if let value = mapping.optional("stdin") {
            spec.stdin = try choice(value, path: "\(path).stdin", ["null": ProcessStdio.null, "inherit": .inherit])
        }
        for stream in ["stdout", "stderr"] {
            guard let value = mapping.optional(stream) else { continue }
            let stdio = try decodeOutput(value, path: "\(path).\(stream)")
            if stream == "stdout" { spec.stdout = stdio } else { spec.stderr = stdio }
        }
        if let value = mapping.optional("log-file") {
            let file = try text(value, path: "\(path).log-file")
            guard file.hasPrefix("/") else { throw error(value, "\(path).log-file", "expected an absolute path, not \"\(file)\"") }
            // Captured by the daemon and written there, so that it can reopen the file (SIGUSR1).
            if !mapping.has("stdout") { spec.stdout = .capture }
            if !mapping.has("stderr") { spec.stderr = .capture }
            state.logFiles[treePath] = file
        }
        if let value = mapping.optional("stop-signal") { spec.stopSignal = try signal(value, path: "\(path).stop-signal") }
        if let value = mapping.optional("success-exit-codes") {
            spec.successExitCodes = Set(try list(value, path: "\(path).success-exit-codes").enumerated().map { index, item throws(ConfigError) in
                Int32(try count(item, path: "\(path).success-exit-codes[\(index)]", max: 255))
            })
        }
        for key in ["memory-max", "cpu-max"] {
            guard let value = mapping.optional(key) else { continue }
            try requireDelegatedCgroup(value, path: "\(path).\(key)")
        }
        return spec
    }

    private func decodeEnvironment(_ node: ConfigNode, path: String) throws(ConfigError) -> ProcessEnvironment {
        var section = try Mapping(node, path: path, decoder: self)
        let inherit = try section.optional("inherit").map { value throws(ConfigError) in try bool(value, path: "\(path).inherit") } ?? true
        var set: [String: String] = [:]
        if let value = section.optional("set") {
            guard case .mapping(let members, _) = value else { throw error(value, "\(path).set", "expected a mapping of NAME: value, not \(value.kindName)") }
            for member in members {
                set[member.key] = try text(member.value, path: "\(path).set.\(member.key)")
            }
        }
        var unset: [String] = []
        if let value = section.optional("unset") { unset = try strings(value, path: "\(path).unset") }
        try section.finish()
        if !inherit {
            if !unset.isEmpty { throw error(node, "\(path).unset", "nothing to unset: the environment is not inherited") }
            return .replace(set)
        }
        var overrides: [String: String?] = [:]
        for (key, value) in set { overrides[key] = .some(value) }
        for key in unset { overrides[key] = .some(nil) }
        return overrides.isEmpty ? .inherit : .inheritWithOverrides(overrides)
    }

    private func decodeLimits(_ node: ConfigNode, path: String) throws(ConfigError) -> [ResourceLimit] {
        guard case .mapping(let members, _) = node else { throw error(node, path, "expected a mapping such as {nofile: 65536}, not \(node.kindName)") }
        let byName = Dictionary(uniqueKeysWithValues: ResourceLimit.Resource.allCases.map { ($0.name, $0) })
        var limits: [ResourceLimit] = []
        for member in members {
            guard let resource = byName[member.key] else {
                throw ConfigError(file: file, mark: member.keyMark, keyPath: "\(path).\(member.key)",
                                  message: "unknown resource (known: \(ResourceLimit.Resource.allCases.map(\.name).joined(separator: ", ")))")
            }
            let key = "\(path).\(member.key)"
            if case .mapping = member.value {
                var pair = try Mapping(member.value, path: key, decoder: self)
                let soft = try limitValue(try pair.required("soft"), path: "\(key).soft")
                let hard = try limitValue(try pair.required("hard"), path: "\(key).hard")
                try pair.finish()
                guard soft <= hard else { throw error(member.value, key, "the soft limit is above the hard limit") }
                limits.append(ResourceLimit(resource, soft: soft, hard: hard))
            } else {
                limits.append(ResourceLimit(resource, try limitValue(member.value, path: key)))
            }
        }
        return limits
    }

    private func decodeOutput(_ node: ConfigNode, path: String) throws(ConfigError) -> ProcessStdio {
        if case .mapping = node {
            var section = try Mapping(node, path: path, decoder: self)
            let file = try text(try section.required("file"), path: "\(path).file")
            guard file.hasPrefix("/") else { throw error(node, "\(path).file", "expected an absolute path, not \"\(file)\"") }
            let append = try section.optional("append").map { value throws(ConfigError) in try bool(value, path: "\(path).append") } ?? true
            try section.finish()
            return .file(path: file, append: append)
        }
        return try choice(node, path: path, ["inherit": .inherit, "null": .null, "log": .capture],
                          expected: "inherit, null, log (to the daemon's log) or {file: PATH, append: true}")
    }

    private func decodeBackoff(_ node: ConfigNode, path: String) throws(ConfigError) -> Backoff {
        if case .scalar("none", false, _) = node { return .none }
        var section = try Mapping(node, path: path, decoder: self)
        let initial = try section.optional("initial").map { value throws(ConfigError) in try duration(value, path: "\(path).initial") } ?? .milliseconds(100)
        let maximum = try section.optional("max").map { value throws(ConfigError) in try duration(value, path: "\(path).max") } ?? .seconds(30)
        let multiplier = try section.optional("multiplier").map { value throws(ConfigError) in try number(value, path: "\(path).multiplier") } ?? 2
        let jitter = try section.optional("jitter").map { value throws(ConfigError) in try number(value, path: "\(path).jitter") } ?? 0.1
        let reset = try section.optional("reset-after").map { value throws(ConfigError) in try duration(value, path: "\(path).reset-after") } ?? .seconds(60)
        try section.finish()
        return Backoff(initial: initial, multiplier: multiplier, maximum: maximum, jitter: jitter, resetAfter: reset)
    }

    private func decodeReadiness(_ node: ConfigNode, path: String) throws(ConfigError) -> Readiness {
        if case .scalar(let text, false, _) = node {
            switch text {
            case "started": return .started
            case "notify": return .notify
            default: throw error(node, path, "expected started, notify, {descriptor: N} or {probe: ...}, not \"\(text)\"")
            }
        }
        var section = try Mapping(node, path: path, decoder: self)
        if let value = section.optional("descriptor") {
            let descriptor = try count(value, path: "\(path).descriptor", max: 66)
            try section.finish()
            return .descriptor(Int32(descriptor))
        }
        if let value = section.optional("probe") {
            let probe = try decodeProbe(value, path: "\(path).probe")
            try section.finish()
            return .probe(probe)
        }
        throw error(node, path, "expected started, notify, {descriptor: N} or {probe: ...}")
    }

    private func decodeLiveness(_ node: ConfigNode, path: String) throws(ConfigError) -> Liveness {
        if case .scalar("none", false, _) = node { return .none }
        var section = try Mapping(node, path: path, decoder: self)
        if let value = section.optional("watchdog") {
            let interval = try duration(value, path: "\(path).watchdog")
            try section.finish()
            return .watchdog(interval)
        }
        if let value = section.optional("probe") {
            let probe = try decodeProbe(value, path: "\(path).probe")
            try section.finish()
            return .probe(probe)
        }
        throw error(node, path, "expected none, {watchdog: DURATION} or {probe: ...}")
    }

    private func decodeProbe(_ node: ConfigNode, path: String) throws(ConfigError) -> Probe {
        var section = try Mapping(node, path: path, decoder: self)
        let check: ProbeCheck
        switch (section.optional("tcp"), section.optional("command")) {
        case (.some(let address), nil):
            let text = try text(address, path: "\(path).tcp")
            guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]), port > 0 else {
                throw error(address, "\(path).tcp", "expected HOST:PORT with a numeric host (127.0.0.1:8080, [::1]:8080), not \"\(text)\"")
            }
            var host = String(text[..<colon])
            if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            check = .tcp(host: host, port: port)
        case (nil, .some(let command)):
            let argv = try strings(command, path: "\(path).command")
            guard !argv.isEmpty else { throw error(command, "\(path).command", "the command is empty") }
            check = .command(argv)
        default:
            throw error(node, path, "a probe has exactly one of tcp: HOST:PORT or command: [argv]")
        }
        var probe = Probe(check)
        if let value = section.optional("interval") { probe.interval = try duration(value, path: "\(path).interval") }
        if let value = section.optional("timeout") { probe.timeout = try duration(value, path: "\(path).timeout") }
        if let value = section.optional("failure-threshold") { probe.failureThreshold = Int(try count(value, path: "\(path).failure-threshold", max: 1000)) }
        if let value = section.optional("initial-delay") { probe.initialDelay = try duration(value, path: "\(path).initial-delay") }
        try section.finish()
        return probe
    }

    /// `memory-max` and `cpu-max` need a cgroup v2 subtree delegated to the daemon.
    private func requireDelegatedCgroup(_ node: ConfigNode, path: String) throws(ConfigError) {
        let unified = access(cgroupRoot + "/cgroup.controllers", F_OK) == 0
        let why = unified
            ? "the daemon's cgroup is not delegated to it (run it under systemd with Delegate=yes)"
            : "this machine has no cgroup v2 hierarchy at \(cgroupRoot) (cgroup v1 or hybrid)"
        throw error(node, path, "memory and CPU limits need a delegated cgroup v2, and \(why); not supported here yet")
    }

    // MARK: Values

    func error(_ node: ConfigNode, _ path: String, _ message: String) -> ConfigError {
        ConfigError(file: file, mark: node.mark, keyPath: path, message: message)
    }

    func text(_ node: ConfigNode, path: String) throws(ConfigError) -> String {
        guard case .scalar(let text, let isNull, _) = node else { throw error(node, path, "expected a single value, not \(node.kindName)") }
        guard !isNull else { throw error(node, path, "a value is missing") }
        return text
    }

    private func identifier(_ node: ConfigNode, path: String) throws(ConfigError) -> String {
        let id = try text(node, path: path)
        guard !id.isEmpty, !id.contains("/"), id.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw error(node, path, "\"\(id)\" is not a valid id (letters, digits, - _ and . only)")
        }
        return id
    }

    private func strings(_ node: ConfigNode, path: String) throws(ConfigError) -> [String] {
        try list(node, path: path).enumerated().map { index, item throws(ConfigError) in try text(item, path: "\(path)[\(index)]") }
    }

    private func list(_ node: ConfigNode, path: String) throws(ConfigError) -> [ConfigNode] {
        guard case .sequence(let items, _) = node else { throw error(node, path, "expected a list, not \(node.kindName)") }
        return items
    }

    private func duration(_ node: ConfigNode, path: String, expected: String = "a duration such as 250ms, 10s, 5m") throws(ConfigError) -> Duration {
        let value = try text(node, path: path)
        if value.hasPrefix("-") { throw error(node, path, "a duration cannot be negative (\(value))") }
        guard let duration = ConfigValues.duration(value) else {
            if ConfigValues.count(value) != nil { throw error(node, path, "\(value) needs a unit: \(value)s, \(value)ms, ...") }
            throw error(node, path, "expected \(expected), not \"\(value)\"")
        }
        return duration
    }

    private func count(_ node: ConfigNode, path: String, max: UInt64) throws(ConfigError) -> UInt64 {
        let value = try text(node, path: path)
        guard let number = ConfigValues.count(value), number <= max else {
            throw error(node, path, value.hasPrefix("-") ? "cannot be negative (\(value))" : "expected a whole number from 0 to \(max), not \"\(value)\"")
        }
        return number
    }

    /// A scalar read by `parse`, or the error saying what was expected.
    private func value<T>(_ node: ConfigNode, path: String, expected: String, _ parse: (String) -> T?) throws(ConfigError) -> T {
        let text = try text(node, path: path)
        guard let value = parse(text) else { throw error(node, path, "expected \(expected), not \"\(text)\"") }
        return value
    }

    private func number(_ node: ConfigNode, path: String) throws(ConfigError) -> Double {
        try value(node, path: path, expected: "a number") { Double($0).flatMap { $0.isFinite ? $0 : nil } }
    }

    private func bool(_ node: ConfigNode, path: String) throws(ConfigError) -> Bool {
        try value(node, path: path, expected: "true or false", ConfigValues.bool)
    }

    private func octal(_ node: ConfigNode, path: String) throws(ConfigError) -> UInt32 {
        try value(node, path: path, expected: "an octal mode such as 0027") { ConfigValues.octal($0).flatMap { $0 <= 0o777 ? $0 : nil } }
    }

    private func signal(_ node: ConfigNode, path: String) throws(ConfigError) -> Int32 {
        try value(node, path: path, expected: "a signal such as TERM, SIGINT or 15", ConfigValues.signal)
    }

    private func limitValue(_ node: ConfigNode, path: String) throws(ConfigError) -> UInt64 {
        try value(node, path: path, expected: "a number, a size (64K, 1G) or unlimited", ConfigValues.limit)
    }

    private func logLevel(_ node: ConfigNode, path: String) throws(ConfigError) -> Logger.Level {
        try choice(node, path: path, ["trace": .trace, "debug": .debug, "info": .info, "notice": .notice,
                                      "warning": .warning, "error": .error, "critical": .critical])
    }

    private func choice<T>(_ node: ConfigNode, path: String, _ choices: KeyValuePairs<String, T>, expected: String? = nil) throws(ConfigError) -> T {
        let value = try text(node, path: path)
        guard let match = choices.first(where: { $0.key == value }) else {
            throw error(node, path, "expected \(expected ?? choices.map(\.key).joined(separator: ", ")), not \"\(value)\"")
        }
        return match.value
    }

    /// A supervisor's mapping without its `children` (what reload compares to decide whether to
    /// descend into it).
    static func withoutChildren(_ node: ConfigNode) -> ConfigNode {
        guard case .mapping(let members, let mark) = node else { return node }
        return .mapping(members.filter { $0.key != "children" }, mark: mark)
    }

    /// Writes resolved user and group numbers into the tree the daemon gets, in place of names.
    private static func substitute(_ values: [String: [String: ConfigNode]], in node: ConfigNode, path: String) -> ConfigNode {
        switch node {
        case .scalar: return node
        case .sequence(let items, let mark):
            return .sequence(items.enumerated().map { substitute(values, in: $1, path: "\(path)[\($0)]") }, mark: mark)
        case .mapping(let members, let mark):
            var result = ConfigNode.mapping(members.map { member in
                (key: member.key, keyMark: member.keyMark,
                 value: substitute(values, in: member.value, path: path.isEmpty ? member.key : "\(path).\(member.key)"))
            }, mark: mark)
            for (key, value) in values[path] ?? [:] { result = result.replacing(key, with: value) }
            return result
        }
    }
}

/// What decoding collects besides the spec.
struct DecodeState {
    /// Child tree path → where it is written (mark, key path).
    var places: [String: (mark: ConfigMark?, keyPath: String)] = [:]
    var fingerprints: [String: String] = [:]
    var ownFingerprints: [String: String] = [:]
    var specs: [String: ChildSpec] = [:]
    var logFiles: [String: String] = [:]
    /// A child's key path → its keys to write in place of names (user → uid, group, groups).
    var resolvedCredentials: [String: [String: ConfigNode]] = [:]
}

/// A mapping being read: keys are taken one by one, and ``finish()`` refuses the rest.
struct Mapping {
    private let members: [(key: String, keyMark: ConfigMark?, value: ConfigNode)]
    private let node: ConfigNode
    private let path: String
    private let decoder: ConfigDecoder
    private var taken = Set<String>()

    init(_ node: ConfigNode, path: String, decoder: ConfigDecoder) throws(ConfigError) {
        guard case .mapping(let members, _) = node else {
            throw decoder.error(node, path, "expected a mapping (key: value lines), not \(node.kindName)")
        }
        var seen = Set<String>()
        for member in members where !seen.insert(member.key).inserted {
            throw ConfigError(file: decoder.file, mark: member.keyMark, keyPath: path.isEmpty ? member.key : "\(path).\(member.key)",
                              message: "the key is given twice")
        }
        self.members = members
        self.node = node
        self.path = path
        self.decoder = decoder
    }

    func has(_ key: String) -> Bool { members.contains { $0.key == key } }

    mutating func optional(_ key: String) -> ConfigNode? {
        taken.insert(key)
        return members.first { $0.key == key }?.value
    }

    mutating func required(_ key: String) throws(ConfigError) -> ConfigNode {
        guard let value = optional(key) else {
            throw decoder.error(node, path, "`\(key)` is missing")
        }
        return value
    }

    func finish() throws(ConfigError) {
        guard let unknown = members.first(where: { !taken.contains($0.key) }) else { return }
        let known = taken.sorted()
        let near = known.filter { Mapping.distance($0, unknown.key) <= 2 }
        let hint = near.isEmpty ? "expected one of: \(known.joined(separator: ", "))" : "did you mean \(near.joined(separator: " or "))?"
        throw ConfigError(file: decoder.file, mark: unknown.keyMark, keyPath: path.isEmpty ? unknown.key : "\(path).\(unknown.key)",
                          message: "unknown key (\(hint))")
    }

    /// Edit distance (insertions, deletions, substitutions), for "did you mean".
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var previous = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var current = [i] + [Int](repeating: 0, count: b.count)
            for j in 1...max(b.count, 1) where !b.isEmpty {
                current[j] = Swift.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return a.isEmpty ? b.count : previous[b.count]
    }
}
