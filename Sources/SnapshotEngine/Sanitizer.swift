import Foundation
import SnapshotCore

/// Finds personal data and secrets in text and removes them (`[REDACTED:<rule>]`) or
/// replaces each value with a stable pseudonym (the same value, the same pseudonym, in every
/// file: an HMAC under a repository secret).
///
/// Rules: e-mail addresses, IPv4 and IPv6 addresses, phone numbers, bearer tokens, JWTs,
/// AWS access key ids, and the values of fields whose key names a secret (password, secret,
/// token, api_key, private_key, access_key, credential, auth…) in YAML, JSON, .env, INI and
/// JSON MQTT payloads; plus the config's `sanitize:` patterns and keys.
public struct Sanitizer: Sendable {
    public enum Mode: String, Sendable { case remove, anonymize }

    public struct Rule: Sendable {
        public let name: String
        let regex: NSRegularExpression
        /// The capture group that is the value to replace (0: the whole match).
        let group: Int
        /// Accepts or rejects a candidate (the text and the match range).
        let accept: @Sendable (NSString, NSRange) -> Bool
    }

    public let mode: Mode
    let secret: [UInt8]
    let rules: [Rule]

    /// Key names whose values are secret: ending in one of these words (`db_password`,
    /// `access_token`, `client_secret`, `api_key`), so that `max_tokens`, `token_limit` or
    /// `password_file` (a path) are not.
    static let secretKeyPattern = "(?:[A-Za-z0-9_.-]*[_.-])?(?:password|passwd|passphrase|secret|token|api[_-]?key|apikey|private[_-]?key|access[_-]?key|secret[_-]?key|credentials?|authorization)"

