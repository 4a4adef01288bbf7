import Foundation

/// `s3://BUCKET/PREFIX` and what is needed to reach it: the endpoint, the region, the
/// addressing style and the credentials, from the config's `repository:` section, the
/// standard AWS environment variables and `~/.aws/{credentials,config}`.
public struct S3Location: Sendable, Equatable, CustomStringConvertible {
    public var bucket: String
    /// Without leading or trailing `/`; empty for the bucket's root.
    public var prefix: String

    /// Parses `s3://BUCKET[/PREFIX]`; nil for any other text. Throws `usage`-worthy text
    /// through `problem` for a malformed one.
    public init?(_ url: String) {
        guard url.hasPrefix("s3://") else { return nil }
        let rest = url.dropFirst(5)
        let bucket = String(rest.prefix { $0 != "/" })
        var prefix = String(rest.dropFirst(bucket.count))
        while prefix.hasPrefix("/") { prefix.removeFirst() }
        while prefix.hasSuffix("/") { prefix.removeLast() }
        self.bucket = bucket
        self.prefix = prefix
    }

    /// What is wrong with the bucket name or prefix, or nil.
    public var problem: String? {
        let b = Array(bucket.utf8)
        guard (3...63).contains(b.count), b.allSatisfy({ (0x61...0x7a).contains($0) || (0x30...0x39).contains($0) || $0 == 0x2e || $0 == 0x2d }),
            let first = b.first, let last = b.last, first != 0x2e, first != 0x2d, last != 0x2e, last != 0x2d
        else {
            return "\"\(bucket)\" is not an S3 bucket name (3 to 63 characters: a-z, 0-9, '.', '-')"
        }
        for part in prefix.split(separator: "/", omittingEmptySubsequences: false) where !prefix.isEmpty && (part.isEmpty || part == "." || part == "..") {
            return "the prefix \"\(prefix)\" has an empty, '.' or '..' part"
        }
        return nil
    }

    public var description: String { prefix.isEmpty ? "s3://\(bucket)" : "s3://\(bucket)/\(prefix)" }

    /// The object key of a repository key.
    public func objectKey(_ key: String) -> String { prefix.isEmpty ? key : prefix + "/" + key }
}

/// Credentials for SigV4.
public struct S3Credentials: Sendable, Equatable {
    public var accessKey: String
    public var secretKey: String
    public var sessionToken: String?

    public init(accessKey: String, secretKey: String, sessionToken: String? = nil) {
        self.accessKey = accessKey
        self.secretKey = secretKey
        self.sessionToken = sessionToken
    }
}

/// The configuration of an S3 repository: the config's `repository:` section, completed from
/// the environment and `~/.aws/`.
public struct S3Settings: Sendable, Equatable {
    public var location: S3Location
    /// `https://host[:port]` or `http://…`; nil for AWS (`https://s3.REGION.amazonaws.com`).
    public var endpoint: String?
    public var region: String?
    /// Path-style (`endpoint/bucket/key`) rather than virtual-host (`bucket.endpoint/key`)
    /// addressing; nil decides: path-style for an endpoint given by address or `localhost`
    /// and for bucket names with dots, virtual-host otherwise.
    public var pathStyle: Bool?
    /// Seconds without progress before a request is abandoned and retried.
    public var timeout: Double = 30
    /// Retries of a request after the first attempt (5xx, SlowDown, timeouts, cut responses).
    public var retries: Int = 6
    /// Requests in flight at once.
    public var connections: Int = 8
    /// Keys per listing page (S3's `max-keys`; it answers at most 1,000).
    public var listPageSize: Int = 1000

    public init(location: S3Location, endpoint: String? = nil, region: String? = nil, pathStyle: Bool? = nil) {
        self.location = location
        self.endpoint = endpoint
        self.region = region
        self.pathStyle = pathStyle
    }

