import Foundation
import SnapshotCore

/// The options of one action, as the CLI's flags and an MQTT command's payload give them:
/// both decode into the same type and pass the same `validate()`.
public protocol OperationOptions: Decodable, Sendable {
    /// The payload's field names (its CodingKeys); any other field is refused.
    static var fieldNames: [String] { get }
    /// Rejects bad values before any work starts.
    func validate() throws
}

/// Options of `create`, shared by the CLI (flags) and the MQTT agent (payload fields).
public struct CreateOptions: OperationOptions, Codable, Equatable {
    /// Any type the config defines (checked when the snapshot's components are looked up).
    public var type: SnapshotType = .full
    public var name: String = ""
    public var auto: Bool = false
    public var path: [String] = []
    public var exclude: [String] = []
    public var time: String?
    public var tag: [String] = []

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case type, name, auto, path, exclude, time, tag }
    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decodeIfPresent(SnapshotType.self, forKey: .type) ?? .full
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        auto = try c.decodeIfPresent(Bool.self, forKey: .auto) ?? false
        path = try c.decodeStrings(.path)
        exclude = try c.decodeStrings(.exclude)
        time = try c.decodeIfPresent(String.self, forKey: .time)
        tag = try c.decodeStrings(.tag)
    }

    /// Rejects bad values before any work starts.
    public func validate() throws {
        if let time, Timestamp(iso8601: time) == nil {
            throw EngineError.usage("time \(time) is not an ISO 8601 date-time (e.g. 2024-01-15T10:30:00Z)")
        }
        for t in tag where !t.contains("=") || t.hasPrefix("=") {
            throw EngineError.usage("tag \(t) must be key=value")
        }
        if name.hasPrefix("pre-restore") || name == "latest" || name.contains("/") {
            throw EngineError.usage("name \(name) is reserved or contains '/'")
        }
    }

    public var tags: [String: String] {
        var out: [String: String] = [:]
        for t in tag {
            let parts = t.split(separator: "=", maxSplits: 1)
            out[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        return out
    }
}

/// Options of `verify`.
public struct VerifyOptions: OperationOptions, Codable, Equatable {
    public var snapshot: String?
    public var all: Bool = false
    public var component: String?
    public var readData: Bool = false

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case snapshot, all, component
        case readData = "read_data"
    }
    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        snapshot = try c.decodeIfPresent(String.self, forKey: .snapshot)
        all = try c.decodeIfPresent(Bool.self, forKey: .all) ?? false
        component = try c.decodeIfPresent(String.self, forKey: .component)
        readData = try c.decodeIfPresent(Bool.self, forKey: .readData) ?? false
    }

    public func validate() throws {
        guard (snapshot != nil) != all else { throw EngineError.usage("give either snapshot or all") }
    }
}

/// Options of `restore`.
public struct RestoreOptions: OperationOptions, Codable, Equatable {
    public var snapshot: String = ""
    /// Narrows `snapshot` to snapshots of this type (the seed's `--snapshot ID --type T`).
    public var type: SnapshotType?
    public var component: [String] = []
    public var target: String?
    public var verify: Bool = false
    public var noBackup: Bool = false
    public var dryRun: Bool = false

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case snapshot, type, component, target, verify
        case noBackup = "no_backup"
        case dryRun = "dry_run"
    }
    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        snapshot = try c.decodeIfPresent(String.self, forKey: .snapshot) ?? ""
        type = try c.decodeIfPresent(SnapshotType.self, forKey: .type)
        component = try c.decodeStrings(.component)
        target = try c.decodeIfPresent(String.self, forKey: .target)
        verify = try c.decodeIfPresent(Bool.self, forKey: .verify) ?? false
        noBackup = try c.decodeIfPresent(Bool.self, forKey: .noBackup) ?? false
        dryRun = try c.decodeIfPresent(Bool.self, forKey: .dryRun) ?? false
    }

    public func validate() throws {
        guard !snapshot.isEmpty else { throw EngineError.snapshotRequired }
    }
}

