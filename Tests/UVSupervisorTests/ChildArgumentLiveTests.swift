import Testing
import UVSupervisor
import TestSupport

/// Per-child arguments reaching real workers: a process's argv and environment, an async task's
/// task-local argument.
@Suite("Per-child arguments, live")
struct ChildArgumentLiveTests {
    private static func outputs(_ tree: LiveTree) -> [String: String] {
        var lines: [String: String] = [:]
        for event in tree.events {
            if case .output(_, let line) = event.kind { lines[event.path] = line }
        }
        return lines
    }

    @Test("one process template, two children: each gets its own argv tail and environment")
    func processArguments() async throws {
        let report = try await withCheckedLoop { loop in
            var template = ProcessSpec(argv: ["/bin/sh", "-c", "echo \"$1 ${GREETING:-unset} ${DROPPED:-gone}\"", "sh"])
            template.stdout = .capture
            template.environment = .inheritWithOverrides(["GREETING": "hello", "DROPPED": "still here"])
            let tree = try LiveTree(loop, .dynamic())
            tree.root.start()
            let worker = ChildSpec(id: "echo", .process(template), restart: .temporary)
            let first = try tree.root.startChild(from: worker, with: ChildArguments(argv: ["first"], environment: ["DROPPED": nil]))
            let second = try tree.root.startChild(from: worker, with: ChildArguments(argv: ["second"], environment: ["GREETING": "hi"]))
            #expect(tree.run { Self.outputs(tree).count == 2 })
            let lines = Self.outputs(tree)
            #expect(lines["root/\(first)"] == "first hello gone")
            #expect(lines["root/\(second)"] == "second hi still here")
            _ = tree.stop()
        }
        #expect(report == .clean)
    }

    @Test("an async task reads its own argument as ChildArgument.current; other tasks see theirs or none")
    func asyncTaskArgument() async throws {
        struct Seen: Error, CustomStringConvertible {
            let text: String
            var description: String { text }
        }
        let report = try await withCheckedLoop { loop in
            let tree = try LiveTree(loop, .dynamic())
            tree.root.start()
            let template = ChildSpec(id: "job", .asyncTask {
                // Reported through the failure message: the one channel a task body has here.
                throw Seen(text: "argument \(ChildArgument.current.map { "\($0)" } ?? "none")")
            }, restart: .temporary)
            let withValue = try tree.root.startChild(from: template, with: ChildArguments(value: 42))
            let without = try tree.root.startChild(from: template)
            let failures = { tree.events.compactMap { event -> (String, String)? in
                if case .exited(.failure(let message)) = event.kind { return (event.path, message) }
                return nil
            } }
            #expect(tree.run { failures().count == 2 })
            let byPath = Dictionary(uniqueKeysWithValues: failures())
            #expect(byPath["root/\(withValue)"] == "argument 42")
            #expect(byPath["root/\(without)"] == "argument none")
            #expect(ChildArgument.current == nil, "nothing leaks outside the task")
            _ = tree.stop()
        }
        #expect(report == .clean)
    }
}
