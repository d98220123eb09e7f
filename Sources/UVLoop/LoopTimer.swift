import CLibUV

/// A libuv timer (`uv_timer_t`): one-shot or repeating, re-armable, stoppable.
///
/// libuv timers have millisecond resolution; durations are rounded up, so a timer never fires
/// early. Starting an armed timer re-arms it: the old deadline is forgotten. Timers that fire in
/// the same loop turn fire in deadline order (ties in start order).
public final class LoopTimer: LoopHandle {
    private var handler: () -> Void

    private var timerPointer: UnsafeMutablePointer<uv_timer_t> {
        UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_timer_t.self)
    }

    /// Creates a stopped timer whose `handler` runs on the loop each time it fires.
    public init(loop: EventLoop, _ handler: @escaping () -> Void) {
        loop.preconditionInLoop("LoopTimer.init")
        self.handler = handler
        let memory = LoopHandle.allocate(uv_timer_t.self)
        uv_timer_init(loop.rawLoop, memory.assumingMemoryBound(to: uv_timer_t.self))
        super.init(loop: loop, initialisedHandle: memory)
    }

    /// Arms (or re-arms) the timer to fire after `delay`, then every `interval` if given.
    /// - Throws: ``UVError`` (`EBADF`) when the timer is closed.
    public func start(after delay: Duration, repeating interval: Duration? = nil) throws(UVError) {
        try start(afterMilliseconds: delay.uvMilliseconds, repeatingMilliseconds: interval?.uvMilliseconds ?? 0)
    }

    /// Millisecond variant of ``start(after:repeating:)`` (no `Duration` arithmetic).
    public func start(afterMilliseconds delay: UInt64, repeatingMilliseconds interval: UInt64 = 0) throws(UVError) {
        guard isOpen else { throw UVError.closed("start timer") }
        loop.assertInLoop()
        let result = uv_timer_start(timerPointer, { timer in
            guard let data = timer?.pointee.data else { return }
            Unmanaged<LoopTimer>.fromOpaque(data).takeUnretainedValue().handler()
        }, delay, interval)
        try UVError.check(result, "start timer")
    }

    /// Disarms the timer; it will not fire until started again. Harmless when closed.
    public func stop() {
        guard isOpen else { return }
        loop.assertInLoop()
        uv_timer_stop(timerPointer)
    }

    /// Whether the timer is armed.
    public var isActive: Bool { isOpen && uv_is_active(rawHandle) != 0 }

    /// Replaces the handler (used by pools of reusable timers).
    public func setHandler(_ handler: @escaping () -> Void) {
        loop.assertInLoop()
        self.handler = handler
    }

    override func willClose() {
        uv_timer_stop(timerPointer)
    }

    override func didFinishClosing() {
        handler = {}
    }
}
