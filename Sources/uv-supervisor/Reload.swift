import UVSupervisor
import UVSupervisorConfig

/// Applies a new config to a running tree, as `supervisorctl update` does: children that were
/// added are started, removed ones stopped and deleted, changed ones stopped and started with
/// their new spec, unchanged ones left alone (same processes). A nested supervisor whose own
/// settings are unchanged is compared child by child; one whose settings changed is replaced
/// whole. Added and replaced children start after their existing siblings.
final class Reloader {
    private let root: Supervisor
    private(set) var current: LoadedConfig
    private var pending = 0
    private var added: [String] = []
    private var removed: [String] = []
    private var replaced: [String] = []
    private var failures: [String] = []
    private var unchanged = 0
    private var notes: [String] = []
    private var done: ((_ error: String?, _ summary: String) -> Void)?

    init(root: Supervisor, config: LoadedConfig) {
        self.root = root
        self.current = config
    }

    /// Applies `next`; `done` gets a summary once every stop has finished.
    func apply(_ next: LoadedConfig, done: @escaping (_ error: String?, _ summary: String) -> Void) {
        added = []
        removed = []
        replaced = []
        failures = []
        notes = []
        unchanged = 0
        self.done = done
        pending = 1
        if next.name != current.name || next.daemon != current.daemon {
            notes.append("daemon settings and the root's name apply at the next start")
        }
        if next.ownFingerprints[next.name] != current.ownFingerprints[current.name] {
            notes.append("the root's own settings (strategy, intensity, ...) apply at the next start")
        }
        let previous = current
        current = next
        compare(supervisor: root, path: root.path, old: previous.root.children, new: next.root.children, previous: previous, next: next)
        finishOne()
    }

    private func compare(supervisor: Supervisor, path: String, old: [ChildSpec], new: [ChildSpec],
                         previous: LoadedConfig, next: LoadedConfig) {
        let newIDs = Set(new.map(\.id))
        for child in old where !newIDs.contains(child.id) {
            stopAndDelete(child.id, in: supervisor) { [weak self] in self?.removed.append(path + "/" + child.id) }
        }
        let oldIDs = Set(old.map(\.id))
        for child in new {
            let childPath = path + "/" + child.id
            guard oldIDs.contains(child.id) else {
                start(child, in: supervisor, path: childPath) { [weak self] in self?.added.append(childPath) }
                continue
            }
            if previous.fingerprints[childPath] == next.fingerprints[childPath] {
                unchanged += 1
                continue
            }
            // A nested supervisor with the same settings: its children are compared one by one.
            if case .supervisor(let oldSpec) = previous.specs[childPath]?.kind, case .supervisor(let newSpec) = child.kind,
               previous.ownFingerprints[childPath] == next.ownFingerprints[childPath],
               let nested = supervisor.supervisor(at: child.id) {
                compare(supervisor: nested, path: childPath, old: oldSpec.children, new: newSpec.children, previous: previous, next: next)
                continue
            }
            stopAndDelete(child.id, in: supervisor) { [weak self] in
                self?.start(child, in: supervisor, path: childPath) { self?.replaced.append(childPath) }
            }
        }
    }

    private func stopAndDelete(_ id: String, in supervisor: Supervisor, then next: @escaping () -> Void) {
        pending += 1
        let path = supervisor.path + "/" + id
        let delete = { [weak self] in
            guard let self else { return }
            do {
                // A temporary child's spec went with it.
                if (try? supervisor.child(id)) != nil { try supervisor.deleteChild(id) }
                next()
            } catch {
                self.failures.append("\(path): \(error)")
            }
            self.finishOne()
        }
        do {
            let state = try supervisor.child(id).state
            if state == .terminated || state == .idle {
                delete()
            } else {
                try supervisor.terminateChild(id) { _ in delete() }
            }
        } catch {
            // Already gone (a temporary child that ended): nothing to stop.
            next()
            finishOne()
        }
    }

    private func start(_ spec: ChildSpec, in supervisor: Supervisor, path: String, then note: () -> Void) {
        do {
            try supervisor.startChild(spec)
            note()
        } catch {
            failures.append("\(path): \(error.message)")
        }
    }

    private func finishOne() {
        pending -= 1
        guard pending == 0, let done else { return }
        self.done = nil
        var parts: [String] = []
        if !added.isEmpty { parts.append("started \(added.sorted().joined(separator: ", "))") }
        if !removed.isEmpty { parts.append("stopped \(removed.sorted().joined(separator: ", "))") }
        if !replaced.isEmpty { parts.append("restarted \(replaced.sorted().joined(separator: ", "))") }
        parts.append("\(unchanged) unchanged")
        parts += notes
        let summary = parts.joined(separator: "; ")
        done(failures.isEmpty ? nil : "applied in part (\(summary)); failed: \(failures.joined(separator: "; "))", summary)
    }
}
