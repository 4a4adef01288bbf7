#if canImport(Glibc)
import Glibc
#endif
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SnapshotCore
import SnapshotMQTT
import Testing
import TestSupport

/// One page of a real headless Chromium (Debian's `chromium`), driven through the DevTools
/// protocol by Tests/Fixtures/cdp_page.py.
final class BrowserPage: @unchecked Sendable {
    let process = Process()
    let input = Pipe(), output = Pipe()
    private var buffered: [UInt8] = []
    let profile = TemporaryDirectory("snapshot-chromium")

    init(url: String) throws {
        process.executableURL = URL(fileURLWithPath: CLI.projectRoot + "/.build/venv/bin/python3")
        process.arguments = [CLI.projectRoot + "/Tests/Fixtures/cdp_page.py", "/usr/bin/chromium", url, profile.path]
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let first = try line()
        guard first["value"] as? String == "ready" else { throw NSError(domain: "BrowserPage", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(first)"]) }
    }

    private func line() throws -> [String: Any] {
        while true {
            if let nl = buffered.firstIndex(of: 0x0a) {
                let l = Array(buffered[..<nl])
                buffered.removeSubrange(...nl)
                return (try? JSONSerialization.jsonObject(with: Data(l))) as? [String: Any] ?? ["error": String(decoding: l, as: UTF8.self)]
            }
            let d = output.fileHandleForReading.availableData
            guard !d.isEmpty else { throw NSError(domain: "BrowserPage", code: 2, userInfo: [NSLocalizedDescriptionKey: "the page driver ended"]) }
            buffered += d
        }
    }

    private func send(_ command: [String: Any]) throws -> [String: Any] {
        input.fileHandleForWriting.write(try JSONSerialization.data(withJSONObject: command) + Data([0x0a]))
        return try line()
    }

    /// The value of a JavaScript expression in the page.
    func eval(_ js: String) throws -> Any? { try send(["eval": js])["value"] }

    func screenshot(_ path: String) throws { _ = try send(["screenshot": path]) }

    /// Polls `js` until it is true (every 50 ms, up to `timeout` seconds): the page's DOM is
    /// the event waited for.
    func waitUntil(_ js: String, timeout: Double = 15) throws -> Bool {
        let end = Date().addingTimeInterval(timeout)
        repeat {
            if try eval(js) as? Bool == true { return true }
            usleep(50_000)
        } while Date() < end
        return false
    }

    func quit() {
        _ = try? send(["quit": true])
        process.waitUntilExit()
    }
}

@Suite(.serialized) struct DashboardTests {
    @Test func theBrowserShowsEveryAgentLiveWithProgressAndDeath() async throws {
        // Two agents on one broker; alpha's "slow" type takes a moment, so its progress shows.
        let alpha = try await AgentHarness(id: "alpha", extraConfig: "")
        defer { alpha.stop() }
        var config = try String(contentsOfFile: alpha.config, encoding: .utf8)
        config = config.replacingOccurrences(of: "components:\n  data: {path: data}\n", with: "components:\n  data: {path: data}\n  slow: {command: \"sleep 1.5; echo done\", output: slow.txt}\n")
        config = config.replacingOccurrences(of: "types:\n", with: "types:\n  slow: [slow, data]\n")
        try config.write(toFile: alpha.config, atomically: true, encoding: .utf8)
        for i in 0..<8 { Fixture.write(alpha.data + "/blob-\(i).bin", Fixture.bytes(4_000_000, seed: UInt64(i))) }
        let beta = try await AgentHarness(id: "beta", broker: alpha.broker)
        defer { beta.stop() }
        try await alpha.startAgent()
        try await beta.startAgent()

        let port = try TestBroker.freePortForTests()
        let dashboard = try ChildProcess(CLI.binary, ["--config", alpha.config, "dashboard", "--listen", "127.0.0.1:\(port)"], logFile: alpha.dir.sub("dashboard.log"))
        defer { dashboard.stop() }
        let up = Date().addingTimeInterval(15)
        while !TestBroker.canConnectForTests(port: port), dashboard.isRunning, Date() < up { usleep(20_000) }
        let page = try BrowserPage(url: "http://127.0.0.1:\(port)/")
        defer { page.quit() }

        // Every agent, online.
        #expect(try page.waitUntil("['alpha','beta'].every(a => document.querySelector(`[data-agent=${a}]`)?.dataset.availability === 'online')"),
                "\(((try? page.eval("document.body.innerText")) ?? nil) ?? "")")

        // A job's progress moving: the bar shows it, from its start to its end.
        try await alpha.send("snapshots/cmd/alpha/create", #"{"type": "slow", "request_id": "slow-1"}"#)
        #expect(try page.waitUntil("document.querySelector('[data-agent=alpha]')?.dataset.state === 'busy'"), "the card never said busy")
        #expect(await alpha.final("create", requestID: "slow-1")?["status"] as? String == "succeeded")
        #expect(try page.waitUntil("(document.querySelector('[data-agent=alpha]')?.dataset.progressHistory || '').split(',').map(Number).slice(-1)[0] === 100"))
        let history = (try page.eval("document.querySelector('[data-agent=alpha]').dataset.progressHistory") as? String ?? "").split(separator: ",").compactMap { Double($0) }
        #expect(history.count >= 2 && history.first! < history.last!, "progress seen: \(history)")
        try page.screenshot(alpha.dir.sub("dashboard.png"))

        // The buttons publish commands the agent runs (create is allowed by the default allow-list).
        // The type picked survives the redraws that every status message brings.
        _ = try page.eval("(() => { const s = document.querySelector('[data-agent=beta] select'); s.value = 'full'; s.dispatchEvent(new Event('change')); })()")
        _ = try page.eval("document.querySelector('[data-agent=beta] button[data-action=create]').click()")
        #expect(await beta.waitFor { _ in beta.responses("create").contains { ($0["request_id"] as? String ?? "").hasPrefix("dashboard-") && $0["status"] as? String == "succeeded" } },
                "\(beta.responses("create"))")
        // An action the dashboard does not offer is refused whoever asks.
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/api/command")!)
        request.httpMethod = "POST"
        request.httpBody = Data(#"{"agent": "beta", "action": "restore"}"#.utf8)
        let (_, refused) = try await URLSession.shared.data(for: request)
        #expect((refused as? HTTPURLResponse)?.statusCode == 403)

        // An agent that dies shows offline within 2 s.
        let killed = Date()
        #expect(beta.agent?.stop(SIGKILL, timeout: 5) != nil)
        #expect(try page.waitUntil("document.querySelector('[data-agent=beta]')?.dataset.availability === 'offline'", timeout: 2), "beta still shown \(((try? page.eval("document.querySelector('[data-agent=beta]')?.dataset.availability")) ?? nil) ?? "?")")
        #expect(Date().timeIntervalSince(killed) < 2.5)
        try page.screenshot(alpha.dir.sub("dashboard-offline.png"))
        if let keep = ProcessInfo.processInfo.environment["SNAPSHOT_KEEP_SCREENSHOTS"] {
            try? FileManager.default.copyItem(atPath: alpha.dir.sub("dashboard.png"), toPath: keep + "/dashboard.png")
            try? FileManager.default.copyItem(atPath: alpha.dir.sub("dashboard-offline.png"), toPath: keep + "/dashboard-offline.png")
        }
        #expect(alpha.agent?.stop(SIGTERM) == 0)
        #expect(try CLI.run(["--repo", alpha.repo, "verify", "--all"]).status == 0)
        #expect(try CLI.run(["--repo", beta.repo, "verify", "--all"]).status == 0)
    }
}
