import Testing
import UVSupervisor
import UVLoop
import TestSupport

/// What systemd users set per process, reaching a real child: resource limits, umask, user,
/// group and supplementary groups.
@Suite("Resource limits, umask and credentials, live")
struct ProcessLimitsLiveTests {
    @Test("a child gets its resource limits, umask, uid, gid and supplementary groups (as root: run as nobody)")
    func applied() async throws {
        let report = try await withCheckedLoop { loop in
            var spec = ProcessSpec(argv: ["/bin/sh", "-c", "echo $(ulimit -Sn) $(ulimit -Hn) $(ulimit -Sc) $(umask) $(id -u) $(id -g) $(id -G)"])
            spec.stdout = .capture
            spec.resourceLimits = [ResourceLimit(.openFiles, soft: 1234, hard: 2345), ResourceLimit(.coreSize, 0)]
            spec.umask = 0o027
            spec.userID = 65534
            spec.groupID = 65534
            spec.supplementaryGroups = [65534, 100]
            let tree = try LiveTree(loop, SupervisorSpec(children: [ChildSpec(id: "probe", .process(spec), restart: .temporary)]))
            tree.root.start()
            let line = { tree.events.compactMap { event -> String? in
                if case .output(_, let text) = event.kind { return text }
                return nil
            }.first }
            #expect(tree.run { line() != nil })
            #expect(line() == "1234 2345 0 0027 65534 65534 65534 100", "\(tree.events.map(\.description))")
            _ = tree.stop()
        }
        #expect(report == .clean)
    }

    @Test("a soft limit above its hard limit, a resource limited twice, a umask over 0777 are invalid specs; the libuv spawn method refuses limits")
    func refused() async throws {
        var spec = ProcessSpec(argv: ["/bin/true"])
        spec.resourceLimits = [ResourceLimit(.openFiles, soft: 10, hard: 5)]
        #expect(throws: SupervisionError.self) { try SupervisorSpec(children: [ChildSpec(id: "a", .process(spec))]).validate() }
        spec.resourceLimits = [ResourceLimit(.openFiles, 10), ResourceLimit(.openFiles, 20)]
        #expect(throws: SupervisionError.self) { try SupervisorSpec(children: [ChildSpec(id: "a", .process(spec))]).validate() }
        spec.resourceLimits = []
        spec.umask = 0o1000
        #expect(throws: SupervisionError.self) { try SupervisorSpec(children: [ChildSpec(id: "a", .process(spec))]).validate() }

        let report = try await withCheckedLoop { loop in
            var options = ProcessOptions(argv: ["/bin/true"])
            options.spawnMethod = .libuv
            options.resourceLimits = [.init(resource: 7, soft: 10, hard: 10)]
            let error = #expect(throws: UVError.self) { try ChildProcess.spawn(on: loop, options) { _ in } }
            #expect(error?.operation.contains("need the pidfd spawn method") == true)
        }
        #expect(report == .clean)
    }
}
