/// The restart-intensity window: the times of the restarts still inside `period`.
///
/// Erlang/OTP's supervisor keeps every restart time and walks them all on each restart (about
/// 7,000 restarts/s here). This keeps a ring of only the restarts still inside the window, so
/// recording a restart is O(1) amortised and memory is bounded by `maxRestarts + 1` entries.
struct IntensityWindow {
    let maxRestarts: Int
    let period: Int64
    private var times: [Int64] = []
    private var head = 0
    private(set) var count = 0

    init(_ intensity: RestartIntensity) {
        maxRestarts = intensity.maxRestarts
        period = intensity.period.nanosecondsClamped
    }

    /// Records a restart at `now`. Returns `false` when it makes more than `maxRestarts`
    /// restarts inside the window: the supervisor must give up.
    mutating func recordRestart(at now: Int64) -> Bool {
        // Drop restarts that left the window (now - t >= period).
        while count > 0 && now - times[head] >= period {
            head = (head + 1) % times.count
            count -= 1
        }
        // This restart would be number count + 1 inside the window.
        if count + 1 > maxRestarts { return false }
        append(now)
        return true
    }

    private mutating func append(_ time: Int64) {
        if count == times.count {
            // Grow, unrolling the ring so that head is 0 again.
            var grown = [Int64]()
            grown.reserveCapacity(max(4, times.count * 2))
            for offset in 0..<count { grown.append(times[(head + offset) % times.count]) }
            grown.append(contentsOf: repeatElement(0, count: max(4, times.count * 2) - count))
            times = grown
            head = 0
        }
        times[(head + count) % times.count] = time
        count += 1
    }
}

/// A small, fast, seedable generator (SplitMix64) for backoff jitter: the same seed gives the
/// same delays, so tests and replays are deterministic.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator starting from `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Backoff {
    /// The delay in nanoseconds before the `attempt`-th consecutive restart (1-based), with
    /// jitter drawn from `random`. See ``Backoff`` for the rules.
    public func delay(forAttempt attempt: Int, using random: inout SplitMix64) -> Int64 {
        if isNone { return 0 }
        let initialNanos = Double(initial.nanosecondsClamped)
        let maximumNanos = Double(maximum.nanosecondsClamped)
        var base = initialNanos
        if attempt > 1 {
            // Stop multiplying once past the cap, so huge attempt counts cannot overflow.
            for _ in 1..<attempt {
                let grown = base * multiplier
                if grown >= maximumNanos { base = maximumNanos; break }
                if grown == base { break }   // multiplier 1 or a zero delay: nothing changes
                base = grown
            }
        }
        base = min(base, maximumNanos)
        if jitter > 0 {
            // After the cap, and not capped again: delays at the cap are spread too.
            let unit = Double(random.next() >> 11) / Double(1 << 53)   // [0, 1)
            base *= 1 + jitter * (2 * unit - 1)
        }
        let delay = max(0, base)
        // Double(Int64.max) rounds up to 2^63, which Int64 cannot hold.
        return delay >= Double(Int64.max) ? .max : Int64(delay)
    }
}
