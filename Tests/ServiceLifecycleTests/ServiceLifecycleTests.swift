import Logging
import ServiceLifecycle
import Dispatch
import Testing
import TestSupport
@testable import UVLoop
import UVSupervisor
import UVSupervisorServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// What the services did, in order, from any thread.
final class Journal: Sendable {
    private let entries = LockedValue<[String]>([])
    func add(_ entry: String) { entries.withLock { $0.append(entry) } }
    var all: [String] { entries.withLock { $0 } }
    func contains(_ entry: String) -> Bool { all.contains(entry) }
}

/// A service that waits for graceful shutdown (or cancellation) and notes both.
struct WaitingService: Service {
    let name: String
    let journal: Journal

    func run() async throws {
        journal.add("\(name) running")
        await withGracefulShutdownHandler {
            while !Task.isCancelled && !journal.contains("\(name) asked to stop") {
                try? await Task.sleep(for: .milliseconds(5))
            }
        } onGracefulShutdown: {
            journal.add("\(name) asked to stop")
        }
        journal.add(Task.isCancelled ? "\(name) cancelled" : "\(name) stopped")
    }
}

private let quietLogger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

private func tree(_ journal: Journal, crash: Bool = false) -> SupervisorService {
    SupervisorService(configure: { root, _ in
        root.onEvent { event in
            switch event.kind {
            case .started(let pid): journal.add("started \(event.path) \(pid ?? 0)")
            case .stopping: journal.add("stopping \(event.path)")
            case .supervisorStarted where event.path == "root": journal.add("tree started")
            default: break
            }
        }
    }) { _ in
        SupervisorSpec(intensity: RestartIntensity(maxRestarts: 2, period: .seconds(5)), children: [
            ChildSpec(id: "c0", .process(ProcessSpec(argv: ["/bin/sleep", "600"]))),
            ChildSpec(id: "inner", .service(WaitingService(name: "inner", journal: journal))),
            ChildSpec(id: "c1", .process(ProcessSpec(argv: crash ? ["/bin/sh", "-c", "exit 1"] : ["/bin/sleep", "600"])),
                      backoff: .none),
        ])
    }
}

private func pids(_ journal: Journal) -> [Int32] {
    journal.all.compactMap { entry in
        let parts = entry.split(separator: " ")
        return parts.count == 3 && parts[0] == "started" ? Int32(parts[2]) : nil
    }.filter { $0 > 0 }
}

/// Waits (bounded) for `condition`, polling.
private func eventually(_ condition: () -> Bool) async -> Bool {
    for _ in 0..<1000 {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

@Suite("ServiceLifecycle")
struct ServiceLifecycleTests {
    @Test("in a ServiceGroup: graceful shutdown stops the other service first (reverse order), then the tree in reverse start order; a Service as a worker is stopped too")
    func gracefulShutdownInAGroup() async throws {
        try await ExclusiveResources.run {
            let journal = Journal()
            let other = WaitingService(name: "other", journal: journal)
            let group = ServiceGroup(services: [tree(journal), other], logger: quietLogger)
            let running = Task { try await group.run() }
            #expect(await eventually { journal.contains("tree started") && journal.contains("other running") && journal.contains("inner running") })
            let children = pids(journal)
            #expect(children.count == 2 && children.allSatisfy(isAlive))
            await group.triggerGracefulShutdown()
            try await running.value
            let entries = journal.all
            let order = ["other stopped", "stopping root/c1", "stopping root/inner", "stopping root/c0"].map { entries.firstIndex(of: $0) ?? -1 }
            #expect(order.allSatisfy { $0 >= 0 } && order == order.sorted(), "\(entries)")
            #expect(entries.contains("inner cancelled"), "a Service worker is stopped by cancellation: \(entries)")
            #expect(children.allSatisfy { !isAlive($0) })
        }
    }

    @Test("cancellation stops the tree at once and run() returns")
    func cancellation() async throws {
        try await ExclusiveResources.run {
            let journal = Journal()
            let service = tree(journal)
            let running = Task { try await service.run() }
            #expect(await eventually { journal.contains("tree started") })
            let children = pids(journal)
            running.cancel()
            try await running.value
            #expect(children.count == 2 && children.allSatisfy { !isAlive($0) })
        }
    }

    @Test("cancellation abandons an async task that is slow to end, and run() still waits for it before closing the loop (resuming on a closed loop would stop the process)")
    func slowTaskOutlivesTheTree() async throws {
        try await ExclusiveResources.run {
            let journal = Journal()
            let service = SupervisorService(configure: { root, _ in
                root.onEvent { event in
                    if case .abandoned = event.kind { journal.add("abandoned \(event.path)") }
                    if case .supervisorStarted = event.kind { journal.add("tree started") }
                }
            }) { _ in
                SupervisorSpec(children: [
                    ChildSpec(id: "slow", .asyncTask {
                        journal.add("slow running")
                        try? await Task.sleep(for: .seconds(600))
                        // Cancelled: a last step that takes 300 ms and ignores cancellation.
                        await slowStep()
                        journal.add("slow ended")
                    }),
                ])
            }
            let running = Task { try await service.run() }
            #expect(await eventually { journal.contains("slow running") && journal.contains("tree started") })
            running.cancel()
            try await running.value
            #expect(journal.contains("abandoned root/slow"), "\(journal.all)")
            #expect(journal.contains("slow ended"), "run() returned before the task it abandoned had ended: \(journal.all)")
        }
    }

    @Test("a tree that gives up makes run() throw, so that the group can react")
    func abnormalEnd() async throws {
        await ExclusiveResources.run {
            let journal = Journal()
            let error = await #expect(throws: SupervisorServiceError.self) { try await tree(journal, crash: true).run() }
            #expect(error?.reason == .intensityExceeded)
        }
    }

    @Test("SIGTERM to a process running a ServiceGroup (graceful shutdown signal): ordered stop, exit 0")
    func sigterm() async throws {
        let report = try await withCheckedLoop { loop in
            var options = ProcessOptions(argv: [daemonHelperPath, "service-group"])
            options.stdout = .pipe
            var lines: [String] = []
            var ended = false
            var exit: ProcessExit?
            let process = try ChildProcess.spawn(on: loop, options, onOutput: { output in
                switch output {
                case .line(_, let line): lines.append(line)
                case .end: ended = true
                }
            }, onExit: { exit = $0 })
            #expect(runLoop(loop) { lines.contains("tree started") && lines.contains("other running") })
            try process.signal(SIGTERM)
            #expect(runLoop(loop) { exit != nil && ended })
            #expect(exit == .exited(0))
            let order = ["other stopped", "stopping root/c1", "stopping root/c0", "group done"].map { lines.firstIndex(of: $0) ?? -1 }
            #expect(order.allSatisfy { $0 >= 0 } && order == order.sorted(), "\(lines)")
        }
        #expect(report == .clean)
    }
}

/// 300 ms that cancellation cannot shorten.
private func slowStep() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(300)) { continuation.resume() }
    }
}