    public init(mode: Mode, secret: [UInt8], extraPatterns: [(name: String, regex: String)] = [], extraKeys: [String] = []) throws {
        self.mode = mode
        self.secret = secret
        func rx(_ p: String, _ options: NSRegularExpression.Options = []) throws -> NSRegularExpression {
            try NSRegularExpression(pattern: p, options: options)
        }
        let always: @Sendable (NSString, NSRange) -> Bool = { _, _ in true }
        var keyAlternatives = Self.secretKeyPattern
        if !extraKeys.isEmpty {
            keyAlternatives = "(?:" + Self.secretKeyPattern + "|" + extraKeys.map { NSRegularExpression.escapedPattern(for: $0) }.joined(separator: "|") + ")"
        }
        var rules: [Rule] = []
        // Values of secret keys first: a token inside them counts once, as the field.
        rules.append(Rule(name: "secret_field", regex: try rx(#""(?i:"# + keyAlternatives + #")"\s*:\s*"((?:[^"\\]|\\.)+)""#), group: 1, accept: Self.notAFlag))
        rules.append(Rule(name: "secret_field", regex: try rx(#"(?m)^[ \t]*(?:export[ \t]+|-[ \t]+)?["']?(?i:"# + keyAlternatives + #")["']?[ \t]*[:=][ \t]*["']?([^"'\s#][^"'\n#]*?)["']?[ \t]*(?:#.*)?$"#), group: 1, accept: Self.notAFlag))
        rules.append(Rule(name: "jwt", regex: try rx(#"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}"#), group: 0, accept: always))
        rules.append(Rule(name: "bearer_token", regex: try rx(#"(?i)\bbearer[ \t]+([A-Za-z0-9._~+/=-]{8,})"#), group: 1, accept: always))
        rules.append(Rule(name: "aws_access_key", regex: try rx(#"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"#), group: 0, accept: always))
        // A secret key anywhere in a line (`… ssn: 078-05-1120, …`, `password=x` in a log):
        // the value up to the next space, quote, comma or semicolon.
        rules.append(Rule(name: "secret_field", regex: try rx(#"(?<![\w.-])(?i:"# + keyAlternatives + #")["']?[ \t]*[:=][ \t]*["']?([^\s"',;]+)"#), group: 1, accept: Self.notAFlag))
        rules.append(Rule(name: "email", regex: try rx(#"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"#), group: 0, accept: always))
        rules.append(Rule(name: "ipv4", regex: try rx(#"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w.]*\d)"#), group: 0, accept: Self.notAVersion))
        rules.append(Rule(name: "ipv6", regex: try rx(#"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"#), group: 0, accept: Self.isIPv6))
        rules.append(Rule(name: "phone", regex: try rx(#"(?<![\w+.-])(?:\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}|\d{3}[.-]\d{3}[.-]\d{4})(?![\w.-]*\d)"#), group: 0, accept: always))
        for p in extraPatterns {
            rules.append(Rule(name: p.name, regex: try rx(p.regex), group: 0, accept: always))
        }
        self.rules = rules
    }

    /// A secret field's value, unless it is a flag or empty marker (`auth: true`, `token: null`).
    static let notAFlag: @Sendable (NSString, NSRange) -> Bool = { text, range in
        !["true", "false", "null", "none", "yes", "no", "~", "[]", "{}", "bearer", "basic", "digest", "{", "["].contains(text.substring(with: range).lowercased())
    }

    /// `1.2.3.4` after `v`, `version`, `release` or `build` is a version number, not an address.
    /// Also not: the unspecified, loopback and broadcast addresses, which name no one.
    static let notAVersion: @Sendable (NSString, NSRange) -> Bool = { text, range in
        let address = text.substring(with: range)
        if address == "0.0.0.0" || address == "255.255.255.255" || address.hasPrefix("127.") { return false }
        let start = max(0, range.location - 12)
        let before = text.substring(with: NSRange(location: start, length: range.location - start)).lowercased()
        for word in ["version", "release", "build", "v"] where before.hasSuffix(word) || before.hasSuffix(word + " ") || before.hasSuffix(word + ": ") || before.hasSuffix(word + "=") {
            return false
        }
        return true
    }

    /// A real IPv6 address (inet_pton), not a time of day like 10:15:00.
    static let isIPv6: @Sendable (NSString, NSRange) -> Bool = { text, range in
        let candidate = text.substring(with: range)
        guard candidate.contains("::") || candidate.filter({ $0 == ":" }).count >= 7 else { return false }
        var addr = in6_addr()
        return inet_pton(AF_INET6, candidate, &addr) == 1
    }

    static func isPseudonym(_ value: String) -> Bool {
        guard let dash = value.lastIndex(of: "-") else { return false }
        let tail = value[value.index(after: dash)...]
        return tail.count == 10 && tail.allSatisfy { $0.isHexDigit && !$0.isUppercase } && value[..<dash].allSatisfy { $0.isLetter || $0 == "_" || $0.isNumber }
    }

    /// The pseudonym of a value under a rule: stable for the repository.
    func pseudonym(_ value: String, rule: String) -> String {
        let digest = Array(value.utf8).withUnsafeBytes { Crypto.hmac($0, key: secret) }.hex.prefix(10)
        switch rule {
        case "email": return "user-\(digest)@anonymized.invalid"
        default: return "\(rule)-\(digest)"
        }
    }

    /// Sanitizes `text`; returns it and how many values each rule replaced.
    public func apply(_ text: String) -> (text: String, counts: [String: Int]) {
        var result = text
        var counts: [String: Int] = [:]
        for rule in rules {
            let ns = result as NSString
            let matches = rule.regex.matches(in: result, range: NSRange(location: 0, length: ns.length))
            guard !matches.isEmpty else { continue }
            let out = NSMutableString(string: result)
            // Back to front, so that earlier ranges stay valid.
            for m in matches.reversed() {
                let range = m.range(at: rule.group)
                guard range.location != NSNotFound, range.length > 0, rule.accept(ns, range) else { continue }
                let value = ns.substring(with: range)
                // Already replaced (by an earlier rule): leave it.
                if value.hasPrefix("[REDACTED:") || value.contains("anonymized.invalid") || Self.isPseudonym(value) { continue }
                let replacement = mode == .remove ? "[REDACTED:\(rule.name)]" : pseudonym(value, rule: rule.name)
                out.replaceCharacters(in: range, with: replacement)
                counts[rule.name, default: 0] += 1
            }
            result = out as String
        }
        return (result, counts)
    }
}
