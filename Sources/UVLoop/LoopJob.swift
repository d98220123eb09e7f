/// A unit of work for the loop's fastest lane: subclass it and override ``run()``.
///
/// `EventLoop.runSoon(_:)` and `LoopRemote.execute(_:)` queue a
/// job as one word and call ``run()`` through the class's own dispatch: no closure context, no
/// existential. The queue holds one reference per submission until the job has run. The same
/// object may be submitted many times, to any number of loops; it runs once per submission.
/// For anything less hot, a closure or a ``LoopRunnable`` is simpler.
///
/// ```swift
/// final class Tick: LoopJob {
///     var count = 0
///     override func run() { count += 1 }
/// }
/// let tick = Tick()
/// loop.runSoon(tick)
/// ```
///
/// Cross-thread submission needs a `Sendable` subclass; as with any class, that conformance is
/// the subclass's own promise (`@unchecked Sendable` with what makes it true, such as state
/// touched only in ``run()``, on the loop thread).
open class LoopJob {
    /// A job.
    public init() {}

    /// Called on the loop thread, once per submission.
    open func run() {}
}
