#if canImport(Glibc)
import Glibc
#endif
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SnapshotCore
import Testing
import TestSupport

/// `metrics: {listen}`: the agent's Prometheus text exposition, read by Prometheus's own
/// parser (prometheus_client, from PyPI in .build/venv), and the Grafana dashboard that uses it.
@Suite(.serialized) struct AgentMetricsTests {
    /// An HTTP request to the agent; (status, body).
    func http(_ method: String, _ url: String) async throws -> (Int, String, String?) {
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        return (http.statusCode, String(decoding: data, as: UTF8.self), http.value(forHTTPHeaderField: "Content-Type"))
    }

    /// The families prometheus_client parses from `text`: name → (type, help, samples).
    func parse(_ text: String, in dir: TemporaryDirectory) throws -> [String: (type: String, help: String, samples: [(name: String, labels: [String: String], value: Double)])] {
        Fixture.write(dir.sub("scrape.txt"), Array(text.utf8))
        let script = """
            import json, sys
            from prometheus_client.parser import text_string_to_metric_families
            out = {}
            for f in text_string_to_metric_families(open(sys.argv[1]).read()):
                out[f.name] = {"type": f.type, "help": f.documentation, "samples": [[s.name, s.labels, s.value] for s in f.samples]}
            print(json.dumps(out))
            """
        Fixture.write(dir.sub("parse.py"), Array(script.utf8))
        let r = try CLI.capture(CLI.projectRoot + "/.build/venv/bin/python3", [dir.sub("parse.py"), dir.sub("scrape.txt")], in: dir.path, environment: [:])
        #expect(r.status == 0, "prometheus_client refused the exposition: \(r.stderr)")
        let json = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: [String: Any]] ?? [:]
        return json.mapValues { f in
            let samples = (f["samples"] as? [[Any]] ?? []).map { s in (s[0] as? String ?? "", s[1] as? [String: String] ?? [:], (s[2] as? NSNumber)?.doubleValue ?? .nan) }
            return (f["type"] as? String ?? "", f["help"] as? String ?? "", samples)
        }
    }

    @Test func theExpositionParsesAndSaysWhatTheAgentKnows() async throws {
        let port = try TestBroker.freePortForTests()
        let h = try await AgentHarness(extraConfig: "metrics: {listen: \"127.0.0.1:\(port)\"}\n")
        defer { h.stop() }
        try await h.startAgent()
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "full", "request_id": "m1"}"#)
        #expect(await h.final("create", requestID: "m1")?["status"] as? String == "succeeded")
        try await h.send("snapshots/cmd/\(h.id)/show", #"{"snapshot": "no-such", "request_id": "m2"}"#)
        #expect(await h.final("show", requestID: "m2")?["status"] as? String == "failed")

        let (status, body, type) = try await http("GET", "http://127.0.0.1:\(port)/metrics")
        #expect(status == 200 && type == "text/plain; version=0.0.4; charset=utf-8")
        let families = try parse(body, in: h.dir)
        let expected: [(String, String)] = [
            ("snapshot_snapshots", "gauge"), ("snapshot_last_success_timestamp_seconds", "gauge"), ("snapshot_repository_bytes", "gauge"),
            ("snapshot_logical_bytes", "gauge"), ("snapshot_job_duration_seconds", "histogram"), ("snapshot_jobs", "counter"),
            ("snapshot_alert_level", "gauge"), ("snapshot_queue_length", "gauge"), ("snapshot_busy", "gauge"), ("snapshot_mqtt_connected", "gauge"),
        ]
        for (name, kind) in expected {
            #expect(families[name]?.type == kind, "\(name): \(families[name].map { "\($0.type)" } ?? "missing")\n\(body)")
            #expect(families[name]?.help.isEmpty == false, "\(name) has no HELP")
        }
        func value(_ family: String, _ sample: String? = nil, _ labels: [String: String] = [:]) -> Double? {
            families[family]?.samples.first { s in s.name == (sample ?? family) && labels.allSatisfy { k, v in s.labels[k] == v } }?.value
        }
        #expect(value("snapshot_snapshots", nil, ["type": "full"]) == 1)
        #expect(value("snapshot_mqtt_connected") == 1)
        #expect(value("snapshot_queue_length") == 0)
        #expect((value("snapshot_repository_bytes") ?? 0) > 0)
        #expect((value("snapshot_logical_bytes") ?? 0) >= 6)
        let newest = value("snapshot_last_success_timestamp_seconds", nil, ["type": "full"]) ?? 0
        #expect(abs(newest - Date().timeIntervalSince1970) < 120)
        #expect(value("snapshot_job_duration_seconds", "snapshot_job_duration_seconds_count", ["action": "create"]) == 1)
        #expect(value("snapshot_jobs", "snapshot_jobs_total", ["action": "show", "status": "failed"]) == 1)
        #expect(value("snapshot_alert_level", nil, ["check": "snapshot_age"]) == 0)

        // Only GET/HEAD of /metrics.
        #expect(try await http("GET", "http://127.0.0.1:\(port)/").0 == 404)
        #expect(try await http("POST", "http://127.0.0.1:\(port)/metrics").0 == 405)
        #expect(try await http("HEAD", "http://127.0.0.1:\(port)/metrics").0 == 200)

        // Every metric the Grafana dashboard asks for is one the agent exposes.
        let dashboard = try #require(try JSONSerialization.jsonObject(with: Data(POSIX.readFile(CLI.projectRoot + "/dashboards/snapshot.json"))) as? [String: Any])
        let exprs = (dashboard["panels"] as? [[String: Any]] ?? []).flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
        #expect(exprs.count >= 9)
        let names = Set(families.values.flatMap { $0.samples.map(\.name) } + ["snapshot_replication_lag_seconds", "snapshot_replication_pending"])
        for expr in exprs {
            let used = expr.matches(of: /snapshot_[a-z_]+/).map { String($0.output) }
            #expect(!used.isEmpty && used.allSatisfy(names.contains), "\(expr) asks for a metric the agent does not expose")
        }
        #expect(h.agent?.stop(SIGTERM) == 0)
        #expect(try CLI.run(["--repo", h.repo, "verify", "--all"]).status == 0)
    }

    @Test func aTakenAddressIsOneLineInTheLogNotACrash() async throws {
        let port = try TestBroker.freePortForTests()
        let blocker = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(blocker) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = UInt16(port).bigEndian
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(blocker, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(blocker, 1)
        let h = try await AgentHarness(extraConfig: "metrics: {listen: \"127.0.0.1:\(port)\"}\n")
        defer { h.stop() }
        try await h.startAgent()
        #expect(await h.waitFor { _ in h.agentLog.contains("metrics: listen 127.0.0.1:\(port): Address already in use") }, "\(h.agentLog)")
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "full", "request_id": "m1"}"#)
        #expect(await h.final("create", requestID: "m1")?["status"] as? String == "succeeded")
        #expect(h.agent?.stop(SIGTERM) == 0)
    }
}
