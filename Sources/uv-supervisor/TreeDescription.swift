import UVSupervisor
import UVSupervisorConfig

/// `uv-supervisor check`: the tree a config describes, one line per child.
enum TreeDescription {
    static func render(_ config: LoadedConfig) -> String {
        var lines = ["\(config.name)  \(describe(config.root))"]
        add(config.root, prefix: "", to: &lines)
        return lines.joined(separator: "\n")
    }

    private static func add(_ spec: SupervisorSpec, prefix: String, to lines: inout [String]) {
        let entries = spec.children.map { ($0, false) } + spec.templates.map { ($0, true) }
        for (index, (child, isTemplate)) in entries.enumerated() {
            let last = index == entries.count - 1
            let name = (isTemplate ? "template " : "") + child.id
            lines.append(prefix + (last ? "└─ " : "├─ ") + name + "  " + describe(child))
            if case .supervisor(let nested) = child.kind {
                add(nested, prefix: prefix + (last ? "   " : "│  "), to: &lines)
            }
        }
    }

    private static func describe(_ spec: SupervisorSpec) -> String {
        var parts = [strategy(spec.strategy), "\(spec.intensity.maxRestarts) restarts in \(formatDuration(spec.intensity.period))"]
        if spec.isDynamic { parts.append("dynamic" + (spec.maxChildren.map { ", at most \($0)" } ?? "")) }
        return parts.joined(separator: ", ")
    }

    private static func describe(_ child: ChildSpec) -> String {
        var parts: [String] = []
        switch child.kind {
        case .process(let process):
            parts.append(process.argv.joined(separator: " "))
            if let uid = process.userID { parts.append("uid \(uid)" + (process.groupID.map { " gid \($0)" } ?? "")) }
            if !process.resourceLimits.isEmpty {
                parts.append("limits " + process.resourceLimits.map { "\($0.resource.name)=\($0.soft == ResourceLimit.unlimited ? "unlimited" : String($0.soft))" }.joined(separator: " "))
            }
        case .supervisor(let nested): parts.append("supervisor: " + describe(nested))
        default: parts.append("task")
        }
        parts.append("\(child.restart)")
        switch child.readiness {
        case .started: break
        case .notify: parts.append("ready on READY=1")
        case .descriptor(let descriptor): parts.append("ready on a line to fd \(descriptor)")
        case .probe(let probe): parts.append("ready when \(describe(probe))")
        }
        switch child.liveness {
        case .none: break
        case .watchdog(let interval): parts.append("watchdog \(formatDuration(interval))")
        case .probe(let probe): parts.append("alive while \(describe(probe))")
        }
        return parts.joined(separator: "; ")
    }

    private static func describe(_ probe: Probe) -> String {
        "\(probe.check) succeeds (every \(formatDuration(probe.interval)))"
    }

    private static func strategy(_ strategy: RestartStrategy) -> String {
        switch strategy {
        case .oneForOne: return "one-for-one"
        case .oneForAll: return "one-for-all"
        case .restForOne: return "rest-for-one"
        }
    }
}
