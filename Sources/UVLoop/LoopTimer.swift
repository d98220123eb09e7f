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
/// common re-arm, and libuv's heap removal is where re-arming spent its time (measured with
/// `perf` on `timer_rearm`: `uv_timer_stop` took 57%).
public final class LoopTimer: LoopHandle {
    private var handler: () -> Void
    /// The loop time (ms) the libuv timer is armed for, while armed as a one-shot.
    @exclusivity(unchecked) private var armedDue: UInt64 = 0
    /// The deadline asked for: later than `armedDue` when a re-arm was deferred.
    @exclusivity(unchecked) private var wantedDue: UInt64 = 0
    /// Whether the libuv timer is armed as a one-shot (the only kind re-armed lazily).
    @exclusivity(unchecked) private var armedOneShot = false

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
        let (sum, overflow) = uv_now(loop.rawLoop).addingReportingOverflow(delay)
        let due = overflow ? UInt64.max : sum
        if interval == 0 && armedOneShot && due >= armedDue {
            // Later than the armed deadline: defer, no heap operation (see the type's notes).
            wantedDue = due
            return
        }
        try arm(delay: delay, due: due, interval: interval)
    }

    private func arm(delay: UInt64, due: UInt64, interval: UInt64) throws(UVError) {
        let result = uv_timer_start(timerPointer, { timer in
            guard let data = timer?.pointee.data else { return }
            Unmanaged<LoopTimer>.fromOpaque(data)._withUnsafeGuaranteedRef { $0.fired() }
        }, delay, interval)
        try UVError.check(result, "start timer")
        armedOneShot = interval == 0
        armedDue = due
        wantedDue = due
    }

    private func fired() {
        if armedOneShot {
            armedOneShot = false
            if wantedDue > armedDue {
                // A deferred re-arm: sleep again for the rest, without calling the handler.
                let now = uv_now(loop.rawLoop)
                if wantedDue > now {
                    try? arm(delay: wantedDue - now, due: wantedDue, interval: 0)
                    return
                }
            }
        }
        handler()
    }

    /// Disarms the timer; it will not fire until started again. Harmless when closed.
    public func stop() {
        guard isOpen else { return }
        loop.assertInLoop()
        armedOneShot = false
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
        armedOneShot = false
        uv_timer_stop(timerPointer)
    }

    override func didFinishClosing() {
        handler = {}
    }
}
