#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CUVShims
import Dispatch
import ProcessSpawning
import Supervision

/// The Dispatch runtime: the same supervision logic driven by Dispatch, for comparison with the
/// libuv runtime (see the benchmark).
///
/// One serial queue holds all supervisor state; timers are `DispatchSourceTimer`s on it;
/// processes are started with `posix_spawn` (`POSIX_SPAWN_SETSID`) and watched through a pidfd
/// read source, reaped with `waitid(P_PIDFD)`: Linux Dispatch has no process source, and a
/// Dispatch SIGCHLD source would break libuv in the same process. Async tasks run on the global
/// concurrent executor and report back on the queue. Use the supervisor only on `queue`.
///
/// Differences from the libuv runtime: no parent-death signal (posix_spawn has no hook for it),
/// no user/group switch, and every zero-delay restart costs a closure on the queue.
public final class DispatchRuntime: SupervisorRuntime {
    /// The queue everything runs on.
    public let queue: DispatchQueue
    private var pending: [any RunSoonJob] = []
    private var draining: [any RunSoonJob] = []
    private var scheduled = false
    private let drainEntry = WeakRuntime()

    /// A runtime on `queue` (a new serial queue by default).
    public init(queue: DispatchQueue = DispatchQueue(label: "uv-supervisor.dispatch-runtime")) {
        self.queue = queue
        drainEntry.runtime = self
    }

    /// `DispatchTime.now()` in nanoseconds (monotonic).
    public var nowNanoseconds: Int64 { Int64(bitPattern: DispatchTime.now().uptimeNanoseconds) }

    /// Traps unless called on ``queue``.
    public func preconditionOnRuntimeThread(_ operation: @autoclosure () -> String) {
        dispatchPrecondition(condition: .onQueue(queue))
    }

    /// Queues `job`; all jobs queued before the queue gets to them run in one block.
    public func runSoon(_ job: any RunSoonJob) {
        pending.append(job)
        if !scheduled {
            scheduled = true
            let entry = drainEntry
            queue.async { entry.runtime?.drain() }
        }
    }

    private func drain() {
        scheduled = false
        swap(&pending, &draining)
        for index in draining.indices { draining[index].runSoonJob() }
        draining.removeAll(keepingCapacity: true)
    }

    /// A `DispatchSourceTimer` on the queue.
    public func makeTimer(_ fire: @escaping () -> Void) -> any RuntimeTimer {
        DispatchRuntimeTimer(queue: queue, fire: fire)
    }

