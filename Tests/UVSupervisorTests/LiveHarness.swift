import Testing
import Dispatch
import UVSupervisor
import UVLoop
import DispatchSupervisor
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The runtimes the shared behaviour suite runs on.
enum RuntimeKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case libuvPidfd = "libuv runtime (pidfd spawn)"
    case libuvSpawn = "libuv runtime (uv_spawn)"
    case dispatch = "Dispatch runtime"
    var description: String { rawValue }
}

/// A root supervisor on a real runtime. Conditions and the root are only touched on the
/// runtime's thread (the loop thread, or the Dispatch queue).
protocol LiveHarness: AnyObject {
    /// Builds and starts the root.
    func start(_ spec: SupervisorSpec) throws
    /// Runs `body` with the root on the runtime's thread.
    func onRuntime<T>(_ body: (Supervisor, [SupervisorEvent]) -> T) -> T
    /// Drives the runtime until `condition` holds (bounded). Returns whether it did.
    func run(timeout: Duration, until condition: @escaping (Supervisor, [SupervisorEvent]) -> Bool) -> Bool
    /// Stops the tree (if running) and releases the runtime.
    func tearDown()
}

extension LiveHarness {
    @discardableResult
    func run(until condition: @escaping (Supervisor, [SupervisorEvent]) -> Bool) -> Bool {
        run(timeout: .seconds(10), until: condition)
    }

    func status(_ id: String) -> ChildStatus? { onRuntime { root, _ in root.children().first { $0.id == id } } }
    func pid(_ id: String) -> Int32? { status(id)?.pid }
    var finalReason: ExitReason? { onRuntime { root, _ in root.finalReason } }

    func shutDownAndWait() -> ExitReason? {
        onRuntime { root, _ in root.shutdown(within: .seconds(5)) }
        run { root, _ in root.finalReason != nil }
        return finalReason
    }

    func delays(_ path: String) -> [Int64] {
        onRuntime { _, events in
            events.compactMap {
                if $0.path == path, case .restartScheduled(let delay, _) = $0.kind { return delay.nanosecondsClamped / 1_000_000 }
                return nil
            }
        }
    }
}

final class LibUVHarness: LiveHarness {
    let loop: EventLoop
    let method: SpawnMethod
    var tree: LiveTree!

    init(loop: EventLoop, method: SpawnMethod) {
        self.loop = loop
        self.method = method
    }

    func start(_ spec: SupervisorSpec) throws {
        tree = try LiveTree(loop, spec, method: method)
        tree.root.start()
    }

    func onRuntime<T>(_ body: (Supervisor, [SupervisorEvent]) -> T) -> T { body(tree.root, tree.events) }

    func run(timeout: Duration, until condition: @escaping (Supervisor, [SupervisorEvent]) -> Bool) -> Bool {
        tree.run(timeout: timeout) { condition(self.tree.root, self.tree.events) }
    }

    func tearDown() {
        if tree?.root.finalReason == nil { _ = shutDownAndWait() }
        tree = nil
    }
}

final class DispatchHarness: LiveHarness, @unchecked Sendable {
    let runtime = DispatchRuntime()
    var root: Supervisor!
    var events: [SupervisorEvent] = []
    private let changed = DispatchSemaphore(value: 0)

    func start(_ spec: SupervisorSpec) throws {
        try runtime.queue.sync {
            root = try Supervisor(spec, runtime: runtime, randomSeed: 1)
            root.onEvent { [weak self] in
                self?.events.append($0)
                self?.changed.signal()
            }
            root.start()
        }
    }

    func onRuntime<T>(_ body: (Supervisor, [SupervisorEvent]) -> T) -> T {
        runtime.queue.sync { body(root, events) }
    }

    func run(timeout: Duration, until condition: @escaping (Supervisor, [SupervisorEvent]) -> Bool) -> Bool {
        let deadline = DispatchTime.now() + .nanoseconds(Int(timeout.nanosecondsClamped))
        while true {
            if runtime.queue.sync(execute: { condition(root, events) }) { return true }
            // Wake on the next event; conditions about other processes (not events) re-check
            // at least every 20 ms.
            let wake = min(deadline, DispatchTime.now() + .milliseconds(20))
            _ = changed.wait(timeout: wake)
            if DispatchTime.now() >= deadline { return runtime.queue.sync { condition(root, events) } }
        }
    }

    func tearDown() {
        if finalReason == nil { _ = shutDownAndWait() }
        runtime.queue.sync { root = nil }
    }
}

/// Runs `body` with a harness of `kind` and reports what was left behind (descriptors, zombies).
func withLiveHarness(_ kind: RuntimeKind, _ body: @escaping @Sendable (any LiveHarness) throws -> Void) async throws -> LeakReport {
    switch kind {
    case .libuvPidfd, .libuvSpawn:
        return try await withCheckedLoop { loop in
            let harness = LibUVHarness(loop: loop, method: kind == .libuvPidfd ? .pidfd : .libuv)
            defer { harness.tearDown() }
            try body(harness)
        }
    case .dispatch:
        return try await ExclusiveResources.run {
            let before = openDescriptors()
            let harness = DispatchHarness()
            do {
                try body(harness)
                harness.tearDown()
            } catch {
                harness.tearDown()
                throw error
            }
            // Dispatch closes descriptors in cancel handlers, asynchronously: wait for them (bounded).
            let deadline = DispatchTime.now() + .seconds(2)
            while !openDescriptors().subtracting(before).isEmpty && DispatchTime.now() < deadline {
                harness.runtime.queue.sync {}
                sched_yield()
            }
            return LeakReport(newDescriptors: openDescriptors().subtracting(before), zombies: zombieChildren(),
                              liveHandles: 0, loopClosed: true)
        }
    }
}
