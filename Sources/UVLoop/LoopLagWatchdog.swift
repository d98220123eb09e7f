import CLibUV

/// Reports loop iterations whose callbacks ran longer than a threshold: a callback that blocks
/// the loop stalls every supervisor and worker on it.
///
/// How, with no periodic wakeup: an iteration's callbacks run in two stretches. From the check
/// phase to the next prepare phase (check and close callbacks, timers, pending, idle) the loop
/// only runs callbacks, so a `uv_check_t` and a `uv_prepare_t` time that stretch. Inside the poll
/// phase, I/O callbacks run after the kernel wait returned; libuv stamps that moment into the
/// loop's cached time (`uv_now`), so the check callback takes `now - uv_now` as the I/O callbacks'
/// share. (libuv's idle-time metrics are not used: 1.44 miscounts a wait interrupted by a
/// signal.) A blocking callback is reported once it has returned.
public final class LoopLagWatchdog: LoopHandle {
    private let thresholdNanoseconds: UInt64
    private var report: (Duration) -> Void
    private var checkHandle: LagCheckHandle?
    private var checkedAt: UInt64 = 0
    private var ioCallbacks: UInt64 = 0

    /// Starts watching `loop`; `report` receives each iteration's callback time above `threshold`.
    public init(loop: EventLoop, threshold: Duration, report: @escaping (Duration) -> Void) throws(UVError) {
        loop.preconditionInLoop("LoopLagWatchdog.init")
        thresholdNanoseconds = threshold.saturatingNanoseconds
        self.report = report
        let memory = LoopHandle.allocate(uv_prepare_t.self, on: loop)
        uv_prepare_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_prepare_t.self))
        super.init(loop: loop, initialisedHandle: memory)
        uv_prepare_start(memory.assumingMemoryBound(to: uv_prepare_t.self)) { handle in
            guard let data = handle?.pointee.data else { return }
            Unmanaged<LoopLagWatchdog>.fromOpaque(data).takeUnretainedValue().beforePoll()
        }
        uv_unref(rawHandle)
        checkHandle = LagCheckHandle(loop: loop) { [unowned self] in self.afterPoll() }
    }

    private func afterPoll() {
        let now = uv_hrtime()
        // uv_now was stamped when the kernel wait returned (a coarse clock: a few ms early at most).
        let wokeAt = loop.now * 1_000_000
        ioCallbacks = now > wokeAt ? now - wokeAt : 0
        checkedAt = now
    }

    private func beforePoll() {
        guard checkedAt != 0 else { return }
        let now = uv_hrtime()
        let busy = ioCallbacks + (now > checkedAt ? now - checkedAt : 0)
        checkedAt = 0
        if busy > thresholdNanoseconds { report(.nanoseconds(Int64(clamping: busy))) }
    }

    override func willClose() {
        checkHandle?.close()
        checkHandle = nil
    }

    override func didFinishClosing() {
        report = { _ in }
    }
}

/// The watchdog's `uv_check_t` (unreferenced).
final class LagCheckHandle: LoopHandle {
    private var onCheck: () -> Void

    init(loop: EventLoop, onCheck: @escaping () -> Void) {
        self.onCheck = onCheck
        let memory = LoopHandle.allocate(uv_check_t.self, on: loop)
        uv_check_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_check_t.self))
        super.init(loop: loop, initialisedHandle: memory)
        uv_check_start(memory.assumingMemoryBound(to: uv_check_t.self)) { handle in
            guard let data = handle?.pointee.data else { return }
            Unmanaged<LagCheckHandle>.fromOpaque(data).takeUnretainedValue().onCheck()
        }
        uv_unref(rawHandle)
    }

    override func didFinishClosing() {
        onCheck = {}
    }
}