    /// Spawns with `posix_spawn` and watches the pidfd.
    public func startProcess(_ spec: ProcessSpec, path: String, notify: NotifySetup,
                             onOutput: @escaping (_ stream: String, _ line: String) -> Void,
                             onNotice: @escaping (WorkerNotice) -> Void,
                             onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker {
        if spec.userID != nil || spec.groupID != nil || spec.supplementaryGroups != nil {
            throw SupervisionError(.startFailed, "\(path): the Dispatch runtime cannot switch user or groups")
        }
        if spec.umask != nil || !spec.resourceLimits.isEmpty {
            throw SupervisionError(.startFailed, "\(path): the Dispatch runtime cannot set a umask or resource limits (posix_spawn has no hook)")
        }
        // The same notify socket and readiness pipe as the libuv runtime, read by sources.
        let notifications = DispatchNotifications(queue: queue, expectedUID: getuid(), runtime: self, onNotice: onNotice)
        var processEnvironment = spec.environment
        if !notify.isNone {
            do {
                processEnvironment = processEnvironment.applying(try notifications.prepare(notify))
            } catch {
                notifications.close()
                throw SupervisionError(.startFailed, "\(path): \(error.description)")
            }
        }
        let environment: SpawnEnvironment
        switch processEnvironment {
        case .inherit: environment = .inherit
        case .replace(let variables): environment = .replace(variables)
        case .inheritWithOverrides(let overrides): environment = .inheritWithOverrides(overrides)
        }
        let prepared: SpawnPreparation
        do {
            prepared = try SpawnPreparation(argv: spec.argv, environment: environment, workingDirectory: spec.workingDirectory)
        } catch {
            throw SupervisionError(.startFailed, error.description)
        }
        let description = prepared.description

        var parentCopies: [Int32] = []   // closed after the spawn
        defer { parentCopies.forEach { _ = Glibc.close($0) } }
        var captureReadEnds: [(fd: Int32, stream: String)] = []
        func fail(_ error: SpawnError) -> SupervisionError {
            captureReadEnds.forEach { _ = Glibc.close($0.fd) }
            return SupervisionError(.startFailed, error.description)
        }
        var childFDs: [Int32] = [-1, -1, -1]
        for (fd, policy) in [spec.stdin, spec.stdout, spec.stderr].enumerated() {
            switch policy {
            case .inherit: childFDs[fd] = Int32(fd)
            case .null: childFDs[fd] = -1
            case .file(let target, let append):
                do {
                    let opened = try openStdioFile(path: target, append: append, forInput: fd == 0, description: description)
                    parentCopies.append(opened)
                    childFDs[fd] = opened
                } catch {
                    throw fail(error)
                }
            case .capture:
                var ends: [Int32] = [-1, -1]
                if cuvs_pipe_cloexec(&ends) != 0 {
                    throw fail(SpawnError(errno: cuvs_errno(), operation: "\(description): pipe"))
                }
                _ = fcntl(ends[0], F_SETFL, fcntl(ends[0], F_GETFL) | O_NONBLOCK)
                parentCopies.append(ends[1])
                childFDs[fd] = ends[1]
                captureReadEnds.append((ends[0], fd == 1 ? "stdout" : "stderr"))
            }
        }
        var extraFDs: [Int32] = []
        if let descriptor = notify.readyDescriptor, notifications.pipeWriteEnd >= 0 {
            extraFDs = Array(repeating: -1, count: Int(descriptor) - 3) + [notifications.pipeWriteEnd]
        }
        var spawnOptions = cuvs_spawn_options()
        spawnOptions.stdio_fds = (childFDs[0], childFDs[1], childFDs[2])
        spawnOptions.extra_count = Int32(extraFDs.count)
        spawnOptions.new_session = spec.newProcessGroup ? 1 : 0
        spawnOptions.argv = UnsafePointer(prepared.argv.pointer)
        spawnOptions.envp = UnsafePointer(prepared.environmentPointer)
        var pidfd: Int32 = -1
        let pid: Int32 = prepared.resolvedPath.withCString { file in
            let directory = prepared.workingDirectory.map { strdup($0) } ?? nil
            defer { free(directory) }
            spawnOptions.file = file
            spawnOptions.cwd = UnsafePointer(directory)
            return extraFDs.withUnsafeBufferPointer { extra in
                spawnOptions.extra_fds = extra.baseAddress
                return cuvs_posix_spawn(&spawnOptions, &pidfd)
            }
        }
        notifications.closePipeWriteEnd()
        if pid < 0 {
            notifications.close()
            throw fail(SpawnError(errno: -pid, operation: description))
        }
        let worker = DispatchProcessWorker(pid: pid, pidfd: pidfd, ownGroup: spec.newProcessGroup, stopSignal: spec.stopSignal)
        for (fd, stream) in captureReadEnds {
            LineReader.start(fd: fd, queue: queue) { line in onOutput(stream, line) }
        }
        notifications.childPID = pid
        notifications.start()
        worker.watch(queue: queue) { termination in
            // Notices sent just before the exit come first.
            notifications.drain()
            notifications.close()
            onExit(termination)
        }
        return worker
    }

    /// Notify datagrams refused so far (foreign senders, malformed or oversized messages).
    public private(set) var droppedNotifications = DroppedNotifications()

    fileprivate func dropped(_ refusal: NotifyMessage.Refusal) {
        NotifyMessage.count(refusal, in: &droppedNotifications)
    }

    /// Runs an async task on the global executor; its end is reported on the queue.
    public func startAsyncTask(_ body: @escaping @Sendable () async throws -> Void, path: String,
                               onNotice: @escaping (WorkerNotice) -> Void,
                               onExit: @escaping (WorkerTermination) -> Void) throws(SupervisionError) -> any RunningWorker {
        let delivery = QueueBound(onExit, queue: queue)
        let noticeDelivery = QueueBound(onNotice, queue: queue)
        let queue = self.queue
        let notifier = WorkerNotifier { notice in queue.async { noticeDelivery.value(notice) } }
        let task = Task {
            let termination = await SupervisedTask.$notifier.withValue(notifier) {
                await WorkerTermination.ofAsyncTask(body)
            }
            queue.async { delivery.value(termination) }
        }
        return AsyncTaskWorker(task: task)
    }

    /// Starts one probe attempt: a non-blocking TCP connect watched by a write source, or a
    /// command spawned like a worker (output to `/dev/null`, success on exit 0, killed when
    /// cancelled).
    public func startProbe(_ check: ProbeCheck, completion: @escaping (ProbeResult) -> Void) -> any RuntimeProbe {
        let probe = DispatchProbe(completion: completion)
        switch check {
        case .tcp(let host, let port):
            probe.connect(host: host, port: port, queue: queue)
        case .command(let argv):
            var spec = ProcessSpec(argv: argv)
            spec.stdout = .null
            spec.stderr = .null
            do {
                probe.worker = try startProcess(spec, path: "probe", notify: .none, onOutput: { _, _ in },
                                                onNotice: { _ in }, onExit: { [weak probe] termination in
                    probe?.finish(termination == .exited(0) ? .success : .failure("\(termination)"))
                })
            } catch {
                probe.finishLater(.failure(error.message), queue: queue)
            }
        }
        return probe
    }
}

/// The runtime, reachable from `Sendable` blocks on its queue without a retain cycle.
/// `@unchecked Sendable`: `runtime` is set once, before the first block that reads it is
/// submitted, and read only on the runtime's queue.
final class WeakRuntime: @unchecked Sendable {
    weak var runtime: DispatchRuntime?
}

/// A value that belongs to one serial queue, carried through `Sendable` closures and touched
/// only on that queue: every access checks (the Dispatch counterpart of `LoopBound`).
/// `@unchecked Sendable` because of those checks: the value is only ever read on its queue.
struct QueueBound<Value>: @unchecked Sendable {
    private let storage: Value
    private let queue: DispatchQueue

