import Testing
import Supervision
import SupervisionTesting

/// How the middle child ends in a matrix case.
enum MatrixExit: String, CaseIterable, Sendable {
    case normal, shutdown, failure, signal

    var isAbnormal: Bool { self == .failure || self == .signal }
}

struct MatrixCase: Sendable, CustomStringConvertible {
    var restart: RestartType
    var exit: MatrixExit
    var strategy: RestartStrategy
    var description: String { "\(restart) child, \(exit) exit, \(strategy)" }

    static let all: [MatrixCase] = {
        var cases: [MatrixCase] = []
        for restart in [RestartType.permanent, .transient, .temporary] {
            for exit in MatrixExit.allCases {
                for strategy in [RestartStrategy.oneForOne, .oneForAll, .restForOne] {
                    cases.append(MatrixCase(restart: restart, exit: exit, strategy: strategy))
                }
            }
        }
        return cases
    }()
}

@Suite("OTP semantics matrix: restart type x exit reason x strategy")
struct StrategyMatrixTests {
    @Test("who is stopped, in which order, and who is restarted", arguments: MatrixCase.all)
    func matrix(_ testCase: MatrixCase) throws {
        let harness = try Harness(SupervisorSpec(strategy: testCase.strategy, intensity: generous, children: [
            process("a"), process("b", restart: testCase.restart), process("c"),
        ]))
        harness.start()
        #expect(harness.runtime.actions == [.start("root/a"), .start("root/b"), .start("root/c")])
        let firstPids = harness.root.children().map(\.pid)
        let mark = harness.mark

        var terminated: ExitReason?
        switch testCase.exit {
        case .normal: harness.runtime.exit("root/b", .exited(0))
        case .failure: harness.runtime.exit("root/b", .exited(1))
        case .signal: harness.runtime.exit("root/b", .signaled(11))
        case .shutdown:
            try harness.root.terminateChild("b") { terminated = $0 }
            harness.runtime.runUntilIdle()
        }
        harness.runtime.runUntilIdle()

        let restarts: Bool
        switch testCase.exit {
        case .shutdown: restarts = false   // stopped on request: never restarted
        default:
            switch testCase.restart {
            case .permanent: restarts = true
            case .transient: restarts = testCase.exit.isAbnormal
            case .temporary: restarts = false
            }
        }

        var expected: [ManualRuntime.Action] = []
        if testCase.exit == .shutdown { expected.append(.requestStop("root/b")) }
        if restarts {
            switch testCase.strategy {
            case .oneForOne:
                expected += [.start("root/b")]
            case .oneForAll:
                expected += [.requestStop("root/c"), .requestStop("root/a"),
                             .start("root/a"), .start("root/b"), .start("root/c")]
            case .restForOne:
                expected += [.requestStop("root/c"), .start("root/b"), .start("root/c")]
            }
        }
        #expect(harness.actions(since: mark) == expected)

        let status = harness.root.children()
        if testCase.restart == .temporary {
            #expect(harness.root.childIDs == ["a", "c"], "a temporary child is removed when it ends")
        } else {
            #expect(harness.root.childIDs == ["a", "b", "c"])
            let b = try #require(status.first { $0.id == "b" })
            if restarts {
                #expect(b.state == .running)
                #expect(b.restartCount == 1)
                #expect(b.pid != firstPids[1])
            } else {
                #expect(b.state == (testCase.exit == .shutdown ? .terminated : .idle))
            }
            let expectedReason: ExitReason = switch testCase.exit {
            case .normal: .normal
            case .shutdown: .shutdown
            case .failure: .exited(1)
            case .signal: .signaled(11)
            }
            #expect(b.lastExit == expectedReason)
        }
        if testCase.exit == .shutdown { #expect(terminated == .shutdown) }
        // Siblings: restarted with new pids when their group restarted, untouched otherwise.
        let a = try #require(status.first { $0.id == "a" })
        let c = try #require(status.first { $0.id == "c" })
        #expect(a.state == .running && c.state == .running)
        let groupRestarted = restarts && testCase.strategy != .oneForOne
        #expect((a.pid != firstPids[0]) == (restarts && testCase.strategy == .oneForAll))
        #expect((c.pid != firstPids[2]) == groupRestarted)
        #expect(harness.root.state == .running)
    }
}
