import Logging
import ServiceLifecycle
import UVLoop
import UVSupervisor

/// A supervision tree as a ServiceLifecycle `Service`: run it in a `ServiceGroup` beside your
/// other services. The tree gets a loop on a thread of its own; graceful shutdown stops it in
/// reverse start order within ``shutdownTimeout`` (stop signals, kills at the timeouts), task
/// cancellation stops it at once (children are killed). `run()` returns when the tree has
/// stopped, and throws ``SupervisorServiceError`` when it stopped abnormally (its restart
/// intensity was exceeded), so that the group can react.
///
/// ```swift
/// let tree = SupervisorService { loop in SupervisorSpec(children: [...]) }
/// let group = ServiceGroup(services: [tree, httpServer], gracefulShutdownSignals: [.sigterm], logger: logger)
/// try await group.run()
/// ```
public struct SupervisorService: Service {
    /// The root supervisor's name (default `root`).
    public var name: String
    /// Where the tree's events are logged (`nil`: nowhere).
    public var logger: Logger?
    /// The tree's shutdown deadline on graceful shutdown (default 10 s).
    public var shutdownTimeout: Duration
    /// Called on the tree's loop with the root before it starts: event handlers, metrics, ...
    public var configure: (@Sendable (Supervisor, EventLoop) -> Void)?
    private let makeSpec: @Sendable (EventLoop) throws -> SupervisorSpec

    /// A tree whose spec is built on its loop (loop tasks that make their own timers or I/O
    /// capture the loop).
    public init(name: String = "root", logger: Logger? = nil, shutdownTimeout: Duration = .seconds(10),
                configure: (@Sendable (Supervisor, EventLoop) -> Void)? = nil,
                _ makeSpec: @escaping @Sendable (EventLoop) throws -> SupervisorSpec) {
        self.name = name
        self.logger = logger
        self.shutdownTimeout = shutdownTimeout
        self.configure = configure
        self.makeSpec = makeSpec
    }

    /// Runs the tree until it stops (see the type's description).
    public func run() async throws {
        let thread = try EventLoopThread()
        let tree = RunningTree(remote: thread.remote)
        let timeout = shutdownTimeout
        defer {
            // The root is let go on its loop's thread, then the loop is torn down there.
            try? thread.remote.execute { tree.release() }
            thread.shutdown()
        }
        let reason = try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ExitReason, any Error>) in
                    start(on: thread, tree: tree, continuation: continuation)
                }
            } onGracefulShutdown: {
                tree.stop(within: timeout)
            }
        } onCancel: {
            tree.stop(within: .zero)
        }
        if reason.isAbnormal { throw SupervisorServiceError(reason: reason) }
    }

    private func start(on thread: EventLoopThread, tree: RunningTree, continuation: CheckedContinuation<ExitReason, any Error>) {
        let (name, logger, configure, makeSpec) = (self.name, self.logger, self.configure, self.makeSpec)
        do {
            try thread.remote.executeWithLoop { loop in
                do {
                    let runtime = UVRuntime(loop: loop)
                    let root = try Supervisor(makeSpec(loop), name: name, runtime: runtime, logger: logger)
                    // Async-task workers abandoned by a hurried stop still end on this loop:
                    // it is torn down only after them (or 5 s).
                    root.onTermination { reason in
                        runtime.afterAsyncTasksEnd(within: .seconds(5)) { continuation.resume(returning: reason) }
                    }
                    configure?(root, loop)
                    tree.started(root)
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        } catch {
            continuation.resume(throwing: error)
        }
    }
}

/// The tree ended abnormally (its root gave up, or a worker could not be started).
public struct SupervisorServiceError: Error, CustomStringConvertible {
    /// The root's final reason.
    public var reason: ExitReason
    /// `supervision tree ended: REASON`.
    public var description: String { "supervision tree ended: \(reason)" }
}

/// The root, reachable from the shutdown and cancellation handlers (any thread). A stop asked
/// before the tree exists is remembered and applied as it starts.
private final class RunningTree: Sendable {
    private struct State {
        var root: LoopBound<Supervisor>?
        var stopWithin: Duration?
    }
    private let state = LockedValue(State())
    private let remote: LoopRemote

    init(remote: LoopRemote) {
        self.remote = remote
    }

    /// On the loop: keeps the root, starts it, and stops it at once if that was asked already.
    func started(_ root: Supervisor) {
        let bound = LoopBound(root, remote: remote)
        let stopWithin = state.withLock { state -> Duration? in
            state.root = bound
            return state.stopWithin
        }
        root.start()
        if let stopWithin { root.shutdown(within: stopWithin) }
    }

    /// Any thread: stops the tree within `deadline` (a shorter deadline later still applies).
    func stop(within deadline: Duration) {
        let root = state.withLock { state -> LoopBound<Supervisor>? in
            state.stopWithin = min(state.stopWithin ?? deadline, deadline)
            return state.root
        }
        guard let root else { return }
        try? remote.execute { root.value.shutdown(within: deadline) }
    }

    /// On the loop: drops the root there.
    func release() {
        let root = state.withLock { state -> LoopBound<Supervisor>? in
            defer { state.root = nil }
            return state.root
        }
        _ = root
    }
}

extension WorkerKind {
    /// A ServiceLifecycle `Service` as a supervised async-task worker: `run()` returning is a
    /// normal exit, throwing a failure, and the supervisor's stop request cancels it.
    public static func service(_ service: some Service) -> WorkerKind {
        .asyncTask { try await service.run() }
    }
}
