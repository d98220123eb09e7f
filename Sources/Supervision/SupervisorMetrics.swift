import CoreMetrics

/// Reports a tree's events to swift-metrics:
///
/// | metric | kind | dimensions | from |
/// |---|---|---|---|
/// | `uvs_restarts_total` | counter | `child` | every start after the first |
/// | `uvs_child_up` | gauge (0/1) | `child` | started, ended |
/// | `uvs_child_ready` | gauge (0/1) | `child` | ready (see ``Readiness``; a nested supervisor once its children started), ended |
/// | `uvs_restart_delay` | timer | `child` | the backoff delay chosen for each restart |
/// | `uvs_intensity_exceeded_total` | counter | `supervisor` | a supervisor gave up |
/// | `uvs_loop_lag` | timer | — | loop stalls seen by the lag watchdog |
///
/// Attach it once to a root (``Supervisor/reportMetrics(to:prefix:)``). A tree without one pays
/// nothing, and `SupervisorDaemon` attaches one only when a metrics backend has been
/// bootstrapped. Each child's metric handles are kept on the child's record (no lookup per
/// event) and destroyed when the child is removed (a dynamic or temporary child that ended),
/// so their number follows the living children.
public final class SupervisorMetrics {
    private let factory: any MetricsFactory
    private let prefix: String
    private lazy var loopLag = Timer(label: prefix + "_loop_lag", dimensions: [], factory: factory)
    private let live = LiveCount()
    /// Children metrics are kept for (records that exist and have had an event).
    public var reportedChildren: Int { live.value }

    final class LiveCount {
        var value = 0
    }

    /// One child's handles.
    final class ChildMetrics {
        let restarts: Counter
        let up: Gauge
        let ready: Gauge
        let restartDelay: Timer
        /// The reporter that made them (a second reporter makes its own).
        let owner: ObjectIdentifier
        private let live: LiveCount

        init(path: String, prefix: String, factory: any MetricsFactory, live: LiveCount, owner: ObjectIdentifier) {
            self.live = live
            self.owner = owner
            live.value += 1
            let dimensions = [("child", path)]
            restarts = Counter(label: prefix + "_restarts_total", dimensions: dimensions, factory: factory)
            up = Gauge(label: prefix + "_child_up", dimensions: dimensions, factory: factory)
            ready = Gauge(label: prefix + "_child_ready", dimensions: dimensions, factory: factory)
            restartDelay = Timer(label: prefix + "_restart_delay", dimensions: dimensions, factory: factory)
        }

        deinit { live.value -= 1 }

        func destroy() {
            restarts.destroy()
            up.destroy()
            ready.destroy()
            restartDelay.destroy()
        }
    }

    init(factory: any MetricsFactory, prefix: String) {
        self.factory = factory
        self.prefix = prefix
    }

    private func metrics(_ record: ChildRecord) -> ChildMetrics {
        if let existing = record.metrics, existing.owner == ObjectIdentifier(self) { return existing }
        let created = ChildMetrics(path: record.path, prefix: prefix, factory: factory, live: live, owner: ObjectIdentifier(self))
        record.metrics = created
        return created
    }

    private func intensityExceeded(_ supervisorPath: String) {
        Counter(label: prefix + "_intensity_exceeded_total", dimensions: [("supervisor", supervisorPath)], factory: factory).increment()
    }

    /// An event, with the record of the child it is about (`nil` for the root's own events and
    /// the loop's).
    func record(_ event: SupervisorEvent, _ record: ChildRecord?) {
        guard let record else {
            // The root's own events (and the loop's).
            switch event.kind {
            case .loopLag(let duration): loopLag.recordNanoseconds(duration.nanosecondsClamped)
            case .intensityExceeded: intensityExceeded(event.path)
            default: break
            }
            return
        }
        switch event.kind {
        case .started:
            let child = metrics(record)
            if event.restartCount > 0 { child.restarts.increment() }
            child.up.record(1)
            // Workers without a readiness check are ready as they start; a nested supervisor
            // once its own start sequence is done (its supervisorStarted, below).
            let immediate = !record.spec.kind.isSupervisor && (record.healthSettings?.readiness ?? .started) == .started
            child.ready.record(immediate || record.isReady ? 1 : 0)
        case .ready:
            metrics(record).ready.record(1)
        case .supervisorStarted where event.path == record.path:
            metrics(record).ready.record(1)
        case .exited, .startFailed, .notReady:
            guard let child = record.metrics, child.owner == ObjectIdentifier(self) else { return }
            child.up.record(0)
            child.ready.record(0)
        case .restartScheduled(let delay, _):
            metrics(record).restartDelay.recordNanoseconds(delay.nanosecondsClamped)
        case .removed:
            if let child = record.metrics {
                child.destroy()
                record.metrics = nil
            }
        case .intensityExceeded:
            // A nested supervisor's own event, with its parent's record for it.
            intensityExceeded(event.path)
        case .loopLag(let duration):
            loopLag.recordNanoseconds(duration.nanosecondsClamped)
        default:
            break
        }
    }
}

extension Supervisor {
    /// Reports this tree's events to swift-metrics through `factory` (default: the bootstrapped
    /// `MetricsSystem`), with metric names starting `prefix` (see ``SupervisorMetrics``). Call it
    /// once, on the root, before ``start()``; a second call replaces the first reporter (the
    /// first is fed no more; children get new handles from the second at their next event).
    @discardableResult
    public func reportMetrics(to factory: any MetricsFactory = MetricsSystem.factory, prefix: String = "uvs") -> SupervisorMetrics {
        runtime.preconditionOnRuntimeThread("Supervisor.reportMetrics")
        let reporter = SupervisorMetrics(factory: factory, prefix: prefix)
        events.metrics = reporter
        return reporter
    }
}
