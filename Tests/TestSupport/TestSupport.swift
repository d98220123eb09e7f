#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import UVLoop
import Dispatch

/// The directory holding the test binary and the helper executables built with it.
public let buildDirectory: String = {
    var buffer = [CChar](repeating: 0, count: 4096)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    precondition(length > 0, "cannot read /proc/self/exe")
    let path = String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    var directory = path[..<(path.lastIndex(of: "/") ?? path.endIndex)]
    // swift-testing may run from inside the .xctest bundle directory on some layouts.
    if directory.hasSuffix(".xctest") {
        directory = directory[..<(directory.lastIndex(of: "/") ?? directory.endIndex)]
    }
    return String(directory)
}()

/// The C helper program the tests spawn (`TestHelpers/uvs-test-child`).
public let childHelperPath = buildDirectory + "/uvs-test-child"

/// The descriptors open in this process right now.
public func openDescriptors() -> Set<Int32> {
    var result = Set<Int32>()
    guard let directory = opendir("/proc/self/fd") else { return result }
    let own = dirfd(directory)
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if let fd = Int32(name), fd != own { result.insert(fd) }
    }
    closedir(directory)
    return result
}

/// The fields of `/proc/PID/stat` after the command name: state, ppid, pgrp, ...
private func statFields(_ pid: Int32) -> [Substring]? {
    guard let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
    return text[text.index(after: close)...].split(separator: " ")
}

/// Every process's stat fields, by pid.
private func allProcessStats() -> [(pid: Int32, fields: [Substring])] {
    var result: [(Int32, [Substring])] = []
    guard let directory = opendir("/proc") else { return result }
    while let entry = readdir(directory) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
        }
        if let pid = Int32(name), let fields = statFields(pid) { result.append((pid, fields)) }
    }
    closedir(directory)
    return result
}

/// The state letter of a process (`R`, `S`, `Z`, ...), or nil when it does not exist.
public func processState(_ pid: Int32) -> Character? {
    statFields(pid)?.first?.first
}

/// Pids of live (non-zombie) processes whose process group is `pgid`.
public func livingProcesses(inGroup pgid: Int32) -> [Int32] {
    allProcessStats().filter { $0.fields.count > 2 && $0.fields[0] != "Z" && Int32($0.fields[2]) == pgid }.map(\.pid)
}

/// Zombie children of this process (exited, not reaped).
public func zombieChildren() -> [Int32] {
    let me = getpid()
    return allProcessStats().filter { $0.fields.count > 1 && $0.fields[0] == "Z" && Int32($0.fields[1]) == me }.map(\.pid)
}

