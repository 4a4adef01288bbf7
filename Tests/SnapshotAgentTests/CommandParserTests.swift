#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import SnapshotAgent
import SnapshotEngine
import SnapshotMQTT
import Testing
import TestSupport

@Suite struct CommandParserTests {
    let dir = TemporaryDirectory("snapshot-parser")

    func parser(allow: Set<String>? = nil, key: [UInt8]? = nil) -> CommandParser {
        CommandParser(settings: AgentSettings(
            id: "host1", groups: ["gpu"], prefix: "snapshots", allow: allow ?? Set(MQTTSection.actions), maxPayload: 1024,
            restoreRoots: [dir.path], hmacKey: key, broker: BrokerSettings(), ledgerPath: dir.sub("ledger.json")))
    }

    func route(_ p: CommandParser, _ topic: String, _ payload: String) -> Routing {
        p.route(MQTTMessage(topic: topic, payload: Array(payload.utf8), qos: 1))
    }

    func rejection(_ r: Routing) -> CommandError? {
        if case .reject(_, _, let e, _, _) = r { return e }
        return nil
    }

    @Test func createOverMQTTReadsOnlyConfiguredPaths() throws {
        var settings = parser().settings
        Fixture.write(dir.sub("configs/a.yaml"), [1])
        Fixture.write(dir.sub("extra/b"), [2])
        settings.createRoots = [dir.sub("configs"), dir.sub("extra")]
        let p = CommandParser(settings: settings)
        for outside in ["/etc", "/root/.ssh", dir.sub("configs/../../etc"), dir.path, "relative/configs"] {
            #expect(rejection(route(p, "snapshots/cmd/create", #"{"path": "\#(outside)"}"#))?.code == "unsafe_target", "\(outside)")
        }
        for inside in [dir.sub("configs"), dir.sub("configs/a.yaml"), dir.sub("extra")] {
            guard case .accept(let c) = route(p, "snapshots/cmd/create", #"{"path": "\#(inside)"}"#), case .create(let o) = c.work else {
                Issue.record("\(inside) was refused")
                continue
            }
            #expect(o.path.count == 1)
        }
        // Without paths, create captures the configured components: nothing to confine.
        guard case .accept = route(p, "snapshots/cmd/create", #"{"type": "system"}"#) else {
            Issue.record("a create without paths was refused")
            return
        }
    }

    @Test func duplicateFieldsAreRefused() {
        let p = parser()
        for payload in [#"{"type": 5, "type": "system"}"#, #"{"type": "system", "\u0074ype": "full"}"#, #"{"tag": ["a"], "name": "x", "tag": "b"}"#] {
            #expect(rejection(route(p, "snapshots/cmd/create", payload))?.message.contains("appears more than once") == true, "\(payload)")
        }
        // The same key in different objects is fine; so are keys inside strings.
        #expect(JSONKeys.firstDuplicate(in: Array(#"{"a": {"b": 1}, "c": {"b": 2}, "d": "\"a\": 1, \"a\""}"#.utf8)) == nil)
        guard case .accept = route(p, "snapshots/cmd/create", #"{"type": "system", "name": "type"}"#) else {
            Issue.record("a valid payload was refused")
            return
        }
    }

    @Test func onlyUTF8PayloadsAreAccepted() {
        let p = parser()
        let json = #"{"type":"system"}"#
        var utf16 = [UInt8]()
        for u in json.utf16 { utf16 += [UInt8(u & 0xff), UInt8(u >> 8)] }
        var utf32 = [UInt8]()
        for u in json.unicodeScalars { utf32 += [UInt8(u.value & 0xff), 0, 0, 0] }
        for (what, bytes) in [("UTF-16LE", utf16), ("UTF-16 with BOM", [0xFF, 0xFE] + utf16), ("UTF-32LE", utf32),
                              ("UTF-8 with BOM", [0xEF, 0xBB, 0xBF] + Array(json.utf8)), ("invalid UTF-8", [0x7B, 0xC3, 0x28, 0x7D])] {
            let r = p.route(MQTTMessage(topic: "snapshots/cmd/create", payload: bytes, qos: 1))
            #expect(rejection(r)?.code == "bad_payload", "\(what) was accepted")
        }
        guard case .accept = p.route(MQTTMessage(topic: "snapshots/cmd/create", payload: Array(json.utf8), qos: 1)) else {
            Issue.record("plain UTF-8 JSON was refused")
            return
        }
    }

    @Test func routingByBroadcastIdGroupAndAll() {
        let p = parser()
        for topic in ["snapshots/cmd/ping", "snapshots/cmd/host1/ping", "snapshots/cmd/gpu/ping", "snapshots/cmd/all/ping"] {
            guard case .accept(let c) = route(p, topic, "") else {
                Issue.record("\(topic) not accepted")
                continue
            }
            #expect(c.action == "ping")
        }
        for topic in ["snapshots/cmd/host2/ping", "snapshots/cmd/a/b/ping", "other/cmd/ping", "snapshots/status/host1/ping"] {
            guard case .ignore = route(p, topic, "") else {
                Issue.record("\(topic) not ignored")
                continue
            }
        }
    }

