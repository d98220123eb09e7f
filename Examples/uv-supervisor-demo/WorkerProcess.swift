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

/// The demo's store: "loads" for 0.8 s (saying so with STATUS=), then says READY=1 on the
/// notify socket its supervisor gave it, as a systemd `Type=notify` service would, and serves
/// until stopped.
func runStoreProcess() -> Never {
    func notify(_ message: String) {
        guard let name = getenv("NOTIFY_SOCKET").map({ String(cString: $0) }), name.utf8.count > 1 else { return }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(name.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { path in
            for (index, byte) in bytes.prefix(path.count - 1).enumerated() { path[index] = byte }
            if bytes.first == UInt8(ascii: "@") { path[0] = 0 }   // an abstract name
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + min(bytes.count, 107))
        _ = message.withCString { text in
            withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, text, strlen(text), 0, $0, length) }
            }
        }
    }
    notify("STATUS=loading the index")
    var pause = timespec(tv_sec: 0, tv_nsec: 800_000_000)
    nanosleep(&pause, nil)
    notify("STATUS=serving\nREADY=1")
    while true { pause = timespec(tv_sec: 3600, tv_nsec: 0); nanosleep(&pause, nil) }
}

/// This executable's own path, to re-execute it.
func ownExecutablePath() -> String {
    var buffer = [CChar](repeating: 0, count: 4096)
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard length > 0 else { return CommandLine.arguments[0] }
    return String(decoding: buffer[0..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