/// Options of `list`.
public struct ListOptions: OperationOptions, Codable, Equatable {
    public var type: SnapshotType?

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case type }
    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    public func validate() throws {}
}

/// The options of an action on one snapshot (`show`, `delete`, `analyze`): its reference.
public struct SnapshotReferenceOptions: OperationOptions, Codable, Equatable {
    public var snapshot: String = ""

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case snapshot }
    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    public func validate() throws {
        guard !snapshot.isEmpty else { throw EngineError.snapshotRequired }
    }
}

/// Options of `show`.
public typealias ShowOptions = SnapshotReferenceOptions
/// Options of `delete`.
public typealias DeleteOptions = SnapshotReferenceOptions
/// Options of `analyze`.
public typealias AnalyzeOptions = SnapshotReferenceOptions
/// Options of `repair`.
public typealias RepairOptions = SnapshotReferenceOptions

/// The options of an action on the repository that one snapshot can narrow
/// (`rebuild-metadata`, `check-dependencies`).
public struct SnapshotScopeOptions: OperationOptions, Codable, Equatable {
    public var snapshot: String?

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable { case snapshot }
    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    public func validate() throws {}
}

/// Options of `rebuild-metadata`: with `snapshot`, that snapshot's metadata.json only.
public typealias RebuildOptions = SnapshotScopeOptions
/// Options of `check-dependencies`: with `snapshot`, also what restoring it needs.
public typealias DependencyCheckOptions = SnapshotScopeOptions

extension KeyedDecodingContainer {
    /// A repeatable option: a list of strings, or one string.
    func decodeStrings(_ key: Key) throws -> [String] {
        guard contains(key), try !decodeNil(forKey: key) else { return [] }
        if let one = try? decode(String.self, forKey: key) { return [one] }
        return try decode([String].self, forKey: key)
    }
}

/// What `restore` reports (`--json` and the MQTT result).
public struct RestoreSummary: Codable, Sendable, Equatable {
    public var ok: Bool
    public var snapshotID: String
    public var target: String
    public var files: Int
    public var bytes: UInt64
    public var seconds: Double
    public var mismatches: [String]

    enum CodingKeys: String, CodingKey {
        case ok, target, files, bytes, seconds, mismatches
        case snapshotID = "snapshot_id"
    }
}

/// Options of `prune`.
public struct PruneOptions: OperationOptions, Codable, Equatable {
    public var type: SnapshotType?
    public var dryRun: Bool = false

    public init() {}

    enum CodingKeys: String, CodingKey, CaseIterable {
        case type
        case dryRun = "dry_run"
    }
    public static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decodeIfPresent(SnapshotType.self, forKey: .type)
        dryRun = try c.decodeIfPresent(Bool.self, forKey: .dryRun) ?? false
    }

    public func validate() throws {}
}

/// What `delete` removed (`--json`: the snapshot's metadata.json object, or for a damaged
/// snapshot `{"snapshot_id","type","damaged"}`).
public struct DeletedSnapshot: Sendable, Encodable {
    public var snapshotID: String
    public var type: SnapshotType
    public var metadata: SnapshotMetadata?
    /// Why its metadata.json could not be read, when it could not.
    public var damaged: String?

    public func encode(to encoder: any Encoder) throws {
        if let metadata { return try metadata.encode(to: encoder) }
        try DamagedListing(snapshotID: snapshotID, type: type, damaged: damaged ?? "").encode(to: encoder)
    }
}

/// A damaged snapshot in `list --json` and `delete --json`.
public struct DamagedListing: Sendable, Codable, Equatable {
    public var snapshotID: String
    public var type: SnapshotType
    public var damaged: String

    public init(snapshotID: String, type: SnapshotType, damaged: String) {
        self.snapshotID = snapshotID
        self.type = type
        self.damaged = damaged
    }

    enum CodingKeys: String, CodingKey {
        case snapshotID = "snapshot_id"
        case type, damaged
    }
}
