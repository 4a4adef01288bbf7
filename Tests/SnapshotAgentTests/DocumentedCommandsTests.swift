#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotMQTT
import Testing
import TestSupport

/// Every command line in topics.md and README.md runs as written against a real broker and
/// agent (`host1`) on the example system: only the broker's host and port are adapted (by
/// shell functions that add `-h` and `-p`), and `snapshot` is the built binary on PATH.
@Suite(.serialized) struct DocumentedCommandsTests {
    /// A fenced ```sh block of a document: its lines and where it starts.
    struct Block {
        var file: String
        var line: Int
        var text: String

        /// A lone subscriber that watches until Ctrl-C.
        var isWatcher: Bool {
            let lines = text.split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.isEmpty }
            return lines.count == 1 && lines[0].hasPrefix("mosquitto_sub") && !lines[0].contains(" -C ")
        }
        /// The signing recipe needs an agent with `mqtt.hmac_key_file`.
        var isSigned: Bool { text.contains("hmac") }
        /// `make run` / `make test` are what runs this test.
        var isMake: Bool { text.split(separator: "\n").contains { $0.hasPrefix("make ") } }
    }

    static func blocks(_ file: String) throws -> [Block] {
        let text = try String(contentsOfFile: CLI.projectRoot + "/" + file, encoding: .utf8)
        var out: [Block] = []
        var current: [String]?
        var start = 0
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if current == nil, line == "```sh" {
                current = []
                start = i + 2
            } else if current != nil, line == "```" {
                out.append(Block(file: file, line: start, text: current!.joined(separator: "\n")))
                current = nil
            } else if current != nil {
                current!.append(String(line))
            }
        }
        return out
    }

    final class Responses: @unchecked Sendable {
        let lock = NSLock()
        var documents: [[String: Any]] = []
    }

    @Test func everyCommandLineInTopicsAndTheReadmeRunsAsWritten() async throws {
        let blocks = try Self.blocks("topics.md") + Self.blocks("README.md")
        #expect(blocks.count >= 6, "found \(blocks.count) sh blocks")
        let broker = try TestBroker()
        let dir = TemporaryDirectory("snapshot-docs")
        let project = dir.path

        // The example system with the bundled configs, pointed at this broker.
        let make = try CLI.runTool(CLI.projectRoot + "/scripts/make-example-system.sh", [project, "16"])
        #expect(make == 0)
        try POSIX.makeDirectories(project + "/configs")
        for f in try POSIX.listDirectory(CLI.projectRoot + "/configs") where f.hasSuffix(".yaml") {
            var text = String(decoding: try POSIX.readFile(CLI.projectRoot + "/configs/" + f), as: UTF8.self)
            text = text.replacingOccurrences(of: "mqtt://127.0.0.1:1883", with: broker.url)
            Fixture.write(project + "/configs/" + f, Array(text.utf8))
        }
        #expect(symlink(CLI.projectRoot + "/scripts", project + "/scripts") == 0)
        for (topic, payload) in [("workers/alpha/status", #"{"status":"idle"}"#), ("workers/alpha/health", #"{"ok":true}"#),
                                 ("orchestrator/status", #"{"state":"running"}"#), ("models/router-v3/state", #"{"state":"loaded"}"#)] {
            #expect(try CLI.runTool("/usr/bin/mosquitto_pub", ["-p", "\(broker.port)", "-r", "-q", "1", "-t", topic, "-m", payload]) == 0)
        }

        // Everything the agent answers, for the check at the end.
        let responses = Responses()
        let watcher = try MQTTClient(options: MQTTOptions(port: broker.port, clientID: "doc-watcher", reconnectDelay: (0.05, 0.3)))
        watcher.subscribe("snapshots/status/host1/response/#")
        let reader = Task {
            for await m in watcher.messages {
                if let d = try? JSONSerialization.jsonObject(with: Data(m.payload)) as? [String: Any] { responses.lock.withLock { responses.documents.append(d) } }
            }
        }
        defer { reader.cancel(); watcher.stop() }
        watcher.start()
        try await watcher.waitUntilConnected()

        var agent = try startAgent(project, broker: broker)
        defer { agent.stop(SIGTERM) }

        // The S3 example runs against moto: its endpoint stands for the documented one.
        let s3 = try blocks.contains { $0.text.contains(Self.documentedEndpoint) } ? S3Server() : nil
        for var block in blocks where !block.isMake && !block.isSigned {
            if let s3 { block.text = block.text.replacingOccurrences(of: Self.documentedEndpoint, with: s3.endpoint) }
            let r = try run(block, in: project, broker: broker, timeout: block.isWatcher ? 3 : 300)
            if block.isWatcher {
                #expect(r.status == 124 && r.stdout.contains("snapshots/status/host1/availability online"), "\(block.file):\(block.line): \(r.stdout) \(r.stderr)")
            } else {
                #expect(r.status == 0, "\(block.file):\(block.line) exited \(r.status):\n\(r.stderr.suffix(3000))")
            }
        }
        // The fire-and-forget subscriber saw both the accepted and the final response.
        // Payloads as documented decode: the only refusals are the ones the examples invite
        // (a target outside this test's root, a job id that does not exist). The watcher's
        // reader may lag behind the blocks (they wait on child processes): wait for it.
        let settled = Date().addingTimeInterval(30)
        while Date() < settled, !responses.lock.withLock({ responses.documents.contains { $0["request_id"] as? String == "fire-and-forget-1" && $0["status"] as? String == "succeeded" } }) {
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        let codes = responses.lock.withLock { responses.documents.compactMap { ($0["error"] as? [String: Any])?["code"] as? String } }
        #expect(Set(codes).isSubset(of: ["unsafe_target", "not_found"]), "refusals: \(codes)")
        let fired = responses.lock.withLock { responses.documents.filter { $0["request_id"] as? String == "fire-and-forget-1" }.map { $0["status"] as? String ?? "" } }
        #expect(fired == ["accepted", "succeeded"], "\(fired)")

        // The signing recipe, against an agent that requires signatures.
        agent.stop(SIGTERM)
        Fixture.write(project + "/configs/hmac.key", Array("a-shared-secret\n".utf8), mode: 0o600)
        var config = String(decoding: try POSIX.readFile(project + "/configs/snapshots.yaml"), as: UTF8.self)
        config = config.replacingOccurrences(of: "  max_payload: 65536\n", with: "  max_payload: 65536\n  hmac_key_file: configs/hmac.key\n")
        Fixture.write(project + "/configs/snapshots.yaml", Array(config.utf8))
        agent = try startAgent(project, broker: broker)
        for block in blocks where block.isSigned {
            let r = try run(block, in: project, broker: broker, timeout: 60)
            #expect(r.status == 0, "\(block.file):\(block.line) exited \(r.status):\n\(r.stderr)")
        }
        // Both recipes: the canonical-JSON field (r-42) and the v5 user property (r-43).
        for rid in ["r-42", "r-43"] {
            let end = Date().addingTimeInterval(20)
            var signed: [String: Any]?
            while signed == nil && Date() < end {
                signed = responses.lock.withLock { responses.documents.first { $0["request_id"] as? String == rid } }
                try await Task.sleep(nanoseconds: 20_000_000)
            }
            let code = (signed?["error"] as? [String: Any])?["code"] as? String
            #expect(signed != nil && code != "bad_signature", "signed restore \(rid): \(String(describing: signed))")
        }
        #expect(try CLI.run(["verify", "--all", "--read-data"], in: project).status == 0)
    }

    /// Starts `snapshot agent --id host1` in the project and waits for its `online`.
    func startAgent(_ project: String, broker: TestBroker) throws -> ChildProcess {
        let agent = try ChildProcess("/bin/sh", ["-c", "cd '\(project)' && exec '\(CLI.binary)' agent --id host1"], logFile: project + "/agent.log")
        // The retained availability says `offline` until this agent is up (a stopped one
        // published it), then `online`.
        let end = Date().addingTimeInterval(20)
        while Date() < end && agent.isRunning {
            let r = try CLI.shell("mosquitto_sub -p \(broker.port) -t snapshots/status/host1/availability -C 1 -W 2", in: project)
            if r.stdout.contains("online") { return agent }
        }
        Issue.record("agent did not come online: \((try? String(contentsOfFile: project + "/agent.log", encoding: .utf8)) ?? "")")
        return agent
    }

    /// The S3 endpoint README.md's example names.
    static let documentedEndpoint = "https://minio.lan:9000"

    /// Runs one block with bash from the project, the mosquitto clients pointed at the broker.
    func run(_ block: Block, in project: String, broker: TestBroker, timeout: Int) throws -> CLI.Result {
        let adapt = ["mosquitto_pub", "mosquitto_sub", "mosquitto_rr"].map { "\($0)() { command \($0) -h 127.0.0.1 -p \(broker.port) \"$@\"; }" }
        let script = (["set -e"] + adapt + [block.text]).joined(separator: "\n") + "\n"
        Fixture.write(project + "/.block.sh", Array(script.utf8))
        let bin = URL(fileURLWithPath: CLI.binary).deletingLastPathComponent().path
        return try CLI.shell("timeout \(timeout) bash .block.sh", in: project, environment: ["PATH": bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"), "SNAPSHOT_BIN": CLI.binary])
    }
}
