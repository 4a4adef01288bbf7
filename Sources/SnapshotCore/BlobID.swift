#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import CSHA256

/// A 32-byte content identifier: the SHA-256 of a blob's plaintext.
///
/// Stored as four words so that hashing and equality in the index are cheap.
public struct BlobID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var w0: UInt64
    public var w1: UInt64
    public var w2: UInt64
    public var w3: UInt64

    /// Creates an id from exactly 32 bytes.
    public init(bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == 32)
        w0 = bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
        w1 = bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        w2 = bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self)
        w3 = bytes.loadUnaligned(fromByteOffset: 24, as: UInt64.self)
    }

    /// Parses 64 lowercase or uppercase hex digits; nil for anything else.
    public init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 64 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 32)
        for i in 0..<32 {
            guard let hi = Self.nibble(utf8[2 * i]), let lo = Self.nibble(utf8[2 * i + 1]) else {
                return nil
            }
            bytes[i] = hi << 4 | lo
        }
        self = bytes.withUnsafeBytes { BlobID(bytes: $0) }
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// The SHA-256 of `data`.
    public static func hash(_ data: UnsafeRawBufferPointer) -> BlobID {
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &digest) { out in
            var size: UInt32 = 0
            let ok = EVP_Digest(data.baseAddress, data.count, out.baseAddress, &size, Digest.sha256, nil)
            precondition(ok == 1 && size == 32, "EVP_Digest failed")
        }
        return withUnsafeBytes(of: &digest) { BlobID(bytes: $0) }
    }

    /// Whether this CPU hashes two messages at once (the x86 SHA extensions).
    static let pairsInterleave = snapshot_sha256_pair_available() != 0

    /// The SHA-256 of `a` and of `b`. Where the CPU has the SHA extensions both are hashed
    /// at once, at about twice the speed of one after the other (sha256_pair.h): a backup
    /// hashes its chunks, and a restore checks its blobs, in pairs.
    public static func hashPair(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> (BlobID, BlobID) {
        guard pairsInterleave, a.count > 0, b.count > 0 else { return (hash(a), hash(b)) }
        return pair { snapshot_sha256_pair(a.baseAddress, a.count, b.baseAddress, b.count, $0, $1) }
    }

    /// Two ids that `digest` writes, 32 bytes at each of the two places it is given (the
    /// outputs of a paired hash or MAC).
    static func pair(_ digest: (UnsafeMutableRawPointer, UnsafeMutableRawPointer) -> Void) -> (BlobID, BlobID) {
        var da = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var db = da
        withUnsafeMutableBytes(of: &da) { outA in
            withUnsafeMutableBytes(of: &db) { outB in digest(outA.baseAddress!, outB.baseAddress!) }
        }
        return (withUnsafeBytes(of: &da) { BlobID(bytes: $0) }, withUnsafeBytes(of: &db) { BlobID(bytes: $0) })
    }

    /// The SHA-256 of a whole file, read 1 MiB at a time.
    public static func hashFile(_ path: String) throws -> BlobID {
        let fd = POSIX.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "open") }
        defer { close(fd) }
        let ctx = EVP_MD_CTX_new()!
        defer { EVP_MD_CTX_free(ctx) }
        EVP_DigestInit_ex(ctx, Digest.sha256, nil)
        while true {
            let chunk = try POSIX.readUpTo(fd, 1 << 20, path: path)
            if chunk.isEmpty { break }
            chunk.withUnsafeBytes { _ = EVP_DigestUpdate(ctx, $0.baseAddress, $0.count) }
            if chunk.count < 1 << 20 { break }
        }
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &digest) { out in
            var size: UInt32 = 0
            EVP_DigestFinal_ex(ctx, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &size)
        }
        return withUnsafeBytes(of: &digest) { BlobID(bytes: $0) }
    }

    /// The SHA-256 of `bytes`.
    public static func hash(_ bytes: [UInt8]) -> BlobID {
        bytes.withUnsafeBytes { hash($0) }
    }

    /// The 32 bytes of the id.
    public var bytes: [UInt8] {
        var words = (w0, w1, w2, w3)
        return withUnsafeBytes(of: &words) { Array($0) }
    }

    /// Appends the 32 bytes of the id to `out`.
    public func append(to out: inout [UInt8]) {
        var words = (w0, w1, w2, w3)
        withUnsafeBytes(of: &words) { out.append(contentsOf: $0) }
    }

    /// Appends the 64 lowercase hex digits of the id to `out`.
    public func appendHex(to out: inout [UInt8]) {
        var words = (w0, w1, w2, w3)
        withUnsafeBytes(of: &words) { raw in
            for b in raw {
                out.append(Self.hexDigits[Int(b >> 4)])
                out.append(Self.hexDigits[Int(b & 15)])
            }
        }
    }

    static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    public var hex: String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The first 8 hex digits, for messages.
    public var short: String { String(hex.prefix(8)) }

    public var description: String { hex }

    public static func < (a: BlobID, b: BlobID) -> Bool {
        a.hex < b.hex
    }

    /// 32 random bytes from OpenSSL's CSPRNG (pack and index file names).
    public static func random() -> BlobID {
        var bytes = [UInt8](repeating: 0, count: 32)
        let ok = RAND_bytes(&bytes, 32)
        precondition(ok == 1, "RAND_bytes failed")
        return bytes.withUnsafeBytes { BlobID(bytes: $0) }
    }
}

/// OpenSSL digest handles, fetched once.
enum Digest {
    nonisolated(unsafe) static let sha256: OpaquePointer = EVP_sha256()
}

/// An incremental SHA-256 over several pieces (component checksums, file digests).
public struct SHA256Stream: ~Copyable {
    private let ctx: OpaquePointer

    public init() {
        ctx = EVP_MD_CTX_new()
        precondition(EVP_DigestInit_ex(ctx, Digest.sha256, nil) == 1)
    }

    deinit { EVP_MD_CTX_free(ctx) }

    public mutating func update(_ data: UnsafeRawBufferPointer) {
        if data.count > 0 {
            precondition(EVP_DigestUpdate(ctx, data.baseAddress, data.count) == 1)
        }
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    public mutating func update(_ string: String) {
        var s = string
        s.withUTF8 { update(UnsafeRawBufferPointer($0)) }
    }

    public consuming func finish() -> BlobID {
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &digest) { out in
            var size: UInt32 = 0
            precondition(EVP_DigestFinal_ex(ctx, out.baseAddress?.assumingMemoryBound(to: UInt8.self), &size) == 1)
        }
        return withUnsafeBytes(of: &digest) { BlobID(bytes: $0) }
    }
}
