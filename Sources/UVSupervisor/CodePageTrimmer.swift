#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CUVShims
import Supervision
import UVLoop

/// Lets go of the code pages the daemon is not running: after start-up, and again once no
/// process worker has started for a quiet period after some did (``DaemonOptions/trimCodePages``).
///
/// Start-up, a reload or a burst of restarts runs code that an idle daemon does not, and the
/// kernel maps 64 KiB around every page touched (fault-around), so those pages come to
/// dominate a small daemon's resident size. Unmapping them (`cuvs_release_clean_file_pages`)
/// changes nothing the process can see: they are clean file pages, mapped back from the page
/// cache when they are used again (read from the file again if memory pressure evicted them).
/// Nothing is done while the process has more than one thread.
///
/// Costs a stored time per process start; the timer runs only while something started in the
/// last quiet period, so an idle daemon is never woken.
final class CodePageTrimmer {
    private let loop: EventLoop
    private let quietMilliseconds: UInt64
    private var timer: LoopTimer?
    private var armed = false
    private var lastActivity: UInt64 = 0
    private var busySinceTrim = false
    private var closed = false
    /// How many times pages were released, and the resident kilobytes released in all.
    private(set) var trims = 0
    private(set) var releasedKilobytes = 0

    init(loop: EventLoop, quietPeriod: Duration) {
        self.loop = loop
        // At least 100 ms: trimming after every restart of a crash loop would only make each
        // one fault its code back in.
        let (seconds, attoseconds) = quietPeriod.components
        quietMilliseconds = max(100, UInt64(max(seconds, 0)) * 1000 + UInt64(max(attoseconds, 0) / 1_000_000_000_000_000))
    }

    /// A trimmer told of every process start of `runtime`; `nil` without a quiet period.
    static func watching(_ runtime: UVRuntime, on loop: EventLoop, quietPeriod: Duration?) -> CodePageTrimmer? {
        guard let quietPeriod else { return nil }
        let trimmer = CodePageTrimmer(loop: loop, quietPeriod: quietPeriod)
        runtime.processStarted = { [weak trimmer] in trimmer?.noteActivity() }
        return trimmer
    }

    /// Unmaps this process's clean code pages now; the resident kilobytes released, `nil` when
    /// nothing was done (more than one thread, or /proc/self/smaps could not be read).
    @discardableResult
    static func trimNow() -> Int? {
        let released = cuvs_release_clean_file_pages()
        return released < 0 ? nil : released
    }

    /// Something ran (a process worker started): trim once the quiet period has passed
    /// without another.
    func noteActivity() {
        guard !closed else { return }
        lastActivity = loop.now
        busySinceTrim = true
        if !armed { arm(afterMilliseconds: quietMilliseconds) }
    }

    /// Trims now (start-up has just ended, a reload was applied).
    func trim() {
        busySinceTrim = false
        if let released = Self.trimNow() {
            trims += 1
            releasedKilobytes += released
        }
    }

    func close() {
        closed = true
        timer?.close()
        timer = nil
        armed = false
    }

    private func arm(afterMilliseconds delay: UInt64) {
        let timer = self.timer ?? LoopTimer(loop: loop) { [weak self] in self?.fired() }
        self.timer = timer
        do {
            try timer.start(afterMilliseconds: delay)
            armed = true
        } catch {
            armed = false
        }
    }

    private func fired() {
        armed = false
        let idle = loop.now &- lastActivity
        if idle < quietMilliseconds { return arm(afterMilliseconds: quietMilliseconds - idle) }
        // Quiet: nothing more until the next event (a stopped timer never wakes the loop).
        if busySinceTrim { trim() }
    }
}
