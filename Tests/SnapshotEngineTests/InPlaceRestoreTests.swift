#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT
import Testing
import TestSupport

/// A small "system" with two files components and hooks that log what they see.
final class LiveSystem {
    let dir = TemporaryDirectory("snapshot-live")
    var root: String { dir.sub("sys") }
    var hookLog: String { dir.sub("hooks.log") }

    init() {
        Fixture.write(root + "/configs/system.yaml", Array("max_concurrent_tasks: 16\n".utf8), mtime: 1_700_000_000)
        Fixture.write(root + "/configs/mcp.yaml", Array("servers: {}\n".utf8), mode: 0o600, mtime: 1_700_000_000)
        Fixture.write(root + "/storage/collections/a/chunk_0.mmap", Fixture.bytes(400_000, seed: 1), mtime: 1_700_000_000)
        symlink("collections/a", root + "/storage/current")
    }

    func service(stop: String = "", start: String? = nil, broker: String? = nil) throws -> SnapshotService {
        let yaml = """
            root: \(root)
            repository: \(dir.sub("repo"))
            components:
              configs: {path: configs}
              storage: {path: storage}
            \(broker == nil ? "" : "  workers: {mqtt: [\"workers/+/status\"]}")
            types:
              system: [configs, storage\(broker == nil ? "" : ", workers")]
            hooks:
              stop_services: "\(stop.isEmpty ? "echo stop >> \(hookLog)" : stop)"
              start_services: "\(start ?? "echo start >> \(hookLog)")"
            \(broker.map { "mqtt:\n  broker: \($0)" } ?? "")
            """
        let config = try SnapshotConfig.parse(yaml, file: "snapshots.yaml", workingDirectory: dir.path)
        return SnapshotService(config: config, repositoryPath: dir.sub("repo"), workingDirectory: dir.path)
    }

