#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import UVSupervisor
import UVLoop

/// Prints the story: event lines, a live tree on a terminal, or JSON lines.
final class Renderer {
    let options: DemoOptions
    let style: Style
    /// The runtime's clock (nanoseconds), the one events are stamped with.
    private let now: () -> Int64
    /// When the story began, on that clock.
    let startTime: Int64
    private var legendText = ""
    /// Live view: the narrator's latest lines (shown above the events, never scrolled away).
    private var narration: [String] = []
    private var recent: [String] = []
    private var dirty = true
    weak var root: Supervisor?

    init(options: DemoOptions, clock now: @escaping () -> Int64) {
        self.options = options
        self.style = Style(enabled: options.color)
        self.now = now
        startTime = now()
    }

    /// Seconds since the start for a time on the runtime's clock (never negative).
    func seconds(at time: Int64) -> Double {
        Double(max(0, time &- startTime)) / 1e9
    }

    private func clock(_ time: Int64) -> String {
        let hundredths = Int((seconds(at: time) * 100).rounded())
        let text = "\(hundredths / 100).\(hundredths % 100 < 10 ? "0" : "")\(hundredths % 100)s"
        return String(repeating: " ", count: max(0, 7 - text.count)) + text
    }

    private func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }

    /// One event.
    func event(_ event: SupervisorEvent) {
        if options.json {
            print(json(event))
            return
        }
        show("\(style.dim(clock(event.time))) \(pad(event.path, 28))\(describe(event.kind))")
    }

    /// Prints a line, or keeps it for the live view.
    private func show(_ line: String) {
        if options.live {
            recent.append(line)
            if recent.count > 12 { recent.removeFirst(recent.count - 12) }
            dirty = true
        } else {
            print(line)
        }
    }

    /// A worker's own remark.
    func note(_ path: String, _ text: String) {
        let time = now()
        if options.json {
            print("{\"time\":\(seconds(at: time)),\"path\":\"\(escape(path))\",\"event\":\"note\",\"detail\":\"\(escape(text))\"}")
            return
        }
        show("\(style.dim(clock(time))) \(pad(path, 28))\(style.dim("· " + text))")
    }

    /// The story's legend: printed once, or kept as the live view's header.
    func legend(_ text: String) {
        if options.json { return }
        if options.live {
            legendText = text
            dirty = true
        } else {
            print(style.bold(text))
        }
    }

    /// A narrator line (not in JSON mode). In the live view the latest ones stay on screen.
    func say(_ text: String) {
        if options.json { return }
        if options.live {
            narration.append(text)
            if narration.count > 3 { narration.removeFirst(narration.count - 3) }
            dirty = true
        } else {
            print(style.bold(text))
        }
    }

    private func describe(_ kind: SupervisorEvent.Kind) -> String {
        switch kind {
        case .started(let pid): return style.green("▶ started") + (pid.map { style.dim(" pid \($0)") } ?? "")
        case .startFailed(let message): return style.red("✗ failed to start: \(message)")
        case .exited(let reason):
            if reason.isAbnormal { return style.red("✗ crashed: \(reason)") }
            return style.dim("■ ended: \(reason)")
        case .restartScheduled(let delay, let why):
            let when = delay == .zero ? "↻ restart now" : "↻ restart in \(formatDuration(delay))"
            return style.yellow(when) + style.dim(" (\(why))")
        case .stopping: return style.dim("… stopping")
        case .killed: return style.red("☠ killed at its shutdown timeout")
        case .abandoned: return style.red("⚠ abandoned: did not stop in time")
        case .notRestarted(let why): return style.dim("not restarted (\(why))")
        case .removed: return style.dim("removed")
        case .intensityExceeded(let max, let period):
            return style.red(style.bold("‼ more than \(max) restarts in \(formatDuration(period)): giving up, escalating to the parent"))
        case .supervisorStarted: return style.dim("supervisor up")
        case .supervisorStopping(let reason): return style.dim("stopping all children, last started first (\(reason))")
        case .supervisorStopped(let reason):
            return reason.isAbnormal ? style.red("supervisor ended: \(reason)") : style.dim("supervisor ended: \(reason)")
        case .output(_, let line): return style.blue("│ \(line)")
        case .loopLag(let duration): return style.yellow("⚠ loop blocked for \(formatDuration(duration))")
        case .ready(let after): return style.green("✓ ready") + style.dim(" after \(formatDuration(after))")
        case .notReady(let why): return style.red("✗ not ready: \(why)")
        case .livenessFailed(let why): return style.red("✗ unresponsive: \(why)")
        case .status(let text): return style.dim("status: \(text)")
        }
    }

    /// Redraws the live tree if anything changed (called from a timer, so at most ~10 times a second).
    func refresh() {
        guard options.live, dirty, let root else { return }
        dirty = false
        let elapsed = seconds(at: now())
        var screen = "\u{1B}[H\u{1B}[2J"
        screen += style.bold("uv-supervisor demo") + style.dim("  \(Int(elapsed))s / \(formatSeconds(options.duration))   Ctrl-C stops it gracefully") + "\n"
        if !legendText.isEmpty { screen += style.dim(legendText) + "\n" }
        screen += "\n" + style.bold("root") + style.dim("  \(strategyLabels["root"] ?? "")") + "\n"
        screen += tree(root.children(), prefix: "")
        if !narration.isEmpty { screen += "\n" + narration.map { style.bold($0) }.joined(separator: "\n") + "\n" }
        screen += "\n" + style.bold("Recent events") + "\n"
        screen += recent.joined(separator: "\n") + "\n"
        fputs(screen, stdout)
        fflush(stdout)
    }

    private func formatSeconds(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? "\(Int(seconds))s" : "\(seconds)s"
    }

    private func tree(_ children: [ChildStatus], prefix: String) -> String {
        var text = ""
        for (index, child) in children.enumerated() {
            let last = index == children.count - 1
            let branch = last ? "└─ " : "├─ "
            let state: String
            switch child.state {
            case .running: state = style.green("● running")
            case .restarting: state = style.yellow("↻ restarting")
            case .stopping: state = style.yellow("… stopping")
            case .idle, .terminated: state = style.dim("○ \(child.state)")
            }
            var line = prefix + branch + pad(child.id, 14) + pad(state, options.color ? 23 : 14)
            if let pid = child.pid { line += style.dim("pid \(pid)  ") }
            line += "restarts \(child.restartCount)"
            if let exit = child.lastExit { line += style.dim("  last: \(exit)") }
            if let label = strategyLabels[child.path] { line += style.dim("  [\(label)]") }
            text += line + "\n"
            text += tree(child.children, prefix: prefix + (last ? "   " : "│  "))
        }
        return text
    }

    /// The final table: each child, its restarts, its last exit.
    func summary(_ children: [ChildStatus], final: ExitReason) {
        var rows: [(String, String, String, String)] = []
        func walk(_ children: [ChildStatus]) {
            for child in children {
                rows.append((child.path, child.kind.description, "\(child.restartCount)", child.lastExit.map { "\($0)" } ?? "-"))
                walk(child.children)
            }
        }
        walk(children)
        if options.json {
            let items = rows.map { "{\"path\":\"\(escape($0.0))\",\"kind\":\"\($0.1)\",\"restarts\":\($0.2),\"lastExit\":\"\(escape($0.3))\"}" }
            print("{\"event\":\"summary\",\"final\":\"\(escape("\(final)"))\",\"children\":[\(items.joined(separator: ","))]}")
            return
        }
        if options.live { refreshForce() }
        print("")
        print(style.bold("Summary") + style.dim("  (the tree ended: \(final))"))
        let widths = [max(5, rows.map(\.0.count).max() ?? 0) + 2, 12, 10]
        print(style.dim(pad("child", widths[0]) + pad("kind", widths[1]) + pad("restarts", widths[2]) + "last exit"))
        for row in rows {
            print(pad(row.0, widths[0]) + pad(row.1, widths[1]) + pad(row.2, widths[2]) + row.3)
        }
    }

    /// The last frame, with the time actually elapsed.
    private func refreshForce() {
        dirty = true
        refresh()
    }

    private func json(_ event: SupervisorEvent) -> String {
        let kind: String
        var detail = ""
        switch event.kind {
        case .started(let pid): kind = "started"; detail = pid.map { "pid \($0)" } ?? ""
        case .startFailed(let message): kind = "startFailed"; detail = message
        case .exited(let reason): kind = "exited"; detail = "\(reason)"
        case .restartScheduled(let delay, let why): kind = "restartScheduled"; detail = "\(formatDuration(delay)) (\(why))"
        case .stopping: kind = "stopping"
        case .killed: kind = "killed"
        case .abandoned: kind = "abandoned"
        case .notRestarted(let why): kind = "notRestarted"; detail = why
        case .removed: kind = "removed"
        case .intensityExceeded(let max, let period): kind = "intensityExceeded"; detail = "\(max) in \(formatDuration(period))"
        case .supervisorStarted: kind = "supervisorStarted"
        case .supervisorStopping(let reason): kind = "supervisorStopping"; detail = "\(reason)"
        case .supervisorStopped(let reason): kind = "supervisorStopped"; detail = "\(reason)"
        case .output(let stream, let line): kind = "output"; detail = "\(stream): \(line)"
        case .loopLag(let duration): kind = "loopLag"; detail = formatDuration(duration)
        case .ready(let after): kind = "ready"; detail = formatDuration(after)
        case .notReady(let why): kind = "notReady"; detail = why
        case .livenessFailed(let why): kind = "livenessFailed"; detail = why
        case .status(let text): kind = "status"; detail = text
        }
        return "{\"time\":\(seconds(at: event.time)),\"path\":\"\(escape(event.path))\",\"event\":\"\(kind)\",\"detail\":\"\(escape(detail))\",\"restarts\":\(event.restartCount)}"
    }

    private func escape(_ text: String) -> String {
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\t": result += "\\t"
            default:
                if scalar.value < 0x20 { result += "\\u00" + (scalar.value < 16 ? "0" : "") + String(scalar.value, radix: 16) } else { result.unicodeScalars.append(scalar) }
            }
        }
        return result
    }
}
