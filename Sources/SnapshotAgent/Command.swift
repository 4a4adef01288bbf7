import COpenSSL
import Foundation
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT
import Synchronization

/// A command addressed to this agent, decoded and validated.
public struct Command: Sendable {
    public enum Work: Sendable {
        case create(CreateOptions)
        case verify(VerifyOptions)
        case restore(RestoreOptions)
        case list(ListOptions)
        case show(ShowOptions)
        case testRecovery(TestRecoveryOptions)
        case recover(RecoverOptions)
        case prune(PruneOptions)
        case delete(DeleteOptions)
        case monitor(MonitorOptions)
        /// A `schedule:` entry: an `--auto` create of the type, then retention for it.
        case scheduled(type: SnapshotType)
        case ping
        case cancel(jobID: String)
    }

    public var action: String
    public var requestID: String?
    public var work: Work
    public var responseTopic: String?
    public var correlationData: [UInt8]?
}

/// `cancel`'s payload: the job to stop.
struct CancelOptions: OperationOptions {
    var jobID: String

    enum CodingKeys: String, CodingKey, CaseIterable {
        case jobID = "job_id"
    }
    static var fieldNames: [String] { CodingKeys.allCases.map(\.stringValue) }

    func validate() throws {
        guard !jobID.isEmpty else { throw EngineError.usage("cancel needs \"job_id\" (a job id from an accepted response)") }
    }
}

/// Why a command was refused before any work started: `{"code","message"}` in the response.
public struct CommandError: Error, Sendable, Equatable, Codable {
    public var code: String
    public var message: String

