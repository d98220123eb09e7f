import Testing
import Logging
import Supervision
import SupervisionTesting

/// A log handler that keeps messages.
private final class CapturingLogHandler: LogHandler, @unchecked Sendable {
    final class Store: @unchecked Sendable { var lines: [(Logger.Level, String, String?)] = [] }
    let store: Store
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    init(store: Store) { self.store = store }
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        let child: String? = if case .string(let value)? = event.metadata?["child"] { value } else { nil }
        store.lines.append((event.level, event.message.description, child))
    }
}

@Suite("Event delivery")
struct EventDeliveryTests {
    @Test("events arrive as an AsyncSequence that ends when the root stops")
    func asyncSequence() async throws {
        let runtime = ManualRuntime()
        let root = try Supervisor(SupervisorSpec(children: [process("a")]), runtime: runtime)
        let stream = root.eventStream()
        root.start()
        runtime.exit("root/a", .exited(2))
        root.shutdown()
        runtime.runUntilIdle()
        var kinds: [SupervisorEvent.Kind] = []
        for await event in stream where event.path == "root/a" { kinds.append(event.kind) }
        #expect(kinds.first == .started(pid: 1001))
        #expect(kinds.contains(.exited(.exited(2))))
        #expect(kinds.contains(.restartScheduled(delay: .zero, why: "immediate")))
        #expect(kinds.last == .exited(.shutdown))
    }

    @Test("events are logged through swift-log with the child's path, failures as warnings")
    func logger() throws {
        let store = CapturingLogHandler.Store()
        let logger = Logger(label: "test") { _ in CapturingLogHandler(store: store) }
        let runtime = ManualRuntime()
        var spec = ProcessSpec(argv: ["/bin/true"])
        spec.environment = .replace(["SECRET_TOKEN": "hunter2"])
        let root = try Supervisor(SupervisorSpec(children: [ChildSpec(id: "a", .process(spec))]), runtime: runtime, logger: logger)
        root.start()
        runtime.runUntilIdle()
        runtime.exit("root/a", .exited(1))
        #expect(store.lines.contains { $0.0 == .warning && $0.1.contains("exited: exited(1)") && $0.2 == "root/a" })
        #expect(store.lines.contains { $0.0 == .info && $0.1.contains("started (pid") })
        #expect(!store.lines.contains { $0.1.contains("hunter2") }, "environment values never appear in logs")
    }
}
