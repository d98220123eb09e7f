import Logging

/// One transition in a supervision tree.
public struct SupervisorEvent: Sendable, Equatable, CustomStringConvertible {
    /// What happened.
    public enum Kind: Sendable, Equatable {
        /// The child started; `pid` for processes.
        case started(pid: Int32?)
        /// The child could not start.
        case startFailed(String)
        /// The child ended.
        case exited(ExitReason)
        /// The child will be restarted after `delay`; `why` explains the delay (backoff step,
        /// group restart, ...).
        case restartScheduled(delay: Duration, why: String)
        /// The supervisor asked the child to stop.
        case stopping
        /// The child did not stop in time and was killed.
        case killed
        /// A task did not stop in time and is no longer supervised.
        case abandoned
        /// The child ended and is not restarted (restart type, or it was terminated).
        case notRestarted(why: String)
        /// The child spec was removed (temporary child ended, deleted, dynamic child ended).
        case removed
        /// The supervisor exceeded its restart intensity and gives up.
        case intensityExceeded(maxRestarts: Int, period: Duration)
        /// A supervisor finished starting its children.
        case supervisorStarted
        /// A supervisor began stopping all its children.
        case supervisorStopping(ExitReason)
        /// A supervisor ended.
        case supervisorStopped(ExitReason)
        /// A line a process wrote to a captured stream.
        case output(stream: String, line: String)
        /// A loop callback blocked the loop for `duration` (lag watchdog).
        case loopLag(Duration)
        /// The child became ready (``Readiness``), this long after it was started.
        case ready(after: Duration)
        /// The child was not ready within its ready timeout: its start fails.
        case notReady(String)
        /// The child failed its liveness check (``Liveness``): it is stopped as unresponsive.
        case livenessFailed(String)
        /// The child said what it is doing (`STATUS=` or ``SupervisedTask/status(_:)``).
        case status(String)
    }

    /// The child's path, `root/db/worker-2` (the supervisor's own path for supervisor events).
    public var path: String
    /// Runtime time in nanoseconds.
    public var time: Int64
    /// What happened.
    public var kind: Kind
    /// The child's restart count at that moment.
    public var restartCount: Int

    /// Creates an event.
    public init(path: String, time: Int64, kind: Kind, restartCount: Int) {
        self.path = path
        self.time = time
        self.kind = kind
        self.restartCount = restartCount
    }

    /// `path: what happened [restarts: n]`, as logged.
    public var description: String {
        let what: String
        switch kind {
        case .started(let pid): what = pid.map { "started (pid \($0))" } ?? "started"
        case .startFailed(let error): what = "failed to start: \(error)"
        case .exited(let reason): what = "exited: \(reason)"
        case .restartScheduled(let delay, let why): what = "restart in \(formatDuration(delay)) (\(why))"
        case .stopping: what = "stopping"
        case .killed: what = "killed after its shutdown timeout"
        case .abandoned: what = "abandoned: did not stop within its shutdown timeout"
        case .notRestarted(let why): what = "not restarted (\(why))"
        case .removed: what = "removed"
        case .intensityExceeded(let max, let period): what = "more than \(max) restarts in \(formatDuration(period)): giving up"
        case .supervisorStarted: what = "supervisor started"
        case .supervisorStopping(let reason): what = "supervisor stopping (\(reason))"
        case .supervisorStopped(let reason): what = "supervisor stopped: \(reason)"
        case .output(let stream, let line): what = "\(stream): \(line)"
        case .loopLag(let duration): what = "loop blocked for \(formatDuration(duration))"
        case .ready(let after): what = "ready after \(formatDuration(after))"
        case .notReady(let why): what = "not ready: \(why)"
        case .livenessFailed(let why): what = "unresponsive: \(why)"
        case .status(let text): what = "status: \(text)"
        }
        return "\(path): \(what) [restarts: \(restartCount)]"
    }
}

/// `1.5s`, `250ms`, `40µs`.
package func formatDuration(_ duration: Duration) -> String {
    let nanoseconds = duration.nanosecondsClamped
    if nanoseconds >= 1_000_000_000 {
        let tenths = (nanoseconds + 50_000_000) / 100_000_000
        return tenths % 10 == 0 ? "\(tenths / 10)s" : "\(tenths / 10).\(tenths % 10)s"
    }
    if nanoseconds >= 1_000_000 { return "\((nanoseconds + 500_000) / 1_000_000)ms" }
    if nanoseconds >= 1_000 { return "\(nanoseconds / 1_000)µs" }
    return "\(nanoseconds)ns"
}

/// Where a tree's events go: handlers on the runtime's thread, `AsyncStream`s, and a `Logger`.
/// One sink serves a whole tree (nested supervisors share their root's).
public final class EventSink {
    private var handlers: [(SupervisorEvent) -> Void] = []
    private var continuations: [Int: AsyncStream<SupervisorEvent>.Continuation] = [:]
    private var nextStreamID = 0
    /// The logger, if any: events are logged at `info` (failures at `warning`/`error`).
    public var logger: Logger? {
        didSet { updateActive() }
    }
    /// Whether anybody listens; when not, events are not even built (read on every transition).
    public var isActive: Bool { active }
    /// The level of a process's captured output lines in the log (default `info`).
    public var outputLogLevel: Logger.Level = .info
    /// Private storage: the optimiser can then prove that no access to it overlaps another and
    /// drop the dynamic exclusivity checks a public stored property keeps (read on every event).
    private var active = false

