#if canImport(Glibc)
import Glibc
#endif

/// Spec validation: every rule is checked before anything starts or changes.
enum Validation {
    static func validate(_ spec: SupervisorSpec, path: String) throws(SupervisionError) {
        if spec.intensity.maxRestarts < 0 {
            throw SupervisionError(.invalidIntensity, "\(path): maxRestarts must be 0 or more, not \(spec.intensity.maxRestarts)")
        }
        if spec.intensity.period <= .zero {
            throw SupervisionError(.invalidDuration, "\(path): the intensity period must be positive, not \(spec.intensity.period)")
        }
        if let maxChildren = spec.maxChildren, maxChildren < 0 {
            throw SupervisionError(.invalidSpec, "\(path): maxChildren must be 0 or more")
        }
        if spec.isDynamic && spec.strategy != .oneForOne {
            throw SupervisionError(.invalidSpec, "\(path): a dynamic supervisor is one-for-one")
        }
        if spec.isDynamic && !spec.children.isEmpty {
            throw SupervisionError(.invalidSpec, "\(path): a dynamic supervisor starts without children")
        }
        var seen = Set<String>()
        for child in spec.children {
            try validate(child, parentPath: path)
            if !seen.insert(child.id).inserted {
                throw SupervisionError(.duplicateID, "\(path): two children have the id \"\(child.id)\"")
            }
        }
        var templateIDs = Set<String>()
        for template in spec.templates {
            try validate(template, parentPath: path)
            if !templateIDs.insert(template.id).inserted {
                throw SupervisionError(.duplicateID, "\(path): two templates have the id \"\(template.id)\"")
            }
        }
    }

    static func validate(_ child: ChildSpec, parentPath: String) throws(SupervisionError) {
        if child.id.isEmpty {
            throw SupervisionError(.invalidID, "\(parentPath): a child has an empty id")
        }
        if child.id.utf8.contains(UInt8(ascii: "/")) {   // bytes: Character comparison costs 10x
            throw SupervisionError(.invalidID, "\(parentPath): child id \"\(child.id)\" contains \"/\"")
        }
        let path = parentPath + "/" + child.id
        if case .timeout(let duration) = child.effectiveShutdown, duration <= .zero {
            throw SupervisionError(.invalidDuration, "\(path): the shutdown timeout must be positive, not \(duration)")
        }
        try validate(child.backoff, path: path)
        if child.significant && child.restart == .permanent {
            throw SupervisionError(.invalidSpec, "\(path): a significant child must be transient or temporary")
        }
        if child.argumentBox != nil && !child.kind.takesArgument {
            throw SupervisionError(.invalidSpec, "\(path): an argument is handed to task children only; a \(child.kind.name) "
                + "gets its arguments in argv and environment (a process) or its children (a supervisor)")
        }
        if let health = child.health { try validate(health, kind: child.kind, path: path) }
        switch child.kind {
        case .process(let process):
            try validate(process, path: path)
        case .supervisor(let nested):
            try validate(nested, path: path)
        case .loopTask, .asyncTask:
            break
        }
    }

    static func validate(_ backoff: Backoff, path: String) throws(SupervisionError) {
        if backoff.initial < .zero || backoff.maximum < .zero {
            throw SupervisionError(.invalidDuration, "\(path): backoff delays must not be negative")
        }
        if backoff.maximum < backoff.initial {
            throw SupervisionError(.invalidBackoff, "\(path): the backoff maximum (\(backoff.maximum)) is below its initial delay (\(backoff.initial))")
        }
        if !(backoff.multiplier >= 1) || !backoff.multiplier.isFinite {
            throw SupervisionError(.invalidBackoff, "\(path): the backoff multiplier must be at least 1, not \(backoff.multiplier)")
        }
        if !(backoff.jitter >= 0 && backoff.jitter <= 1) {
            throw SupervisionError(.invalidBackoff, "\(path): the backoff jitter must be within 0...1, not \(backoff.jitter)")
        }
        if backoff.resetAfter <= .zero {
            throw SupervisionError(.invalidDuration, "\(path): backoff resetAfter must be positive")
        }
    }