    init(_ value: Value, queue: DispatchQueue) {
        dispatchPrecondition(condition: .onQueue(queue))
        storage = value
        self.queue = queue
    }

    var value: Value {
        dispatchPrecondition(condition: .onQueue(queue))
        return storage
    }
}

final class DispatchRuntimeTimer: RuntimeTimer {
    private let source: DispatchSourceTimer
    private var closed = false

    init(queue: DispatchQueue, fire: @escaping () -> Void) {
        source = DispatchSource.makeTimerSource(queue: queue)
        let state = TimerState()
        self.state = state
        // An event already queued when the timer is closed must not fire.
        source.setEventHandler {
            if !state.closed { fire() }
        }
        source.schedule(deadline: .distantFuture)
        source.activate()
    }

    private let state: TimerState

    /// `@unchecked Sendable`: read in the event handler and written in `close()`, both on the
    /// runtime's serial queue.
    private final class TimerState: @unchecked Sendable {
        var closed = false
    }

    func arm(afterNanoseconds nanoseconds: Int64) {
        guard !closed else { return }
        source.schedule(deadline: .now() + .nanoseconds(Int(max(0, nanoseconds))))
    }

    func disarm() {
        guard !closed else { return }
        source.schedule(deadline: .distantFuture)
    }

    func close() {
        guard !closed else { return }
        closed = true
        state.closed = true
        source.cancel()
    }
}

/// A process watched through its pidfd.
final class DispatchProcessWorker: RunningWorker {
    let pid: Int32?
    private let pidfd: Int32
    private let ownGroup: Bool
    private let stopSignal: Int32
    private var exited = false
    private var source: DispatchSourceRead?

    init(pid: Int32, pidfd: Int32, ownGroup: Bool, stopSignal: Int32) {
        self.pid = pid
        self.pidfd = pidfd
        self.ownGroup = ownGroup
        self.stopSignal = stopSignal
    }

    func watch(queue: DispatchQueue, onExit: @escaping (WorkerTermination) -> Void) {
        let source = DispatchSource.makeReadSource(fileDescriptor: pidfd, queue: queue)
        let pidfd = self.pidfd
        source.setEventHandler { [weak self] in
            var code: Int32 = 0
            var signal: Int32 = 0
            let reaped = cuvs_pidfd_reap(pidfd, &code, &signal)
            if reaped == 0 { return }
            // -1: already reaped by the kernel (SIGCHLD ignored); the status is lost.
            if reaped < 0 { code = -1; signal = 0 }
            source.cancel()
            guard let self else { return }
            self.exited = true
            // The group outlives its leader while grandchildren live: take them down too.
            if self.ownGroup, let pid = self.pid { _ = Glibc.kill(-pid, SIGKILL) }
            onExit(signal != 0 ? .signaled(signal) : .exited(code))
        }
        source.setCancelHandler {
            source.setEventHandler(handler: nil)   // breaks the source <-> handler cycle
            _ = Glibc.close(pidfd)
        }
        self.source = source
        source.activate()
    }

