/// A snapshot type: one of the built-in ones or one that the config's `types:` defines.
/// Each is a directory of the repository (`<repo>/<type>/<id>/`), so a name is
/// `[a-z][a-z0-9_-]*` (at most 64 characters), never `latest`, and never one of the store's
/// folder names; an instance always holds a valid name.
public struct SnapshotType: Hashable, Comparable, Sendable, Codable, CustomStringConvertible {
    public let name: String

    public static let system = SnapshotType(known: "system")
    public static let config = SnapshotType(known: "config")
    public static let data = SnapshotType(known: "data")
    public static let models = SnapshotType(known: "models")
    public static let full = SnapshotType(known: "full")
    public static let incremental = SnapshotType(known: "incremental")
    public static let differential = SnapshotType(known: "differential")
    public static let continuous = SnapshotType(known: "continuous")
    /// What an in-place restore takes first; never `latest`, never configured.
    public static let preRestore = SnapshotType(known: "pre-restore")
    /// What `sanitize` makes: a redacted copy, never `latest`, never restored by accident.
    public static let sanitized = SnapshotType(known: "sanitized")

    /// The types a default configuration captures.
    public static let builtIn: [SnapshotType] = [.system, .config, .data, .models, .full, .incremental, .differential]

    /// Names a type may not have: the reference keyword and the store's folders.
    static let reserved: Set<String> = ["latest", "store", "packs", "index", "keys", "locks", "tmp"]

    private init(known name: String) { self.name = name }

    /// A type named `name`, or nil when the name is not a valid type name.
    public init?(_ name: String) {
        guard Self.isValidName(name) else { return nil }
        self.name = name
    }

    /// The naming rule, for error messages.
    public static var nameRule: String {
        "a type name is a lowercase letter followed by lowercase letters, digits, '_' or '-' (at most 64), and not \(reserved.sorted().joined(separator: ", "))"
    }

    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, (0x61...0x7a).contains(first), name.utf8.count <= 64, !reserved.contains(name) else { return false }
        return name.utf8.allSatisfy { (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x5f || $0 == 0x2d }
    }

    /// The type whose components a snapshot of this type captures: `incremental` and
    /// `differential` capture `full`'s, every other type its own.
    public var componentsFrom: SnapshotType {
        self == .incremental || self == .differential ? .full : self
    }

    /// Its section in retention.yaml (`nightly_snapshots`; the seed's `model_snapshots`
    /// for `models`).
    public var retentionSection: String { self == .models ? "model_snapshots" : name + "_snapshots" }

    public var description: String { name }

    public static func < (a: SnapshotType, b: SnapshotType) -> Bool { a.name < b.name }

    public init(from decoder: any Decoder) throws {
        let name = try decoder.singleValueContainer().decode(String.self)
        guard let t = SnapshotType(name) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "\"\(name)\" is not a snapshot type name"))
        }
        self = t
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(name)
    }
}

/// What a component captures; stored as `kind` in manifest.json and metadata.json.
public enum ComponentKind: String, Codable, Sendable, CaseIterable, CustomStringConvertible {
    /// A file or directory tree.
    case files
    /// Retained MQTT messages.
    case mqtt
    /// A command's output.
    case command
    /// Environment variables.
    case env
    /// Qdrant collection snapshots taken through its API.
    case qdrant

    public var description: String { rawValue }
}
