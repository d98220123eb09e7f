#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CLibUV

/// The identity of the calling thread, used to enforce loop confinement. On glibc a
/// `pthread_t` is an integer, and `pthread_equal` is `==` (compared inline on every entry point
/// instead of through a library call).
@inline(__always)
func currentThread() -> pthread_t { pthread_self() }

extension Duration {
    /// Whole milliseconds, rounded up so that a timer never fires before its duration
    /// has elapsed; negative durations count as zero, and durations too long for a `UInt64`
    /// of milliseconds saturate (such a timer is never due).
    var uvMilliseconds: UInt64 {
        // `components` traps past Int64.max seconds, which a Duration can hold.
        if self >= .seconds(Int64.max) { return .max }
        if self <= .zero { return 0 }
        let (seconds, attoseconds) = components
        if seconds < 0 { return 0 }
        let (wholeMillis, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000)
        if overflow { return .max }
        let subMillis = UInt64(max(0, (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000))
        let (total, overflow2) = wholeMillis.addingReportingOverflow(subMillis)
        return overflow2 ? .max : total
    }

    /// Whole nanoseconds, 0 for negative durations, saturating at `UInt64.max`.
    var saturatingNanoseconds: UInt64 {
        if self >= .seconds(Int64.max) { return .max }
        if self <= .zero { return 0 }
        let (seconds, attoseconds) = components
        if seconds < 0 { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .max }
        let (total, overflow2) = whole.addingReportingOverflow(UInt64(max(0, attoseconds / 1_000_000_000)))
        return overflow2 ? .max : total
    }
}