/// Reads the first `limit` bytes (default 64 KiB) of a file as text.
public func readSmallFile(_ path: String, limit: Int = 65536) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while bytes.count < limit {
        let count = read(fd, &buffer, buffer.count)
        if count <= 0 { break }
        bytes.append(contentsOf: buffer[0..<count])
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// A fresh temporary directory.
public func makeTemporaryDirectory() -> String {
    var template = Array("/tmp/uvs-test-XXXXXX".utf8CString)
    let result = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(result != nil, "mkdtemp failed")
    return String(cString: result!)
}

/// Runs the loop one iteration at a time until `condition` holds or `timeout` passes.
/// A timer wakes the loop at the deadline, so this never blocks longer than `timeout`.
/// - Returns: whether the condition held.
@discardableResult
public func runLoop(_ loop: EventLoop, timeout: Duration = .seconds(10), until condition: () -> Bool) -> Bool {
    if condition() { return true }
    let deadline = EventLoop.hrtime() + UInt64(timeout.components.seconds) * 1_000_000_000
        + UInt64(timeout.components.attoseconds / 1_000_000_000)
    var woke = false
    let guardTimer = LoopTimer(loop: loop) { woke = true }
    try? guardTimer.start(after: .milliseconds(20), repeating: .milliseconds(20))
    defer { guardTimer.close() }
    while !condition() {
        if EventLoop.hrtime() >= deadline { return false }
        woke = false
        loop.run(.once)
    }
    _ = woke
    return true
}

/// Serialises the tests that measure process-wide resources (descriptors, children), so that
/// a concurrently running test cannot disturb their before/after counts. Async, so a waiting
/// test never blocks a cooperative thread.
public actor ExclusiveResources {
    public static let shared = ExclusiveResources()
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    private func acquire() async {
        if !busy { busy = true; return }
        await withCheckedContinuation { waiters.append($0) }
    }

    private func release() {
        if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
    }

    /// Runs `body` while no other exclusive test runs.
    @discardableResult
    public static func run<T: Sendable>(_ body: @Sendable () async throws -> T) async rethrows -> T {
        await shared.acquire()
        do {
            let result = try await body()
            await shared.release()
            return result
        } catch {
            await shared.release()
            throw error
        }
    }
}

/// What a loop test leaves behind, checked after teardown.
public struct LeakReport: Sendable, Equatable {
    /// Descriptors open after the test that were not open before it.
    public var newDescriptors: Set<Int32>
    /// Unreaped children of this process.
    public var zombies: [Int32]
    /// Handles whose close callback never ran.
    public var liveHandles: Int
    /// Whether `uv_loop_close` succeeded.
    public var loopClosed: Bool

    /// A report with every field given.
    public init(newDescriptors: Set<Int32>, zombies: [Int32], liveHandles: Int, loopClosed: Bool) {
        self.newDescriptors = newDescriptors
        self.zombies = zombies
        self.liveHandles = liveHandles
        self.loopClosed = loopClosed
    }

    /// Nothing left behind.
    public static let clean = LeakReport(newDescriptors: [], zombies: [], liveHandles: 0, loopClosed: true)
}

/// Creates a loop, runs `body` with it, tears it down, and reports what was left behind.
/// Runs exclusively (see ``ExclusiveResources``).
public func withCheckedLoop(_ body: @escaping @Sendable (EventLoop) throws -> Void) async throws -> LeakReport {
    try await ExclusiveResources.run {
        // libuv opens a process-wide pipe the first time any loop is created, and libdispatch
        // its event descriptors the first time anybody uses a source or a timer (Task.sleep
        // in any test does): make both exist first, so that neither is counted against the
        // test, whichever test happens to trigger it meanwhile.
        _ = libuvGlobalsReady
        _ = dispatchGlobalsReady
        let before = openDescriptors()
        let box = ResultBox()
        // The body is synchronous, so the loop stays on this one thread for its whole life,
        // and expectations are attributed to the running test.
        do {
            let loop = try EventLoop()
            var bodyError: (any Error)?
            do { try body(loop) } catch { bodyError = error }
            var closed = true
            do { try loop.close() } catch { closed = false }
            box.report = LeakReport(newDescriptors: [], zombies: [], liveHandles: loop.liveHandleCount, loopClosed: closed)
            box.error = bodyError
        } catch {
            box.error = error
        }
        if let error = box.error { throw error }
        var report = box.report ?? LeakReport(newDescriptors: [], zombies: [], liveHandles: -1, loopClosed: false)
        report.newDescriptors = openDescriptors().subtracting(before)
        report.zombies = zombieChildren()
        return report
    }
}

final class ResultBox: @unchecked Sendable {
    var report: LeakReport?
    var error: (any Error)?
}

/// Runs `body` on a new thread and waits for it (joins).
public func runOnFreshThread(_ body: @escaping () -> Void) throws {
    final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var thread = pthread_t()
    let created = pthread_create(&thread, nil, { argument in
        Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue().body()
        return nil
    }, box)
    precondition(created == 0, "pthread_create failed")
    pthread_join(thread, nil)
}

/// Creates and closes one loop, once, so that libuv's process-wide descriptors exist.
let libuvGlobalsReady: Bool = {
    if let loop = try? EventLoop() { try? loop.close() }
    return true
}()

/// Makes libdispatch open its process-wide descriptors (epoll, eventfd, timers) once.
let dispatchGlobalsReady: Bool = {
    let queue = DispatchQueue(label: "uvs-test-dispatch-warmup")
    let fired = DispatchSemaphore(value: 0)
    let timer = DispatchSource.makeTimerSource(queue: queue)
    timer.setEventHandler { fired.signal() }
    timer.schedule(deadline: .now() + .milliseconds(1))
    timer.activate()
    fired.wait()
    timer.cancel()
    // Task.sleep's timers are the global executor's, made on first use with descriptors of
    // their own (one timer descriptor per clock): sleep once. Blocking this one thread while
    // the sleep runs on another is safe: this runs once, under the exclusive lock.
    let slept = DispatchSemaphore(value: 0)
    Task.detached {
        try? await Task.sleep(for: .milliseconds(1))
        try? await Task.sleep(nanoseconds: 1_000_000)
        slept.signal()
    }
    slept.wait()
    var ends: [Int32] = [-1, -1]
    if pipe(&ends) == 0 {
        let source = DispatchSource.makeReadSource(fileDescriptor: ends[0], queue: queue)
        let read = DispatchSemaphore(value: 0)
        let cancelled = DispatchSemaphore(value: 0)
        source.setEventHandler { read.signal() }
        // The descriptor may only be closed once dispatch has let go of it.
        source.setCancelHandler { close(ends[0]); close(ends[1]); cancelled.signal() }
        source.activate()
        var byte: UInt8 = 1
        _ = write(ends[1], &byte, 1)
        read.wait()
        source.cancel()
        cancelled.wait()
    }
    return true
}()

/// The daemon helper (`TestHelpers/uvs-test-daemon`).
public let daemonHelperPath = buildDirectory + "/uvs-test-daemon"

/// Whether a process exists and is not a zombie.
public func isAlive(_ pid: Int32) -> Bool {
    guard let state = processState(pid) else { return false }
    return state != "Z"
}

/// The demo executable.
public let demoPath = buildDirectory + "/uv-supervisor-demo"

/// What one run of a command printed and how it ended.
public struct CommandResult: CustomStringConvertible {
    /// How it ended; `nil` if it had not within the timeout.
    public var exit: ProcessExit?
    /// Its standard output, line by line.
    public var out: [String] = []
    /// Its standard error, line by line.
    public var err: [String] = []
    /// Whether it ended, and both its streams were closed, within the timeout.
    public var finished = false

    /// Nothing yet: not ended, no output.
    public init() {}

    public var description: String { "exit \(exit.map { "\($0)" } ?? "none"), out \(out), err \(err)" }
}

/// Runs `argv` on `loop` until it has ended and closed its output (at most `timeout`),
/// collecting what it printed.
public func runCommandToEnd(_ loop: EventLoop, _ argv: [String], timeout: Duration = .seconds(20)) throws -> CommandResult {
    var options = ProcessOptions(argv: argv)
    options.stdout = .pipe
    options.stderr = .pipe
    let box = CommandResultBox()
    _ = try ChildProcess.spawn(on: loop, options, onOutput: { output in
        switch output {
        case .line(.standardOutput, let line): box.result.out.append(line)
        case .line(_, let line): box.result.err.append(line)
        case .end: box.streamsEnded += 1
        }
    }, onExit: { box.result.exit = $0 })
    box.result.finished = runLoop(loop, timeout: timeout) { box.result.exit != nil && box.streamsEnded == 2 }
    return box.result
}

private final class CommandResultBox {
    var result = CommandResult()
    var streamsEnded = 0
}

/// A command left running on a loop (a daemon under test), one of its output streams collected.
public final class BackgroundCommand {
    /// Which stream is collected.
    public enum Stream { case standardOutput, standardError }

    /// The process.
    public let process: ChildProcess
    /// The collected stream, line by line.
    public var lines: [String] { box.lines }
    /// How it ended, once it has.
    public var exit: ProcessExit? { box.exit }
    /// Whether the collected stream was closed.
    public var ended: Bool { box.ended }

    /// Spawns `argv` on `loop` with `stream` piped (the other inherited) and `environment`
    /// changes applied.
    public init(_ loop: EventLoop, _ argv: [String], collecting stream: Stream = .standardError,
                environment: [String: String?] = [:]) throws {
        var options = ProcessOptions(argv: argv)
        options.environment = .inheritWithOverrides(environment)
        switch stream {
        case .standardOutput: options.stdout = .pipe
        case .standardError: options.stderr = .pipe
        }
        let box = CommandOutputBox()
        process = try ChildProcess.spawn(on: loop, options, onOutput: { output in
            switch output {
            case .line(_, let line): box.lines.append(line)
            case .end: box.ended = true
            }
        }, onExit: { box.exit = $0 })
        self.box = box
    }

    private let box: CommandOutputBox
}

private final class CommandOutputBox {
    var lines: [String] = []
    var exit: ProcessExit?
    var ended = false
}

/// Writes `text` to a new file `name` in `directory`; returns its path.
public func writeTextFile(_ text: String, name: String, in directory: String) -> String {
    let path = directory + "/" + name
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    precondition(fd >= 0, "cannot write \(path)")
    _ = text.withCString { write(fd, $0, strlen($0)) }
    close(fd)
    return path
}
