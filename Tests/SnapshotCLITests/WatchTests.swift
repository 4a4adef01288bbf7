#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

/// `snapshot watch` as a user runs it: from the directory of the config, in the foreground.
@Suite(.serialized) struct WatchTests {
    func project(_ dir: TemporaryDirectory, continuous: Bool = true) {
        var yaml = """
            components:
              configs: {path: configs, exclude: ["*.tmp"]}
              logs: {path: logs}
              state: {mqtt: ["workers/+/status"]}
            types:
              system: [configs, logs]

            """
        if continuous { yaml += "continuous:\n  - {components: [configs], debounce: \"0.2s\", max_interval: \"10s\"}\n" }
        Fixture.write(dir.sub("configs/snapshots.yaml"), Array(yaml.utf8))
        Fixture.write(dir.sub("configs/app.yaml"), Array("version: 1\n".utf8))
        Fixture.write(dir.sub("logs/app.log"), Array("started\n".utf8))
    }

    @Test func watchSnapshotsChangesUntilInterrupted() throws {
        let dir = TemporaryDirectory("snapshot-watch-cli")
        project(dir)
        let watch = try CLI.start(["watch"], in: dir.path)
        let first = try #require(watch.waitForStdoutLines(1), "the start-up snapshot")
        #expect(first[0].hasPrefix("continuous/") && first[0].contains("compared everything"), "\(first)")
        let firstID = String(first[0].dropFirst("continuous/".count).prefix { $0 != ":" })

        Fixture.write(dir.sub("configs/app.yaml"), Array("version: 2\n".utf8))
        let second = try #require(watch.waitForStdoutLines(2), "a snapshot of the change")
        #expect(second[1].contains("1 changed path, read 1 file"), "\(second)")
        let secondID = String(second[1].dropFirst("continuous/".count).prefix { $0 != ":" })
        // A change to a component not watched takes no snapshot: the next line is the edit below.
        Fixture.write(dir.sub("logs/app.log"), Array("started\nmore\n".utf8))
        Fixture.write(dir.sub("configs/new.yaml"), Array("new: true\n".utf8))
        let third = try #require(watch.waitForStdoutLines(3))
        #expect(third[2].contains("1 changed path"), "\(third)")

        kill(watch.process.processIdentifier, SIGINT)
        #expect(watch.finish() == 0, "SIGINT ends the watch with exit 0")

        // Continuous snapshots restore like any other: by id, by TYPE/latest, by TYPE@TIME.
        let v1 = try CLI.run(["restore", "--snapshot", "continuous/\(firstID)", "--target", dir.sub("out1")], in: dir.path)
        #expect(v1.status == 0, "\(v1.stderr)")
        #expect(try POSIX.readFile(dir.sub("out1/configs/app.yaml")) == Array("version: 1\n".utf8))
        #expect(!POSIX.exists(dir.sub("out1/logs")), "only the watched component is in a continuous snapshot")
        let at = Timestamp.now().iso8601
        let now = try CLI.run(["restore", "--snapshot", "continuous@\(at)", "--target", dir.sub("out2")], in: dir.path)
        #expect(now.status == 0, "\(now.stderr)")
        #expect(try POSIX.readFile(dir.sub("out2/configs/app.yaml")) == Array("version: 2\n".utf8))
        #expect(POSIX.exists(dir.sub("out2/configs/new.yaml")))
        let shown = try CLI.run(["show", "--snapshot", "continuous/latest", "--json"], in: dir.path)
        #expect(shown.stdout.contains("\"parent\" : \"\(secondID)\""), "\(shown.stdout)")
        let before = try CLI.run(["show", "--snapshot", "continuous@2000-01-01T00:00:00Z"], in: dir.path)
        #expect(before.status == 64 && before.stderr.contains("no continuous snapshot at or before"), "\(before.stderr)")
        let v = try CLI.run(["verify", "--all", "--read-data"], in: dir.path)
        #expect(v.status == 0, "\(v.stdout) \(v.stderr)")
    }

    @Test func watchRefusesWhatItCannotWatch() throws {
        let dir = TemporaryDirectory("snapshot-watch-cli")
        project(dir, continuous: false)
        let none = try CLI.run(["watch"], in: dir.path)
        #expect(none.status == 64 && none.stderr.contains("no continuous: entry"), "\(none.stderr)")
        let unknown = try CLI.run(["watch", "--component", "nope"], in: dir.path)
        #expect(unknown.status == 64 && unknown.stderr.contains("unknown component \"nope\""), "\(unknown.stderr)")
        let mqtt = try CLI.run(["watch", "--component", "state"], in: dir.path)
        #expect(mqtt.status == 64 && mqtt.stderr.contains("only files components can be watched"), "\(mqtt.stderr)")
        // A bad continuous: entry is a config error, naming the line.
        Fixture.write(dir.sub("configs/snapshots.yaml"), Array("""
            components:
              configs: {path: configs}
            continuous:
              - {components: [configs], debounce: "10s", max_interval: "2s"}

            """.utf8))
        let bad = try CLI.run(["watch"], in: dir.path)
        #expect(bad.status == 65 && bad.stderr.contains("snapshots.yaml:4") && bad.stderr.contains("max_interval (2 s) must not be shorter than debounce (10 s)"), "\(bad.stderr)")
        // --component watches a files component the config does not name in continuous:.
        project(dir, continuous: false)
        // With --json, each snapshot's metadata.json object on one line.
        let watch = try CLI.start(["--json", "watch", "--component", "logs"], in: dir.path)
        let line = try #require(watch.waitForStdoutLines(1)?.first)
        let meta = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        #expect(meta["type"] as? String == "continuous" && (meta["components"] as? [String: Any])?.keys.sorted() == ["logs"])
        #expect(meta["version"] as? String == "2")
        kill(watch.process.processIdentifier, SIGTERM)
        #expect(watch.finish() == 0)
        let v = try CLI.run(["verify", "--all", "--read-data"], in: dir.path)
        #expect(v.status == 0, "\(v.stdout) \(v.stderr)")
    }
}

@Suite struct RepositoryURLTests {
    /// `--repo scheme://…` is never a local directory named `scheme:`.
    @Test func aRepositoryURLIsNeverTakenForAPath() throws {
        let dir = TemporaryDirectory("snapshot-url")
        for (repo, text) in [("s3://Bad_Bucket/prefix", "is not an S3 bucket name"), ("https://example.org/r", "https:// is not a repository location")] {
            let r = try CLI.run(["--repo", repo, "create", "--path", dir.path], in: dir.path)
            #expect(r.status == 64 && r.stderr.contains(text), "\(r.stderr)")
            let env = try CLI.run(["list"], in: dir.path, environment: ["SNAPSHOT_REPO": repo])
            #expect(env.status == 64, "\(env.stderr)")
        }
        #expect(try POSIX.listDirectory(dir.path).isEmpty, "nothing created")
        // A well-formed s3:// is an S3 repository: without credentials, a permission error.
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AWS_") }
        env["HOME"] = dir.path
        let r = try CLI.run(["--repo", "s3://bucket/prefix", "list"], in: dir.path, environment: env)
        #expect(r.status == 77 && r.stderr.contains("no S3 credentials"), "\(r.stderr)")
        #expect(try POSIX.listDirectory(dir.path).isEmpty, "nothing created")
    }
}
