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
    /// Whole nanoseconds, rounded up (a sub-nanosecond remainder counts as one), 0 for
    /// negative durations, saturating at `UInt64.max` (`components` itself traps past
    /// `Int64.max` seconds, which a `Duration` can hold).
    var saturatingNanoseconds: UInt64 {
        if self >= .seconds(Int64.max) { return .max }
        if self <= .zero { return 0 }
        let (seconds, attoseconds) = components
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return .max }
        let fraction = UInt64((attoseconds + 999_999_999) / 1_000_000_000)
        let (total, overflow2) = whole.addingReportingOverflow(fraction)
        return overflow2 ? .max : total
    }

    /// Whole milliseconds, rounded up so that a timer never fires before its duration has
    /// elapsed; negative durations count as zero, and durations too long for a `UInt64` of
    /// milliseconds saturate (such a timer is never due).
    var uvMilliseconds: UInt64 {
        let nanoseconds = saturatingNanoseconds
        if nanoseconds == .max { return .max }
        return nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 == 0 ? 0 : 1)
    }
}
