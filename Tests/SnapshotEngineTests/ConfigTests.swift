import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

@Suite struct ConfigTests {
    func error(_ yaml: String) -> String {
        do {
            _ = try SnapshotConfig.parse(yaml, file: "snapshots.yaml", workingDirectory: "/srv/agents")
            return "accepted"
        } catch {
            return "\(error)"
        }
    }

    @Test func defaultsAndRelativePaths() throws {
        let c = try SnapshotConfig.parse("compression: {level: 9}\n", file: "x", workingDirectory: "/srv/agents")
        #expect(c.compressionLevel == 9)
        #expect(c.repository == "/srv/agents/snapshots")
        #expect(c.component("configs") == .files(path: "/srv/agents/configs", exclude: ["*.tmp"]))
        #expect(try c.componentNames(for: .incremental) == c.types[.full])
        let rooted = try SnapshotConfig.parse("root: /data\ncomponents:\n  db: {path: qdrant}\ntypes:\n  data: [db]\n", file: "x", workingDirectory: "/srv")
        #expect(rooted.component("db") == .files(path: "/data/qdrant", exclude: []))
    }

    @Test func anS3RepositoryWithItsSettings() throws {
        let c = try SnapshotConfig.parse("repository: {url: s3://backups/agents/, endpoint: \"http://127.0.0.1:9000\", region: eu-west-1, path_style: true}\n", file: "snapshots.yaml", workingDirectory: "/srv/agents")
        #expect(c.repository == "s3://backups/agents")
        #expect(c.s3?.endpoint == "http://127.0.0.1:9000" && c.s3?.region == "eu-west-1" && c.s3?.pathStyle == true)
        let plain = try SnapshotConfig.parse("repository: s3://backups\n", file: "snapshots.yaml", workingDirectory: "/srv/agents")
        #expect(plain.repository == "s3://backups" && plain.s3 == nil)
        let local = try SnapshotConfig.parse("repository: {path: ./snaps}\n", file: "snapshots.yaml", workingDirectory: "/srv/agents")
        #expect(local.repository == "/srv/agents/snaps")
        for (text, host, port) in [("127.0.0.1:9464", "127.0.0.1", 9464), ("localhost:80", "127.0.0.1", 80), ("[::1]:9464", "::1", 9464), ("0.0.0.0:1", "0.0.0.0", 1)] {
            let m = try SnapshotConfig.parse("metrics: {listen: \"\(text)\"}\n", file: "snapshots.yaml", workingDirectory: "/srv")
            #expect(m.metricsListen?.host == host && m.metricsListen?.port == port, "\(text)")
        }
    }

