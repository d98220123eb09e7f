#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CLibUV
import CUVShims

/// The exits of a loop's pidfd-spawned children: one epoll set holding every child's pidfd,
/// watched by one poll handle (a ``ReadableDescriptor`` on the set).
///
/// A child then costs one `epoll_ctl` to watch (a pidfd of its own in libuv would cost
/// `uv_poll_init`'s two `epoll_ctl` and an `ioctl`, `uv_poll_start`'s `epoll_ctl`, the loop's
/// `epoll_ctl` to add it and the close's to remove it), and its exit one `epoll_wait` on the
/// set. Each pidfd is armed for one event (`EPOLLONESHOT`) and leaves the set when it is closed.
/// Events carry the child's serial number, looked up among the loop's live children, so no
/// pointer is kept in the kernel (and no pid, which a reap frees for reuse). The poll handle
/// keeps the loop alive only while a child is watched (`uv_ref`).
final class ChildExitSet {
    private let set: Int32
    private var watcher: ReadableDescriptor?
    private var watched = 0
    /// Where `epoll_wait` writes the ready children's serial numbers (a batch at a time).
    private var ready = [UInt64](repeating: 0, count: 8)

    init(loop: EventLoop) throws(UVError) {
        let set = cuvs_exit_set_open()
        if set < 0 { throw UVError(errno: -set, operation: "epoll_create1 for child exits") }
        self.set = set
        watcher = try ReadableDescriptor(loop: loop, owning: set) { [weak self] in self?.deliver() }
        if let watcher { uv_unref(watcher.rawHandle) }
    }

    /// Watches the pidfd of the child that will have `serial` (events are delivered on later
    /// turns, when it is among the loop's live children).
    func watch(pidfd: Int32, serial: UInt64) throws(UVError) {
        let result = cuvs_exit_set_arm(set, pidfd, serial, 0)
        if result < 0 { throw UVError(errno: -result, operation: "watch pidfd") }
        watched += 1
        if watched == 1, let watcher, watcher.isOpen { uv_ref(watcher.rawHandle) }
    }

    /// Watches a pidfd again that reported before its child could be reaped; false if that
    /// failed.
    func rearm(pidfd: Int32, serial: UInt64) -> Bool {
        cuvs_exit_set_arm(set, pidfd, serial, 1) == 0
    }

    /// A watched pidfd was closed (it left the set with it).
    func unwatched() {
        watched -= 1
        if watched == 0, let watcher, watcher.isOpen { uv_unref(watcher.rawHandle) }
    }

    private func deliver() {
        // Called only from the watcher's callback, so the watcher is open and its loop reference
        // valid (a handle's, which stays readable during the loop's teardown, also when that runs
        // from the loop's deinit; a checked `unowned` of our own would trap there).
        guard let loop = watcher?.loop else { return }
        while true {
            let capacity = Int32(ready.count)
            let count = ready.withUnsafeMutableBufferPointer { cuvs_exit_set_ready(set, $0.baseAddress, capacity) }
            if count <= 0 { return }
            // Read one at a time: a child's exit handler runs in between (nothing it can call
            // reaches this buffer; only the next read here refills it).
            for index in 0..<Int(count) {
                loop.liveProcesses[ready[index]]?.pidfdReadable()
            }
            if count < capacity { return }
        }
    }
}
