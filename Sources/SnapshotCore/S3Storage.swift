import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(FoundationXML)
import FoundationXML
#endif
import Synchronization

/// A repository in an S3 bucket under a prefix: objects are S3 objects, each written by one
/// PUT (S3 makes an object visible whole or not at all), read whole or by byte range.
///
/// HTTP goes through Foundation's URLSession, which on Linux is libcurl: TLS with the
/// system's CA store, pooled keep-alive connections, no extra build cost. Requests in flight
/// are bounded (`connections`); each is retried with jittered exponential back-off on 5xx,
/// `SlowDown`, `RequestTimeout`, connection failures, timeouts and responses cut short.
/// Every PUT carries `Content-MD5` and `x-amz-checksum-sha256`, so the store refuses a body
/// damaged on the way; every GET's length is checked against what was asked, and a whole
/// object's `x-amz-checksum-sha256`, when the store returns one, against its bytes.
public final class S3Storage: RepositoryStorage, @unchecked Sendable {
    public let settings: S3Settings
    let credentials: S3Credentials
    let session: URLSession
    private let slots: DispatchSemaphore
    /// HTTP requests sent by every client of the process (retries included), by method
    /// (`LIST` for listings), and the bytes of bodies sent and received: for figures.
    public static let traffic = Mutex<(requests: [String: Int], sent: Int, received: Int)>(([:], 0, 0))

    public init(settings: S3Settings, credentials: S3Credentials) {
        self.settings = settings
        self.credentials = credentials
        let c = URLSessionConfiguration.ephemeral
        c.timeoutIntervalForRequest = settings.timeout
        c.timeoutIntervalForResource = max(settings.timeout * 20, 600)
        c.httpMaximumConnectionsPerHost = settings.connections
        c.urlCache = nil
        c.httpShouldSetCookies = false
        c.requestCachePolicy = .reloadIgnoringLocalCacheData
        session = URLSession(configuration: c)
        slots = DispatchSemaphore(value: settings.connections)
    }

    deinit {
        session.invalidateAndCancel()
    }

    /// Opens `s3://…` with the environment's settings and credentials; `configured` are the
    /// config's `repository:` settings when it names this location.
    public static func open(_ url: String, configured: S3Settings? = nil, environment env: [String: String]) throws -> S3Storage {
        guard let location = S3Location(url) else {
            throw RepositoryError.remote(path: url, operation: "open", status: 0, detail: "not an s3:// URL")
        }
        if let problem = location.problem { throw RepositoryError.remote(path: url, operation: "open", status: 0, detail: problem) }
        var settings = configured.map { c -> S3Settings in
            var s = c
            s.location = location
            return s
        } ?? S3Settings(location: location)
        settings.complete(environment: env)
        if let problem = settings.endpointProblem { throw RepositoryError.remote(path: url, operation: "open", status: 0, detail: problem) }
        guard let credentials = S3Settings.credentials(environment: env) else {
            throw RepositoryError.remote(
                path: url, operation: "open", status: 403,
                detail: "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws/credentials (AWS_PROFILE)")
        }
        return S3Storage(settings: settings, credentials: credentials)
    }

    public var location: String { settings.location.description }

    public func describe(_ key: String) -> String { location + "/" + key }

    // MARK: Objects

    public func save(_ key: String, _ bytes: [UInt8]) throws {
        let sha = BlobID.hash(bytes)
        let headers = [
            "content-md5": Data(SigV4.md5(bytes)).base64EncodedString(),
            "x-amz-checksum-sha256": Data(sha.bytes).base64EncodedString(),
            "content-type": "application/octet-stream",
        ]
        _ = try send("PUT", key: key, headers: headers, body: bytes, payloadHash: sha.hex)
    }

    public func load(_ key: String) throws -> [UInt8] {
        let r = try send("GET", key: key, headers: ["x-amz-checksum-mode": "ENABLED"])
        if let sum = r.headers["x-amz-checksum-sha256"], !sum.contains("-"), let expected = Data(base64Encoded: sum), expected.count == 32,
            Array(expected) != BlobID.hash(r.body).bytes
        {
            throw RepositoryError.remote(path: describe(key), operation: "GET", status: r.status, detail: "the body does not match its x-amz-checksum-sha256")
        }
        return r.body
    }

