#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// How scalar texts are read: durations, sizes, signals, octal modes, booleans. Strict on
/// purpose: YAML 1.1's `no` for false and `0027` for 23 are exactly the surprises a config file
/// must not have.
enum ConfigValues {
    /// `250ms`, `1.5s`, `2m`, `1h`, `500us`, `100ns`, `1d`; a bare number is refused (which unit?).
    static func duration(_ text: String) -> Duration? {
        let units: [(String, Double)] = [("ns", 1), ("us", 1e3), ("µs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9), ("d", 86400e9)]
        for (suffix, nanosecondsPerUnit) in units.sorted(by: { $0.0.count > $1.0.count }) where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            guard !number.isEmpty, number.allSatisfy({ $0.isNumber || $0 == "." }), let value = Double(number) else { continue }
            let nanoseconds = value * nanosecondsPerUnit
            guard nanoseconds.isFinite, nanoseconds < 9.2e18 else { return nil }
            return .nanoseconds(Int64(nanoseconds.rounded()))
        }
        return nil
    }

    /// A whole number, non-negative (`65536`, `0`); `nil` for anything else.
    static func count(_ text: String) -> UInt64? {
        guard !text.isEmpty, text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return UInt64(text)
    }

    /// `true` or `false`, nothing else.
    static func bool(_ text: String) -> Bool? {
        switch text {
        case "true": return true
        case "false": return false
        default: return nil
        }
    }

    /// An octal mode such as `0027` or `027` or `27` (always octal).
    static func octal(_ text: String) -> UInt32? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ ("0"..."7").contains($0) }) else { return nil }
        return UInt32(text, radix: 8)
    }

    /// `TERM`, `SIGTERM`, `15`.
    static func signal(_ text: String) -> Int32? {
        if let number = Int32(text), number > 0, number < 65 { return number }
        let name = text.hasPrefix("SIG") ? String(text.dropFirst(3)) : text
        let names: [String: Int32] = [
            "HUP": SIGHUP, "INT": SIGINT, "QUIT": SIGQUIT, "KILL": SIGKILL, "USR1": SIGUSR1, "USR2": SIGUSR2,
            "TERM": SIGTERM, "ALRM": SIGALRM, "CONT": SIGCONT, "STOP": SIGSTOP, "WINCH": SIGWINCH,
            "PWR": 30, "ABRT": SIGABRT,
        ]
        return names[name]
    }

    /// A resource limit value: a count, `unlimited`, or a size with a unit (`64K`, `1M`, `2G`).
    static func limit(_ text: String) -> UInt64? {
        if text == "unlimited" || text == "infinity" { return UInt64.max }
        if let number = count(text) { return number }
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        guard let unit = text.last, let factor = units[unit], let number = count(String(text.dropLast())) else { return nil }
        let (product, overflow) = number.multipliedReportingOverflow(by: factor)
        return overflow ? nil : product
    }
}
