#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

@Suite(.serialized) struct RecoveryTests {
    @Test func testRecoveryRestoresVerifiesAndCleansUpWithoutTouchingLiveData() async throws {
        let live = LiveSystem()
        let service = try live.service()
        var create = CreateOptions()
        create.type = .system
        let record = try await service.create(create)
        live.change()
        let before = live.dir.sub("before")
        CommandCaptureShell.copy(live.root, to: before)
        var o = TestRecoveryOptions()
        o.snapshot = record.id
        o.benchmark = true
        let report = try service.testRecovery(o)
        #expect(report.ok, "\(report.errors)")
        #expect(report.files == 3 && report.bytes > 400_000)
        #expect(report.mbPerS > 0)
        #expect(Set(report.phases?.keys.map { $0 } ?? []) == ["check", "restore", "verify", "cleanup"])
        #expect(TreeComparison.differences(before + "/sys", live.root) == [])
        #expect(live.hooks.isEmpty, "test-recovery ran hooks")
        #expect(!(try POSIX.listDirectory("/tmp")).contains { $0.hasPrefix("snapshot-test-recovery-\(record.id)-\(getpid())") })
        try live.verify(service)
    }

    @Test func testRecoveryReportsADamagedSnapshot() async throws {
        let live = LiveSystem()
        let service = try live.service()
        var create = CreateOptions()
        create.type = .system
        let record = try await service.create(create)
        let data = live.dir.sub("repo/.store/data")
        for d in try POSIX.listDirectory(data) {
            for f in try POSIX.listDirectory(data + "/" + d) { unlink(data + "/\(d)/\(f)") }
        }
        var o = TestRecoveryOptions()
        o.snapshot = record.id
        let report = try service.testRecovery(o)
        #expect(!report.ok)
        #expect(report.errors.contains { $0.contains("pack") && $0.contains("missing") })
    }

    @Test func fullRecoveryRestoresEverythingInOrderAndValidates() async throws {
        let live = LiveSystem()
        let service = try live.service(start: "echo start >> \(live.hookLog)")
        var create = CreateOptions()
        create.type = .system
        let record = try await service.create(create)
        let pristine = live.dir.sub("pristine")
        _ = try service.restore({ var r = RestoreOptions(); r.snapshot = record.id; r.target = pristine; return r }())
        live.change()
        var o = RecoverOptions()
        o.mode = "full"
        o.snapshot = record.id
        o.runHealthCheck = true
        let report = try await service.recover(o)
        #expect(report.ok)
        #expect(report.steps.map(\.component) == ["configs", "storage"])
        #expect(report.health == "no health_check hook configured")
        #expect(report.preRestore != nil)
        #expect(TreeComparison.differences(pristine + "/configs", live.root + "/configs") == [])
        #expect(TreeComparison.differences(pristine + "/storage", live.root + "/storage") == [])
        try live.verify(service)
    }

    @Test func stepByStepStopsAtTheFirstFailedHealthCheckNamingTheComponent() async throws {
        let live = LiveSystem()
        // The health check fails once storage has been restored (its marker file reappears).
        let check = "test ! -e \(live.root)/storage/collections/a/chunk_0.mmap"
        let yaml = """
            root: \(live.root)
            repository: \(live.dir.sub("repo"))
            components:
              configs: {path: configs}
              storage: {path: storage}
            types:
              system: [configs, storage]
            hooks:
              health_check: "\(check)"
            """
        let service = SnapshotService(config: try SnapshotConfig.parse(yaml, file: "s.yaml", workingDirectory: live.dir.path), repositoryPath: live.dir.sub("repo"), workingDirectory: live.dir.path)
        var create = CreateOptions()
        create.type = .system
        let record = try await service.create(create)
        live.change()
        var o = RecoverOptions()
        o.mode = "step-by-step"
        o.snapshot = record.id
        let report = try await service.recover(o)
        #expect(!report.ok)
        #expect(report.steps.map(\.component) == ["configs", "storage"])
        #expect(report.steps[0].ok && report.steps[0].health == "ok")
        #expect(!report.steps[1].ok && report.steps[1].error?.contains("health_check") == true)
        // One pre-restore snapshot for the whole recovery.
        #expect(try service.catalog.all(type: .preRestore).count == 1)
        // minimal restores only configs and storage, and needs a known mode.
        o.mode = "weekly"
        await #expect(throws: EngineError.self) { try await service.recover(o) }
        try live.verify(service)
    }

    @Test func recoveryKeepsTheConfigItStartedWithAndNeverRestoresOverItsSecrets() async throws {
        let live = LiveSystem()
        let configPath = live.root + "/configs/snapshots.yaml"
        func writeConfig(hook: String) {
            Fixture.write(configPath, Array("""
                root: \(live.root)
                repository: \(live.dir.sub("repo"))
                components:
                  configs: {path: configs}
                  storage: {path: storage}
                types:
                  system: [configs, storage]
                hooks:
                  start_services: "echo \(hook) >> \(live.hookLog)"
                mqtt:
                  password_file: configs/mqtt.pass
                  hmac_key_file: configs/hmac.key

                """.utf8))
        }
        writeConfig(hook: "old-hook")
        Fixture.write(live.root + "/configs/mqtt.pass", Array("old-password\n".utf8), mode: 0o600)
        Fixture.write(live.root + "/configs/hmac.key", Array("old-key\n".utf8), mode: 0o600)
        func service() throws -> SnapshotService {
            SnapshotService(config: try SnapshotConfig.load(path: configPath, required: true, workingDirectory: live.root), repositoryPath: live.dir.sub("repo"), workingDirectory: live.root)
        }
        var create = CreateOptions()
        create.type = .system
        let record = try await service().create(create)
        // Since then: a new hook, rotated secrets.
        writeConfig(hook: "new-hook")
        Fixture.write(live.root + "/configs/mqtt.pass", Array("new-password\n".utf8), mode: 0o600)
        Fixture.write(live.root + "/configs/hmac.key", Array("new-key\n".utf8), mode: 0o600)
        var o = RecoverOptions()
        o.mode = "full"
        o.snapshot = record.id
        let report = try await service().recover(o)
        #expect(report.ok)
        // The secrets in use stay; the rest of configs/ is the snapshot's, the config included.
        #expect(try POSIX.readFile(live.root + "/configs/mqtt.pass") == Array("new-password\n".utf8))
        #expect(try POSIX.readFile(live.root + "/configs/hmac.key") == Array("new-key\n".utf8))
        #expect(String(decoding: try POSIX.readFile(configPath), as: UTF8.self).contains("old-hook"))
        #expect(report.notes.contains { $0.contains("kept the live \(live.root)/configs/mqtt.pass") }, "\(report.notes)")
        #expect(report.notes.contains { $0.contains("kept the live \(live.root)/configs/hmac.key") }, "\(report.notes)")
        #expect(report.notes.contains { $0.contains("\(configPath) now holds the snapshot's version, which differs") }, "\(report.notes)")
        // The run went on with the config it started with: its start hook ran.
        #expect(live.hooks == ["new-hook"], "\(live.hooks)")
        try live.verify(try service())
    }
}
