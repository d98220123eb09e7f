#if canImport(Glibc)
@preconcurrency import Glibc
#endif
import CUVShims

/// A child's environment, as a spawn needs it.
package enum SpawnEnvironment: Sendable, Equatable {
    /// This process's `environ`, passed as it is.
    case inherit
    /// Exactly these variables.
    case replace([String: String])
    /// This process's environment with these changes: a value sets, `nil` removes.
    case inheritWithOverrides([String: String?])
}

/// The checks and C strings a spawn needs: argv and the environment as C arrays, the program
/// resolved like `execvp` would (but up front, with a clear error), the working directory
/// checked. Shared by `uv_spawn`, the Linux fast path and the Dispatch runtime's `posix_spawn`,
/// so every spawn validates the same way. Everything is checked before anything is created,
/// so bad input leaves nothing behind.
package struct SpawnPreparation {
    /// `spawn "argv0"`, the prefix of every error about this spawn.
    package let description: String
    /// The program's path.
    package let resolvedPath: String
    /// `argv`, NULL-terminated.
    package let argv: CStringArray
    /// `KEY=value` entries, NULL-terminated, for a replaced or amended environment; `nil` when
    /// the child inherits this process's environment as it is (see ``environmentPointer``).
    package let envp: CStringArray?
    /// The working directory, if set.
    package let workingDirectory: String?

    /// Validates a spawn's input and builds the C arrays.
    /// - Throws: ``SpawnError``: `EINVAL` for an empty argv or a NUL byte, `ENOENT`/`EACCES`/`ENOTDIR`
    ///   for the program or the working directory, `EBADF` for an extra descriptor that is not open.
    package init(argv: [String], environment policy: SpawnEnvironment, workingDirectory: String?,
                 extraDescriptors: [Int32] = []) throws(SpawnError) {
        let shownName = argv.first.map { "\"\($0)\"" } ?? "(empty argv)"
        description = "spawn \(shownName)"
        guard let program = argv.first, !program.isEmpty else {
            throw SpawnError(errno: EINVAL, operation: "spawn: argv is empty (argv[0] names the program)")
        }
        for argument in argv where argument.utf8.contains(0) {
            throw SpawnError(errno: EINVAL, operation: "\(description): an argument contains a NUL byte")
        }
        // Inheriting passes this process's `environ` as it is (as posix_spawn and uv_spawn do),
        // without building a copy per spawn.
        let environment: [String]?
        var mergedBlock: CStringArray?
        var mergedPath: String??
        switch policy {
        case .inherit:
            environment = nil
        case .inheritWithOverrides(let overrides):
            // The common case (a notify socket, the daemon's cookie): `environ` with a few
            // variables changed, built straight from its C strings, without a dictionary of the
            // whole environment per spawn (that cost about 20 µs a restart).
            for (key, value) in overrides where key.utf8.contains(0) || value?.utf8.contains(0) == true {
                throw SpawnError(errno: EINVAL, operation: "\(description): an environment entry contains a NUL byte")
            }
            environment = nil
            mergedBlock = CStringArray(inheritingWith: overrides)
            if let path = overrides["PATH"] { mergedPath = .some(path) }
        case .replace:
            let entries = Self.environment(policy)
            for entry in entries where entry.utf8.contains(0) {
                throw SpawnError(errno: EINVAL, operation: "\(description): an environment entry contains a NUL byte")
            }
            environment = entries
        }
        if let directory = workingDirectory {
            var info = stat()
            if stat(directory, &info) != 0 {
                throw SpawnError(errno: cuvs_errno(), operation: "\(description): working directory \"\(directory)\"")
            }
            if (info.st_mode & S_IFMT) != S_IFDIR {
                throw SpawnError(errno: ENOTDIR, operation: "\(description): working directory \"\(directory)\"")
            }
        }
        // -1 is a gap the spawn fills (see `ProcessOptions.extraDescriptors`).
        if let closed = extraDescriptors.first(where: { $0 >= 0 && fcntl($0, F_GETFD) < 0 }) {
            throw SpawnError(errno: EBADF, operation: "\(description): extra descriptor \(closed) is not open")
        }
        let searchPath: String?
        if program.utf8.contains(UInt8(ascii: "/")) {
            searchPath = nil   // not searched
        } else if let environment {
            searchPath = environment.first { $0.hasPrefix("PATH=") }.map { String($0.dropFirst(5)) }
        } else if let mergedPath {
            searchPath = mergedPath
        } else {
            searchPath = getenv("PATH").map { String(cString: $0) }
        }
        resolvedPath = try Self.resolve(program, workingDirectory: workingDirectory, searchPath: searchPath, description: description)
        self.workingDirectory = workingDirectory
        self.argv = CStringArray(argv)
        envp = mergedBlock ?? environment.map { CStringArray($0) }
    }

    /// The environment block for the child: ``envp``, or this process's `environ` when the
    /// environment is inherited.
    package var environmentPointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> {
        if let envp { return envp.pointer }
        if let inherited = cuvs_environ() { return inherited }
        return Self.noEnvironment.pointer   // after clearenv(), environ may be NULL
    }

    /// An empty environment block. Immutable after creation.
    nonisolated(unsafe) private static let noEnvironment = CStringArray([])

    /// `KEY=value` entries for the policy.
    static func environment(_ policy: SpawnEnvironment) -> [String] {
        switch policy {
        case .inherit:
            return inheritedEnvironment().map { "\($0.key)=\($0.value)" }
        case .replace(let variables):
            return variables.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        case .inheritWithOverrides(let overrides):
            var merged = inheritedEnvironment()
            for (key, value) in overrides { merged[key] = value }
            return merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        }
    }

    static func inheritedEnvironment() -> [String: String] {
        var result: [String: String] = [:]
        guard var entry = cuvs_environ() else { return result }
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            entry += 1
        }
        return result
    }

    /// Resolves the program the way `execvp` would, but up front and with a clear error:
    /// a path with a slash is taken relative to the child's working directory; a bare name is
    /// looked up in the child's `PATH`.
    static func resolve(_ program: String, workingDirectory: String?, searchPath: String?, description: String) throws(SpawnError) -> String {
        if program.contains("/") {
            var path = program
            if !program.hasPrefix("/"), let directory = workingDirectory {
                path = directory.hasSuffix("/") ? directory + program : directory + "/" + program
            }
            try checkExecutable(path, description: description)
            return path
        }
        let searchPath = searchPath ?? "/usr/local/bin:/usr/bin:/bin"
        var firstError: SpawnError?
        for directory in searchPath.split(separator: ":", omittingEmptySubsequences: false) {
            let base = directory.isEmpty ? "." : String(directory)
            let candidate = base + "/" + program
            do {
                try checkExecutable(candidate, description: description)
                return candidate
            } catch {
                if firstError == nil || error.errno != ENOENT { firstError = error }
            }
        }
        if let firstError, firstError.errno != ENOENT { throw firstError }
        throw SpawnError(errno: ENOENT, operation: "\(description): not found in PATH")
    }

    static func checkExecutable(_ path: String, description: String) throws(SpawnError) {
        var info = stat()
        if stat(path, &info) != 0 {
            throw SpawnError(errno: cuvs_errno(), operation: "\(description): \"\(path)\"")
        }
        if (info.st_mode & S_IFMT) == S_IFDIR {
            throw SpawnError(errno: EACCES, operation: "\(description): \"\(path)\" is a directory")
        }
        if access(path, X_OK) != 0 {
            throw SpawnError(errno: cuvs_errno(), operation: "\(description): \"\(path)\"")
        }
    }
}

