import Supervision
import SupervisionTesting

/// A supervisor on a manual runtime, with its events recorded.
final class Harness {
    let runtime = ManualRuntime()
    let root: Supervisor
    private(set) var events: [SupervisorEvent] = []

    init(_ spec: SupervisorSpec, seed: UInt64 = 7) throws {
        root = try Supervisor(spec, runtime: runtime, randomSeed: seed)
        root.onEvent { [weak self] in self?.events.append($0) }
    }

    func start() {
        root.start()
        runtime.runUntilIdle()
    }

    /// Actions since `mark`.
    func actions(since mark: Int) -> [ManualRuntime.Action] { Array(runtime.actions[mark...]) }

    var mark: Int { runtime.actions.count }

    func events(for path: String) -> [SupervisorEvent.Kind] {
        events.filter { $0.path == path }.map(\.kind)
    }

    func status(_ id: String) -> ChildStatus? { root.children().first { $0.id == id } }

    /// Delays of the restartScheduled events for `path`, in milliseconds.
    func scheduledDelays(_ path: String) -> [Int64] {
        events.compactMap { event in
            if event.path == path, case .restartScheduled(let delay, _) = event.kind {
                return delay.nanosecondsClamped / 1_000_000
            }
            return nil
        }
    }
}

func process(_ id: String, restart: RestartType = .permanent, shutdown: ShutdownPolicy? = nil,
             backoff: Backoff = .none, significant: Bool = false) -> ChildSpec {
    ChildSpec(id: id, .process(ProcessSpec(argv: ["/bin/true", id])), restart: restart,
              shutdown: shutdown, backoff: backoff, significant: significant)
}

func asyncTask(_ id: String, shutdown: ShutdownPolicy? = nil) -> ChildSpec {
    ChildSpec(id: id, .asyncTask({}), shutdown: shutdown)
}

let generous = RestartIntensity(maxRestarts: 1_000, period: .seconds(1))
