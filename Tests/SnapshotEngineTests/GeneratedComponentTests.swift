import Foundation
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

@Suite struct GeneratedComponentTests {
    /// Real `nvidia-smi` output from an H100 (Tests/Fixtures/nvidia-smi-h100).
    static var fixtures: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().path + "/Fixtures/nvidia-smi-h100"
    }

    @Test func csvFromARealH100BecomesTypedJSON() throws {
        let csv = try String(contentsOfFile: Self.fixtures + "/query-gpu.csv", encoding: .utf8)
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(CSVTable.json(csv))) as? [[String: Any]])
        #expect(rows.count == 1)
        let gpu = rows[0]
        #expect(gpu["name"] as? String == "NVIDIA H100 80GB HBM3")
        #expect(gpu["memory.total [MiB]"] as? Int == 81559)
        #expect(gpu["utilization.gpu [%]"] as? Int == 0)
        #expect(gpu["power.draw [W]"] as? Double == 121.85)
        #expect(gpu["driver_version"] as? String == "580.159.04")
        #expect(gpu["index"] as? Int == 0)
        let empty = try #require(try JSONSerialization.jsonObject(with: Data(CSVTable.json(try String(contentsOfFile: Self.fixtures + "/compute-apps.csv", encoding: .utf8)))) as? [Any])
        #expect(empty.isEmpty)
        #expect(throws: EngineError.self) { try CSVTable.json("a, b\n1, 2, 3\n") }
    }

    @Test func aCommandComponentRoundTripsWithItsMetadata() throws {
        let h = try EngineHarness()
        let gpu = try CommandCapture.capture(name: "gpu_usage", command: "cat '\(Self.fixtures)/query-gpu.csv'; echo note >&2", parse: "csv", output: "gpu_usage.json", optional: true)
        #expect(gpu.files.map(\.name) == ["gpu_usage.csv", "gpu_usage.json"])
        #expect(gpu.details.exitCode == 0 && gpu.details.stderr == "note\n")
        let env = try EnvironmentCapture.capture(name: "environment", patterns: ["MQTT_*", "QDRANT_*"], environment: ["MQTT_BROKER": "mqtt://x", "MQTT_PASSWORD": "hunter2", "QDRANT_API_KEY": "k", "HOME": "/root"])
        let record = try Archiver(repository: try h.open()).create(CreateRequest(type: .models, sources: [], generated: [gpu, env]))
        #expect(record.metadata.components["gpu_usage"]?.files == 2)
        #expect(record.metadata.components["gpu_usage"]?.details.exitCode == 0)
        #expect(record.metadata.components["environment"]?.details.note == "2 variables, 1 redacted" || record.metadata.components["environment"]?.details.note == "3 variables, 2 redacted")
        let out = h.dir.sub("out")
        _ = try h.restore(record.id, to: out)
        #expect(try POSIX.readFile(out + "/gpu_usage/gpu_usage.csv") == POSIX.readFile(Self.fixtures + "/query-gpu.csv"))
        let environment = try #require(try JSONSerialization.jsonObject(with: Data(try POSIX.readFile(out + "/environment/environment.json"))) as? [String: String])
        #expect(environment == ["MQTT_BROKER": "mqtt://x", "MQTT_PASSWORD": "[REDACTED]", "QDRANT_API_KEY": "[REDACTED]"])
        try h.expectVerifies()
    }

    /// Processes whose command line contains `marker` (its first character in brackets, so
    /// that the pattern does not match the shell that runs pgrep).
    func running(_ marker: String) throws -> Bool {
        try CLI.shell("pgrep -f '[\(marker.prefix(1))]\(marker.dropFirst())'", in: "/").status == 0
    }

    @Test func aTimeoutKillsEverythingTheCommandStarted() throws {
        var start = Date()
        do {
            try Hooks.run("stop_services", "sleep 31.7 & sleep 31.8; echo never", timeout: 1)
            Issue.record("a hook past its timeout succeeded")
        } catch {
            #expect("\(error)" == "hook stop_services failed: timed out after 1 s")
        }
        #expect(Date().timeIntervalSince(start) < 4)
        #expect(try !running("sleep 31.7") && !running("sleep 31.8"), "the hook's children outlived its timeout")

        start = Date()
        #expect(throws: EngineError.self) {
            try CommandCapture.capture(name: "probe", command: "sleep 32.7 & echo partial; sleep 32.8", parse: nil, output: nil, optional: false, timeout: 1)
        }
        #expect(Date().timeIntervalSince(start) < 4)
        #expect(try !running("sleep 32.7"))
    }

    @Test func aHookThatStartsABackgroundServiceReturnsWhenItsShellDoes() throws {
        let start = Date()
        // The service keeps the hook's output pipe open for as long as it runs.
        try Hooks.run("start_services", "(sleep 33.3 &); echo started", timeout: 60)
        #expect(Date().timeIntervalSince(start) < 4)
        #expect(try running("sleep 33.3"), "the started service was killed")
        _ = try CLI.shell("pkill -f 'sleep 33.3'", in: "/")
    }

    @Test func aMissingOptionalToolIsRecordedAndARequiredOneFails() throws {
        let missing = try CommandCapture.capture(name: "gpu_usage", command: "nvidia-smi-not-installed --query-gpu=index --format=csv", parse: "csv", output: nil, optional: true)
        #expect(missing.files.isEmpty)
        #expect(missing.details.note?.contains("not available") == true)
        #expect(throws: EngineError.self) {
            try CommandCapture.capture(name: "gpu_usage", command: "nvidia-smi-not-installed", parse: nil, output: nil, optional: false)
        }
        do {
            _ = try CommandCapture.capture(name: "probe", command: "echo broken >&2; exit 3", parse: nil, output: nil, optional: false)
            Issue.record("a failing command was accepted")
        } catch {
            #expect("\(error)" == "component probe: command exited 3: echo broken >&2; exit 3: broken")
        }
    }
}
