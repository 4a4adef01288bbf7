import Foundation

/// Facts a generated component records besides its files.
public struct ComponentDetails: Codable, Sendable, Equatable {
    /// Retained messages captured (mqtt).
    public var messages: Int?
    /// The command's exit status (command).
    public var exitCode: Int?
    /// The first 4 KiB of the command's stderr (command).
    public var stderr: String?
    /// A remark: a missing optional tool, redaction counts.
    public var note: String?

    public init(messages: Int? = nil, exitCode: Int? = nil, stderr: String? = nil, note: String? = nil) {
        self.messages = messages
        self.exitCode = exitCode
        self.stderr = stderr
        self.note = note
    }

    enum CodingKeys: String, CodingKey {
        case messages, stderr, note
        case exitCode = "exit_code"
    }
}

/// What one component of a snapshot captured (`metadata.json` → `components`).
public struct ComponentSummary: Codable, Sendable, Equatable {
    /// `files` (later: `mqtt`, `command`, `env`).
    public var kind: ComponentKind
    /// The source: an absolute path for files components.
    public var source: String
    public var files: Int
    public var bytes: UInt64
    /// Paths that could not be read and are not in the snapshot, with the reason.
    public var skipped: [String]
    /// Extra facts of generated components, flattened into the same object.
    public var details: ComponentDetails

    public init(kind: ComponentKind, source: String, files: Int, bytes: UInt64, skipped: [String] = [], details: ComponentDetails = ComponentDetails()) {
        self.kind = kind
        self.source = source
        self.files = files
        self.bytes = bytes
        self.skipped = skipped
        self.details = details
    }

    enum CodingKeys: String, CodingKey { case kind, source, files, bytes, skipped }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        try c.encode(source, forKey: .source)
        try c.encode(files, forKey: .files)
        try c.encode(bytes, forKey: .bytes)
        try c.encode(skipped, forKey: .skipped)
        try details.encode(to: encoder)
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decodeIfPresent(ComponentKind.self, forKey: .kind) ?? .files
        source = try c.decodeIfPresent(String.self, forKey: .source) ?? ""
        files = try c.decodeIfPresent(Int.self, forKey: .files) ?? 0
        bytes = try c.decodeIfPresent(UInt64.self, forKey: .bytes) ?? 0
        skipped = try c.decodeIfPresent([String].self, forKey: .skipped) ?? []
        details = try ComponentDetails(from: decoder)
    }
}

/// The result of the last `verify` of a snapshot, kept in its metadata.json.
public struct VerificationRecord: Codable, Sendable, Equatable {
    public var timestamp: String
    public var ok: Bool
    public var readData: Bool

    public init(timestamp: String, ok: Bool, readData: Bool) {
        self.timestamp = timestamp
        self.ok = ok
        self.readData = readData
    }

    enum CodingKeys: String, CodingKey {
        case timestamp, ok
        case readData = "read_data"
    }
}

/// The seed's summary of the captured system, in metadata.json as four top-level counts,
/// each computed from what the snapshot holds (docs/design.md, "metadata.json").
public struct SystemSummary: Codable, Sendable, Equatable {
    /// Retained messages under `orchestrator/` (its status, performance…).
    public var orchestrator: Int
    /// Distinct workers `N` in retained topics `workers/N/…`.
    public var workers: Int
    /// Qdrant collections: directories under a component's top-level `collections/`, and
    /// collections downloaded by a qdrant component.
    public var collections: Int
    /// Distinct models `N` in retained topics `models/N/…`, or else model files
    /// (`*.safetensors`, `*.gguf`, `*.onnx`, `*.pt`, `*.bin`) under `weights/` of a component.
    public var models: Int

    public init(orchestrator: Int = 0, workers: Int = 0, collections: Int = 0, models: Int = 0) {
        self.orchestrator = orchestrator
        self.workers = workers
        self.collections = collections
        self.models = models
    }
}

/// `<repo>/<type>/<id>/metadata.json`: the seed's fields (README.md, "Repository layout"; docs/design.md) plus ours.
public struct SnapshotMetadata: Codable, Sendable, Equatable {
    public var snapshotID: String
    public var timestamp: String
    public var type: String
    public var name: String
    public var version: String
    public var components: [String: ComponentSummary]
    public var checksums: [String: String]
    public var sizeBytes: UInt64
    public var storedBytes: UInt64
    public var compressionRatio: Double
    public var durationS: Double
    public var parent: String?
    public var hostname: String
    public var tags: [String: String]
    public var auto: Bool
    /// The manifest blob in the store (for `rebuild-metadata`).
    public var manifest: String
    public var verified: VerificationRecord?
    /// The seed's counts; nil in snapshots taken before they were recorded.
    public var summary: SystemSummary?
    /// A snapshot made by `repair`: the damaged snapshot it salvaged, the files of it that
    /// could not be salvaged (`component/path`; a directory whose listing was lost ends in
    /// `/`), and the damaged files it healed from another copy of their content.
    public var repairedFrom: String?
    public var lost: [String]?
    public var healed: [String]?
    /// A snapshot made by `sanitize`: the snapshot it was made from, and how many values each
    /// rule replaced.
    public var sanitizedFrom: String?
    public var sanitized: [String: Int]?

