import Testing
import CUVShims
@testable import UVSupervisor
@testable import UVLoop
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// A field of /proc/PID/smaps_rollup, in kilobytes (-1 when it cannot be read).
private func rollup(_ field: String, of pid: Int32) -> Int {
    let text = readSmallFile("/proc/\(pid)/smaps_rollup") ?? ""
    guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }) else { return -1 }
    return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? -1
}

@Suite("Trimming code pages", .serialized)
struct CodePageTests {
    @Test("cuvs_release_clean_file_pages unmaps clean read-only file pages and never a page that was written; never in a threaded process")
    func cleanPagesOnly() async throws {
        let report = try await withCheckedLoop { loop in
            // In a single-threaded helper, as the call requires: of two private mappings of one
            // file, the clean one's pages go (and come back with the file's bytes), the one
            // written and then made read-only, as relocated data is, keeps what was written.
            let directory = makeTemporaryDirectory()
            defer { rmdir(directory) }
            let result = try runCommandToEnd(loop, [childHelperPath, "trim-pages", directory])
            #expect(result.exit == .exited(0), "\(result.out) \(result.err)")
        }
        #expect(report == .clean)
        // This test process has threads: nothing is done, and it says so.
        #expect(cuvs_release_clean_file_pages() == -Int(EBUSY))
    }

    @Test("uv-supervisor with trim-code-pages: the code a crash loop ran is unmapped once the tree is quiet, and the daemon keeps supervising")
    func daemonTrimsWhenQuiet() async throws {
        let report = try await withCheckedLoop { loop in
            try runTrimmingDaemon(loop)
        }
        #expect(report == .clean)
    }
}

private func runTrimmingDaemon(_ loop: EventLoop) throws {
    let directory = makeTemporaryDirectory()
    let socket = directory + "/control.sock"
    let calm = directory + "/calm"
    defer {
        unlink(calm)
        unlink(directory + "/config.yaml")
        rmdir(directory)
    }
    let config = """
        daemon:
          control-socket: \(socket)
          log-level: error
          trim-code-pages: 300ms
        intensity: {max-restarts: 100000, period: 1s}
        children:
          - id: burst
            command: [/bin/sh, -c, "[ -e \(calm) ] && exec sleep 600; exit 1"]
            backoff: none
        """
    let path = writeTextFile(config, name: "config.yaml", in: directory)
    let daemon = try BackgroundCommand(loop, [buildDirectory + "/uv-supervisor", "run", path])
    let pid = daemon.process.pid

    // Busy: the crash loop runs the restart path over and over.
    var restarts: Int64 = 0
    let looping = runLoop(loop, timeout: .seconds(20)) {
        restarts = restartCount(loop, socket: socket, path: "root/burst") ?? 0
        return restarts >= 200
    }
    #expect(looping, "restarts: \(restarts); \(daemon.lines)")
    let busy = rollup("Pss_File", of: pid)

    // Quiet: once the child stays up, 300 ms without an event, the code is let go.
    let marker = creat(calm, 0o600)
    #expect(marker >= 0)
    close(marker)
    var quiet = busy
    let dropped = runLoop(loop, timeout: .seconds(10)) {
        quiet = rollup("Pss_File", of: pid)
        return quiet >= 0 && quiet * 10 < busy * 7
    }
    #expect(busy > 0 && dropped, "file-backed PSS: \(busy) KiB in the crash loop, \(quiet) KiB once quiet")

    // It still supervises: a restart by path gives the child a new process, and pages come back.
    let before = restartCount(loop, socket: socket, path: "root/burst", field: "pid")
    let restarted = try runCommandToEnd(loop, [buildDirectory + "/uvsctl", "restart", "root/burst", "--socket", socket])
    #expect(restarted.exit == .exited(0), "\(restarted)")
    #expect(runLoop(loop) {
        let now = restartCount(loop, socket: socket, path: "root/burst", field: "pid")
        return now != nil && now != before
    })
    try daemon.process.signal(SIGTERM)
    #expect(runLoop(loop, timeout: .seconds(15)) { daemon.exit != nil && daemon.ended })
    #expect(daemon.exit == .exited(0), "\(daemon.lines)")
}

/// A field (restarts by default) of the child at `path` in `uvsctl status --json`.
private func restartCount(_ loop: EventLoop, socket: String, path: String, field: String = "restarts") -> Int64? {
    guard let result = try? runCommandToEnd(loop, [buildDirectory + "/uvsctl", "status", "--json", "--socket", socket]),
          result.exit == .exited(0), let tree = try? JSONValue.parse(result.out.joined()) else { return nil }
    func find(_ node: JSONValue) -> JSONValue? {
        if node["path"]?.stringValue == path { return node }
        for child in node["children"]?.arrayValue ?? [] { if let found = find(child) { return found } }
        return nil
    }
    return find(tree)?[field]?.integerValue
}
