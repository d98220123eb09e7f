/// The handle a loop-task worker gets when it starts.
///
/// A loop task is a callback-style worker that runs on the supervisor's thread: its start
/// closure sets up timers or I/O and returns at once (it must never block). It reports its end
/// exactly once with ``finish()`` or `fail(_:)` (an error or a message), and honours stop requests through
/// ``onStop``. Reports after the end, or from an earlier incarnation, are ignored.
///
/// ```swift
/// ChildSpec(id: "ticker", .loopTask { context in
///     context.onStop = { context.finish() }
/// })
/// ```
public final class LoopTaskContext {
    /// The child's path, `root/ticker`.
    public let path: String
    /// How many times this child was restarted before this incarnation.
    public let restartCount: Int
    /// Called once when the supervisor asks the task to stop. The task must then end (with
    /// ``finish()``) within its shutdown timeout, or it is reported abandoned. When `nil`, a stop
    /// request ends the task at once.
    public var onStop: (() -> Void)? {
        get { stopHandler }
        set { stopHandler = newValue }
    }
    /// Private storage for ``onStop`` (see `EventSink.active` for why).
    private var stopHandler: (() -> Void)?

    /// The child's ``ChildSpec/argument`` (given per child by
    /// ``Supervisor/startChild(from:with:)``), the same at every restart.
    public var argument: (any Sendable)? { argumentBox?.value }
    private let argumentBox: ArgumentBox?

    /// Strong: the record drops this context (breaking the cycle) when the task has ended.
    private(set) var record: ChildRecord?
    let generation: UInt64
    private(set) var ended = false

    init(path: String, restartCount: Int, record: ChildRecord, generation: UInt64) {
        self.path = path
        self.argumentBox = record.spec.argumentBox
        self.restartCount = restartCount
        self.record = record
        self.generation = generation
    }

    /// Whether the task was asked to stop.
    public private(set) var stopRequested = false

    /// The task ended normally (or, after a stop request, as asked).
    public func finish() { end(.returned) }

    /// The task failed; it is restarted according to its spec.
    public func fail(_ error: any Error) { end(.threw(String(describing: error))) }

    /// The task failed with a message.
    public func fail(_ message: String) { end(.threw(message)) }

    /// The task is ready (with ``Readiness/notify``): its supervisor starts the next sibling.
    /// Calls after the first, or without that readiness, change nothing.
    public func ready() { notice(.ready) }

    /// The task is alive (with ``Liveness/watchdog(_:)``): call it at least once per interval.
    public func heartbeat() { notice(.watchdog) }

    /// A line saying what the task is doing, shown in its status and sent as an event.
    public func status(_ text: String) { notice(.status(text)) }

    private func notice(_ notice: WorkerNotice) {
        guard !ended else { return }
        record?.noticeArrived(generation: generation, notice)
    }

    private func end(_ termination: WorkerTermination) {
        guard !ended else { return }
        ended = true
        stopHandler = nil
        let record = self.record
        self.record = nil
        record?.workerEnded(generation: generation, termination)
    }

    func requestStop() {
        guard !ended, !stopRequested else { return }
        stopRequested = true
        if let onStop = stopHandler {
            stopHandler = nil
            onStop()
        } else {
            finish()
        }
    }

    /// Marks the task abandoned: later reports are ignored.
    func abandon() {
        ended = true
        stopHandler = nil
        record = nil
    }
}