    private func send(_ signal: Int32) {
        guard !exited, let pid else { return }
        if ownGroup { _ = Glibc.kill(-pid, signal) } else { _ = cuvs_pidfd_send_signal(pidfd, signal) }
    }

    func requestStop() { send(stopSignal) }

    func kill() -> Bool {
        send(SIGKILL)
        return true
    }
}

/// Reads a pipe on a queue and delivers lines (the last partial line too); closes at EOF.
enum LineReader {
    static func start(fd: Int32, queue: DispatchQueue, onLine: @escaping (String) -> Void) {
        let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        var lines = LineSplitter()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 16)
        source.setEventHandler {
            while true {
                let count = read(fd, buffer.baseAddress, buffer.count)
                if count > 0 {
                    lines.feed(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), onLine)
                } else if count < 0 && (cuvs_errno() == EAGAIN || cuvs_errno() == EINTR) {
                    return
                } else {
                    lines.finish(onLine)
                    source.cancel()
                    return
                }
            }
        }
        source.setCancelHandler {
            source.setEventHandler(handler: nil)   // breaks the source <-> handler cycle
            buffer.deallocate()
            _ = Glibc.close(fd)
        }
        source.activate()
    }
}

/// One probe attempt on the Dispatch runtime.
final class DispatchProbe: RuntimeProbe {
    private var completion: ((ProbeResult) -> Void)?
    var worker: (any RunningWorker)?
    private var source: (any DispatchSourceWrite)?

    init(completion: @escaping (ProbeResult) -> Void) { self.completion = completion }

    func finish(_ result: ProbeResult) {
        worker = nil
        source.take()?.cancel()
        completion.take()?(result)
    }

    func cancel() {
        completion = nil
        source.take()?.cancel()
        _ = worker.take()?.kill()
    }

    /// Finishes on a later turn of `queue` (a probe's completion never runs inside its start).
    func finishLater(_ result: ProbeResult, queue: DispatchQueue) {
        let finish = QueueBound({ [weak self] in self?.finish(result) }, queue: queue)
        queue.async { finish.value() }
    }

    /// A non-blocking connect; the write source fires when it has an outcome.
    func connect(host: String, port: UInt16, queue: DispatchQueue) {
        // Typed addresses, passed to connect(2) as `sockaddr` through a scoped rebinding.
        let family = host.contains(":") ? AF_INET6 : AF_INET
        var address4 = sockaddr_in()
        var address6 = sockaddr_in6()
        address4.sin_family = sa_family_t(AF_INET)
        address4.sin_port = port.bigEndian
        address6.sin6_family = sa_family_t(AF_INET6)
        address6.sin6_port = port.bigEndian
        let parsed = family == AF_INET6 ? inet_pton(AF_INET6, host, &address6.sin6_addr) : inet_pton(AF_INET, host, &address4.sin_addr)
        guard parsed == 1 else {
            finishLater(.failure("tcp \(host):\(port): not a numeric address"), queue: queue)
            return
        }
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 {
            let error = SpawnError(errno: errno, operation: "tcp socket")
            finishLater(.failure(error.description), queue: queue)
            return
        }
        let result = family == AF_INET6
            ? withUnsafePointer(to: &address6) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
            : withUnsafePointer(to: &address4) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        if result != 0 && errno != EINPROGRESS {
            let error = SpawnError(errno: errno, operation: "connect")
            close(fd)
            finishLater(.failure(error.description), queue: queue)
            return
        }
        let source = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
        source.setEventHandler { [weak self] in
            var error: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size)
            self?.finish(error == 0 ? .success : .failure(SpawnError(errno: error, operation: "connect").description))
        }
        source.setCancelHandler { close(fd) }
        self.source = source
        source.resume()
    }
}

/// A child's notify socket and readiness pipe on the Dispatch runtime: read sources on the
/// runtime's queue, the same acceptance rule as the libuv runtime (`NotifyMessage.accept`).
final class DispatchNotifications {
    private let queue: DispatchQueue
    private let expectedUID: UInt32
    private weak var runtime: DispatchRuntime?
    private var onNotice: ((WorkerNotice) -> Void)?
    private var socketFD: Int32 = -1
    private var socketSource: (any DispatchSourceRead)?
    private var pipeReadEnd: Int32 = -1
    private var pipeSource: (any DispatchSourceRead)?
    /// The readiness pipe's write end, for the child (closed in the parent after the spawn).
    private(set) var pipeWriteEnd: Int32 = -1
    var childPID: Int32 = 0

