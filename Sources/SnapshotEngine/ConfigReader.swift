import Foundation
import Yams

/// Typed access to YAML nodes with file:line errors.
struct ConfigReader {
    let file: String

    func error(_ node: Yams.Node, _ message: String) -> EngineError {
        EngineError.config(file: file, line: node.mark?.line, message: message)
    }

    func orderedMapping(_ node: Yams.Node, _ what: String) throws -> [(Yams.Node, Yams.Node)] {
        guard case .mapping(let m) = node else { throw error(node, "\(what) must be a mapping") }
        return m.map { ($0.key, $0.value) }
    }

    /// A mapping with only `allowed` keys; duplicate keys are errors.
    func mapping(_ node: Yams.Node, _ what: String, allowed: Set<String>) throws -> [String: Yams.Node] {
        var out: [String: Yams.Node] = [:]
        for (k, v) in try orderedMapping(node, what) {
            let key = try string(k, "\(what) key")
            guard allowed.contains(key) else {
                throw error(k, "unknown key \"\(key)\" in \(what) (allowed: \(allowed.sorted().joined(separator: ", ")))")
            }
            guard out[key] == nil else { throw error(k, "duplicate key \"\(key)\" in \(what)") }
            out[key] = v
        }
        return out
    }

    func string(_ node: Yams.Node, _ what: String) throws -> String {
        guard case .scalar(let s) = node else { throw error(node, "\(what) must be a string") }
        return s.string
    }

    func int(_ node: Yams.Node, _ what: String) throws -> Int {
        guard case .scalar(let s) = node, let v = Int(s.string) else { throw error(node, "\(what) must be an integer") }
        return v
    }

    func bool(_ node: Yams.Node, _ what: String) throws -> Bool {
        guard case .scalar(let s) = node else { throw error(node, "\(what) must be true or false") }
        switch s.string {
        case "true", "True", "yes": return true
        case "false", "False", "no": return false
        default: throw error(node, "\(what) must be true or false")
        }
    }

    func strings(_ node: Yams.Node, _ what: String) throws -> [String] {
        guard case .sequence(let seq) = node else { throw error(node, "\(what) must be a list") }
        return try seq.map { try string($0, what + " item") }
    }
}

