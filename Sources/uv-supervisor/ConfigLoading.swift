#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import UVLoop
import UVSupervisor
import UVSupervisorConfig

/// Runs `uv-supervisor-config compile FILE` and decodes what it prints. The YAML parser lives in
/// that program, so that this daemon links neither it nor Foundation.
enum ConfigLoading {
    /// The config tool: `$UVS_CONFIG_TOOL`, else `uv-supervisor-config` next to this executable,
    /// else on `PATH`.
    static var toolPath: String {
        if let path = getenv("UVS_CONFIG_TOOL").map({ String(cString: $0) }), !path.isEmpty { return path }
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if count > 0 {
            let executable = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let slash = executable.lastIndex(of: "/") {
                let sibling = executable[..<slash] + "/uv-supervisor-config"
                if access(String(sibling), X_OK) == 0 { return String(sibling) }
            }
        }
        return "uv-supervisor-config"
    }

    /// Compiles `file` on `loop` and calls `done` with the config or the tool's message.
    static func load(_ file: String, on loop: EventLoop, done: @escaping (Result<LoadedConfig, LoadFailure>) -> Void) {
        var options = ProcessOptions(argv: [toolPath, "compile", file])
        options.stdout = .pipe
        options.stderr = .pipe
        options.stdin = .null
        var out: [String] = []
        var err: [String] = []
        var streamsOpen = 2
        var exit: ProcessExit?
        func finishIfDone() {
            guard let exit, streamsOpen == 0 else { return }
            guard exit == .exited(0) else {
                let message = err.isEmpty ? "\(toolPath) ended with \(exit)" : err.joined(separator: "\n")
                return done(.failure(LoadFailure(message: message)))
            }
            do {
                let json = try JSONValue.parse(out.joined(separator: "\n"))
                done(.success(try ConfigDecoder(file: file, accounts: NumericAccounts()).decode(ConfigNode(json: json))))
            } catch {
                done(.failure(LoadFailure(message: "\(file): the config tool's output could not be read: \(error)")))
            }
        }
        do {
            _ = try ChildProcess.spawn(on: loop, options, onOutput: { output in
                switch output {
                case .line(.standardOutput, let line): out.append(line)
                case .line(_, let line): err.append(line)
                case .end:
                    streamsOpen -= 1
                    finishIfDone()
                }
            }, onExit: { status in
                exit = status
                finishIfDone()
            })
        } catch {
            done(.failure(LoadFailure(message: "cannot run the config tool \(toolPath): \(error)")))
        }
    }

    /// Compiles `file` before anything else runs: on a loop of its own, closed afterwards.
    static func loadNow(_ file: String) -> Result<LoadedConfig, LoadFailure> {
        var result: Result<LoadedConfig, LoadFailure>?
        do {
            let loop = try EventLoop()
            load(file, on: loop) { result = $0 }
            while result == nil { loop.run(.once) }
            try loop.close()
        } catch {
            return .failure(LoadFailure(message: "cannot start: \(error)"))
        }
        return result!
    }
}

/// Why a config could not be loaded (the tool's message, `FILE:LINE:COLUMN: KEY: ...`).
struct LoadFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
