#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CUVShims
import Supervision
import UVLoop

/// Makes sure no descendant outlives the daemon, even when the daemon is SIGKILLed: a sentinel
/// process (a fork that runs only C code, see `cuvs_sentinel_start`) sleeps until the daemon is
/// gone (its end of a pipe closes), then kills the process group of every process worker still
/// listed in a table the two share, and then every process that still carries the daemon's
/// cookie in its environment: grandchildren that left the group (`setsid`) included, as long as
/// they kept the environment.
///
/// The table is an anonymous shared mapping made before the fork: the daemon lists a group with
/// a plain store when a worker starts and clears it when the worker has exited, so a restart
/// costs no system call and never wakes the sentinel. (Telling it through the pipe cost a
/// context switch per start and per exit: +230 µs on the restart gap.)
final class DescendantSentinel {
    /// The environment variable every process worker inherits.
    let cookie: (name: String, value: String)
    let pid: Int32
    private var writeEnd: Int32
    /// The shared table: loop-confined on this side; the sentinel reads it only once the daemon
    /// is gone. Accessed only through `note(group:started:)`, within `capacity`.
    private let table: UnsafeMutablePointer<Int32>
    private let capacity: Int
    private var slotOfGroup: [Int32: Int] = [:]
    private var freeSlots: [Int] = []
    private var nextSlot = 0

    /// Starts the sentinel; `nil` when it cannot (then nothing changes). With `releasePages`,
    /// the sentinel unmaps the clean code pages it touched on its way to its wait (see
    /// ``DaemonOptions/trimCodePages``).
    static func start(capacity: Int = 65_536, releasePages: Bool = false) -> DescendantSentinel? {
        var random = SystemRandomNumberGenerator()
        let value = "\(getpid())-" + String(random.next(), radix: 16)
        let name = "UVS_DAEMON_COOKIE"
        let bytes = capacity * MemoryLayout<Int32>.stride
        guard let mapping = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0),
              mapping != MAP_FAILED else { return nil }
        // Zero-filled by the kernel, and only the pages touched ever take memory.
        let table = mapping.bindMemory(to: Int32.self, capacity: capacity)
        var ends: [Int32] = [-1, -1]
        guard cuvs_pipe_cloexec(&ends) == 0 else {
            munmap(mapping, bytes)
            return nil
        }
        let pid = cuvs_sentinel_start(ends[0], ends[1], "\(name)=\(value)", table, Int32(capacity), releasePages ? 1 : 0)
        Glibc.close(ends[0])
        guard pid > 0 else {
            Glibc.close(ends[1])
            munmap(mapping, bytes)
            return nil
        }
        return DescendantSentinel(cookie: (name, value), pid: pid, writeEnd: ends[1], table: table, capacity: capacity)
    }

    private init(cookie: (name: String, value: String), pid: Int32, writeEnd: Int32,
                 table: UnsafeMutablePointer<Int32>, capacity: Int) {
        self.cookie = cookie
        self.pid = pid
        self.writeEnd = writeEnd
        self.table = table
        self.capacity = capacity
    }

    /// A process group to kill if the daemon dies (`started`), or one that is gone. Beyond the
    /// table's capacity, groups are not listed (the cookie still finds their processes).
    func note(group: Int32, started: Bool) {
        guard writeEnd >= 0, group > 0 else { return }
        if started {
            let slot: Int
            if let free = freeSlots.popLast() {
                slot = free
            } else if nextSlot < capacity {
                slot = nextSlot
                nextSlot += 1
            } else {
                return
            }
            table[slot] = group
            slotOfGroup[group] = slot
        } else if let slot = slotOfGroup.removeValue(forKey: group) {
            table[slot] = 0
            freeSlots.append(slot)
        }
    }

    /// The daemon ends normally: the sentinel sweeps what is left (nothing, after a clean
    /// stop) and exits; it is reaped here.
    func close() {
        guard writeEnd >= 0 else { return }
        Glibc.close(writeEnd)
        writeEnd = -1
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        munmap(UnsafeMutableRawPointer(table), capacity * MemoryLayout<Int32>.stride)
    }
}

