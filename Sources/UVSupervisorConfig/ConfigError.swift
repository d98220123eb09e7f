/// A config file that cannot be run, with where and why: `FILE:LINE:COLUMN: KEY: MESSAGE`.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The config file's path.
    public var file: String
    /// Where in it (absent when the parser could not say, or for a checked config).
    public var mark: ConfigMark?
    /// The key path: `children[1].backoff.initial`, or the child path for tree-wide rules.
    public var keyPath: String
    /// What is wrong and what was expected.
    public var message: String

    public init(file: String, mark: ConfigMark?, keyPath: String, message: String) {
        self.file = file
        self.mark = mark
        self.keyPath = keyPath
        self.message = message
    }

    public var description: String {
        let place = mark.map { "\(file):\($0.line):\($0.column)" } ?? file
        return keyPath.isEmpty ? "\(place): \(message)" : "\(place): \(keyPath): \(message)"
    }
}
