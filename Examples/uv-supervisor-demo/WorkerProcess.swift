#if canImport(Glibc)
@preconcurrency import Glibc
#endif

/// The demo re-executes itself in this mode for its process worker: it takes jobs with growing
/// factors and crashes for real (abort, SIGABRT) on a multiple of 3. A task that crashed like
/// this would take the whole supervisor down with it; a process takes only itself.
func runWorkerProcess() -> Never {
    setvbuf(stdout, nil, _IOLBF, 0)
    var factor = 1
    while true {
        var pause = timespec(tv_sec: 0, tv_nsec: 600_000_000)
        nanosleep(&pause, nil)
        if factor % 3 == 0 {
            print("job ×\(factor): a multiple of 3, crashing for real (abort)")
            abort()
        }
        print("job ×\(factor) done")
        factor += 1
    }
}

/// This executable's own path, to re-execute it.
func ownExecutablePath() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard length > 0 else { return CommandLine.arguments[0] }
    return String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
