import CLibUV

/// A libuv timer (`uv_timer_t`): one-shot or repeating, re-armable, stoppable.
///
/// libuv timers have millisecond resolution; durations are rounded up, so a timer never fires
/// early. Starting an armed timer re-arms it: the old deadline is forgotten. Timers that fire in
/// the same loop turn fire in deadline order (ties in start order).
///
/// Re-arming a one-shot timer to a *later* deadline is O(1): the timer keeps its place in
/// libuv's heap, wakes at the old deadline, and then arms itself for the rest of the time
/// without calling the handler (Go's runtime treats modified-later timers the same way). Only
/// moving a deadline earlier touches the heap. The cost is one early wakeup per deferred
/// deadline, and among timers due in the same millisecond a deferred one may fire after timers
/// started after it. Why: pushing a timeout back (a heartbeat, a shutdown deadline) is the
/// common re-arm, and libuv's heap removal is where re-arming spends its time (see
/// docs/PERFORMANCE.md).
public final class LoopTimer: LoopHandle {
    private var handler: () -> Void
    /// A later deadline (loop time, ms) asked for while armed as a one-shot: the timer arms
    /// itself for it when the earlier one fires. 0 when none. (Whether and until when the
    /// libuv timer is armed is libuv's own state, read with `uv_is_active` and friends.)
    private var deferredDue: UInt64 = 0

    private var timerPointer: UnsafeMutablePointer<uv_timer_t> {
        UnsafeMutableRawPointer(rawHandle).assumingMemoryBound(to: uv_timer_t.self)
    }

    /// Creates a stopped timer whose `handler` runs on the loop each time it fires.
    public init(loop: EventLoop, _ handler: @escaping () -> Void) {
        loop.preconditionInLoop("LoopTimer.init")
        self.handler = handler
        let memory = LoopHandle.allocate(uv_timer_t.self, on: loop)
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
        let timer = timerPointer
        if interval == 0 && uv_is_active(rawHandle) != 0 && uv_timer_get_repeat(timer) == 0
            && delay >= uv_timer_get_due_in(timer) {
            // Not earlier than the armed one-shot deadline: defer, no heap operation (see the
            // type's notes).
            let (due, overflow) = uv_now(loop.rawLoop).addingReportingOverflow(delay)
            deferredDue = overflow ? .max : due
            return
        }
        deferredDue = 0
        try UVError.check(uv_timer_start(timer, { timer in
            guard let data = timer?.pointee.data else { return }
            Unmanaged<LoopTimer>.fromOpaque(data)._withUnsafeGuaranteedRef { $0.fired() }
        }, delay, interval), "start timer")
    }

    private func fired() {
        if deferredDue != 0 {
            // A deferred re-arm: sleep again for the rest, without calling the handler.
            let due = deferredDue
            let now = uv_now(loop.rawLoop)
            if due > now {
                try? start(afterMilliseconds: due - now)   // not active now: arms for real
                return
            }
            deferredDue = 0
        }
        handler()
    }

    /// Disarms the timer; it will not fire until started again. Harmless when closed.
    public func stop() {
        guard isOpen else { return }
        loop.assertInLoop()
        deferredDue = 0
        uv_timer_stop(timerPointer)
    }

    /// Whether the timer is armed.
    public var isActive: Bool { isOpen && uv_is_active(rawHandle) != 0 }

    /// Replaces the handler (used by pools of reusable timers).
    public func setHandler(_ handler: @escaping () -> Void) {
        guard isOpen else { return }
        loop.assertInLoop()
        self.handler = handler
    }

    override func willClose() {
        deferredDue = 0
        uv_timer_stop(timerPointer)
    }

    override func didFinishClosing() {
        handler = {}
    }
}