    public func load(_ key: String, offset: Int, length: Int) throws -> [UInt8] {
        guard length > 0 else { return [] }
        let r = try send("GET", key: key, headers: ["range": "bytes=\(offset)-\(offset + length - 1)"], expectedLength: length)
        return r.body
    }

    public func list(prefix: String) throws -> [StoredObject] {
        var out: [StoredObject] = []
        var token: String?
        let base = settings.location.prefix.isEmpty ? "" : settings.location.prefix + "/"
        repeat {
            var query = [("list-type", "2"), ("prefix", base + prefix), ("max-keys", "\(settings.listPageSize)")]
            if let token { query.append(("continuation-token", token)) }
            let r: Response
            do {
                r = try send("GET", key: nil, query: query)
            } catch RepositoryError.io(_, _, let code) where code == ENOENT {
                return []  // no bucket: nothing in it
            }
            let page = ListingParser.parse(r.body)
            guard page.valid else {
                throw RepositoryError.remote(path: describe(prefix), operation: "LIST", status: r.status, detail: "the listing is not ListObjectsV2 XML")
            }
            for o in page.objects where o.key.hasPrefix(base) {
                let key = String(o.key.dropFirst(base.count))
                if !key.isEmpty { out.append(StoredObject(key: key, size: o.size)) }
            }
            token = page.truncated ? page.nextToken : nil
            if page.truncated && token == nil {
                throw RepositoryError.remote(path: describe(prefix), operation: "LIST", status: r.status, detail: "a truncated listing without a continuation token")
            }
        } while token != nil
        return out.sorted { $0.key < $1.key }
    }

    public func size(_ key: String) throws -> Int? {
        do {
            let r = try send("HEAD", key: key)
            return Int(r.headers["content-length"] ?? "") ?? 0
        } catch RepositoryError.io(_, _, let code) where code == ENOENT {
            return nil
        }
    }

    public func remove(_ key: String) throws {
        // S3 answers 204 for a key that does not exist as well.
        _ = try send("DELETE", key: key)
    }

    /// Creates the bucket when it does not exist (`init`, and the first `copy` to a new
    /// repository).
    public func createBucketIfMissing() throws {
        do {
            _ = try send("HEAD", key: nil, bucketLevel: true)
            return
        } catch RepositoryError.io(_, _, let code) where code == ENOENT {}
        let region = settings.resolvedRegion
        let body = region == "us-east-1" ? [] : Array("<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>\(region)</LocationConstraint></CreateBucketConfiguration>".utf8)
        do {
            _ = try send("PUT", key: nil, body: body, payloadHash: BlobID.hash(body).hex, bucketLevel: true)
        } catch RepositoryError.remote(_, _, 409, _) {
            // BucketAlreadyOwnedByYou: another process made it meanwhile.
        }
    }

    // MARK: Requests

    struct Response {
        var status: Int
        var headers: [String: String]
        var body: [UInt8]
    }

    private final class Outcome: @unchecked Sendable {
        var data: Data?
        var response: URLResponse?
        var error: (any Error)?
    }

