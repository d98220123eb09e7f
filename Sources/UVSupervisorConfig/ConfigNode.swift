import UVSupervisor

/// Where a value is in the config file (1-based), when the parser said.
public struct ConfigMark: Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    public var description: String { "\(line):\(column)" }
}

/// A config file's tree as the YAML parser produced it, before its meaning is read: scalars stay
/// text (their meaning depends on the key: `0027` is an octal umask, `10s` a duration, `no` is
/// not a boolean), and every node keeps its place in the file for error messages.
public indirect enum ConfigNode: Sendable, Equatable {
    /// A scalar's text; `isNull` for an empty value or `null`/`~` written plainly.
    case scalar(String, isNull: Bool, mark: ConfigMark?)
    case sequence([ConfigNode], mark: ConfigMark?)
    case mapping([(key: String, keyMark: ConfigMark?, value: ConfigNode)], mark: ConfigMark?)

    public static func == (lhs: ConfigNode, rhs: ConfigNode) -> Bool {
        switch (lhs, rhs) {
        case let (.scalar(a, aNull, _), .scalar(b, bNull, _)): return a == b && aNull == bNull
        case let (.sequence(a, _), .sequence(b, _)): return a == b
        case let (.mapping(a, _), .mapping(b, _)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        default: return false
        }
    }

    /// Where it is.
    public var mark: ConfigMark? {
        switch self {
        case .scalar(_, _, let mark), .sequence(_, let mark), .mapping(_, let mark): return mark
        }
    }

    /// Its kind in error messages.
    var kindName: String {
        switch self {
        case .scalar(_, let isNull, _): return isNull ? "nothing" : "a single value"
        case .sequence: return "a list"
        case .mapping: return "a mapping"
        }
    }
}

// MARK: - Transport between the config tool and the daemon

extension ConfigNode {
    /// The tree as JSON (marks dropped): how `uv-supervisor-config` hands a checked config to
    /// the daemon, which decodes it again with the same rules.
    package var json: JSONValue {
        switch self {
        case .scalar(let text, let isNull, _): return isNull ? .null : .string(text)
        case .sequence(let items, _): return .array(items.map(\.json))
        case .mapping(let members, _): return .object(members.map { JSONValue.Member($0.key, $0.value.json) })
        }
    }

    /// The tree back from its JSON form (scalars of other JSON types are read as their text).
    package init(json: JSONValue) {
        switch json {
        case .null: self = .scalar("", isNull: true, mark: nil)
        case .bool(let value): self = .scalar(value ? "true" : "false", isNull: false, mark: nil)
        case .integer(let value): self = .scalar(String(value), isNull: false, mark: nil)
        case .double(let value): self = .scalar("\(value)", isNull: false, mark: nil)
        case .string(let text): self = .scalar(text, isNull: false, mark: nil)
        case .array(let items): self = .sequence(items.map(ConfigNode.init(json:)), mark: nil)
        case .object(let members):
            self = .mapping(members.map { (key: $0.key, keyMark: nil, value: ConfigNode(json: $0.value)) }, mark: nil)
        }
    }

    /// A copy with the value at `key` of a mapping replaced (or added).
    package func replacing(_ key: String, with value: ConfigNode) -> ConfigNode {
        guard case .mapping(var members, let mark) = self else { return self }
        if let index = members.firstIndex(where: { $0.key == key }) {
            members[index].value = value
        } else {
            members.append((key: key, keyMark: nil, value: value))
        }
        return .mapping(members, mark: mark)
    }
}
