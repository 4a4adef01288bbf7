#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotMQTT
import Testing
import TestSupport

@Suite(.serialized) struct AgentTests {
    @Test func badCommandsAreRejectedWithAReasonAndTheAgentKeepsServing() async throws {
        let h = try await AgentHarness()
        defer { h.stop() }
        try await h.startAgent()
        let base = "snapshots/cmd/\(h.id)"
        try await h.send("\(base)/create", "{not json")
        try await h.send("\(base)/create", "[1,2]")
        try await h.send("\(base)/create", #"{"type": 5, "request_id": "wrong-type"}"#)
        try await h.send("\(base)/create", #"{"typ": "system", "request_id": "unknown-field"}"#)
        try await h.send("\(base)/create", #"{"type": "weekly", "request_id": "bad-value"}"#)
        try await h.send("\(base)/explode", #"{"request_id": "unknown-action"}"#)
        try await h.send("\(base)/create", "{\"name\": \"" + String(repeating: "x", count: 70_000) + "\"}")
        try await h.send("\(base)/restore", #"{"snapshot": "latest", "target": "/etc", "request_id": "outside"}"#)
        try await h.send("\(base)/delete", #"{"snapshot": "no-such-snapshot", "request_id": "later"}"#)
        try await h.send("snapshots/cmd/other-agent/create", #"{"request_id": "not-for-us"}"#)
        try await h.send("snapshots/cmd/backup-group/ping", #"{"request_id": "via-group"}"#)
        try await h.send("snapshots/cmd/all/ping", #"{"request_id": "via-all"}"#)
        try await h.send("snapshots/cmd/ping", #"{"request_id": "broadcast"}"#)
        let done = await h.waitFor { _ in h.responses("ping").filter { $0["status"] as? String == "succeeded" }.count == 3 }
        #expect(done, "pings after bad input: \(h.agentLog)")
        let creates = h.responses("create")
        #expect(creates.allSatisfy { $0["status"] as? String == "rejected" })
        func error(_ rid: String, in list: [[String: Any]]) -> [String: Any]? {
            list.first { $0["request_id"] as? String == rid }?["error"] as? [String: Any]
        }
        #expect(creates.count == 6)
        #expect(creates.contains { ($0["error"] as? [String: Any])?["message"] as? String == "payload is not valid JSON" })
        #expect(creates.contains { ($0["error"] as? [String: Any])?["message"] as? String == "payload must be a JSON object" })
        #expect(creates.contains { ($0["error"] as? [String: Any])?["code"] as? String == "payload_too_large" })
        #expect((error("wrong-type", in: creates)?["message"] as? String)?.contains("\"type\" has the wrong type") == true)
        #expect((error("unknown-field", in: creates)?["message"] as? String)?.hasPrefix("unknown field \"typ\"") == true)
        #expect((error("bad-value", in: creates)?["message"] as? String)?.contains("weekly") == true)
        #expect(error("unknown-action", in: h.responses("unknown"))?["code"] as? String == "unknown_action")
        #expect(error("outside", in: h.responses("restore"))?["code"] as? String == "unsafe_target")
        let missing = await h.final("delete", requestID: "later")
        #expect((missing?["error"] as? [String: Any])?["code"] as? String == "not_found")
        #expect(!h.all.contains { $0.payloadString.contains("not-for-us") })
        #expect(h.agent?.isRunning == true)
    }

    @Test func aCreateRunsOnceForARepeatedRequestIDAlsoAcrossARestart() async throws {
        let h = try await AgentHarness()
        defer { h.stop() }
        try await h.startAgent()
        let cmd = "snapshots/cmd/\(h.id)/create"
        try await h.send(cmd, #"{"type": "data", "name": "once", "request_id": "r-1"}"#, responseTopic: "reply/one", correlation: [9, 9])
        let first = await h.final("create", requestID: "r-1")
        #expect(first?["status"] as? String == "succeeded", "\(h.agentLog)")
        try await h.send(cmd, #"{"type": "data", "name": "once", "request_id": "r-1"}"#)
        await h.waitFor { _ in h.responses("create").filter { $0["request_id"] as? String == "r-1" && $0["status"] as? String == "succeeded" }.count == 2 }
        // Exactly one reply on the v5 response topic, with the correlation data.
        let replies = h.messages(on: "reply/one")
        #expect(replies.count == 1)
        #expect(replies.first?.correlationData == [9, 9])
        h.agent?.stop(SIGTERM)
        try await h.startAgent()
        try await h.send(cmd, #"{"type": "data", "name": "once", "request_id": "r-1"}"#)
        await h.waitFor { _ in h.responses("create").filter { $0["request_id"] as? String == "r-1" && $0["status"] as? String == "succeeded" }.count == 3 }
        let list = try CLI.run(["--repo", h.repo, "list", "--json"])
        let snapshots = try #require(try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as? [Any])
        #expect(snapshots.count == 1, "the command ran more than once")
        #expect(try CLI.run(["--repo", h.repo, "verify", "--all", "--read-data"]).status == 0)
    }

    @Test func theAgentOpensAnEncryptedRepositoryWithThePasswordItReadAtStart() async throws {
        let h = try await AgentHarness()
        defer { h.stop() }
        let password = h.dir.sub("repo.pass")
        Fixture.write(password, Array("agent secret\n".utf8), mode: 0o600)
        #expect(try CLI.run(["--config", h.config, "--password-file", password, "init", "--encryption", "aes-256-gcm"]).status == 0)
        try await h.startAgent(environment: ["SNAPSHOT_PASSWORD_FILE": password])
        // Read once at start: rotating the file later does not lock the running agent out.
        Fixture.write(password, Array("rotated\n".utf8), mode: 0o600)
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "data", "request_id": "sealed"}"#)
        let reply = await h.final("create", requestID: "sealed")
        #expect(reply?["status"] as? String == "succeeded", "\(reply ?? [:]) \(h.agentLog)")
        Fixture.write(password, Array("agent secret\n".utf8), mode: 0o600)
        #expect(try CLI.run(["--config", h.config, "--password-file", password, "verify", "--all", "--read-data"]).status == 0)
        #expect(try CLI.run(["--config", h.config, "list"]).status == 77)
    }

    /// The ACL topics.md documents, exactly as written there, on a real mosquitto: the agent
    /// and an operator get their work done; a dashboard and the agent's own account cannot
    /// send commands.
    @Test func theDocumentedACLConfinesAgentOperatorAndDashboard() async throws {
        let doc = String(decoding: try POSIX.readFile(CLI.projectRoot + "/topics.md"), as: UTF8.self)
        let section = try #require(doc.components(separatedBy: "## A mosquitto ACL").dropFirst().first)
        let acl = try #require(section.components(separatedBy: "```").dropFirst().first).trimmingCharacters(in: .newlines)
        let dir = TemporaryDirectory("snapshot-acl")
        Fixture.write(dir.sub("acl"), Array((acl + "\n").utf8))
        let made = try CLI.shell("mosquitto_passwd -b -c passwd snapshot-agent agent-pw && mosquitto_passwd -b passwd operator op-pw && mosquitto_passwd -b passwd dashboard dash-pw", in: dir.path)
        #expect(made.status == 0, "\(made.stderr)")
        let broker = try TestBroker(listenerOptions: ["password_file \(dir.sub("passwd"))", "acl_file \(dir.sub("acl"))"])
        Fixture.write(dir.sub("agent.pass"), Array("agent-pw\n".utf8), mode: 0o600)
        Fixture.write(dir.sub("data/a.txt"), Array("hello\n".utf8))
        Fixture.write(dir.sub("snapshots.yaml"), Array("""
            root: \(dir.path)
            repository: \(dir.sub("repo"))
            components:
              data: {path: data}
            types:
              data: [data]
            mqtt:
              broker: \(broker.url)
              username: snapshot-agent
              password_file: \(dir.sub("agent.pass"))

            """.utf8))
        let agent = try ChildProcess(CLI.binary, ["--config", dir.sub("snapshots.yaml"), "agent", "--id", "host1"], logFile: dir.sub("agent.log"))
        defer { agent.stop() }
        func mqtt(_ command: String) throws -> CLI.Result { try CLI.shell(command + " -h 127.0.0.1 -p \(broker.port)", in: dir.path) }
        let online = try mqtt("mosquitto_sub -V 5 -u dashboard -P dash-pw -t snapshots/status/host1/availability -C 1 -W 20")
        #expect(online.stdout.contains("online"), "\(online.stderr) \(agent.isRunning) \((try? String(contentsOfFile: dir.sub("agent.log"), encoding: .utf8)) ?? "")")
        // The operator sends a command and gets its final reply on its own reply topic.
        let reply = try mqtt(#"mosquitto_rr -V 5 -u operator -P op-pw -t snapshots/cmd/host1/create -e reply/op -m '{"type":"data","request_id":"acl-1"}' -W 60"#)
        #expect(reply.stdout.contains("\"succeeded\""), "\(reply.stdout) \(reply.stderr)")
        // The dashboard and the agent's own account may not send commands: the broker says so.
        let dashboard = try mqtt(#"mosquitto_pub -V 5 -q 1 -u dashboard -P dash-pw -t snapshots/cmd/host1/delete -m '{"snapshot":"latest"}'"#)
        #expect(dashboard.stderr.contains("Not authorized"), "\(dashboard.stderr)")
        let asAgent = try mqtt(#"mosquitto_pub -V 5 -q 1 -u snapshot-agent -P agent-pw -t snapshots/cmd/host1/delete -m '{"snapshot":"latest"}'"#)
        #expect(asAgent.stderr.contains("Not authorized"), "\(asAgent.stderr)")
        let list = try #require(try JSONSerialization.jsonObject(with: Data(try CLI.run(["--config", dir.sub("snapshots.yaml"), "list", "--json"]).stdout.utf8)) as? [Any])
        #expect(list.count == 1)
        #expect(try CLI.run(["--config", dir.sub("snapshots.yaml"), "verify", "--all", "--read-data"]).status == 0)
    }

    @Test func outsideTextCannotForgeLogLines() async throws {
        let h = try await AgentHarness()
        defer { h.stop() }
        try await h.startAgent()
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "x\n2026-01-01T00:00:00+0000 critical FORGED", "request_id": "forge"}"#)
        #expect(await h.final("create", requestID: "forge")?["status"] as? String == "rejected")
        #expect(await h.waitFor { _ in h.agentLog.contains("FORGED") })
        let lines = h.agentLog.split(separator: "\n")
        #expect(!lines.contains { $0.hasPrefix("2026-01-01T00:00:00+0000 critical FORGED") }, "\(h.agentLog)")
        #expect(lines.contains { $0.contains(#"x\n2026-01-01T00:00:00+0000 critical FORGED"#) })
    }

    @Test func aRedeliveryOfAQueuedCommandGetsItsOwnFinalReply() async throws {
        let h = try await AgentHarness()
        defer { h.stop() }
        for i in 0..<20 { Fixture.write(h.data + "/big\(i).bin", Fixture.bytes(2_000_000, seed: UInt64(100 + i))) }
        try await h.startAgent()
        // A job ahead of it keeps the command queued while it is delivered again.
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "data", "request_id": "ahead"}"#)
        let command = #"{"type": "data", "request_id": "twice"}"#
        try await h.send("snapshots/cmd/\(h.id)/create", command, responseTopic: "reply/first", correlation: [1])
        try await h.send("snapshots/cmd/\(h.id)/create", command, responseTopic: "reply/second", correlation: [2])
        #expect(await h.final("create", requestID: "twice", timeout: 60)?["status"] as? String == "succeeded", "\(h.agentLog)")
        #expect(await h.waitFor { _ in !h.messages(on: "reply/first").isEmpty && !h.messages(on: "reply/second").isEmpty }, "\(h.agentLog)")
        #expect(h.messages(on: "reply/first").map(\.correlationData) == [[1]])
        #expect(h.messages(on: "reply/second").map(\.correlationData) == [[2]])
        let twice = h.responses("create").filter { $0["request_id"] as? String == "twice" }
        #expect(twice.filter { $0["status"] as? String == "succeeded" }.count == 1, "it ran more than once")
        #expect(twice.contains { ($0["result"] as? [String: Any])?["duplicate"] as? Bool == true })
        #expect(try CLI.run(["--repo", h.repo, "verify", "--all", "--read-data"]).status == 0)
    }

    @Test func aTypeOfOnesOwnOverMQTT() async throws {
        let h = try await AgentHarness()
        defer { h.stop() }
        try await h.startAgent()
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "nightly", "request_id": "n-1"}"#)
        let created = await h.final("create", requestID: "n-1")
        #expect(created?["status"] as? String == "succeeded", "\(h.agentLog)")
        #expect((created?["result"] as? [String: Any])?["type"] as? String == "nightly")
        try await h.send("snapshots/cmd/\(h.id)/list", #"{"type": "nightly", "request_id": "n-2"}"#)
        let listed = await h.final("list", requestID: "n-2")
        #expect((listed?["result"] as? [[String: Any]])?.count == 1)
        // The retained state reports the type's last outcome under its own name.
        #expect(await h.waitFor { _ in
            (h.documents(on: "snapshots/status/\(h.id)/state").last?["last"] as? [String: Any])?["nightly"] != nil
        })
        // A type the config does not define is refused at once, naming it.
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "weekly", "request_id": "n-3"}"#)
        let refused = await h.final("create", requestID: "n-3")
        #expect(refused?["status"] as? String == "rejected")
        #expect(((refused?["error"] as? [String: Any])?["message"] as? String)?.contains("unknown snapshot type \"weekly\"") == true)
        #expect(try CLI.run(["--repo", h.repo, "verify", "--all", "--read-data"]).status == 0)
    }

    @Test func lastWillOnKillAndOnlineAgainAfterRestart() async throws {
        let h = try await AgentHarness()
        defer { h.stop() }
        try await h.startAgent()
        h.agent?.stop(SIGKILL)
        let offline = await h.waitFor(timeout: 10) { _ in h.messages(on: "snapshots/status/\(h.id)/availability").last?.payloadString == "offline" }
        #expect(offline, "the broker did not publish the last will")
        try await h.startAgent()
        #expect(h.messages(on: "snapshots/status/\(h.id)/availability").last?.payloadString == "online")
        // A clean stop publishes offline itself.
        h.agent?.stop(SIGTERM)
        #expect(h.agent?.wait(timeout: 5) == 0)
        #expect(await h.waitFor(timeout: 5) { _ in h.messages(on: "snapshots/status/\(h.id)/availability").last?.payloadString == "offline" })
    }

    @Test func aBrokerRestartMidJobLosesNothing() async throws {
        let h = try await AgentHarness()
        defer { h.stop() }
        for i in 0..<40 { Fixture.write(h.data + "/big\(i).bin", Fixture.bytes(2_000_000, seed: UInt64(i))) }
        try await h.startAgent()
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "data", "request_id": "mid-job"}"#)
        await h.waitFor { _ in h.responses("create").contains { $0["status"] as? String == "accepted" } }
        h.broker.stop()
        try await Task.sleep(nanoseconds: 300_000_000)
        try h.broker.start()
        let final = await h.final("create", requestID: "mid-job", timeout: 60)
        #expect(final?["status"] as? String == "succeeded", "\(h.agentLog)")
        // Retained state was republished to the fresh broker: a new subscriber sees it.
        let probe = try MQTTClient(options: MQTTOptions(port: h.broker.port, clientID: "probe", reconnectDelay: (0.05, 0.3)))
        let seen = ProbeInbox(probe)
        probe.subscribe("snapshots/status/\(h.id)/#")
        probe.start()
        defer { probe.stop() }
        let republished = await seen.wait { topics in
            topics.contains("snapshots/status/\(h.id)/availability") && topics.contains("snapshots/status/\(h.id)/state") && topics.contains("snapshots/status/\(h.id)/metrics")
        }
        #expect(republished)
        // And commands still work.
        try await h.send("snapshots/cmd/\(h.id)/ping", #"{"request_id": "after-restart"}"#)
        #expect(await h.final("ping", requestID: "after-restart")?["status"] as? String == "succeeded")
        #expect(try CLI.run(["--repo", h.repo, "verify", "--all"]).status == 0)
    }

    @Test func aBurstOfFiftyIsAnsweredInOrderAndACancelStopsAQueuedJob() async throws {
        let h = try await AgentHarness()
        defer { h.stop() }
        try await h.startAgent()
        for i in 0..<50 {
            try await h.send("snapshots/cmd/\(h.id)/list", "{\"request_id\": \"b-\(i)\"}")
        }
        let all = await h.waitFor(timeout: 60) { _ in h.responses("list").filter { $0["status"] as? String == "succeeded" }.count == 50 }
        #expect(all, "answered \(h.responses("list").filter { $0["status"] as? String == "succeeded" }.count) of 50")
        let order = h.responses("list").filter { $0["status"] as? String == "succeeded" }.compactMap { $0["request_id"] as? String }
        #expect(order == (0..<50).map { "b-\($0)" })
        // Queue a slow create and a create behind it; cancel the second while it waits.
        for i in 0..<30 { Fixture.write(h.data + "/big\(i).bin", Fixture.bytes(2_000_000, seed: UInt64(100 + i))) }
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "data", "request_id": "slow"}"#)
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "data", "request_id": "victim"}"#)
        await h.waitFor { _ in h.responses("create").contains { $0["request_id"] as? String == "victim" && $0["status"] as? String == "accepted" } }
        let victim = try #require(h.responses("create").first { $0["request_id"] as? String == "victim" }?["job_id"] as? String)
        try await h.send("snapshots/cmd/\(h.id)/cancel", "{\"job_id\": \"\(victim)\", \"request_id\": \"c\"}")
        #expect(await h.final("create", requestID: "victim")?["status"] as? String == "cancelled")
        #expect(await h.final("create", requestID: "slow", timeout: 60)?["status"] as? String == "succeeded")
        #expect(await h.final("cancel", requestID: "c")?["status"] as? String == "succeeded")
        let states = h.documents(on: "snapshots/status/\(h.id)/state")
        #expect(states.contains { $0["state"] as? String == "busy" && $0["queue"] as? Int == 1 })
        #expect(states.last?["state"] as? String == "idle")
        let progress = h.documents(on: "snapshots/status/\(h.id)/progress")
        #expect(progress.contains { $0["percent"] as? Double == 100 || $0["percent"] as? Int == 100 })
        #expect(try CLI.run(["--repo", h.repo, "verify", "--all"]).status == 0)
    }
}

@Suite(.serialized) struct AgentAlertTests {
    @Test func anAgeAlertIsRaisedRetainedAndClearedByAFreshSnapshot() async throws {
        let h = try await AgentHarness()
        defer { h.stop() }
        // The newest snapshot is 30 hours old: over the 24 h warning threshold.
        let old = Timestamp(seconds: Int64(Date().timeIntervalSince1970) - 30 * 3600).iso8601
        let created = try CLI.run(["--config", h.config, "create", "--type", "data", "--time", old, "--quiet"])
        #expect(created.status == 0, "\(created.stderr)")
        try await h.startAgent()
        let topic = "snapshots/status/\(h.id)/alerts/snapshot_age"
        let raised = await h.waitFor { _ in h.documents(on: topic).last?["level"] as? String == "warning" }
        #expect(raised, "\(h.documents(on: topic)) \(h.agentLog)")
        let alert = try #require(h.documents(on: topic).last)
        #expect(Set(alert.keys) == ["level", "value", "threshold", "message", "since"])
        #expect((alert["message"] as? String)?.contains("data 30.0h ago") == true)
        // A new snapshot clears it: the retained alert becomes ok.
        try await h.send("snapshots/cmd/\(h.id)/create", #"{"type": "data", "request_id": "fresh"}"#)
        #expect(await h.final("create", requestID: "fresh")?["status"] as? String == "succeeded")
        let cleared = await h.waitFor { _ in h.documents(on: topic).last?["level"] as? String == "ok" }
        #expect(cleared)
        // A late subscriber sees the retained ok.
        let probe = try MQTTClient(options: MQTTOptions(port: h.broker.port, clientID: "late", reconnectDelay: (0.05, 0.3)))
        let seen = ProbeInbox(probe)
        probe.subscribe(topic)
        probe.start()
        defer { probe.stop() }
        #expect(await seen.wait { $0.contains(topic) })
        // monitor and prune over MQTT answer with the CLI's JSON.
        try await h.send("snapshots/cmd/\(h.id)/monitor", #"{"check_age": true, "request_id": "m"}"#)
        let monitor = await h.final("monitor", requestID: "m")
        #expect((monitor?["result"] as? [String: Any])?["level"] as? String == "ok")
        try await h.send("snapshots/cmd/\(h.id)/prune", #"{"dry_run": true, "request_id": "p"}"#)
        let prune = await h.final("prune", requestID: "p")
        #expect(((prune?["result"] as? [String: Any])?["keep"] as? [Any])?.count == 2)
        #expect(try CLI.run(["--repo", h.repo, "verify", "--all"]).status == 0)
    }
}


final class ProbeInbox: @unchecked Sendable {
    private let lock = NSLock()
    private var topics = Set<String>()
    private var task: Task<Void, Never>?

    init(_ client: MQTTClient) {
        task = Task { [weak self] in
            for await m in client.messages {
                guard let self else { break }
                self.lock.withLock { _ = self.topics.insert(m.topic) }
            }
        }
    }

    func wait(timeout: Double = 10, _ predicate: (Set<String>) -> Bool) async -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if predicate(lock.withLock { topics }) { return true }
            try? await Task.sleep(nanoseconds: 20_000_000)
        }
        return false
    }

    deinit { task?.cancel() }
}

@Suite(.serialized) struct AgentTLSTests {
    static func sh(_ command: String, in dir: String) -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        p.currentDirectoryURL = URL(fileURLWithPath: dir)
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try? p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }

    @Test func theAgentTalksTLSWithAPasswordAndSurvivesAWrongOne() async throws {
        let certs = TemporaryDirectory("snapshot-tls")
        let made = Self.sh("""
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=snapshot-test-ca &&
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 &&
            printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext &&
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext &&
            mosquitto_passwd -b -c passwd agent s3cret
            """, in: certs.path)
        #expect(made == 0)
        let broker = try TestBroker(listenerOptions: [
            "cafile \(certs.sub("ca.crt"))", "certfile \(certs.sub("server.crt"))", "keyfile \(certs.sub("server.key"))",
            "password_file \(certs.sub("passwd"))",
        ])
        Fixture.write(certs.sub("password"), Array("s3cret\n".utf8), mode: 0o600)
        Fixture.write(certs.sub("wrong"), Array("nope\n".utf8), mode: 0o600)
        Fixture.write(certs.sub("open"), Array("s3cret\n".utf8), mode: 0o644)
        func config(_ passwordFile: String) -> String {
            "  broker: mqtts://127.0.0.1:\(broker.port)\n  username: agent\n  password_file: \(passwordFile)\n  tls: {ca: \(certs.sub("ca.crt"))}"
        }
        // The operator client of the harness cannot log in here; watch through a TLS client of our own.
        let watcher = try MQTTClient(options: MQTTOptions(port: broker.port, clientID: "tls-watcher", username: "agent", password: "s3cret",
                                                          tls: MQTTTLS(caFile: certs.sub("ca.crt")), reconnectDelay: (0.05, 0.3)))
        let seen = ProbeInbox(watcher)
        watcher.subscribe("snapshots/status/tls-agent/#")
        watcher.start()
        defer { watcher.stop() }
        try await watcher.waitUntilConnected()

        let dir = TemporaryDirectory("snapshot-tls-agent")
        Fixture.write(dir.sub("data/a"), [1])
        for (name, password) in [("good.yaml", certs.sub("password")), ("bad.yaml", certs.sub("wrong")), ("open.yaml", certs.sub("open"))] {
            Fixture.write(dir.sub(name), Array("""
                root: \(dir.path)
                repository: \(dir.sub("repo"))
                components:
                  data: {path: data}
                types:
                  full: [data]
                mqtt:
                \(config(password).replacingOccurrences(of: "\n", with: "\n"))

                """.utf8))
        }
        // A password file that group or others can read is refused, as ssh refuses such keys.
        let open = try ChildProcess(CLI.binary, ["--config", dir.sub("open.yaml"), "agent", "--id", "tls-agent"], logFile: dir.sub("open.log"))
        let openStatus = open.wait(timeout: 20)
        #expect(openStatus == 77, "\(String(describing: openStatus))")
        let openLog = (try? String(contentsOfFile: dir.sub("open.log"), encoding: .utf8)) ?? ""
        #expect(openLog.contains("mqtt.password_file may be opened by group or others (mode 644); chmod 600 it first"), "\(openLog)")
        // A wrong password: refused, retried, and the process keeps running.
        let bad = try ChildProcess(CLI.binary, ["--config", dir.sub("bad.yaml"), "agent", "--id", "tls-agent"], logFile: dir.sub("bad.log"))
        try await Task.sleep(nanoseconds: 1_500_000_000)
        #expect(bad.isRunning)
        let log = (try? String(contentsOfFile: dir.sub("bad.log"), encoding: .utf8)) ?? ""
        #expect(log.contains("disconnected") || log.contains("refused"), "\(log)")
        bad.stop()
        // The right one: online over TLS.
        let good = try ChildProcess(CLI.binary, ["--config", dir.sub("good.yaml"), "agent", "--id", "tls-agent"], logFile: dir.sub("good.log"))
        defer { good.stop() }
        let online = await seen.wait(timeout: 20) { $0.contains("snapshots/status/tls-agent/availability") && $0.contains("snapshots/status/tls-agent/state") }
        #expect(online, "\((try? String(contentsOfFile: dir.sub("good.log"), encoding: .utf8)) ?? "")")
    }
}
