import CUVShims
import Testing
import TestSupport
@testable import UVLoop
#if canImport(Glibc)
import Glibc
#endif

/// The loop-layer handles readiness needs: the notify socket, the readiness pipe and the TCP
/// connect attempt, each checked for leaks (handles, descriptors) by `withCheckedLoop`.
@Suite("Notify sockets, readiness pipes, TCP connect attempts")
struct DescriptorWatcherTests {
    @Test("a notify socket receives datagrams with the sender's credentials; passed descriptors are closed; long ones are truncated")
    func notifySocket() async throws {
        let report = try await withCheckedLoop { loop in
            var received: [NotifyDatagram] = []
            let socket = try NotifySocket(loop: loop) { received.append($0) }
            #expect(socket.environmentValue.hasPrefix("@uvs/\(getpid())/"))
            let name = String(socket.environmentValue.dropFirst())
            #expect("READY=1".withCString { cuvs_notify_send(name, $0, 7) } == 0)
            var long = [UInt8](repeating: UInt8(ascii: "x"), count: 10_000)
            #expect(long.withUnsafeMutableBytes { cuvs_notify_send(name, $0.baseAddress, $0.count) } == 0)
            // A datagram carrying a descriptor (SCM_RIGHTS): it must be closed on arrival.
            let passed = open("/dev/null", O_RDONLY | O_CLOEXEC)
            #expect(sendWithDescriptor(to: name, descriptor: passed))
            close(passed)
            #expect(runLoop(loop) { received.count == 3 })
            #expect(received[0].bytes == Array("READY=1".utf8))
            #expect(received[0].senderPID == getpid() && received[0].senderUID == getuid())
            #expect(!received[0].truncated && received[1].truncated && received[1].bytes.count == NotifySocket.maximumLength)
            #expect(received[2].descriptors == 1)
            socket.close()
            socket.close()   // idempotent
        }
        #expect(report == .clean, "the passed descriptor was closed, the socket too")
    }

    @Test("a readiness pipe reports the first newline once, and nothing for bytes without one")
    func readinessPipe() async throws {
        let report = try await withCheckedLoop { loop in
            var readies = 0
            let pipe = try ReadinessPipe(loop: loop) { readies += 1 }
            let writer = dup(pipe.writeEnd)
            pipe.closeWriteEnd()
            #expect(write(writer, "abc", 3) == 3)
            loop.run(.noWait)
            #expect(readies == 0)
            #expect(write(writer, "d\nmore\n", 7) == 7)
            #expect(runLoop(loop) { readies == 1 })
            close(writer)
            loop.run(.noWait)
            #expect(readies == 1, "once")
            pipe.close()
        }
        #expect(report == .clean)
    }

    @Test("a TCP connect attempt: success against a listener, ECONNREFUSED against a closed port, cancel mid-flight, bad addresses")
    func tcpConnect() async throws {
        let report = try await withCheckedLoop { loop in
            let (listener, port) = listeningSocket()
            defer { close(listener) }
            var outcomes: [String] = []
            _ = try TCPConnectAttempt(loop: loop, host: "127.0.0.1", port: port) { outcomes.append($0 == nil ? "ok" : "error") }
            #expect(runLoop(loop) { outcomes == ["ok"] })
            // A port nobody listens on: find one by binding and closing.
            let (closed, closedPort) = listeningSocket()
            close(closed)
            _ = try TCPConnectAttempt(loop: loop, host: "127.0.0.1", port: closedPort) { error in
                outcomes.append(error?.name ?? "ok")
            }
            #expect(runLoop(loop) { outcomes.count == 2 })
            #expect(outcomes.last == "ECONNREFUSED")
            // Cancelled before any outcome: the completion never runs, the handle still closes.
            let cancelled = try TCPConnectAttempt(loop: loop, host: "127.0.0.1", port: port) { _ in outcomes.append("late") }
            cancelled.cancel()
            cancelled.cancel()
            loop.run(.noWait)
            loop.run(.noWait)
            #expect(outcomes.count == 2)
            #expect(throws: UVError.self) { try TCPConnectAttempt(loop: loop, host: "localhost", port: port) { _ in } }
            #expect(throws: UVError.self) { try TCPConnectAttempt(loop: loop, host: "999.1.1.1", port: port) { _ in } }
            // One left in flight when the loop closes: teardown closes it, the request is freed.
            _ = try TCPConnectAttempt(loop: loop, host: "127.0.0.1", port: port) { _ in }
        }
        #expect(report == .clean)
    }
}

/// A TCP socket listening on a free loopback port, and the port.
private func listeningSocket() -> (Int32, UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    return (fd, UInt16(bigEndian: address.sin_port))
}

/// Sends "READY=1" to the abstract socket `name` with `descriptor` attached (SCM_RIGHTS).
private func sendWithDescriptor(to name: String, descriptor: Int32) -> Bool {
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(name.utf8)
    withUnsafeMutableBytes(of: &address.sun_path) { path in
        for (index, byte) in bytes.enumerated() { path[index + 1] = byte }   // path[0] = 0: abstract
    }
    let addressLength = socklen_t(MemoryLayout<sa_family_t>.size + 1 + bytes.count)
    var payload = Array("READY=1".utf8)
    // Control message: one cmsghdr with one int, laid out by the kernel's rules (CMSG_LEN).
    let headerSize = MemoryLayout<cmsghdr>.size
    var control = [UInt8](repeating: 0, count: headerSize + 8)
    control.withUnsafeMutableBytes { raw in
        var header = cmsghdr()
        header.cmsg_len = headerSize + MemoryLayout<Int32>.size
        header.cmsg_level = SOL_SOCKET
        header.cmsg_type = Int32(SCM_RIGHTS)
        raw.storeBytes(of: header, as: cmsghdr.self)
        raw.storeBytes(of: descriptor, toByteOffset: headerSize, as: Int32.self)
    }
    return payload.withUnsafeMutableBytes { payloadBytes in
        control.withUnsafeMutableBytes { controlBytes in
            withUnsafeMutablePointer(to: &address) { addressPointer in
                var vector = iovec(iov_base: payloadBytes.baseAddress, iov_len: payloadBytes.count)
                return withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    var message = msghdr()
                    message.msg_name = UnsafeMutableRawPointer(addressPointer)
                    message.msg_namelen = addressLength
                    message.msg_iov = vectorPointer
                    message.msg_iovlen = 1
                    message.msg_control = controlBytes.baseAddress
                    message.msg_controllen = controlBytes.count
                    return sendmsg(fd, &message, 0) == payloadBytes.count
                }
            }
        }
    }
}
