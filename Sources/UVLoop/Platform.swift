#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif
import CLibUV

/// The identity of the calling thread, used to enforce loop confinement.
@inline(__always)
func currentThread() -> pthread_t { pthread_self() }

extension Duration {
    /// Whole milliseconds, rounded up so that a timer never fires before its duration
    /// has elapsed; negative durations count as zero.
    var uvMilliseconds: UInt64 {
        let (seconds, attoseconds) = components
        if seconds < 0 { return 0 }
        let wholeMillis = UInt64(seconds) * 1_000
        let subMillis = (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return wholeMillis + UInt64(max(0, subMillis))
    }
}
