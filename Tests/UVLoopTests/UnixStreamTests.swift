import CUVShims
import Testing
import TestSupport
@testable import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The control socket's loop-layer handles: a listening Unix stream socket and its
/// connections, each test checked for leaked handles and descriptors by `withCheckedLoop`.
@Suite("Unix stream sockets")
struct UnixStreamTests {
    @Test("a listener is created 0600, hands over connections with the peer's credentials, splits lines across reads, writes back, and removes its path when closed")
    func listenAndEcho() async throws {
        let report = try await withCheckedLoop { loop in
            let path = makeTemporaryDirectory() + "/control.sock"
            var connections: [UnixStreamConnection] = []
            var lines: [String] = []
            let listener = try UnixStreamListener(loop: loop, path: path) { connection in
                connections.append(connection)
                try? connection.startReading(onLine: { line in
                    lines.append(String(decoding: line, as: UTF8.self))
                    connection.write(Array("echo \(String(decoding: line, as: UTF8.self))\n".utf8))
                }, onEnd: { _ in connection.closeAfterWriting() })
            }
            var info = stat()
            #expect(lstat(path, &info) == 0)
            #expect(info.st_mode & 0o777 == 0o600)
            #expect(info.st_mode & S_IFMT == S_IFSOCK)
            let client = try #require(UnixTestClient(path: path))
            client.send("first\nsec")
            #expect(runLoop(loop) { lines == ["first"] })
            client.send("ond\n\nthird\n")
            #expect(runLoop(loop) { client.lines() == ["echo first", "echo second", "echo ", "echo third"] })
            #expect(lines == ["first", "second", "", "third"])
            #expect(connections.first?.peer == PeerCredentials(pid: getpid(), uid: getuid(), gid: getgid()))
            client.finishSending()
            #expect(runLoop(loop) { client.poll(); return client.sawEnd }, "closed after the peer finished")
            listener.close()
            loop.run(.noWait)
            #expect(access(path, F_OK) != 0, "path removed")
            rmdir(String(path.dropLast("/control.sock".count)))
        }
        #expect(report == .clean)
    }

    @Test("refuses a path held by a live socket or by something else; replaces a stale socket")
    func pathRules() async throws {
        let report = try await withCheckedLoop { loop in
            let directory = makeTemporaryDirectory()
            let path = directory + "/control.sock"
            let first = try UnixStreamListener(loop: loop, path: path) { $0.close() }
            #expect(throws: UVError.self) { try UnixStreamListener(loop: loop, path: path) { $0.close() } }
            do throws(UVError) {
                _ = try UnixStreamListener(loop: loop, path: path) { $0.close() }
            } catch {
                #expect(error.name == "EADDRINUSE")
            }
            #expect(access(path, F_OK) == 0, "the live socket is untouched")
            first.close()
            loop.run(.noWait)
            // A stale socket: bound, then its owner gone without removing it.
            let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            #expect(bindUnix(stale, path) == 0)
            close(stale)
            let second = try UnixStreamListener(loop: loop, path: path) { $0.close() }
            #expect(UnixTestClient(path: path) != nil, "the stale socket was replaced by a live one")
            second.close()
            loop.run(.noWait)
            // A regular file is never removed.
            let file = directory + "/file"
            close(open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0o644))
            do throws(UVError) {
                _ = try UnixStreamListener(loop: loop, path: file) { $0.close() }
                Issue.record("listened over a regular file")
            } catch {
                #expect(error.name == "EEXIST")
            }
            #expect(access(file, F_OK) == 0)
            do throws(UVError) {
                _ = try UnixStreamListener(loop: loop, path: directory + "/" + String(repeating: "x", count: 120)) { $0.close() }
                Issue.record("a path longer than sun_path was accepted")
            } catch {
                #expect(error.name == "ENAMETOOLONG")
            }
            unlink(file)
            rmdir(directory)
        }
        #expect(report == .clean)
    }

    @Test("a line longer than the limit ends the reading; a peer that never reads leaves its bytes queued, counted, and freed on close")
    func limits() async throws {
        let report = try await withCheckedLoop { loop in
            let directory = makeTemporaryDirectory()
            let path = directory + "/control.sock"
            var ends: [UnixStreamConnection.End] = []
            var accepted: [UnixStreamConnection] = []
            let listener = try UnixStreamListener(loop: loop, path: path) { connection in
                connection.maxLineLength = 1024
                accepted.append(connection)
                try? connection.startReading(onLine: { _ in }, onEnd: { ends.append($0) })
            }
            let talker = try #require(UnixTestClient(path: path))
            talker.send(String(repeating: "y", count: 5000))
            #expect(runLoop(loop) { ends == [.lineTooLong] })
            let sleeper = try #require(UnixTestClient(path: path))
            #expect(runLoop(loop) { accepted.count == 2 })
            let chunk = [UInt8](repeating: UInt8(ascii: "z"), count: 64 * 1024)
            for _ in 0..<64 { accepted[1].write(chunk) }
            loop.run(.noWait)
            #expect(accepted[1].pendingWriteBytes > 1024 * 1024, "the kernel takes a few hundred KiB, the rest waits")
            // A peer that goes away: the queued writes are cancelled when the connection closes.
            sleeper.close()
            talker.close()
            accepted.forEach { $0.close() }
            listener.close()
            loop.run(.noWait)
            #expect(accepted[1].pendingWriteBytes == 0)
            rmdir(directory)
        }
        #expect(report == .clean)
    }

    @Test("a peer that disconnects mid-line ends the reading as finished, and its partial line is dropped")
    func disconnectMidLine() async throws {
        let report = try await withCheckedLoop { loop in
            let directory = makeTemporaryDirectory()
            let path = directory + "/control.sock"
            var lines: [[UInt8]] = []
            var ends: [UnixStreamConnection.End] = []
            var kept: UnixStreamConnection?
            let listener = try UnixStreamListener(loop: loop, path: path) { connection in
                kept = connection
                try? connection.startReading(onLine: { lines.append($0) }, onEnd: { end in
                    ends.append(end)
                    connection.close()
                })
            }
            let client = try #require(UnixTestClient(path: path))
            client.send("{\"op\":\"sta")
            client.close()
            #expect(runLoop(loop) { ends.count == 1 })
            #expect(lines.isEmpty)
            #expect(ends == [.peerFinished])
            #expect(kept?.write([1]) == false, "writing to a closed connection is refused")
            listener.close()
            loop.run(.noWait)
            rmdir(directory)
        }
        #expect(report == .clean)
    }
}

private func bindUnix(_ fd: Int32, _ path: String) -> Int32 {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        let bytes = Array(path.utf8)
        raw.copyBytes(from: bytes)
    }
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
}
