#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import UVLoop
import UVSupervisor

/// The one harness for "a root on a real loop, its events recorded, run until": used by every
/// libuv-side test that drives a tree (the behaviour suite's libuv harness wraps it too).
public final class LiveTree {
    public let loop: EventLoop
    public let root: Supervisor
    public var events: [SupervisorEvent] = []

    /// A root on `loop` with a fixed jitter seed. `method`: how processes are spawned (default:
    /// `UVS_SPAWN=libuv` in the environment, else the preferred method). With
    /// `recording: false` events are not kept (long runs, memory measurements).
    public init(_ loop: EventLoop, _ spec: SupervisorSpec, seed: UInt64 = 1, method: SpawnMethod? = nil,
                recording: Bool = true) throws {
        self.loop = loop
        let fromEnvironment: SpawnMethod = getenv("UVS_SPAWN").map { String(cString: $0) == "libuv" ? .libuv : .pidfd } ?? .preferred
        root = try Supervisor(spec, runtime: UVRuntime(loop: loop, spawnMethod: method ?? fromEnvironment), randomSeed: seed)
        if recording { root.onEvent { [weak self] in self?.events.append($0) } }
    }

    /// The status of the root's child `id`.
    public func status(_ id: String) -> ChildStatus? { root.children().first { $0.id == id } }

    /// Runs the loop until `condition` holds (bounded by `timeout`). Returns whether it did.
    @discardableResult
    public func run(timeout: Duration = .seconds(30), until condition: () -> Bool) -> Bool {
        runLoop(loop, timeout: timeout, until: condition)
    }

    /// Shuts the tree down within 5 s and waits for it; returns the final reason.
    public func stop() -> ExitReason? {
        root.shutdown(within: .seconds(5))
        run { root.finalReason != nil }
        return root.finalReason
    }

    /// How many recorded events of `path` match.
    public func count(_ path: String, _ matches: (SupervisorEvent.Kind) -> Bool) -> Int {
        events.filter { $0.path == path && matches($0.kind) }.count
    }
}
