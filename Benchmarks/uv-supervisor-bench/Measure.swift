#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import UVLoop

/// One measured figure, printed by a side process as `metric=NAME unit=UNIT value=FLOAT`.
func report(_ metric: String, _ unit: String, _ value: Double) {
    print("metric=\(metric) unit=\(unit) value=\(value)")
}

/// CPU time (user + system) of this process, or of the calling thread, in nanoseconds.
func cpuNanoseconds(_ clock: clockid_t = CLOCK_PROCESS_CPUTIME_ID) -> Double {
    // The CPU-time clocks are the scheduler's exact runtime; getrusage's user/system split is
    // sampled at tick granularity, which made one wakeup look like a quarter of a millisecond.
    var time = timespec()
    clock_gettime(clock, &time)
    return Double(time.tv_sec) * 1e9 + Double(time.tv_nsec)
}

/// Resident set size in bytes (/proc/self/statm).
func residentBytes() -> Double {
    let fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: 256)
    let count = read(fd, &buffer, buffer.count)
    guard count > 0 else { return 0 }
    let fields = String(decoding: buffer[0..<count], as: UTF8.self).split(separator: " ")
    guard fields.count > 1, let pages = Double(fields[1]) else { return 0 }
    return pages * Double(sysconf(Int32(_SC_PAGESIZE)))
}

/// Monotonic nanoseconds.
@inline(__always)
func now() -> UInt64 { EventLoop.hrtime() }

/// A small xorshift generator, the same sequence as the C side's.
struct XorShift {
    var state: UInt32 = 12345
    mutating func next() -> UInt32 {
        state ^= state << 13
        state ^= state >> 17
        state ^= state << 5
        return state
    }
}

/// The directory of this executable (the other benchmark binaries are built next to it).
let executableDirectory: String = {
    var buffer = [CChar](repeating: 0, count: 4096)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let path = String(decoding: buffer[0..<max(0, length)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
}()

/// The child the process workloads spawn: the libc-only build the driver makes at start (see
/// ``buildPlainChildHelper(loop:)``), else SwiftPM's `uvs-bench-child`.
let childHelper: String = {
    let plain = executableDirectory + "/uvs-bench-child-plain"
    return access(plain, X_OK) == 0 ? plain : executableDirectory + "/uvs-bench-child"
}()

/// Compiles the benchmark's child (`Benchmarks/uvs-bench-child/main.c`) with the toolchain's
/// `clang` into a binary that links libc only.
///
/// Why: SwiftPM links every executable, C ones included, with the Swift runtime, and a child
/// that loads libswiftCore and libstdc++ on every start took 1.8 ms to run against 0.7 ms for
/// the same C linked with libc alone (`perf stat -r 200 CHILD exit`). The process workloads
/// would then measure the dynamic loader more than the supervisors (the restart gap of raw
/// `uv_spawn` read 2.7 ms instead of ~1.4 ms). When `clang` or the source is missing, the
/// SwiftPM build is used and a note says so.
func buildPlainChildHelper(loop: EventLoop) {
    let output = executableDirectory + "/uvs-bench-child-plain"
    unlink(output)
    let thisFile = "\(#filePath)"
    guard let slash = thisFile.dropLast("/Measure.swift".count).lastIndex(of: "/") else { return }
    let source = String(thisFile[..<slash]) + "/uvs-bench-child/main.c"
    var path = "/usr/bin:/bin"
    if let value = getenv("PATH") { path = String(cString: value) }
    let clang = path.split(separator: ":").map { String($0) + "/clang" }.first { (candidate: String) in access(candidate, X_OK) == 0 }
    var exit: ProcessExit?
    do {
        guard let clang else { throw UVError(code: -2, operation: "find clang") }
        let options = ProcessOptions(argv: [clang, "-O2", "-o", output, source])
        _ = try ChildProcess.spawn(on: loop, options) { exit = $0 }
        while exit == nil { loop.run(.once) }
    } catch {
        exit = nil
    }
    if exit != .exited(0) {
        unlink(output)
        fputs("note: could not build \(output) from \(source) with clang; process workloads use the SwiftPM-built child (it loads the Swift runtime on every start)\n", stderr)
    }
}

/// Gaps between a child's exit ("E") and its replacement's start ("S") in a pulse file, in µs.
func restartGaps(fromPulseFile path: String) -> [Double] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(fd, &buffer, buffer.count)
        if count <= 0 { break }
        bytes.append(contentsOf: buffer[0..<count])
    }
    var gaps: [Double] = []
    var lastExit: Double?
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
        let parts = line.split(separator: " ")
        guard parts.count == 2, let value = Double(parts[1]) else { continue }
        if parts[0] == "E" { lastExit = value } else if let exit = lastExit {
            gaps.append((value - exit) / 1000)
            lastExit = nil
        }
    }
    return gaps
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let index = min(sorted.count - 1, max(0, Int((p / 100 * Double(sorted.count)).rounded(.up)) - 1))
    return sorted[index]
}

/// Context switches and CPU time of every thread of this process but the calling one.
struct OtherThreadsUsage {
    let switches: Int
    /// Nanoseconds.
    let cpuTime: Double

    init() {
        var process = rusage()
        var thread = rusage()
        getrusage(RUSAGE_SELF.rawValue, &process)
        getrusage(1, &thread)   // RUSAGE_THREAD (Linux), which Glibc does not export to Swift
        switches = (process.ru_nvcsw + process.ru_nivcsw) - (thread.ru_nvcsw + thread.ru_nivcsw)
        // The calling thread's clock read on both sides of the process clock, averaged: its own
        // time between the reads would otherwise show up as a few hundred ns of noise.
        let threadBefore = cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID)
        let processTime = cpuNanoseconds()
        let threadAfter = cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID)
        cpuTime = processTime - (threadBefore + threadAfter) / 2
    }
}

/// Sleeps the calling thread.
func sleep(seconds: Double) {
    var pause = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
    nanosleep(&pause, nil)
}
