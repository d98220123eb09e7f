import Logging
import Testing
import Supervision
import SupervisionTesting

/// A log handler that keeps what it is given, for checking levels and metadata.
final class CapturedLog: @unchecked Sendable {
    struct Record {
        var level: Logger.Level
        var message: String
        var metadata: Logger.Metadata
    }
    // Written and read on the test's own thread only (the manual runtime is synchronous).
    var records: [Record] = []

    func logger(level: Logger.Level = .trace) -> Logger {
        var logger = Logger(label: "test") { _ in CapturingHandler(log: self) }
        logger.logLevel = level
        return logger
    }

    func records(event: String) -> [Record] {
        records.filter { $0.metadata["event"] == .string(event) }
    }
}

struct CapturingHandler: LogHandler {
    let log: CapturedLog
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        log.records.append(.init(level: event.level, message: "\(event.message)",
                                 metadata: metadata.merging(event.metadata ?? [:]) { $1 }))
    }
}

@Suite("Log metadata")
struct LogMetadataTests {
    @Test("every event is logged with structured metadata: child, event, restart_count, pid, exit_reason, delay_ms; levels by kind; output at its configured level")
    func metadata() throws {
        let log = CapturedLog()
        var app = ProcessSpec(argv: ["/srv/app"])
        app.stdout = .capture
        let runtime = ManualRuntime()
        let root = try Supervisor(SupervisorSpec(children: [
            ChildSpec(id: "app", .process(app), backoff: .exponential(initial: .milliseconds(250), jitter: 0)),
        ]), runtime: runtime, logger: log.logger(), randomSeed: 1)
        root.events.outputLogLevel = .debug
        root.start()
        runtime.runUntilIdle()
        runtime.write("root/app", line: "hello")
        runtime.exit("root/app", .exited(3))
        runtime.advance(by: .milliseconds(250))

        let started = log.records(event: "started")
        #expect(started.count == 2)
        #expect(started.first?.metadata["child"] == .string("root/app"))
        #expect(started.first?.metadata["restart_count"] == .stringConvertible(0))
        #expect(started.first?.metadata["pid"] != nil)
        #expect(started.last?.metadata["restart_count"]?.description == "1")
        let exited = try #require(log.records(event: "exited").first)
        #expect(exited.level == .warning)
        #expect(exited.metadata["exit_reason"]?.description == "exited(3)")
        let scheduled = try #require(log.records(event: "restartScheduled").first)
        #expect(scheduled.metadata["delay_ms"]?.description == "250")
        let output = try #require(log.records(event: "output").first)
        #expect(output.level == .debug)
        #expect(output.metadata["stream"] == .string("stdout"))
        #expect(output.message.hasSuffix("hello [restarts: 0]"))
    }

    @Test("events below the logger's level are not logged (and their metadata is not built)")
    func filtered() throws {
        let log = CapturedLog()
        let runtime = ManualRuntime()
        let root = try Supervisor(SupervisorSpec(children: [
            ChildSpec(id: "app", .process(ProcessSpec(argv: ["/srv/app"]))),
        ]), runtime: runtime, logger: log.logger(level: .warning), randomSeed: 1)
        root.start()
        runtime.runUntilIdle()
        runtime.exit("root/app", .exited(1))
        runtime.runUntilIdle()
        #expect(log.records.map(\.level).allSatisfy { $0 >= .warning })
        #expect(log.records(event: "exited").count == 1)
        #expect(log.records(event: "started").isEmpty)
    }
}
