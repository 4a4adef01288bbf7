import SnapshotCore

/// Errors from the snapshot operations; each names the component, path or snapshot involved.
public enum EngineError: Error, CustomStringConvertible, Sendable {
    /// A component's source path does not exist or is not readable.
    case sourceMissing(component: String, path: String)
    /// A component named on the command line or in a type is not configured.
    case unknownComponent(String, known: [String])
    /// A snapshot type that the configuration does not define.
    case unknownType(String, known: [String])
    /// The configuration file is invalid.
    case config(file: String, line: Int?, message: String)
    /// A restore would write outside its target.
    case unsafePath(String)
    /// The operation was cancelled.
    case cancelled
    /// Bad command-line or payload input.
    case usage(String)
    /// A file a snapshot names is not in it.
    case pathNotInSnapshot(snapshot: String, path: String)
    /// A component could not be captured; nothing was committed.
    case componentFailed(component: String, detail: String)
    /// A hook (stop_services, start_services, health_check) failed.
    case hookFailed(name: String, detail: String)
    /// The kernel's change notifications could not watch what `continuous:` names.
    case watch(String)
    /// The broker could not be reached (a command that needs one: `fleet`).
    case brokerUnreachable(url: String, detail: String)

    /// A command that needs `--snapshot REF` (or the payload field `snapshot`) got none.
    public static var snapshotRequired: EngineError { .usage("snapshot is required (an id, latest, TYPE/latest or a name)") }

    public var description: String {
        switch self {
        case .sourceMissing(let c, let p): return "component \(c): source \(p) does not exist"
        case .unknownComponent(let c, let known): return "unknown component \"\(c)\" (configured: \(known.sorted().joined(separator: ", ")))"
        case .unknownType(let t, let known): return "unknown snapshot type \"\(t)\" (one of: \(known.joined(separator: ", ")))"
        case .config(let file, let line, let message):
            return "\(file)\(line.map { ":\($0)" } ?? ""): \(message)"
        case .unsafePath(let p): return "refusing unsafe path \(p)"
        case .cancelled: return "cancelled"
        case .usage(let m): return m
        case .pathNotInSnapshot(let s, let p): return "snapshot \(s) has no \(p)"
        case .componentFailed(let c, let d): return "component \(c): \(d)"
        case .hookFailed(let n, let d): return "hook \(n) failed: \(d)"
        case .watch(let d): return "watch: \(d)"
        case .brokerUnreachable(let url, let d): return "cannot reach the broker \(url): \(d)"
        }
    }
}