    /// A sink with an optional logger.
    public init(logger: Logger? = nil) {
        self.logger = logger
        updateActive()
    }

    private func updateActive() {
        active = !handlers.isEmpty || !continuations.isEmpty || logger != nil || metrics != nil
    }

    /// The tree's metrics reporter, if any: given each event with the child's record, so that it
    /// keeps its handles on the record (no lookup by path per event).
    var metrics: SupervisorMetrics? {
        didSet { updateActive() }
    }

    /// Adds a handler, called on the runtime's thread for every event.
    public func addHandler(_ handler: @escaping (SupervisorEvent) -> Void) {
        handlers.append(handler)
        updateActive()
    }

    /// A new stream of every event from now on; it finishes when the root supervisor stops.
    public func makeStream() -> AsyncStream<SupervisorEvent> {
        let id = nextStreamID
        nextStreamID += 1
        let (stream, continuation) = AsyncStream<SupervisorEvent>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        continuations[id] = continuation
        updateActive()
        return stream
    }

    /// Delivers an event.
    package func emit(_ event: SupervisorEvent) {
        metrics?.record(event, nil)
        deliver(event)
    }

    /// Delivers an event about `record` (a child, or for a nested supervisor's own events the
    /// record its parent keeps for it).
    func emit(_ event: SupervisorEvent, about record: ChildRecord?) {
        metrics?.record(event, record)
        deliver(event)
    }

    private func deliver(_ event: SupervisorEvent) {
        for handler in handlers { handler(event) }
        for continuation in continuations.values { continuation.yield(event) }
        if let logger { log(event, to: logger) }
    }

    /// Ends every stream (the root supervisor stopped).
    func finishStreams() {
        for continuation in continuations.values { continuation.finish() }
        continuations.removeAll()
        updateActive()
    }

    private func log(_ event: SupervisorEvent, to logger: Logger) {
        let level: Logger.Level
        switch event.kind {
        case .exited(let reason): level = reason.isAbnormal ? .warning : .info
        case .startFailed, .killed, .abandoned, .intensityExceeded: level = .error
        case .notReady, .livenessFailed: level = .warning
        case .loopLag: level = .warning
        case .output: level = outputLogLevel
        case .supervisorStopped(let reason): level = reason.isAbnormal ? .error : .info
        default: level = .info
        }
        // Checked before the metadata is built: a filtered-out event costs this comparison.
        guard level >= logger.logLevel else { return }
        logger.log(level: level, "\(event.description)", metadata: event.logMetadata)
    }
}

extension SupervisorEvent {
    /// The event as structured log metadata: `child` (its path), `event` (the kind's name),
    /// `restart_count`, and what the kind carries: `pid`, `exit_reason`, `delay_ms`, `reason`,
    /// `stream`, `duration_ms`, `status`, ...
    public var logMetadata: Logger.Metadata {
        var metadata: Logger.Metadata = [
            "child": .string(path),
            "event": .string(kindName),
            "restart_count": .stringConvertible(restartCount),
        ]
        switch kind {
        case .started(let pid): if let pid { metadata["pid"] = .stringConvertible(pid) }
        case .startFailed(let why): metadata["reason"] = .string(why)
        case .exited(let reason): metadata["exit_reason"] = .string("\(reason)")
        case .restartScheduled(let delay, let why):
            metadata["delay_ms"] = .stringConvertible(delay.nanosecondsClamped / 1_000_000)
            metadata["reason"] = .string(why)
        case .notRestarted(let why): metadata["reason"] = .string(why)
        case .intensityExceeded(let maxRestarts, let period):
            metadata["max_restarts"] = .stringConvertible(maxRestarts)
            metadata["period_ms"] = .stringConvertible(period.nanosecondsClamped / 1_000_000)
        case .supervisorStopping(let reason), .supervisorStopped(let reason): metadata["exit_reason"] = .string("\(reason)")
        case .output(let stream, _): metadata["stream"] = .string(stream)
        case .loopLag(let duration): metadata["duration_ms"] = .stringConvertible(duration.nanosecondsClamped / 1_000_000)
        case .ready(let after): metadata["ready_after_ms"] = .stringConvertible(after.nanosecondsClamped / 1_000_000)
        case .notReady(let why), .livenessFailed(let why): metadata["reason"] = .string(why)
        case .status(let text): metadata["status"] = .string(text)
        case .stopping, .killed, .abandoned, .removed, .supervisorStarted: break
        }
        return metadata
    }

    /// The kind's name: `started`, `exited`, `restartScheduled`, ... (as the control protocol's).
    public var kindName: String {
        switch kind {
        case .started: return "started"
        case .startFailed: return "startFailed"
        case .exited: return "exited"
        case .restartScheduled: return "restartScheduled"
        case .stopping: return "stopping"
        case .killed: return "killed"
        case .abandoned: return "abandoned"
        case .notRestarted: return "notRestarted"
        case .removed: return "removed"
        case .intensityExceeded: return "intensityExceeded"
        case .supervisorStarted: return "supervisorStarted"
        case .supervisorStopping: return "supervisorStopping"
        case .supervisorStopped: return "supervisorStopped"
        case .output: return "output"
        case .loopLag: return "loopLag"
        case .ready: return "ready"
        case .notReady: return "notReady"
        case .livenessFailed: return "livenessFailed"
        case .status: return "status"
        }
    }
}