    /// Fills what the config left open from the environment: `AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_DEFAULT_REGION`, the profile's region in
    /// `~/.aws/config` (`AWS_CONFIG_FILE`, `AWS_PROFILE`), and `SNAPSHOT_S3_TIMEOUT`.
    public mutating func complete(environment env: [String: String]) {
        if endpoint == nil { endpoint = env["AWS_ENDPOINT_URL_S3"] ?? env["AWS_ENDPOINT_URL"] }
        if endpoint?.isEmpty == true { endpoint = nil }
        if region == nil {
            region = env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"]
                ?? S3Settings.profileValue("region", file: env["AWS_CONFIG_FILE"] ?? S3Settings.home(env) + "/.aws/config", profile: env["AWS_PROFILE"] ?? "default", configStyle: true)
        }
        if let t = env["SNAPSHOT_S3_TIMEOUT"].flatMap(Double.init), t > 0 { timeout = t }
    }

    /// What is wrong with the endpoint, or nil.
    public var endpointProblem: String? {
        guard let endpoint else { return nil }
        guard let u = URL(string: endpoint), let scheme = u.scheme, scheme == "http" || scheme == "https", let host = u.host, !host.isEmpty else {
            return "endpoint \(endpoint) is not an http:// or https:// URL"
        }
        return nil
    }

    public var resolvedRegion: String { region?.isEmpty == false ? region! : "us-east-1" }

    public var usesPathStyle: Bool {
        if let pathStyle { return pathStyle }
        if location.bucket.contains(".") { return true }
        guard let endpoint, let host = URL(string: endpoint)?.host else { return false }
        return host == "localhost" || host.allSatisfy({ $0.isNumber || $0 == "." }) || host.contains(":")
    }

    /// The base URL requests go to (scheme, host, port, and for path-style the bucket).
    public var baseURL: String {
        let ep = endpoint.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 } ?? "https://s3.\(resolvedRegion).amazonaws.com"
        if usesPathStyle { return ep + "/" + location.bucket }
        guard let u = URLComponents(string: ep), let host = u.host else { return ep + "/" + location.bucket }
        var v = u
        v.host = location.bucket + "." + host
        return v.string ?? ep
    }

    static func home(_ env: [String: String]) -> String { env["HOME"] ?? NSHomeDirectory() }

    /// Credentials: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`),
    /// else the profile (`AWS_PROFILE`, default `default`) in `~/.aws/credentials`
    /// (`AWS_SHARED_CREDENTIALS_FILE`).
    public static func credentials(environment env: [String: String]) -> S3Credentials? {
        if let id = env["AWS_ACCESS_KEY_ID"], let secret = env["AWS_SECRET_ACCESS_KEY"], !id.isEmpty, !secret.isEmpty {
            return S3Credentials(accessKey: id, secretKey: secret, sessionToken: env["AWS_SESSION_TOKEN"].flatMap { $0.isEmpty ? nil : $0 })
        }
        let file = env["AWS_SHARED_CREDENTIALS_FILE"] ?? home(env) + "/.aws/credentials"
        let profile = env["AWS_PROFILE"] ?? "default"
        guard let id = profileValue("aws_access_key_id", file: file, profile: profile, configStyle: false),
            let secret = profileValue("aws_secret_access_key", file: file, profile: profile, configStyle: false)
        else { return nil }
        return S3Credentials(accessKey: id, secretKey: secret, sessionToken: profileValue("aws_session_token", file: file, profile: profile, configStyle: false))
    }

    /// A value of an INI-style AWS file: `[profile]` in credentials, `[profile NAME]` (or
    /// `[default]`) in config.
    static func profileValue(_ name: String, file: String, profile: String, configStyle: Bool) -> String? {
        guard let bytes = try? POSIX.readFile(file) else { return nil }
        let wanted = configStyle && profile != "default" ? "profile \(profile)" : profile
        var inSection = false
        for raw in String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline) {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || line.hasPrefix(";") || line.isEmpty { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                inSection = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces) == wanted
                continue
            }
            guard inSection, let eq = line.firstIndex(of: "=") else { continue }
            if line[..<eq].trimmingCharacters(in: .whitespaces) == name {
                let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
                return value.isEmpty ? nil : value
            }
        }
        return nil
    }
}
