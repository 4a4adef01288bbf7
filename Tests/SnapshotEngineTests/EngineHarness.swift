import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

/// A scratch source directory and repository, with the engine calls the tests make.
final class EngineHarness {
    let dir = TemporaryDirectory("snapshot-engine")
    var source: String { dir.sub("src") }
    var repoPath: String { dir.sub("repo") }

    init() throws {
        try POSIX.makeDirectories(source)
        try Repository.initialize(at: repoPath)
    }

    func open() throws -> Repository { try Repository.open(at: repoPath) }

    /// The node at `path` (`src/…`) in a snapshot: its chunks, to damage one.
    func node(_ record: SnapshotRecord, _ path: String) throws -> Node {
        try Browser(repository: try open()).node(try SnapshotCatalog(repositoryPath: repoPath).readManifest(record), path: path)
    }

    @discardableResult
    func create(type: SnapshotType = .incremental, name: String = "", time: String? = nil, excludes: [String] = [], archiver: ((Archiver) -> Void)? = nil) throws -> SnapshotRecord {
        let repo = try open()
        let a = Archiver(repository: repo)
        archiver?(a)
        return try a.create(CreateRequest(
            type: type, name: name, time: time.flatMap { Timestamp(iso8601: $0) },
            sources: [FileSource(name: "src", path: source, excludes: excludes)]))
    }

    func restore(_ reference: String, to target: String, verify: Bool = true) throws -> RestoreResult {
        let repo = try open()
        let catalog = SnapshotCatalog(repositoryPath: repoPath)
        let record = try catalog.resolve(reference)
        return try Restorer(repository: repo).restore(record, manifest: try catalog.readManifest(record), components: [], target: target, verify: verify)
    }

    func verify(readData: Bool = true) throws -> VerifyReport {
        let repo = try open()
        return Verifier(repository: repo).verify(try SnapshotCatalog(repositoryPath: repoPath).all(), readData: readData)
    }

    /// Every test that writes the repository ends here.
    func expectVerifies(sourceLocation: SourceLocation = #_sourceLocation) throws {
        let report = try verify(readData: true)
        #expect(report.ok, "verify: \(report.snapshots.flatMap(\.errors))", sourceLocation: sourceLocation)
    }
}