/// The entries of this process's `environ` at one moment (the pointers, not the strings), to
/// tell whether an environment block built from it is still what a fresh build would give.
/// Adding or removing a variable changes the array; giving one a new value puts another string
/// in its place (glibc's `setenv` may reuse a string it made before for the very same
/// `NAME=value`, which is then what the block holds anyway). Only a string a host changed in
/// place after `putenv` keeps its pointer; every spawn sees that change, this one too.
package struct EnvironSnapshot {
    private let entries: [UnsafeMutablePointer<CChar>?]

    /// Takes the snapshot now.
    package init() {
        var entries: [UnsafeMutablePointer<CChar>?] = []
        if var entry = cuvs_environ() {
            while let text = entry.pointee {
                entries.append(text)
                entry += 1
            }
        }
        self.entries = entries
    }

    /// Whether `environ` holds the same entries, in the same order, as when it was taken.
    package var isCurrent: Bool {
        guard var entry = cuvs_environ() else { return entries.isEmpty }
        for expected in entries {
            guard let text = entry.pointee, text == expected else { return false }
            entry += 1
        }
        return entry.pointee == nil
    }
}

/// A NULL-terminated `char *[]`: strings it copied (freed with it), and for an inherited
/// environment, entries of `environ` itself, which it only points to.
package final class CStringArray {
    /// The array.
    package let pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    /// The number of strings (without the terminating NULL).
    package let count: Int
    /// The strings from `ownedFrom` on are copies made here.
    private let ownedFrom: Int

    /// This process's `environ` with `overrides` applied (a value sets, `nil` removes): kept
    /// entries in their order, then the set ones. Kept entries are `environ`'s own strings, not
    /// copies, as `environ` itself is passed when nothing is overridden; so the array is used
    /// only while `environ` still holds them (for the spawn it was made for, or after an
    /// ``EnvironSnapshot`` taken with it says so).
    package init(inheritingWith overrides: [String: String?]) {
        var entries: [UnsafeMutablePointer<CChar>?] = []
        let names = overrides.keys.map { Array($0.utf8) }
        if var entry = cuvs_environ() {
            while let text = entry.pointee {
                entry += 1
                guard let equals = strchr(text, Int32(UInt8(ascii: "="))) else { continue }
                let length = text.distance(to: equals)
                let overridden = names.contains { name in
                    name.count == length && (length == 0 || name.withUnsafeBufferPointer { memcmp($0.baseAddress!, text, length) == 0 })
                }
                if !overridden { entries.append(text) }
            }
        }
        ownedFrom = entries.count
        for (key, value) in overrides {
            if let value { entries.append(strdup(key + "=" + value)) }
        }
        count = entries.count
        pointer = .allocate(capacity: entries.count + 1)
        for (index, entry) in entries.enumerated() { pointer[index] = entry }
        pointer[entries.count] = nil
    }

    /// Copies `strings`.
    package init(_ strings: [String]) {
        count = strings.count
        ownedFrom = 0
        pointer = .allocate(capacity: strings.count + 1)
        for (index, string) in strings.enumerated() { pointer[index] = strdup(string) }
        pointer[strings.count] = nil
    }

    deinit {
        for index in ownedFrom..<count { free(pointer[index]) }
        pointer.deallocate()
    }
}

/// Opens a file for a child's stdio, close-on-exec (so only the dup2 inside the child survives).
package func openStdioFile(path: String, append: Bool, forInput: Bool, description: String) throws(SpawnError) -> Int32 {
    let flags: Int32 = forInput
        ? O_RDONLY | O_CLOEXEC
        : O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC)
    let fd = open(path, flags, 0o644)
    if fd < 0 { throw SpawnError(errno: cuvs_errno(), operation: "\(description): stdio file \"\(path)\"") }
    return fd
}
