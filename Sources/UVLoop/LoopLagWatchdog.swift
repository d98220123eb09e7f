import CLibUV
import CUVShims

/// Reports loop iterations that were busy (running callbacks, not waiting) longer than a
/// threshold: a callback that blocks the loop stalls every supervisor and worker on it.
///
/// How, with no periodic wakeup: the loop measures the time it spends waiting in the kernel
/// (`UV_METRICS_IDLE_TIME`). A `uv_prepare_t` runs once per iteration, just before the wait; the
/// time since the previous one, minus the idle time in between, is what the iteration's callbacks
/// took. A blocking callback is reported once it has returned, on the next iteration.
public final class LoopLagWatchdog: LoopHandle {
    private let thresholdNanoseconds: UInt64
    private var report: (Duration) -> Void
    private var lastTime: UInt64 = 0
    private var lastIdle: UInt64 = 0

    /// Starts watching `loop`; `report` receives each iteration's busy time above `threshold`.
    public init(loop: EventLoop, threshold: Duration, report: @escaping (Duration) -> Void) throws(UVError) {
        loop.preconditionInLoop("LoopLagWatchdog.init")
        thresholdNanoseconds = UInt64(max(0, threshold.components.seconds)) * 1_000_000_000
            + UInt64(max(0, threshold.components.attoseconds / 1_000_000_000))
        self.report = report
        try UVError.check(loop.enableIdleTimeMetrics(), "enable loop idle-time metrics")
        let memory = LoopHandle.allocate(uv_prepare_t.self)
        uv_prepare_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_prepare_t.self))
        super.init(loop: loop, initialisedHandle: memory, byteCount: MemoryLayout<uv_prepare_t>.size)
        uv_prepare_start(memory.assumingMemoryBound(to: uv_prepare_t.self)) { handle in
            guard let data = handle?.pointee.data else { return }
            Unmanaged<LoopLagWatchdog>.fromOpaque(data).takeUnretainedValue().beforePoll()
        }
        uv_unref(rawHandle)
    }

    private func beforePoll() {
        let now = uv_hrtime()
        let idle = uv_metrics_idle_time(loop.rawLoop)
        if lastTime != 0 {
            let elapsed = now &- lastTime
            let waited = idle &- lastIdle
            let busy = elapsed > waited ? elapsed - waited : 0
            if busy > thresholdNanoseconds { report(.nanoseconds(Int64(busy))) }
        }
        lastTime = now
        lastIdle = idle
    }

    override func didFinishClosing() {
        report = { _ in }
    }
}

extension EventLoop {
    /// Turns on `UV_METRICS_IDLE_TIME` (idempotent).
    func enableIdleTimeMetrics() -> Int32 {
        if idleMetricsEnabled { return 0 }
        let result = cuvs_loop_configure_idle_time(rawLoop)
        if result == 0 { idleMetricsEnabled = true }
        return result
    }
}
