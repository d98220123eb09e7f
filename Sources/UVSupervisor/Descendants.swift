#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CUVShims
import Supervision
import UVLoop

/// Makes sure no descendant outlives the daemon, even when the daemon is SIGKILLed: a sentinel
/// process (a fork that runs only C code, see `cuvs_sentinel_start`) learns the process group
/// of every process worker, and when the daemon is gone (its end of a pipe closes) kills those
/// groups and then every process that still carries the daemon's cookie in its environment:
/// grandchildren that left the group (`setsid`) included, as long as they kept the environment.
final class DescendantSentinel {
    /// The environment variable every process worker inherits.
    let cookie: (name: String, value: String)
    let pid: Int32
    private var writeEnd: Int32

    /// Starts the sentinel; `nil` when it cannot (then nothing changes).
    static func start() -> DescendantSentinel? {
        var random = SystemRandomNumberGenerator()
        let value = "\(getpid())-" + String(random.next(), radix: 16)
        let name = "UVS_DAEMON_COOKIE"
        var ends: [Int32] = [-1, -1]
        guard cuvs_pipe_cloexec(&ends) == 0 else { return nil }
        // Registrations never block the loop: when the pipe is full they are dropped, and the
        // cookie still finds those processes.
        _ = fcntl(ends[1], F_SETFL, fcntl(ends[1], F_GETFL) | O_NONBLOCK)
        let pid = cuvs_sentinel_start(ends[0], ends[1], "\(name)=\(value)")
        Glibc.close(ends[0])
        guard pid > 0 else {
            Glibc.close(ends[1])
            return nil
        }
        return DescendantSentinel(cookie: (name, value), pid: pid, writeEnd: ends[1])
    }

    private init(cookie: (name: String, value: String), pid: Int32, writeEnd: Int32) {
        self.cookie = cookie
        self.pid = pid
        self.writeEnd = writeEnd
    }

    /// A process group to kill if the daemon dies (`started`), or one that is gone.
    func note(group: Int32, started: Bool) {
        guard writeEnd >= 0, group > 0 else { return }
        var record = started ? group : -group
        _ = write(writeEnd, &record, MemoryLayout<Int32>.size)
    }

    /// The daemon ends normally: the sentinel sweeps what is left (nothing, after a clean
    /// stop) and exits; it is reaped here.
    func close() {
        guard writeEnd >= 0 else { return }
        Glibc.close(writeEnd)
        writeEnd = -1
        var status: Int32 = 0
        waitpid(pid, &status, 0)
    }
}

/// Reaps children this process did not spawn: orphans re-parented to it as PID 1 of a
/// container or as a child subreaper. Children the loop spawned are left to their own exit
/// watch (their statuses are never taken); only other children are waited for, by pid.
final class OrphanReaper {
    private let loop: EventLoop
    private var watcher: SignalWatcher?

    init(loop: EventLoop) throws(UVError) {
        self.loop = loop
        watcher = try SignalWatcher(loop: loop, signal: SIGCHLD) { [weak self] _ in self?.reap() }
        reap()
    }

    /// Reaps every exited child that is not one of the loop's.
    func reap() {
        for pid in Self.children() where !loop.spawnedChild(pid) {
            var info = siginfo_t()
            _ = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG)
        }
    }

    /// At the daemon's end: kills and reaps adopted descendants that are still running.
    func killRemaining() {
        for pid in Self.children() where !loop.spawnedChild(pid) {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }

    func close() {
        watcher?.close()
        watcher = nil
    }

    /// `PR_SET_CHILD_SUBREAPER`: orphaned descendants are re-parented to this process instead of
    /// PID 1 (the daemon's whole `main` asks for it; a library never would).
    static func becomeSubreaper() {
        _ = cuvs_set_child_subreaper(1)
    }

    /// This process's children, from /proc/self/task/*/children.
    static func children() -> [Int32] {
        guard let tasks = opendir("/proc/self/task") else { return [] }
        defer { closedir(tasks) }
        var pids: [Int32] = []
        while let entry = readdir(tasks) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let tid = Int32(name) else { continue }
            let fd = open("/proc/self/task/\(tid)/children", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = read(fd, &buffer, buffer.count)
                if count <= 0 { break }
                bytes.append(contentsOf: buffer[0..<count])
            }
            Glibc.close(fd)
            pids += String(decoding: bytes, as: UTF8.self).split(separator: " ").compactMap { Int32($0) }
        }
        return pids
    }
}

extension Supervisor {
    /// The pids of every running process worker in the tree (nested supervisors included).
    func processWorkerPIDs() -> [Int32] {
        func collect(_ statuses: [ChildStatus]) -> [Int32] {
            statuses.flatMap { ($0.pid.map { [$0] } ?? []) + collect($0.children) }
        }
        return collect(children())
    }
}
