#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

/// SIGTERM ends the agent within 5 s whatever the broker does: never there, gone after a
/// connect, accepting TCP but never answering, or not even completing a TCP connect.
@Suite(.serialized) struct AgentShutdownTests {
    /// Starts the agent on `url` and waits until its log says it is connecting.
    func startAgent(_ dir: TemporaryDirectory, url: String, debug: Bool = false) throws -> ChildProcess {
        Fixture.write(dir.sub("data/a.txt"), Array("hello\n".utf8))
        try """
            root: \(dir.path)
            repository: \(dir.path)/repo
            components:
              data: {path: data}
            types:
              full: [data]
            """.write(toFile: dir.sub("snapshots.yaml"), atomically: true, encoding: .utf8)
        let agent = try ChildProcess(CLI.binary, ["--config", dir.sub("snapshots.yaml"), "agent", "--id", "stopper", "--broker", url] + (debug ? ["--debug"] : []), logFile: dir.sub("agent.log"))
        let end = Date().addingTimeInterval(20)
        while Date() < end && agent.isRunning && !log(dir).contains("connecting to") { usleep(20_000) }
        #expect(log(dir).contains("connecting to"), "the agent did not start: \(log(dir))")
        return agent
    }

    func log(_ dir: TemporaryDirectory) -> String { (try? String(contentsOfFile: dir.sub("agent.log"), encoding: .utf8)) ?? "" }

    /// Waits (up to 30 s) until the agent's log contains `text`.
    func waitForLog(_ dir: TemporaryDirectory, _ text: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let end = Date().addingTimeInterval(30)
        while Date() < end && !log(dir).contains(text) { usleep(20_000) }
        #expect(log(dir).contains(text), "no \"\(text)\" in the agent's log: \(log(dir))", sourceLocation: sourceLocation)
    }

    /// Sends SIGTERM and expects a clean exit (status 0) within 5 s.
    func expectPromptExit(_ agent: ChildProcess, _ dir: TemporaryDirectory, _ state: String) {
        let start = Date()
        kill(agent.pid, SIGTERM)
        let status = agent.wait(timeout: 5)
        let seconds = Date().timeIntervalSince(start)
        #expect(status == 0, "\(state): the agent did not exit within 5 s of SIGTERM (\(String(format: "%.1f", seconds)) s): \(log(dir))")
        #expect(log(dir).contains("stopped"), "\(state): \(log(dir))")
    }

    @Test func noBrokerAtAll() throws {
        let dir = TemporaryDirectory("snapshot-stop")
        let agent = try startAgent(dir, url: "mqtt://127.0.0.1:\(try TestBroker.freePortForTests())", debug: true)
        waitForLog(dir, "(attempt 3)")  // a few refused connects and back-offs
        expectPromptExit(agent, dir, "no broker")
    }

    /// A broker that is down is one warning, not one per attempt; when it comes up the
    /// agent says after how many.
    @Test func aBrokerDownIsOneWarningAndItsReturnIsNoted() throws {
        let broker = try TestBroker()
        broker.stop()
        let dir = TemporaryDirectory("snapshot-stop")
        let agent = try startAgent(dir, url: broker.url, debug: true)
        waitForLog(dir, "(attempt 3)")
        try broker.start()
        waitForLog(dir, "connected to \(broker.url) after ")
        let warnings = log(dir).split(separator: "\n").filter { $0.contains("warning") && $0.contains("cannot connect to \(broker.url)") }
        #expect(warnings.count == 1 && warnings[0].contains("Connection refused"), "\(log(dir))")
        let failed = log(dir).components(separatedBy: "connected to \(broker.url) after ").last?.prefix(while: \.isNumber)
        #expect((Int(failed ?? "") ?? 0) >= 3, "\(log(dir))")
        #expect(!log(dir).contains("(14)"), "\(log(dir))")
        expectPromptExit(agent, dir, "broker back")
        broker.stop()
    }

    /// A broker that refuses the agent's credentials says why (MQTT 5 reason text), once.
    @Test func refusedCredentialsAreNamedOnce() throws {
        let dir = TemporaryDirectory("snapshot-stop")
        let made = try CLI.shell("mosquitto_passwd -b -c passwd someone else", in: dir.path)
        #expect(made.status == 0, "\(made.stderr)")
        let broker = try TestBroker(listenerOptions: ["password_file \(dir.sub("passwd"))"])
        let agent = try startAgent(dir, url: broker.url, debug: true)
        waitForLog(dir, "(attempt 3)")
        let warnings = log(dir).split(separator: "\n").filter { $0.contains("warning") && $0.contains("cannot connect to") }
        #expect(warnings.count == 1 && warnings[0].contains("Not authorized"), "\(log(dir))")
        expectPromptExit(agent, dir, "refused")
        broker.stop()
    }

    @Test func theBrokerWentAwayAfterAConnect() async throws {
        let broker = try TestBroker()
        let h = try await AgentHarness(broker: broker)
        try await h.startAgent()
        let agent = try #require(h.agent)
        broker.stop()
        #expect(await h.waitFor { _ in h.agentLog.contains("disconnected from") })
        expectPromptExit(agent, h.dir, "broker gone")
        h.stop()
    }

    @Test func aBrokerThatAcceptsButNeverAnswers() throws {
        let silent = try StalledListener(.silent)
        let dir = TemporaryDirectory("snapshot-stop")
        let agent = try startAgent(dir, url: silent.url)
        usleep(300_000)
        expectPromptExit(agent, dir, "silent broker")
    }

    @Test func aConnectThatNeverCompletes() throws {
        let hanging = try StalledListener(.connectHangs)
        let dir = TemporaryDirectory("snapshot-stop")
        let agent = try startAgent(dir, url: hanging.url)
        usleep(300_000)
        expectPromptExit(agent, dir, "connect hangs")
    }
}