/// Reaps children this process did not spawn: orphans re-parented to it as PID 1 of a
/// container or as a child subreaper. Children the loop spawned are left to their own exit
/// watch (their statuses are never taken); only other children are waited for, by pid.
///
/// With `quietLoopThread`, SIGCHLD is blocked on the loop's thread while the reaper lives and
/// read from a signalfd instead: an exit of one of the loop's own children (watched through its
/// pidfd) then runs no signal handler on the loop's thread in the middle of the restart (that
/// handler, libuv's, with its frame and three system calls, was a tenth of a restart's gap), and
/// the signalfd is read with the pidfd's event in the same turn. libuv's handler must stay
/// installed: the kernel may hand SIGCHLD to another thread of the process (an adopted
/// orphan's parent is any of its threads), and with no handler (SIG_DFL) a thread that does
/// not block it discards the signal. Only for a loop whose children are spawned with the pidfd
/// method: libuv's own spawn needs its handler to run, so the loop refuses it meanwhile.
/// Threads created from the loop's thread while it runs inherit the blocked SIGCHLD.
final class OrphanReaper: LoopRunnable {
    private let loop: EventLoop
    private var watcher: SignalWatcher?
    private var signalDescriptor: ReadableDescriptor?
    private var unblockOnClose = false
    /// The thread whose signal mask it changed (`close()` must run there).
    private let creator: pthread_t
    private var queued = false
    private var closed = false

    init(loop: EventLoop, quietLoopThread: Bool) throws(UVError) {
        self.creator = pthread_self()
        self.loop = loop
        watcher = try SignalWatcher(loop: loop, signal: SIGCHLD) { [weak self] _ in self?.reapSoon() }
        if quietLoopThread {
            // Only a speed-up: without a signalfd (EMFILE, say) libuv's handler still reports.
            var wasBlocked: Int32 = 0
            let fd = cuvs_sigchld_fd_open(&wasBlocked)
            if fd >= 0 {
                do {
                    // Drained by the queued reap, not here: the signal arrives with a child's exit,
                    // and the read then waits until the restart that exit causes has spawned.
                    // (Left unread, the descriptor is reported again only by a later poll, which
                    // runs after the queued reap.)
                    signalDescriptor = try ReadableDescriptor(loop: loop, owning: fd) { [weak self] in
                        self?.reapSoon()
                    }
                    unblockOnClose = wasBlocked == 0
                    loop.takesChildSignalsThroughDescriptor = true
                } catch {
                    // The descriptor was closed by the failed watcher.
                    if wasBlocked == 0 { cuvs_sigchld_unblock() }
                }
            }
        }
        reap()
    }

    /// After this turn: the loop's own children are reaped by their exit watches first, so
    /// that usually one `waitid` peek finds nothing left to do.
    private func reapSoon() {
        guard !queued, !closed else { return }
        queued = true
        // Itself as the job (held by the queue until it has run): every SIGCHLD, so every
        // restart, queues this, and a closure would be an allocation each time.
        loop.runSoon(self)
    }

    /// The queued reap (``reapSoon()``).
    func runOnLoop() {
        queued = false
        guard !closed else { return }
        if let signalDescriptor { _ = cuvs_signalfd_drain(signalDescriptor.fd) }
        reap()
    }

    /// Reaps every exited child that is not one of the loop's: peeks (without reaping) at an
    /// exited child; an orphan is reaped by pid; one of the loop's children, still waiting for
    /// its exit watch, hides the others from the peek, so then every child is checked by pid.
    func reap() {
        while true {
            let pid = cuvs_peek_exited_child()
            if pid <= 0 { return }
            if loop.spawnedChild(pid) {
                for child in Self.children() where !loop.spawnedChild(child) {
                    var info = siginfo_t()
                    _ = waitid(P_PID, id_t(child), &info, WEXITED | WNOHANG)
                }
                return
            }
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

    /// Stops watching; call it on the loop's thread (it unblocks SIGCHLD there again).
    func close() {
        precondition(pthread_equal(creator, pthread_self()) != 0, "OrphanReaper.close on another thread than its loop's")
        closed = true
        watcher?.close()
        watcher = nil
        if signalDescriptor != nil { loop.takesChildSignalsThroughDescriptor = false }
        signalDescriptor?.close()
        signalDescriptor = nil
        if unblockOnClose {
            unblockOnClose = false
            cuvs_sigchld_unblock()
        }
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