    static func validate(_ process: ProcessSpec, path: String) throws(SupervisionError) {
        guard let program = process.argv.first, !program.isEmpty else {
            throw SupervisionError(.invalidSpec, "\(path): argv is empty")
        }
        if process.argv.contains(where: { $0.utf8.contains(0) }) {
            throw SupervisionError(.invalidSpec, "\(path): an argument contains a NUL byte")
        }
        if process.stopSignal <= 0 || process.stopSignal >= 65 {
            throw SupervisionError(.invalidSpec, "\(path): stop signal \(process.stopSignal) is out of range")
        }
        if let signal = process.successSignals.first(where: { $0 <= 0 || $0 >= 65 }) {
            throw SupervisionError(.invalidSpec, "\(path): success signal \(signal) is out of range")
        }
        if process.stdin == .capture {
            throw SupervisionError(.invalidSpec, "\(path): stdin cannot be captured")
        }
        if let mask = process.umask, mask > 0o777 {
            throw SupervisionError(.invalidSpec, "\(path): umask \(String(mask, radix: 8)) is not within 0...0777")
        }
        var limited = Set<ResourceLimit.Resource>()
        for limit in process.resourceLimits {
            if limit.soft > limit.hard {
                throw SupervisionError(.invalidSpec, "\(path): the soft limit of \(limit.resource.name) (\(limit.soft)) is above its hard limit (\(limit.hard))")
            }
            if !limited.insert(limit.resource).inserted {
                throw SupervisionError(.invalidSpec, "\(path): \(limit.resource.name) is limited twice")
            }
        }
        if let groups = process.supplementaryGroups, groups.count > 65_536 {
            throw SupervisionError(.invalidSpec, "\(path): more than 65,536 supplementary groups")
        }
        let variables: [(key: String, value: String?)]
        switch process.environment {
        case .inherit: variables = []
        case .replace(let replaced): variables = replaced.map { ($0.key, $0.value) }
        case .inheritWithOverrides(let overrides): variables = overrides.map { ($0.key, $0.value) }
        }
        for (key, value) in variables {
            if key.isEmpty || key.utf8.contains(UInt8(ascii: "=")) || key.utf8.contains(0) {
                throw SupervisionError(.invalidSpec, "\(path): environment variable name \"\(key)\" must be non-empty, without \"=\" or a NUL byte")
            }
            if let value, value.utf8.contains(0) {
                throw SupervisionError(.invalidSpec, "\(path): the value of environment variable \(key) contains a NUL byte")
            }
        }
        if let directory = process.workingDirectory, directory.isEmpty {
            throw SupervisionError(.invalidSpec, "\(path): the working directory is an empty string")
        }
    }

    static func validate(_ health: HealthSettings, kind: WorkerKind, path: String) throws(SupervisionError) {
        if health.readyTimeout <= .zero {
            throw SupervisionError(.invalidDuration, "\(path): readyTimeout must be positive, not \(health.readyTimeout)")
        }
        if kind.isSupervisor && (health.readiness != .started || health.liveness != .none) {
            throw SupervisionError(.invalidSpec, "\(path): a supervisor is ready when its children have started; "
                + "readiness and liveness checks belong to its workers")
        }
        switch health.readiness {
        case .started, .notify:
            break
        case .descriptor(let descriptor):
            guard case .process = kind else {
                throw SupervisionError(.invalidSpec, "\(path): readiness .descriptor is for processes; a task calls context.ready() (.notify)")
            }
            if descriptor < 3 || descriptor > 66 {
                throw SupervisionError(.invalidSpec, "\(path): the readiness descriptor must be within 3...66 (0-2 are stdio; a child gets at most 64 more), not \(descriptor)")
            }
        case .probe(let probe):
            try validate(probe, path: path, role: "readiness")
        }
        switch health.liveness {
        case .none:
            break
        case .watchdog(let interval):
            if interval <= .zero {
                throw SupervisionError(.invalidDuration, "\(path): the watchdog interval must be positive, not \(interval)")
            }
        case .probe(let probe):
            try validate(probe, path: path, role: "liveness")
        }
    }

    static func validate(_ probe: Probe, path: String, role: String) throws(SupervisionError) {
        if probe.interval <= .zero || probe.timeout <= .zero {
            throw SupervisionError(.invalidDuration, "\(path): the \(role) probe's interval and timeout must be positive")
        }
        if probe.initialDelay < .zero {
            throw SupervisionError(.invalidDuration, "\(path): the \(role) probe's initialDelay must not be negative")
        }
        if probe.failureThreshold < 1 {
            throw SupervisionError(.invalidSpec, "\(path): the \(role) probe's failureThreshold must be at least 1, not \(probe.failureThreshold)")
        }
        switch probe.check {
        case .tcp(let host, let port):
            if host.isEmpty || port == 0 {
                throw SupervisionError(.invalidSpec, "\(path): the \(role) probe needs a host and a port other than 0")
            }
            var address = [UInt8](repeating: 0, count: 16)
            if inet_pton(host.contains(":") ? AF_INET6 : AF_INET, host, &address) != 1 {
                throw SupervisionError(.invalidSpec, "\(path): the \(role) probe's host \"\(host)\" is not a numeric IPv4 or IPv6 address")
            }
        case .command(let argv):
            if argv.first?.isEmpty ?? true {
                throw SupervisionError(.invalidSpec, "\(path): the \(role) probe's command argv is empty")
            }
            if argv.contains(where: { $0.utf8.contains(0) }) {
                throw SupervisionError(.invalidSpec, "\(path): an argument of the \(role) probe's command contains a NUL byte")
            }
        }
    }
}