    init(queue: DispatchQueue, expectedUID: UInt32, runtime: DispatchRuntime, onNotice: @escaping (WorkerNotice) -> Void) {
        self.queue = queue
        self.expectedUID = expectedUID
        self.runtime = runtime
        self.onNotice = onNotice
    }

    /// Opens what `setup` asks for; returns the child's environment changes.
    func prepare(_ setup: NotifySetup) throws(SpawnError) -> [String: String?] {
        var overrides: [String: String?] = [:]
        if setup.notifySocket {
            var random = SystemRandomNumberGenerator()
            let name = "uvs/\(getpid())/" + String(random.next(), radix: 16) + String(random.next(), radix: 16)
            let fd = cuvs_notify_socket_open(name)
            if fd < 0 { throw SpawnError(errno: -fd, operation: "notify socket @\(name)") }
            socketFD = fd
            overrides["NOTIFY_SOCKET"] = "@" + name
            overrides["WATCHDOG_PID"] = .some(nil)
            overrides["WATCHDOG_USEC"] = setup.watchdog.map { String(max(1, $0.nanosecondsClamped / 1000)) } ?? .some(nil)
        }
        if setup.readyDescriptor != nil {
            var ends: [Int32] = [-1, -1]
            if cuvs_pipe_cloexec(&ends) != 0 { throw SpawnError(errno: cuvs_errno(), operation: "readiness pipe") }
            _ = fcntl(ends[0], F_SETFL, fcntl(ends[0], F_GETFL) | O_NONBLOCK)
            pipeReadEnd = ends[0]
            pipeWriteEnd = ends[1]
        }
        return overrides
    }

    func closePipeWriteEnd() {
        if pipeWriteEnd >= 0 {
            _ = Glibc.close(pipeWriteEnd)
            pipeWriteEnd = -1
        }
    }

    /// Starts reading (after the spawn, once the child's pid is known).
    func start() {
        if socketFD >= 0 {
            let fd = socketFD
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            source.setEventHandler { [weak self] in self?.drain() }
            source.setCancelHandler {
                source.setEventHandler(handler: nil)
                _ = Glibc.close(fd)
            }
            socketSource = source
            source.activate()
        }
        if pipeReadEnd >= 0 {
            let fd = pipeReadEnd
            let source = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            source.setEventHandler { [weak self] in self?.readPipe() }
            source.setCancelHandler {
                source.setEventHandler(handler: nil)
                _ = Glibc.close(fd)
            }
            pipeSource = source
            source.activate()
        }
    }

    /// Receives every datagram waiting now.
    func drain() {
        guard socketSource != nil, socketFD >= 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 4096)
        while onNotice != nil {
            var info = cuvs_notify_datagram()
            let count = buffer.withUnsafeMutableBytes { cuvs_notify_receive(socketFD, $0.baseAddress, $0.count, &info) }
            if count < 0 { return }
            let result = NotifyMessage.accept(Array(buffer[0..<Int(count)]),
                                              senderPID: info.has_credentials != 0 ? info.sender_pid : nil,
                                              senderUID: info.has_credentials != 0 ? info.sender_uid : nil,
                                              truncated: info.truncated != 0, childPID: childPID, expectedUID: expectedUID)
            switch result {
            case .success(let notices): for notice in notices { onNotice?(notice) }
            case .failure(let refusal): runtime?.dropped(refusal)
            }
        }
    }

    private func readPipe() {
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(pipeReadEnd, $0.baseAddress, $0.count) }
            if count > 0 {
                if buffer[0..<count].contains(UInt8(ascii: "\n")), pipeSource != nil {
                    onNotice?(.ready)
                }
                continue
            }
            if count == 0 || (cuvs_errno() != EAGAIN && cuvs_errno() != EINTR) {
                // The cancel handler closes the descriptor: forget it here, or close() would
                // close that number again (perhaps somebody else's by then).
                pipeSource.take()?.cancel()
                pipeReadEnd = -1
            }
            return
        }
    }

    /// Stops reading; the sources close their descriptors once cancelled (or here, when they
    /// never started).
    func close() {
        onNotice = nil
        closePipeWriteEnd()
        if let source = socketSource.take() { source.cancel() } else if socketFD >= 0 { _ = Glibc.close(socketFD) }
        socketFD = -1
        if let source = pipeSource.take() { source.cancel() } else if pipeReadEnd >= 0 { _ = Glibc.close(pipeReadEnd) }
        pipeReadEnd = -1
    }
}