    /// One request with retries. A 404 is `RepositoryError.io(…, ENOENT)`.
    func send(
        _ method: String, key: String?, query: [(String, String)] = [], headers: [String: String] = [:], body: [UInt8] = [],
        payloadHash: String = SigV4.emptyHash, expectedLength: Int? = nil, bucketLevel: Bool = false
    ) throws -> Response {
        let name = key.map(describe) ?? "s3://\(settings.location.bucket)"
        let operation = method == "GET" && key == nil ? "LIST" : method
        var last = "no attempt"
        var lastStatus = 0
        var attempts = 0
        for attempt in 0...max(0, settings.retries) {
            attempts = attempt + 1
            if attempt > 0 {
                // Full jitter on an exponential ceiling: 0.1 s, 0.2 s, … up to 5 s.
                let ceiling = min(5.0, 0.1 * Double(1 << min(attempt, 10)))
                usleep(useconds_t(Double.random(in: ceiling / 2...ceiling) * 1_000_000))
            }
            let outcome: (status: Int, headers: [String: String], body: [UInt8])
            do {
                outcome = try once(method, key: key, query: query, headers: headers, body: body, payloadHash: payloadHash, bucketLevel: bucketLevel)
            } catch let e as URLError {
                last = e.localizedDescription.isEmpty ? "\(e.code)" : e.localizedDescription
                lastStatus = 0
                // Nothing to wait for: no address, no such host, TLS refused.
                if [.cannotFindHost, .dnsLookupFailed, .unsupportedURL, .badURL, .serverCertificateUntrusted, .serverCertificateHasBadDate, .secureConnectionFailed].contains(e.code) {
                    break
                }
                continue
            }
            let (status, responseHeaders, data) = outcome
            switch status {
            case 200..<300:
                if method == "GET", let announced = responseHeaders["content-length"].flatMap(Int.init), announced != data.count {
                    last = "the response was cut short (\(data.count) of \(announced) bytes)"
                    continue
                }
                if method == "GET", let expectedLength, data.count != expectedLength {
                    // A whole answer, but the object ends before the range does: damage.
                    guard data.count < expectedLength else {
                        last = "\(data.count) bytes came for a range of \(expectedLength)"
                        continue
                    }
                    throw RepositoryError.corrupt(file: name, detail: "object ends \(expectedLength - data.count) bytes short of the range asked")
                }
                return Response(status: status, headers: responseHeaders, body: data)
            case 416:
                throw RepositoryError.corrupt(file: name, detail: "object ends before the range asked")
            case 404:
                let code = ErrorParser.parse(data).code
                if method == "PUT" {
                    throw RepositoryError.remote(path: name, operation: method, status: status, detail: code == "NoSuchBucket" ? "no bucket \(settings.location.bucket) (snapshot init creates it)" : code ?? "Not Found")
                }
                throw RepositoryError.io(path: code == "NoSuchBucket" ? "s3://\(settings.location.bucket) (no such bucket)" : name, operation: "read", errno: ENOENT)
            case 500, 502, 503, 504, 429:
                let e = ErrorParser.parse(data)
                last = [e.code, e.message].compactMap { $0 }.joined(separator: ": ")
                if last.isEmpty { last = "server error" }
                lastStatus = status
                continue
            default:
                let e = ErrorParser.parse(data)
                if status == 400 && e.code == "RequestTimeout" {
                    last = "RequestTimeout"
                    lastStatus = status
                    continue
                }
                var detail = [e.code, e.message].compactMap { $0 }.joined(separator: ": ")
                if detail.isEmpty { detail = HTTPURLResponse.localizedString(forStatusCode: status) }
                if status == 403 { detail += " (check the credentials and the bucket's policy)" }
                throw RepositoryError.remote(path: name, operation: operation, status: status, detail: detail)
            }
        }
        let endpoint = settings.endpoint ?? "AWS (\(settings.resolvedRegion))"
        throw RepositoryError.remote(path: name, operation: operation, status: lastStatus, detail: "\(last) (endpoint \(endpoint)\(attempts > 1 ? ", after \(attempts) attempts" : ""))")
    }