    public init(_ code: String, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// What to do with one message on `<prefix>/cmd/#`.
public enum Routing: Sendable {
    /// Addressed to another agent or group: stay silent.
    case ignore
    /// Addressed to us but refused; `action` is what the topic named (maybe unknown).
    case reject(action: String, requestID: String?, error: CommandError, responseTopic: String?, correlationData: [UInt8]?)
    case accept(Command)
}

/// Turns MQTT messages into commands: topic routing (broadcast, agent id, group, `all`),
/// size and allow-list checks, strict payload decoding into the CLI's option types, HMAC
/// signatures for destructive actions, and restore-target confinement.
public struct CommandParser: Sendable {
    public let settings: AgentSettings
    /// Signatures (user property) seen in the replay window, with when they were seen.
    let seenSignatures = SeenSignatures()

    public init(settings: AgentSettings) {
        self.settings = settings
    }

    /// How far a signed command's `"ts"` may be from the agent's clock, either way.
    public static let replayWindow: Double = 300

    final class SeenSignatures: Sendable {
        private let seen = Mutex<[String: Double]>([:])

        /// Records `signature` at `now`; false when it was already seen in the window.
        func insert(_ signature: String, now: Double) -> Bool {
            seen.withLock { s in
                s = s.filter { now - $0.value <= CommandParser.replayWindow }
                return s.updateValue(now, forKey: signature) == nil
            }
        }
    }

    /// How one action's payload becomes work: the fields it accepts (besides `request_id`
    /// and `signature`) and the decoding, validation and checks that turn it into a job.
    struct Action: Sendable {
        let fields: Set<String>
        let decode: @Sendable (Data, CommandParser) throws -> Command.Work

        /// An action whose payload is the CLI's option type `O`.
        static func options<O: OperationOptions>(_: O.Type, _ work: @escaping @Sendable (O, CommandParser) throws -> Command.Work) -> Action {
            Action(fields: Set(O.fieldNames)) { data, parser in
                let options = try JSONDecoder().decode(O.self, from: data)
                try options.validate()
                return try work(options, parser)
            }
        }
    }

    /// Every action of topics.md.
    static let actions: [String: Action] = [
        "create": .options(CreateOptions.self) { o, parser in
            guard parser.settings.createTypes.contains(o.type) else {
                throw EngineError.unknownType(o.type.name, known: parser.settings.createTypes.sorted().map(\.name))
            }
            // Over MQTT a snapshot reads only what the config names: create-then-restore must
            // not copy any readable file of the host into reach.
            var o = o
            o.path = try o.path.map { path in
                guard let confined = parser.confine(path, within: parser.settings.createRoots) else {
                    throw CommandError("unsafe_target", "path \(path) is not a configured files component or in mqtt.create_paths")
                }
                return confined
            }
            return .create(o)
        },
        "verify": .options(VerifyOptions.self) { o, _ in .verify(o) },
        // Without a target: in place, into configured component paths only (checked when
        // the job runs, against the snapshot's components).
        "restore": .options(RestoreOptions.self) { o, parser in
            var o = o
            if let target = o.target {
                guard let confined = parser.confine(target, within: parser.settings.restoreRoots) else {
                    throw CommandError("unsafe_target", "target \(target) is outside the configured root and mqtt.restore_targets")
                }
                o.target = confined
            }
            return .restore(o)
        },
        "list": .options(ListOptions.self) { o, _ in .list(o) },
        "show": .options(ShowOptions.self) { o, _ in .show(o) },
        "test-recovery": .options(TestRecoveryOptions.self) { o, _ in .testRecovery(o) },
        "recover": .options(RecoverOptions.self) { o, _ in .recover(o) },
        "prune": .options(PruneOptions.self) { o, _ in .prune(o) },
        "delete": .options(DeleteOptions.self) { o, _ in .delete(o) },
        "monitor": .options(MonitorOptions.self) { o, _ in .monitor(o) },
        "cancel": .options(CancelOptions.self) { o, _ in .cancel(jobID: o.jobID) },
        "ping": Action(fields: []) { _, _ in .ping },
    ]

    public func route(_ message: MQTTMessage) -> Routing {
        let levels = message.topic.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let prefix = settings.prefix.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let prefixLevels = prefix.count
        guard levels.count > prefixLevels, Array(levels[0..<prefixLevels]) == prefix, levels[prefixLevels] == "cmd" else { return .ignore }
        let rest = Array(levels[(prefixLevels + 1)...])
        let action: String
        switch rest.count {
        case 1:
            action = rest[0]
        case 2:
            let target = rest[0]
            guard target == "all" || target == settings.id || settings.groups.contains(target) else { return .ignore }
            action = rest[1]
        default:
            return .ignore
        }
        func reject(_ code: String, _ text: String, requestID: String? = nil) -> Routing {
            .reject(action: action, requestID: requestID, error: CommandError(code, text), responseTopic: message.responseTopic, correlationData: message.correlationData)
        }
        guard message.payload.count <= settings.maxPayload else {
            return reject("payload_too_large", "payload of \(message.payload.count) bytes exceeds mqtt.max_payload (\(settings.maxPayload))")
        }
        guard let spec = Self.actions[action] else {
            let rid = (try? JSONSerialization.jsonObject(with: Data(message.payload)) as? [String: Any])?["request_id"] as? String
            return reject("unknown_action", "unknown action \"\(action)\" (actions: \(Self.actions.keys.sorted().joined(separator: ", ")))", requestID: rid)
        }
        let allowed = spec.fields
        var object: [String: Any] = [:]
        // UTF-8 only, as MQTT's own strings are: JSONSerialization would also take UTF-16 and
        // UTF-32 (NUL bytes, which UTF-8 JSON never has) and a byte order mark.
        guard !message.payload.contains(0), !message.payload.starts(with: [0xEF, 0xBB, 0xBF]),
            String(validating: message.payload, as: UTF8.self) != nil
        else {
            return reject("bad_payload", "payload must be UTF-8 JSON (no byte order mark, no NUL bytes)")
        }
        let trimmed = message.payload.drop { $0 == 0x20 || $0 == 0x0a || $0 == 0x0d || $0 == 0x09 }
        if !trimmed.isEmpty {
            guard let parsed = try? JSONSerialization.jsonObject(with: Data(message.payload), options: [.fragmentsAllowed]) else {
                return reject("bad_payload", "payload is not valid JSON")
            }
            guard let dict = parsed as? [String: Any] else {
                return reject("bad_payload", "payload must be a JSON object")
            }
            if let key = JSONKeys.firstDuplicate(in: message.payload) {
                return reject("bad_payload", "field \"\(key)\" appears more than once")
            }
            object = dict
        }
        var requestID: String?
        if let r = object["request_id"] {
            guard let s = r as? String, !s.isEmpty, s.utf8.count <= 256 else {
                return reject("bad_payload", "field \"request_id\" must be a non-empty string of at most 256 bytes")
            }
            requestID = s
        }
        let unknown = object.keys.filter { !allowed.contains($0) && $0 != "request_id" && $0 != "signature" && $0 != "ts" }.sorted()
        guard unknown.isEmpty else {
            return reject("bad_payload", "unknown field\(unknown.count > 1 ? "s" : "") \(unknown.map { "\"\($0)\"" }.joined(separator: ", ")) for \(action) (fields: \(allowed.sorted().joined(separator: ", ")))", requestID: requestID)
        }
        guard settings.allow.contains(action) else {
            return reject("not_allowed", "action \(action) is not in mqtt.allow on agent \(settings.id)", requestID: requestID)
        }
        if let key = settings.hmacKey, AgentSettings.destructive.contains(action),
            let signed = message.userProperties.last(where: { $0.name == "signature" })?.value
        {
            // MQTT v5: the hex HMAC-SHA256 of the raw payload, which carries "ts".
            guard Self.equalInConstantTime(Self.hmacHex(message.payload, key: key), signed.lowercased()) else {
                return reject("bad_signature", "the signature user property does not match the payload", requestID: requestID)
            }
            guard let ts = (object["ts"] as? NSNumber)?.doubleValue, ts.isFinite else {
                return reject("bad_signature", "a payload signed with the signature user property needs \"ts\" (Unix seconds)", requestID: requestID)
            }
            let now = Date().timeIntervalSince1970
            guard abs(now - ts) <= Self.replayWindow else {
                return reject("bad_signature", "\"ts\" is \(Int(now - ts)) s from the agent's clock (at most \(Int(Self.replayWindow)) s)", requestID: requestID)
            }
            // A redelivery carries its request_id and is answered from the ledger; a signed
            // message without one runs once.
            guard requestID != nil || seenSignatures.insert(signed.lowercased(), now: now) else {
                return reject("bad_signature", "this signed message was already received (replay)", requestID: requestID)
            }
        } else if let key = settings.hmacKey, AgentSettings.destructive.contains(action) {
            guard let signature = object["signature"] as? String else {
                return reject("bad_signature", "\(action) requires a \"signature\" (HMAC-SHA256, see topics.md)", requestID: requestID)
            }
            guard Self.verify(signature: signature, action: action, fields: object, key: key) else {
                return reject("bad_signature", "signature does not match the payload", requestID: requestID)
            }
        }
        var fields = object
        fields.removeValue(forKey: "request_id")
        fields.removeValue(forKey: "signature")
        fields.removeValue(forKey: "ts")
        let work: Command.Work
        do {
            work = try spec.decode(try JSONSerialization.data(withJSONObject: fields), self)
        } catch let e as CommandError {
            return reject(e.code, e.message, requestID: requestID)
        } catch let e as DecodingError {
            return reject("bad_payload", Self.describe(e), requestID: requestID)
        } catch {
            return reject("bad_payload", "\(error)", requestID: requestID)
        }
        return .accept(Command(action: action, requestID: requestID, work: work, responseTopic: message.responseTopic, correlationData: message.correlationData))
    }

    /// The absolute target when it lies inside one of `roots` (after resolving `..` and
    /// the symlinks of its existing part); nil otherwise.
    func confine(_ target: String, within roots: [String]) -> String? {
        guard target.hasPrefix("/") else { return nil }
        let resolved = POSIX.resolveExisting(POSIX.absolute(target))
        for root in roots {
            let r = POSIX.resolveExisting(POSIX.absolute(root))
            if resolved == r || resolved.hasPrefix(r == "/" ? "/" : r + "/") { return resolved }
        }
        return nil
    }

    static func describe(_ e: DecodingError) -> String {
        switch e {
        case .typeMismatch(let type, let c):
            return "field \"\(c.codingPath.first?.stringValue ?? "?")\" has the wrong type (expected \(type == [String].self ? "a string or a list of strings" : "\(type)".lowercased()))"
        case .valueNotFound(_, let c):
            return "field \"\(c.codingPath.first?.stringValue ?? "?")\" must not be null"
        case .keyNotFound(let k, _):
            return "field \"\(k.stringValue)\" is required"
        case .dataCorrupted(let c):
            return c.debugDescription
        @unknown default:
            return "\(e)"
        }
    }

    // MARK: signatures

    /// The signed text: `<action>\n` followed by the payload without `signature`, as compact
    /// JSON with sorted keys (see topics.md, "Signed commands").
    public static func signingText(action: String, fields: [String: Any]) -> [UInt8] {
        var f = fields
        f.removeValue(forKey: "signature")
        let data = (try? JSONSerialization.data(withJSONObject: f, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return Array((action + "\n").utf8) + Array(data)
    }

    /// Hex HMAC-SHA256 of the signing text.
    public static func sign(action: String, fields: [String: Any], key: [UInt8]) -> String {
        hmacHex(signingText(action: action, fields: fields), key: key)
    }

    static func equalInConstantTime(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        return x.count == y.count && CRYPTO_memcmp(x, y, x.count) == 0
    }

    /// Hex HMAC-SHA256 of `text` (also the v5 user property's value over the raw payload).
    public static func hmacHex(_ text: [UInt8], key: [UInt8]) -> String {
        var out = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        _ = key.withUnsafeBytes { k in
            text.withUnsafeBytes { t in
                HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), t.baseAddress?.assumingMemoryBound(to: UInt8.self), t.count, &out, &length)
            }
        }
        return out.prefix(Int(length)).map { String(format: "%02x", $0) }.joined()
    }

    static func verify(signature: String, action: String, fields: [String: Any], key: [UInt8]) -> Bool {
        let expected = Array(sign(action: action, fields: fields, key: key).utf8)
        let given = Array(signature.lowercased().utf8)
        guard expected.count == given.count else { return false }
        return CRYPTO_memcmp(expected, given, expected.count) == 0
    }
}