    @Test func badInputNamesFileLineAndKey() {
        #expect(error("root: .\nrepositry: ./x\n") == "snapshots.yaml:2: unknown key \"repositry\" in top level (allowed: alerts, components, compression, continuous, environments, hooks, metrics, mqtt, prune, replicate, repository, retention, root, sanitize, schedule, timezone, types)")
        #expect(error("components:\n  c: {path: x}\n  m: {mqtt: [\"a/#\"]}\ncontinuous:\n  - {components: [m]}\n") == "snapshots.yaml:5: continuous.components: m is a mqtt component; only files components can be watched")
        #expect(error("components:\n  c: {path: x}\ncontinuous:\n  - {components: [d]}\n").hasPrefix("snapshots.yaml:4: continuous.components names unknown component \"d\""))
        #expect(error("components:\n  c: {path: x}\ncontinuous:\n  - {components: [c], debounce: soon}\n").hasPrefix("snapshots.yaml:4: continuous.debounce must be a duration"))
        #expect(error("components:\n  c: {path: x}\ncontinuous:\n  - {components: [c]}\n  - {components: [c]}\n") == "snapshots.yaml:5: continuous.components: c is named twice")
        #expect(error("repository: s3://Backups/agents\n") == "snapshots.yaml:1: repository: s3://Backups/agents: \"Backups\" is not an S3 bucket name (3 to 63 characters: a-z, 0-9, '.', '-')")
        #expect(error("repository: {url: s3://backups/agents, endpoint: \"ftp://x\"}\n") == "snapshots.yaml:1: repository: endpoint ftp://x is not an http:// or https:// URL")
        #expect(error("repository: {path: ./x, region: eu-west-1}\n") == "snapshots.yaml:1: repository: endpoint, region and path_style are for an s3:// url")
        #expect(error("repository: {url: s3://backups/agents, bucket: x}\n").contains("unknown key \"bucket\""))
        #expect(error("metrics: {listen: 9464}\n") == "snapshots.yaml:1: metrics.listen: 9464 is not HOST:PORT (127.0.0.1:9464, [::1]:9464, 0.0.0.0:9464)")
        #expect(error("metrics: {listen: \"127.0.0.1:99999\"}\n").hasPrefix("snapshots.yaml:1: metrics.listen: 127.0.0.1:99999 is not HOST:PORT"))
        #expect(error("metrics: {}\n") == "snapshots.yaml:1: metrics needs listen (HOST:PORT, such as 127.0.0.1:9464)")
        #expect(error("replicate: {to: s3://offsite/x}\n") == "snapshots.yaml:1: replicate must be a list of {to, types}")
        #expect(error("replicate:\n  - {types: [full]}\n") == "snapshots.yaml:2: replicate entry needs to (s3://BUCKET/PREFIX or a path)")
        #expect(error("replicate:\n  - {to: \"ftp://x\"}\n").hasSuffix("ftp:// is not a repository location (a local path, or s3://BUCKET/PREFIX)"))
        #expect(error("replicate:\n  - {to: s3://offsite/x, types: [nightly]}\n").hasPrefix("snapshots.yaml:2: replicate.types: nightly is not a snapshot type of this config"))
        #expect(error("repository: /srv/r\nreplicate:\n  - {to: /srv/r}\n") == "snapshots.yaml:3: replicate.to is the repository itself")
        #expect(error("replicate:\n  - {to: s3://offsite/x}\n  - {to: s3://offsite/x/}\n") == "snapshots.yaml:3: replicate.to: s3://offsite/x is named twice")
        #expect(error("repository: sftp://host/x\n").hasSuffix("sftp:// is not a repository location (a local path, or s3://BUCKET/PREFIX)"))
        #expect(error("compression: {level: fast}\n").hasPrefix("snapshots.yaml:1: compression.level must be an integer"))
        #expect(error("compression: {level: 40}\n").contains("1..19"))
        #expect(error("components:\n  a: {path: x}\n  a: {path: y}\n") == "snapshots.yaml:3: duplicate key \"a\"")
        #expect(error("components:\n  a: {}\n").contains("needs exactly one of path, mqtt, command, env"))
        #expect(error("components:\n  a: {path: x, parse: csv}\n").contains("components.a.parse does not apply to a files component"))
        #expect(error("components:\n  a: {path: x}\ntypes:\n  system: [a, b]\n").contains("unknown component \"b\""))
        #expect(error("types:\n  Weekly: [configs]\n").contains("types: \"Weekly\" is not a valid type name"))
        #expect(error("types:\n  latest: [configs]\n").contains("not a valid type name"))
        #expect(error("types:\n  incremental: [configs]\n").contains("incremental cannot be configured (it captures full's components)"))
        #expect(error("types:\n  nightly: [configs]\nschedule:\n  - {cron: \"0 1 * * *\", type: weekly}\n").hasPrefix("snapshots.yaml:4: schedule.type must be a configured type (nightly), not weekly"))
        #expect(error("root: [1, 2]\n") == "snapshots.yaml:1: root must be a string")
        #expect(error("prune: {repack_threshold: 2}\n").hasPrefix("snapshots.yaml:1: prune.repack_threshold must be a number in (0, 1]"))
        #expect(error("schedule:\n  - {cron: \"0 25 * * *\", type: system}\n").hasPrefix("snapshots.yaml:2: schedule.cron: bad hour field"))
        #expect(error("timezone: Mars/Olympus\n").contains("not a known time zone"))
        #expect(error("schedule:\n  - {cron: \"0 0 31 2 *\", type: system}\n") == "snapshots.yaml:2: schedule.cron \"0 0 31 2 *\" never fires: no date matches its day-of-month, month and weekday fields")
        #expect(error("schedule:\n  - {cron: \"0 0 29 2 *\", type: system}\n") == "accepted")  // every leap year
        #expect(error("environments:\n  test: {health_check: x}\n").hasPrefix("snapshots.yaml:2: environments.test needs root"))
        #expect(error("environments:\n  test: {root: /}\n").contains("environments.test.root must not be /"))
        #expect(error("key: [unclosed\n").hasPrefix("snapshots.yaml:"))
    }

    @Test func hugeOrOddNumbersInTheAlertsFileAreErrorsNotCrashes() throws {
        let dir = TemporaryDirectory()
        for (size, age) in [("1e30GB", "24h"), ("99999999999999999999B", "24h"), ("99999999999999999999", "24h"), ("infGB", "24h"),
                            ("10GB", "1e400h"), ("10GB", "nanh"), ("-1GB", "24h")] {
            Fixture.write(dir.sub("a.yaml"), Array("alerts:\n  snapshot_size: {warning_threshold: \"\(size)\", critical_threshold: \"20GB\"}\n  snapshot_age: {warning_threshold: \"\(age)\", critical_threshold: \"48h\"}\n".utf8))
            #expect(throws: EngineError.self, "\(size) / \(age)") { try AlertThresholds.load(path: dir.sub("a.yaml")) }
        }
        #expect(AlertThresholds.parseSize("18446744073709551615B") == UInt64.max)
        #expect(AlertThresholds.parseSize("2GiB") == 2_147_483_648)
    }

    @Test func theBundledConfigLoads() throws {
        let here = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let c = try SnapshotConfig.load(path: "/" + here + "/configs/snapshots.yaml", required: true, workingDirectory: "/" + here)
        #expect(c.types[.system] == ["configs", "storage", "models", "workers", "logs", "orchestrator", "system_load", "system_memory", "system_disk"])
        #expect(c.types[try #require(SnapshotType("nightly"))] == ["storage", "models"])
        #expect(c.schedule.map(\.what) == ["system", "full", "test-recovery of system/latest"])
    }

    @Test func aMissingSourceFailsTheSnapshotWithoutCommitting() throws {
        let h = try EngineHarness()
        let repo = try h.open()
        #expect(throws: EngineError.self) {
            try Archiver(repository: repo).create(CreateRequest(type: .data, sources: [FileSource(name: "storage", path: h.dir.sub("nope"))]))
        }
        #expect(try SnapshotCatalog(repositoryPath: h.repoPath).all().isEmpty)
        try h.expectVerifies()
    }
}