    /// One attempt: signs and sends the request and waits for the whole answer.
    private func once(
        _ method: String, key: String?, query: [(String, String)], headers: [String: String], body: [UInt8], payloadHash: String, bucketLevel: Bool
    ) throws -> (Int, [String: String], [UInt8]) {
        guard var components = URLComponents(string: settings.baseURL) else {
            throw URLError(.badURL)
        }
        let basePath = components.percentEncodedPath
        let path: String
        if let key {
            path = basePath + "/" + SigV4.encode(settings.location.objectKey(key), keepSlash: true)
        } else {
            path = bucketLevel && !basePath.isEmpty ? basePath : basePath + "/"
        }
        components.percentEncodedPath = path
        components.percentEncodedQuery = query.isEmpty ? nil : query.map { "\(SigV4.encode($0.0, keepSlash: false))=\(SigV4.encode($0.1, keepSlash: false))" }.joined(separator: "&")
        guard let url = components.url, let host = components.host else { throw URLError(.badURL) }
        let defaultPort = components.scheme == "https" ? 443 : 80
        let hostHeader = components.port.map { $0 == defaultPort ? host : "\(host):\($0)" } ?? host
        let amzDate = SigV4.amzDate(Date())
        var signed = headers
        signed["host"] = hostHeader
        signed["x-amz-date"] = amzDate
        signed["x-amz-content-sha256"] = payloadHash
        if let token = credentials.sessionToken { signed["x-amz-security-token"] = token }
        signed.removeValue(forKey: "content-type")
        let authorization = SigV4.authorization(
            method: method, path: path, query: query, headers: signed, payloadHash: payloadHash, credentials: credentials,
            region: settings.resolvedRegion, amzDate: amzDate)
        var request = URLRequest(url: url)
        request.httpMethod = method
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        for (name, value) in signed where name != "host" { request.setValue(value, forHTTPHeaderField: name) }
        request.setValue(authorization, forHTTPHeaderField: "Authorization")
        if !body.isEmpty || method == "PUT" { request.httpBody = Data(body) }

        slots.wait()
        defer { slots.signal() }
        let counted = method == "GET" && key == nil ? "LIST" : method
        Self.traffic.withLock {
            $0.requests[counted, default: 0] += 1
            $0.sent += body.count
        }
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        let task = session.dataTask(with: request) { data, response, error in
            outcome.data = data
            outcome.response = response
            outcome.error = error
            done.signal()
        }
        task.resume()
        done.wait()
        if let error = outcome.error {
            throw (error as? URLError) ?? URLError(.networkConnectionLost, userInfo: [NSLocalizedDescriptionKey: "\(error)"])
        }
        guard let http = outcome.response as? HTTPURLResponse else { throw URLError(.badServerResponse) }
        var responseHeaders: [String: String] = [:]
        for (k, v) in http.allHeaderFields {
            if let k = k as? String, let v = v as? String { responseHeaders[k.lowercased()] = v }
        }
        let data = outcome.data.map { [UInt8]($0) } ?? []
        Self.traffic.withLock { $0.received += data.count }
        return (http.statusCode, responseHeaders, data)
    }
}

/// Reads a ListObjectsV2 answer: each `Contents` entry's `Key` and `Size`, `IsTruncated`,
/// `NextContinuationToken`.
final class ListingParser: NSObject, XMLParserDelegate {
    var objects: [(key: String, size: Int)] = []
    var truncated = false
    var nextToken: String?
    var valid = false
    private var text = ""
    private var key: String?
    private var size = 0

    static func parse(_ bytes: [UInt8]) -> ListingParser {
        let p = ListingParser()
        let parser = XMLParser(data: Data(bytes))
        parser.delegate = p
        if !parser.parse() { p.valid = false }
        return p
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
        text = ""
        if name == "ListBucketResult" { valid = true }
        if name == "Contents" {
            key = nil
            size = 0
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        switch name {
        case "Key": key = text
        case "Size": size = Int(text) ?? 0
        case "Contents": if let key { objects.append((key, size)) }
        case "IsTruncated": truncated = text == "true"
        case "NextContinuationToken": nextToken = text
        default: break
        }
    }
}

/// Reads an S3 error document's `Code` and `Message`.
final class ErrorParser: NSObject, XMLParserDelegate {
    var code: String?
    var message: String?
    private var text = ""

    static func parse(_ bytes: [UInt8]) -> ErrorParser {
        let p = ErrorParser()
        guard !bytes.isEmpty else { return p }
        let parser = XMLParser(data: Data(bytes))
        parser.delegate = p
        _ = parser.parse()
        return p
    }

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
        text = ""
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        if name == "Code" && code == nil { code = text }
        if name == "Message" && message == nil { message = String(text.prefix(200)) }
    }
}