    /// The value of `version`: the metadata format. "2": `checksums` are version 2 digests
    /// (ComponentDigest); "1" (or none): version 1.
    public static let currentVersion = "2"

    /// Which ComponentDigest version `checksums` holds.
    public var checksumVersion: Int { version == "1" ? 1 : 2 }

    public init(
        snapshotID: String, timestamp: String, type: String, name: String,
        components: [String: ComponentSummary], checksums: [String: String],
        sizeBytes: UInt64, storedBytes: UInt64, compressionRatio: Double, durationS: Double,
        parent: String?, hostname: String, tags: [String: String], auto: Bool, manifest: String
    ) {
        self.snapshotID = snapshotID
        self.timestamp = timestamp
        self.type = type
        self.name = name
        self.version = Self.currentVersion
        self.components = components
        self.checksums = checksums
        self.sizeBytes = sizeBytes
        self.storedBytes = storedBytes
        self.compressionRatio = compressionRatio
        self.durationS = durationS
        self.parent = parent
        self.hostname = hostname
        self.tags = tags
        self.auto = auto
        self.manifest = manifest
        self.verified = nil
    }

    enum CodingKeys: String, CodingKey {
        case snapshotID = "snapshot_id"
        case timestamp, type, name, version, components, checksums
        case sizeBytes = "size_bytes"
        case storedBytes = "stored_bytes"
        case compressionRatio = "compression_ratio"
        case durationS = "duration_s"
        case parent, hostname, tags, auto, manifest, verified
        case orchestrator, workers, collections, models
        case repairedFrom = "repaired_from"
        case lost, healed, sanitized
        case sanitizedFrom = "sanitized_from"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        snapshotID = try c.decode(String.self, forKey: .snapshotID)
        timestamp = try c.decode(String.self, forKey: .timestamp)
        type = try c.decode(String.self, forKey: .type)
        name = try c.decodeIfPresent(String.self, forKey: .name) ?? ""
        version = try c.decodeIfPresent(String.self, forKey: .version) ?? "1"
        components = try c.decodeIfPresent([String: ComponentSummary].self, forKey: .components) ?? [:]
        checksums = try c.decodeIfPresent([String: String].self, forKey: .checksums) ?? [:]
        sizeBytes = try c.decodeIfPresent(UInt64.self, forKey: .sizeBytes) ?? 0
        storedBytes = try c.decodeIfPresent(UInt64.self, forKey: .storedBytes) ?? 0
        compressionRatio = try c.decodeIfPresent(Double.self, forKey: .compressionRatio) ?? 1
        durationS = try c.decodeIfPresent(Double.self, forKey: .durationS) ?? 0
        parent = try c.decodeIfPresent(String.self, forKey: .parent)
        hostname = try c.decodeIfPresent(String.self, forKey: .hostname) ?? ""
        tags = try c.decodeIfPresent([String: String].self, forKey: .tags) ?? [:]
        auto = try c.decodeIfPresent(Bool.self, forKey: .auto) ?? false
        manifest = try c.decodeIfPresent(String.self, forKey: .manifest) ?? ""
        verified = try c.decodeIfPresent(VerificationRecord.self, forKey: .verified)
        repairedFrom = try c.decodeIfPresent(String.self, forKey: .repairedFrom)
        lost = try c.decodeIfPresent([String].self, forKey: .lost)
        healed = try c.decodeIfPresent([String].self, forKey: .healed)
        sanitizedFrom = try c.decodeIfPresent(String.self, forKey: .sanitizedFrom)
        sanitized = try c.decodeIfPresent([String: Int].self, forKey: .sanitized)
        if let workers = try c.decodeIfPresent(Int.self, forKey: .workers) {
            summary = SystemSummary(
                orchestrator: try c.decodeIfPresent(Int.self, forKey: .orchestrator) ?? 0, workers: workers,
                collections: try c.decodeIfPresent(Int.self, forKey: .collections) ?? 0,
                models: try c.decodeIfPresent(Int.self, forKey: .models) ?? 0)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(snapshotID, forKey: .snapshotID)
        try c.encode(timestamp, forKey: .timestamp)
        try c.encode(type, forKey: .type)
        try c.encode(name, forKey: .name)
        try c.encode(version, forKey: .version)
        try c.encode(components, forKey: .components)
        try c.encode(checksums, forKey: .checksums)
        try c.encode(sizeBytes, forKey: .sizeBytes)
        try c.encode(storedBytes, forKey: .storedBytes)
        try c.encode(compressionRatio, forKey: .compressionRatio)
        try c.encode(durationS, forKey: .durationS)
        try c.encode(parent, forKey: .parent)  // null when none, so the key is always there
        try c.encode(hostname, forKey: .hostname)
        try c.encode(tags, forKey: .tags)
        try c.encode(auto, forKey: .auto)
        try c.encode(manifest, forKey: .manifest)
        try c.encodeIfPresent(verified, forKey: .verified)
        try c.encodeIfPresent(repairedFrom, forKey: .repairedFrom)
        try c.encodeIfPresent(lost, forKey: .lost)
        try c.encodeIfPresent(healed, forKey: .healed)
        try c.encodeIfPresent(sanitizedFrom, forKey: .sanitizedFrom)
        try c.encodeIfPresent(sanitized, forKey: .sanitized)
        if let summary {
            try c.encode(summary.orchestrator, forKey: .orchestrator)
            try c.encode(summary.workers, forKey: .workers)
            try c.encode(summary.collections, forKey: .collections)
            try c.encode(summary.models, forKey: .models)
        }
    }

