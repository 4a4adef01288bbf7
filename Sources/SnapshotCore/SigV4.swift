import COpenSSL
import Foundation

/// AWS Signature Version 4 for S3 requests (HMAC-SHA256 through OpenSSL), as the "Signature
/// Calculations for the Authorization Header" page of the S3 API reference defines it.
public enum SigV4 {
    /// The SHA-256 of an empty body, in hex.
    public static let emptyHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    /// RFC 3986 percent-encoding of everything but the unreserved characters (and `/` in
    /// a path).
    public static func encode(_ text: String, keepSlash: Bool) -> String {
        var out = ""
        for b in text.utf8 {
            let c = Character(Unicode.Scalar(b))
            if (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || b == 0x2d || b == 0x2e || b == 0x5f || b == 0x7e || (keepSlash && b == 0x2f) {
                out.append(c)
            } else {
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }

    static func hmac(_ key: [UInt8], _ text: String) -> [UInt8] {
        Array(text.utf8).withUnsafeBytes { Crypto.hmac($0, key: key).bytes }
    }

    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// The `Authorization` header for a request. `headers` are the headers to sign (their
    /// names in any case; `host`, `x-amz-date` and `x-amz-content-sha256` among them);
    /// `path` is the already-encoded absolute path; `query` the decoded parameters.
    public static func authorization(
        method: String, path: String, query: [(String, String)], headers: [String: String], payloadHash: String,
        credentials: S3Credentials, region: String, amzDate: String
    ) -> String {
        let encoded: [(String, String)] = query.map { (encode($0.0, keepSlash: false), encode($0.1, keepSlash: false)) }
        let sortedQuery = encoded.sorted { (a: (String, String), b: (String, String)) -> Bool in a.0 != b.0 ? a.0 < b.0 : a.1 < b.1 }
        let canonicalQuery = sortedQuery.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        let pairs: [(String, String)] = headers.map { ($0.key.lowercased(), $0.value.trimmingCharacters(in: .whitespaces)) }
        let lowered = pairs.sorted { (a: (String, String), b: (String, String)) -> Bool in a.0 < b.0 }
        let canonicalHeaders = lowered.map { "\($0.0):\($0.1)\n" }.joined()
        let signedHeaders = lowered.map(\.0).joined(separator: ";")
        let canonicalRequest = [method, path, canonicalQuery, canonicalHeaders, signedHeaders, payloadHash].joined(separator: "\n")
        let day = String(amzDate.prefix(8))
        let scope = "\(day)/\(region)/s3/aws4_request"
        let toSign = "AWS4-HMAC-SHA256\n\(amzDate)\n\(scope)\n\(BlobID.hash(Array(canonicalRequest.utf8)).hex)"
        var key = hmac(Array("AWS4\(credentials.secretKey)".utf8), day)
        key = hmac(key, region)
        key = hmac(key, "s3")
        key = hmac(key, "aws4_request")
        let signature = hex(hmac(key, toSign))
        return "AWS4-HMAC-SHA256 Credential=\(credentials.accessKey)/\(scope),SignedHeaders=\(signedHeaders),Signature=\(signature)"
    }

    /// `20130524T000000Z` for a time.
    public static func amzDate(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d%02d%02dT%02d%02d%02dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    /// The MD5 of `bytes` (`Content-MD5`, which S3 checks on every PUT).
    public static func md5(_ bytes: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        var size: UInt32 = 0
        bytes.withUnsafeBytes { raw in
            _ = EVP_Digest(raw.baseAddress, raw.count, &out, &size, EVP_md5(), nil)
        }
        return out
    }
}
