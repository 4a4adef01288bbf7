import SnapshotCore

/// A component whose files are produced at capture time rather than read from disk: the
/// output of a command, environment variables, retained MQTT messages.
public struct GeneratedSource: Sendable, Equatable {
    public var name: String
    /// `command`, `env` or `mqtt`.
    public var kind: ComponentKind
    /// What was captured, for metadata (`nvidia-smi …`, `MQTT_*`, `workers/+/status`).
    public var source: String
    /// Files stored under `<name>/`, in order.
    public var files: [(name: String, bytes: [UInt8])]
    /// Extra facts for metadata.json (exit code, stderr, message count, a missing tool).
    public var details: ComponentDetails

    public init(name: String, kind: ComponentKind, source: String, files: [(name: String, bytes: [UInt8])], details: ComponentDetails = ComponentDetails()) {
        self.name = name
        self.kind = kind
        self.source = source
        self.files = files
        self.details = details
    }

    public static func == (a: GeneratedSource, b: GeneratedSource) -> Bool {
        a.name == b.name && a.kind == b.kind && a.source == b.source && a.details == b.details
            && a.files.map(\.name) == b.files.map(\.name) && a.files.map(\.bytes) == b.files.map(\.bytes)
    }
}
