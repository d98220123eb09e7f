import Testing
import UVSupervisor
import UVLoop
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite("Bad input, wrong threads and security")
struct BadInputAndSecurityTests {
    @Test("bad environment, argv and stdio values are refused with a clear error, changing nothing")
    func badValues() async throws {
        let report = try await withCheckedLoop { loop in
            let handles = loop.liveHandleCount
            var nulInEnv = ProcessOptions(argv: ["/bin/true"])
            nulInEnv.environment = .replace(["KEY": "va\0lue"])
            #expect((#expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, nulInEnv) { _ in } })?.name == "EINVAL")
            let nulInArgv = ProcessOptions(argv: ["/bin/echo", "a\0b"])
            #expect((#expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, nulInArgv) { _ in } })?.name == "EINVAL")
            var badFile = ProcessOptions(argv: ["/bin/true"])
            badFile.stdout = .file(path: "/nonexistent/dir/out.log", append: true)
            let fileError = #expect(throws: UVError.self) { _ = try ChildProcess.spawn(on: loop, badFile) { _ in } }
            #expect(fileError?.name == "ENOENT" && fileError?.description.contains("/nonexistent/dir/out.log") == true)
            #expect(loop.liveHandleCount == handles)

            let runtime = UVRuntime(loop: loop)
            let root = try Supervisor(SupervisorSpec(children: []), runtime: runtime)
            root.start()
            #expect((#expect(throws: SupervisionError.self) { try root.terminateChild("ghost") })?.code == .unknownID)
            #expect((#expect(throws: SupervisionError.self) {
                try root.startChild(ChildSpec(id: "p", .process(ProcessSpec(argv: ["/bin/true"])), shutdown: .timeout(.seconds(-2))))
            })?.code == .invalidDuration)
            #expect(root.childIDs.isEmpty)
            root.shutdown()
            runLoop(loop) { root.finalReason != nil }
        }
        #expect(report == .clean)
    }

    @Test("argv is never passed through a shell")
    func noShell() async throws {
        let marker = makeTemporaryDirectory() + "/created-by-a-shell"
        let report = try await withCheckedLoop { loop in
            var options = ProcessOptions(argv: ["/bin/echo", "$(touch \(marker))", ";", "touch", marker])
            options.stdout = .pipe
            var lines: [String] = []
            var exited = false
            var ended = false
            _ = try ChildProcess.spawn(on: loop, options, onOutput: { output in
                switch output {
                case .line(_, let line): lines.append(line)
                case .end: ended = true
                }
            }) { _ in exited = true }
            #expect(runLoop(loop) { exited && ended })
            #expect(lines == ["$(touch \(marker)) ; touch \(marker)"])
            #expect(access(marker, F_OK) != 0, "a shell interpreted the arguments")
        }
        #expect(report == .clean)
    }

    @Test("a child can run as another user (nobody), on both spawn methods",
          .enabled(if: getuid() == 0, "needs root"), arguments: [SpawnMethod.libuv, .pidfd])
    func dropPrivileges(method: SpawnMethod) async throws {
        let report = try await withCheckedLoop { loop in
            var options = ProcessOptions(argv: ["/usr/bin/id", "-u"])
            options.spawnMethod = method
            options.userID = 65534
            options.groupID = 65534
            options.stdout = .pipe
            var lines: [String] = []
            var exit: ProcessExit?
            var ended = false
            _ = try ChildProcess.spawn(on: loop, options, onOutput: { output in
                switch output {
                case .line(_, let line): lines.append(line)
                case .end: ended = true
                }
            }) { exit = $0 }
            #expect(runLoop(loop) { exit != nil && ended })
            #expect(exit == .exited(0))
            #expect(lines == ["65534"])
        }
        #expect(report == .clean)
    }

    // Exit tests run in a child process: exclusive, so that no leak check elsewhere sees it
    // as a zombie before the test library reaps it.
    @Test("a loop handle created off the loop's thread is caught",
          .disabled(if: underSanitizer, "the crashing child of an exit test can hang in the backtracer under sanitizers"))
    func wrongThreadHandle() async {
        await ExclusiveResources.run {
            let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
                let loop = try! EventLoop()
                var created = false
                let thread = Thread { _ = LoopTimer(loop: loop) {}; created = true }
                thread.start()
                thread.join()
                _ = created
            }
            let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
            #expect(message.contains("LoopTimer.init must be called on the event loop's thread"), "stderr: \(message.prefix(500))")
        }
    }

    @Test("closing or running a loop from inside its own callback is caught",
          .disabled(if: underSanitizer, "the crashing child of an exit test can hang in the backtracer under sanitizers"))
    func reentrantLoop() async {
        await ExclusiveResources.run {
            let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
                let loop = try! EventLoop()
                loop.runSoon { try? loop.close() }
                loop.run(.noWait)
                loop.run(.noWait)
            }
            let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
            #expect(message.contains("EventLoop.close called from inside a callback of the same loop"), "stderr: \(message.prefix(500))")
        }
    }

    @Test("a supervisor called off its loop's thread is caught",
          .disabled(if: underSanitizer, "the crashing child of an exit test can hang in the backtracer under sanitizers"))
    func wrongThreadSupervisor() async {
        await ExclusiveResources.run {
            let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
                let loop = try! EventLoop()
                let root = try! Supervisor(SupervisorSpec(children: []), runtime: UVRuntime(loop: loop))
                let thread = Thread { root.start() }
                thread.start()
                thread.join()
            }
            let message = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
            #expect(message.contains("Supervisor.start must be called on the event loop's thread"), "stderr: \(message.prefix(500))")
        }
    }
}

/// A pthread running a closure (for wrong-thread checks).
final class Thread: @unchecked Sendable {
    private let body: () -> Void
    private var thread = pthread_t()
    init(_ body: @escaping () -> Void) { self.body = body }
    func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { argument in
            Unmanaged<Thread>.fromOpaque(argument!).takeRetainedValue().body()
            return nil
        }, box)
    }
    func join() { pthread_join(thread, nil) }
}
