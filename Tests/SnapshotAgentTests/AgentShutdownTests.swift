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
    func startAgent(_ dir: TemporaryDirectory, url: String) throws -> ChildProcess {
        Fixture.write(dir.sub("data/a.txt"), Array("hello\n".utf8))
        try """
            root: \(dir.path)
            repository: \(dir.path)/repo
            components:
              data: {path: data}
            types:
              full: [data]
            """.write(toFile: dir.sub("snapshots.yaml"), atomically: true, encoding: .utf8)
        let agent = try ChildProcess(CLI.binary, ["--config", dir.sub("snapshots.yaml"), "agent", "--id", "stopper", "--broker", url], logFile: dir.sub("agent.log"))
        let end = Date().addingTimeInterval(20)
        while Date() < end && agent.isRunning && !log(dir).contains("connecting to") { usleep(20_000) }
        #expect(log(dir).contains("connecting to"), "the agent did not start: \(log(dir))")
        return agent
    }

    func log(_ dir: TemporaryDirectory) -> String { (try? String(contentsOfFile: dir.sub("agent.log"), encoding: .utf8)) ?? "" }

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
        let agent = try startAgent(dir, url: "mqtt://127.0.0.1:\(try TestBroker.freePortForTests())")
        usleep(300_000)  // a few refused connects and back-offs
        expectPromptExit(agent, dir, "no broker")
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
