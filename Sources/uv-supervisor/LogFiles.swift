#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import UVSupervisor

/// Children's captured output written to their `log-file`s, one line per write, opened for
/// appending; SIGUSR1 reopens them all (after logrotate moved them away: no copytruncate).
final class LogFiles {
    private var paths: [String: String] = [:]   // child path → file
    private var descriptors: [String: Int32] = [:]   // file → descriptor
    private let report: (String) -> Void

    init(report: @escaping (String) -> Void) {
        self.report = report
    }

    deinit { closeAll() }

    /// The files children write to from now on (a reload may change them).
    func use(_ files: [String: String]) {
        paths = files
        let wanted = Set(files.values)
        for (file, descriptor) in descriptors where !wanted.contains(file) {
            close(descriptor)
            descriptors[file] = nil
        }
    }

    /// An output line of `path`, if it has a file.
    func write(path: String, line: String) {
        guard let file = paths[path] ?? templateFile(for: path), let descriptor = descriptor(for: file) else { return }
        var bytes = Array(line.utf8)
        bytes.append(UInt8(ascii: "\n"))
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                report("log file \(file): \(String(cString: strerror(errno)))")
                return
            }
            offset += written
        }
    }

    /// A dynamic child (`pool/worker-3`) writes where its template (`pool/template/worker`) says.
    private func templateFile(for path: String) -> String? {
        guard let slash = path.lastIndex(of: "/"), let dash = path.lastIndex(of: "-"), dash > slash else { return nil }
        let template = path[..<slash] + "/template/" + path[path.index(after: slash)..<dash]
        return paths[String(template)]
    }

    /// Closes every file; the next line opens it again (at its path now).
    func reopen() {
        closeAll()
    }

    private func closeAll() {
        for descriptor in descriptors.values { close(descriptor) }
        descriptors = [:]
    }

    private func descriptor(for file: String) -> Int32? {
        if let open = descriptors[file] { return open }
        let descriptor = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
        guard descriptor >= 0 else {
            report("log file \(file): \(String(cString: strerror(errno)))")
            return nil
        }
        descriptors[file] = descriptor
        return descriptor
    }
}