    /// Pretty, key-sorted JSON as written to metadata.json and printed by `show --json`.
    public func jsonBytes() throws -> [UInt8] {
        Array(try JSONEncoder.snapshot.encode(self))
    }
}

extension JSONEncoder {
    /// The encoder for every JSON file and `--json` document: sorted keys, pretty, `/` unescaped.
    public static var snapshot: JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return e
    }
}

/// One component in a manifest: where its tree is and where it came from.
public struct ManifestComponent: Codable, Sendable, Equatable {
    public var kind: ComponentKind
    public var source: String
    /// The tree of the component's contents (`<component>/…`); a manifest whose tree is not
    /// a valid id does not decode.
    public var treeID: BlobID
    /// The source was a single file: the tree holds just that file.
    public var rootIsFile: Bool?
    /// Permission bits and mtime of the source directory itself.
    public var rootMode: UInt32?
    public var rootMtime: Timestamp?

    public init(kind: ComponentKind, source: String, tree: BlobID) {
        self.kind = kind
        self.source = source
        self.treeID = tree
    }

    enum CodingKeys: String, CodingKey {
        case kind, source
        case treeID = "tree"
        case rootIsFile = "root_is_file"
        case rootMode = "root_mode"
        case rootMtime = "root_mtime"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(ComponentKind.self, forKey: .kind)
        source = try c.decode(String.self, forKey: .source)
        let hex = try c.decode(String.self, forKey: .treeID)
        guard let id = BlobID(hex: hex) else {
            throw DecodingError.dataCorruptedError(forKey: .treeID, in: c, debugDescription: "tree \"\(hex.prefix(80))\" is not a blob id")
        }
        treeID = id
        rootIsFile = try c.decodeIfPresent(Bool.self, forKey: .rootIsFile)
        rootMode = try c.decodeIfPresent(UInt32.self, forKey: .rootMode)
        rootMtime = try c.decodeIfPresent(Timestamp.self, forKey: .rootMtime)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        try c.encode(source, forKey: .source)
        try c.encode(treeID.hex, forKey: .treeID)
        try c.encodeIfPresent(rootIsFile, forKey: .rootIsFile)
        try c.encodeIfPresent(rootMode, forKey: .rootMode)
        try c.encodeIfPresent(rootMtime, forKey: .rootMtime)
    }
}

/// `<repo>/<type>/<id>/manifest.json` (also stored as a manifest blob): the snapshot's trees.
public struct SnapshotManifest: Codable, Sendable, Equatable {
    public var format: Int
    public var snapshotID: String
    public var type: String
    public var components: [String: ManifestComponent]

    public init(snapshotID: String, type: String, components: [String: ManifestComponent]) {
        format = 1
        self.snapshotID = snapshotID
        self.type = type
        self.components = components
    }

    enum CodingKeys: String, CodingKey {
        case format
        case snapshotID = "snapshot_id"
        case type, components
    }

    /// Component names become directory names on restore: one that could leave the target
    /// (empty, `.`, `..`, a `/` or NUL) makes the manifest invalid.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        format = try c.decode(Int.self, forKey: .format)
        snapshotID = try c.decode(String.self, forKey: .snapshotID)
        type = try c.decode(String.self, forKey: .type)
        components = try c.decode([String: ManifestComponent].self, forKey: .components)
        for name in components.keys where name.isEmpty || name == "." || name == ".." || name.contains("/") || name.utf8.contains(0) {
            throw DecodingError.dataCorruptedError(forKey: .components, in: c, debugDescription: "unsafe component name \"\(name.escapingControlCharacters)\"")
        }
    }
}