    var hooks: [String] {
        ((try? String(contentsOfFile: hookLog, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    func change() {
        Fixture.write(root + "/configs/system.yaml", Array("max_concurrent_tasks: 20\n".utf8))
        Fixture.write(root + "/configs/extra.yaml", Array("x: 1\n".utf8))
        unlink(root + "/storage/collections/a/chunk_0.mmap")
    }

    func verify(_ service: SnapshotService, sourceLocation: SourceLocation = #_sourceLocation) throws {
        var o = VerifyOptions()
        o.all = true
        o.readData = true
        let report = try service.verify(o)
        #expect(report.ok, "\(report.snapshots.flatMap(\.errors))", sourceLocation: sourceLocation)
    }
}

@Suite(.serialized) struct InPlaceRestoreTests {
    func options(_ snapshot: String, dryRun: Bool = false, noBackup: Bool = false) -> RestoreOptions {
        var o = RestoreOptions()
        o.snapshot = snapshot
        o.dryRun = dryRun
        o.noBackup = noBackup
        return o
    }

    @Test func restoresInPlaceAfterAPreRestoreSnapshotBetweenTheHooks() async throws {
        let live = LiveSystem()
        let service = try live.service()
        var create = CreateOptions()
        create.type = .system
        let original = try await service.create(create)
        let pristine = live.dir.sub("pristine")
        _ = try service.restore({ var o = options(original.id); o.target = pristine; return o }())
        live.change()
        let changed = live.dir.sub("changed")
        try POSIX.makeDirectories(changed)
        _ = CommandCaptureShell.copy(live.root, to: changed)

        let planned = try await service.restoreInPlace(options(original.id, dryRun: true)).planned
        let lines: [String] = planned.map { "\($0.change.rawValue) \($0.path)" }.sorted()
        let expected: [String] = ["added storage/collections/a/chunk_0.mmap", "deleted configs/extra.yaml", "replaced configs/system.yaml"]
        #expect(lines == expected)
        #expect(TreeComparison.differences(changed + "/sys", live.root) == [], "the dry run changed something")
        #expect(live.hooks.isEmpty, "the dry run ran hooks")

        let summary = try #require(try await service.restoreInPlace(options(original.id)).summary)
        #expect(live.hooks == ["stop", "start"])
        #expect(TreeComparison.differences(pristine + "/configs", live.root + "/configs") == [])
        #expect(TreeComparison.differences(pristine + "/storage", live.root + "/storage") == [])
        // No staging directories are left behind.
        #expect(try POSIX.listDirectory(live.root).sorted() == ["configs", "storage"])
        // What was there before is in the pre-restore snapshot, which never becomes latest.
        let pre = try #require(summary.preRestore)
        let preRecord = try service.catalog.resolve(pre)
        #expect(preRecord.type == .preRestore && preRecord.metadata.name == "pre-restore-\(original.id)-\(preRecord.id)")
        #expect(try service.catalog.resolve("latest").id == original.id)
        let back = live.dir.sub("back")
        _ = try service.restore({ var o = options(pre); o.target = back; return o }())
        #expect(TreeComparison.differences(changed + "/sys/configs", back + "/configs") == [])
        try live.verify(service)
    }

    @Test func aFailingStopHookChangesNothingAndStartStillRuns() async throws {
        let live = LiveSystem()
        let service = try live.service(stop: "echo stop >> \(live.hookLog); echo broken service >&2; exit 3")
        var create = CreateOptions()
        create.type = .system
        let original = try await service.create(create)
        live.change()
        let before = live.dir.sub("before")
        _ = CommandCaptureShell.copy(live.root, to: before)
        do {
            _ = try await service.restoreInPlace(options(original.id))
            Issue.record("a failing stop_services hook did not stop the restore")
        } catch {
            #expect("\(error)".contains("hook stop_services failed: exited 3: broken service"))
        }
        #expect(live.hooks == ["stop", "start"])
        #expect(TreeComparison.differences(before + "/sys", live.root) == [])
        #expect(try service.catalog.all().count == 1, "no pre-restore snapshot either")
        try live.verify(service)
    }

    @Test func aDamagedSnapshotIsRefusedBeforeLiveDataIsTouched() async throws {
        let live = LiveSystem()
        let service = try live.service()
        var create = CreateOptions()
        create.type = .system
        let original = try await service.create(create)
        live.change()
        let before = live.dir.sub("before")
        _ = CommandCaptureShell.copy(live.root, to: before)
        // Flip a byte in the middle of every pack.
        let data = live.dir.sub("repo/.store/data")
        for d in try POSIX.listDirectory(data) {
            for f in try POSIX.listDirectory(data + "/" + d) {
                let path = data + "/\(d)/\(f)"
                var bytes = try POSIX.readFile(path)
                bytes[bytes.count / 3] ^= 0xff
                Fixture.write(path, bytes)
            }
        }
        await #expect(throws: (any Error).self) { try await service.restoreInPlace(options(original.id, noBackup: true)) }
        #expect(TreeComparison.differences(before + "/sys", live.root) == [])
        #expect(live.hooks == ["stop", "start"])
        #expect(try POSIX.listDirectory(live.root).sorted() == ["configs", "storage"])
    }

    @Test func anMQTTComponentIsRepublishedRetained() async throws {
        let broker = try TestBroker()
        let mesh = try MQTTClient(options: MQTTOptions(port: broker.port, clientID: "mesh", reconnectDelay: (0.05, 0.3)))
        mesh.start()
        defer { mesh.stop() }
        try await mesh.waitUntilConnected()
        try await mesh.publish("workers/alpha/status", Array("{\"status\":\"busy\"}".utf8), qos: 1, retain: true)
        let live = LiveSystem()
        let service = try live.service(broker: broker.url)
        var create = CreateOptions()
        create.type = .system
        let original = try await service.create(create)
        #expect(original.metadata.components["workers"]?.details.messages == 1)
        // The broker restarts without persistence: the retained state is gone.
        try broker.restart()
        var o = RestoreOptions()
        o.snapshot = original.id
        o.component = ["workers"]
        o.noBackup = true
        let summary = try #require(try await service.restoreInPlace(o).summary)
        #expect(summary.components.map(\.action) == ["republished"])
        let seen = try await MQTTCapture.capture(name: "w", filters: ["workers/#"], broker: BrokerSettings(url: broker.url))
        #expect(seen.details.messages == 1)
        #expect(seen.files.first.map { String(decoding: $0.bytes, as: UTF8.self).contains("busy") } == true)
        try live.verify(service)
    }
}

/// `cp -a` for test set-up.
enum CommandCaptureShell {
    @discardableResult
    static func copy(_ source: String, to directory: String) -> Int32 {
        try? POSIX.makeDirectories(directory)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/cp")
        p.arguments = ["-a", source, directory + "/"]
        try? p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }
}
