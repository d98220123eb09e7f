// uv-supervisor-config: reads a uv-supervisor config file (YAML), checks every key and value,
// and prints the checked tree as one line of JSON for the daemon, or the first problem as
// FILE:LINE:COLUMN: KEY: MESSAGE on standard error (exit 1).
//
//   uv-supervisor-config compile CONFIG
//
// It is a program of its own so that the daemon never links the YAML parser and Foundation
// (the daemon runs it at start and at each reload; see the README).
import Foundation
import UVSupervisor
import UVSupervisorConfig
import Yams

/// The YAML tree as a ConfigNode, with every node's place in the file.
func configNode(_ node: Node, file: String) throws(ConfigError) -> ConfigNode {
    func mark(_ mark: Mark?) -> ConfigMark? { mark.map { ConfigMark(line: $0.line, column: $0.column) } }
    switch node {
    case .scalar(let scalar):
        let isNull = scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string)
        return .scalar(scalar.string, isNull: isNull, mark: mark(scalar.mark))
    case .sequence(let sequence):
        var items: [ConfigNode] = []
        for item in sequence { items.append(try configNode(item, file: file)) }
        return .sequence(items, mark: mark(sequence.mark))
    case .mapping(let mapping):
        var members: [(key: String, keyMark: ConfigMark?, value: ConfigNode)] = []
        for (key, value) in mapping {
            guard case .scalar(let scalar) = key else {
                throw ConfigError(file: file, mark: mark(key.mark), keyPath: "", message: "a key must be a plain name, not a list or mapping")
            }
            members.append((key: scalar.string, keyMark: mark(scalar.mark), value: try configNode(value, file: file)))
        }
        return .mapping(members, mark: mark(mapping.mark))
    case .alias(let alias):
        throw ConfigError(file: file, mark: mark(alias.mark), keyPath: "", message: "YAML aliases are not supported")
    }
}

func compile(_ path: String) -> Int32 {
    guard let data = FileManager.default.contents(atPath: path) else {
        printError("\(path): cannot read the file (\(String(cString: strerror(errno))))")
        return 1
    }
    guard let text = String(data: data, encoding: .utf8) else {
        printError("\(path): not UTF-8 text")
        return 1
    }
    do {
        guard let root = try Yams.compose(yaml: text) else {
            printError("\(path): the file is empty")
            return 1
        }
        let tree = try configNode(root, file: path)
        let config = try ConfigDecoder(file: path, accounts: SystemAccounts()).decode(tree)
        // One member per line: the daemon reads this through a line splitter.
        print(config.node.json.serializedInLines)
        return 0
    } catch let error as ConfigError {
        printError("\(error)")
        return 1
    } catch let error as YamlError {
        printError("\(path):\(error.located)")
        return 1
    } catch {
        printError("\(path): \(error)")
        return 1
    }
}

extension YamlError {
    /// `LINE:COLUMN: problem` where libyaml said.
    var located: String {
        switch self {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _):
            let what = [context?.text, problem].compactMap { $0 }.joined(separator: " ")
            return "\(mark.line):\(mark.column): \(what)"
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.sorted().joined(separator: ", ")
            return "\(context.mark.line):\(context.mark.column): the key \(keys) is given twice in this mapping"
        default:
            return " \(self)"
        }
    }
}

/// Writes a line to standard error.
func printError(_ message: String) {
    let line = message + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

let arguments = CommandLine.arguments
if arguments.count == 3 && arguments[1] == "compile" {
    exit(compile(arguments[2]))
}
printError("usage: uv-supervisor-config compile CONFIG")
exit(64)