    @Test func payloadsDecodeIntoTheCLIOptionTypes() {
        var settings = parser().settings
        settings.createRoots = ["/a", "/b"]
        guard case .accept(let c) = route(CommandParser(settings: settings), "snapshots/cmd/create", #"{"type":"system","name":"pre-deployment","tag":"env=prod","path":["/a","/b"],"request_id":"r"}"#),
            case .create(let o) = c.work
        else {
            Issue.record("not accepted")
            return
        }
        #expect(o.type == .system && o.name == "pre-deployment" && o.tag == ["env=prod"] && o.path == ["/a", "/b"])
        #expect(c.requestID == "r")
        #expect(rejection(route(parser(), "snapshots/cmd/verify", #"{"all":true,"snapshot":"latest"}"#))?.code == "bad_payload")
        #expect(rejection(route(parser(), "snapshots/cmd/verify", #"{"read_data":"yes","all":true}"#))?.message.contains("read_data") == true)
        #expect(rejection(route(parser(), "snapshots/cmd/create", #"{"request_id":7}"#))?.message.contains("request_id") == true)
    }

    @Test func allowListAndRestoreTargetsAreEnforced() throws {
        let p = parser(allow: ["ping", "list"])
        #expect(rejection(route(p, "snapshots/cmd/create", "{}"))?.code == "not_allowed")
        let inside = dir.sub("restore-here")
        guard case .accept(let c) = route(parser(), "snapshots/cmd/restore", "{\"snapshot\":\"latest\",\"target\":\"\(inside)\"}"), case .restore(let o) = c.work else {
            Issue.record("restore inside root rejected")
            return
        }
        #expect(o.target?.hasSuffix("/restore-here") == true)
        #expect(rejection(route(parser(), "snapshots/cmd/restore", "{\"snapshot\":\"latest\",\"target\":\"\(dir.path)/../escape\"}"))?.code == "unsafe_target")
        #expect(rejection(route(parser(), "snapshots/cmd/restore", #"{"snapshot":"latest","target":"relative/dir"}"#))?.code == "unsafe_target")
        // A symlink inside the root that points outside does not make a way out.
        symlink("/etc", dir.sub("sneaky"))
        #expect(rejection(route(parser(), "snapshots/cmd/restore", "{\"snapshot\":\"latest\",\"target\":\"\(dir.sub("sneaky"))/x\"}"))?.code == "unsafe_target")
    }

    @Test func destructiveActionsNeedAValidSignatureWhenAKeyIsSet() {
        let key = Array("s3cret".utf8)
        let p = parser(key: key)
        let fields: [String: Any] = ["snapshot": "latest", "target": dir.sub("t"), "request_id": "r1"]
        let signature = CommandParser.sign(action: "restore", fields: fields, key: key)
        #expect(signature.count == 64)
        var signed = fields
        signed["signature"] = signature
        let good = String(decoding: try! JSONSerialization.data(withJSONObject: signed), as: UTF8.self)
        guard case .accept = route(p, "snapshots/cmd/restore", good) else {
            Issue.record("a correctly signed restore was rejected")
            return
        }
        #expect(rejection(route(p, "snapshots/cmd/restore", "{\"snapshot\":\"latest\",\"target\":\"\(dir.sub("t"))\"}"))?.code == "bad_signature")
        signed["snapshot"] = "system/latest"  // changed after signing
        let tampered = String(decoding: try! JSONSerialization.data(withJSONObject: signed), as: UTF8.self)
        #expect(rejection(route(p, "snapshots/cmd/restore", tampered))?.code == "bad_signature")
        // Non-destructive actions need none.
        guard case .accept = route(p, "snapshots/cmd/list", "{}") else {
            Issue.record("list needed a signature")
            return
        }
        // The signing text is documented in topics.md: action, newline, compact sorted JSON.
        #expect(String(decoding: CommandParser.signingText(action: "delete", fields: ["snapshot": "a/b", "request_id": "x", "signature": "zz"]), as: UTF8.self)
            == "delete\n{\"request_id\":\"x\",\"snapshot\":\"a/b\"}")
    }

    @Test func aV5SignatureUserPropertySignsTheRawPayloadWithinAReplayWindow() {
        let key = Array("s3cret".utf8)
        let p = parser(key: key)
        func send(_ payload: String, signature: String?) -> Routing {
            var m = MQTTMessage(topic: "snapshots/cmd/delete", payload: Array(payload.utf8), qos: 1)
            if let signature { m.userProperties = [MQTTUserProperty(name: "signature", value: signature)] }
            return p.route(m)
        }
        func sig(_ payload: String) -> String { CommandParser.hmacHex(Array(payload.utf8), key: key) }
        let now = Int(Date().timeIntervalSince1970)
        // Any byte layout: the raw payload is what is signed (spaces, key order and all).
        let body = "{ \"snapshot\": \"2026-01-01_00-00-00\",  \"ts\": \(now) }"
        guard case .accept = send(body, signature: sig(body)) else {
            Issue.record("a correctly signed delete was rejected: \(send(body, signature: sig(body)))")
            return
        }
        // Once only without a request_id: a replay is refused.
        #expect(rejection(send(body, signature: sig(body)))?.message.contains("replay") == true)
        // With a request_id a redelivery is let through (the ledger answers it, never runs it twice).
        let withID = "{\"snapshot\":\"x\",\"ts\":\(now),\"request_id\":\"r9\"}"
        guard case .accept = send(withID, signature: sig(withID)), case .accept = send(withID, signature: sig(withID)) else {
            Issue.record("a redelivered signed request was refused")
            return
        }
        let tampered = body.replacingOccurrences(of: "2026", with: "2025")
        #expect(rejection(send(tampered, signature: sig(body)))?.code == "bad_signature")
        let stale = "{\"snapshot\":\"x\",\"ts\":\(now - 301)}"
        #expect(rejection(send(stale, signature: sig(stale)))?.message.contains("from the agent's clock") == true)
        let future = "{\"snapshot\":\"x\",\"ts\":\(now + 301)}"
        #expect(rejection(send(future, signature: sig(future)))?.code == "bad_signature")
        let noTime = "{\"snapshot\":\"x\"}"
        #expect(rejection(send(noTime, signature: sig(noTime)))?.message.contains("needs \"ts\"") == true)
        #expect(rejection(send(noTime, signature: nil))?.code == "bad_signature")
    }
}
