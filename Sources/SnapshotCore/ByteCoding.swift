#if canImport(Glibc)
import Glibc
#endif

/// Little-endian binary writer for the repository's own formats.
public struct ByteWriter {
    public var bytes: [UInt8] = []

    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }
    /// Unsigned LEB128.
    public mutating func uvarint(_ v: UInt64) {
        var v = v
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }
    public mutating func varint(_ v: Int64) { uvarint(UInt64(bitPattern: (v << 1) ^ (v >> 63))) }
    public mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        uvarint(UInt64(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    public mutating func id(_ id: BlobID) { id.append(to: &bytes) }
}

/// Bounds-checked little-endian reader; every read throws on truncated input.
public struct ByteReader {
    private let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public var remaining: Int { bytes.count - offset }

    private mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, n <= remaining else { throw CoreError.corrupt("truncated at byte \(offset)") }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }

    public mutating func u8() throws -> UInt8 { try take(1).first! }
    public mutating func u32() throws -> UInt32 {
        let s = try take(4)
        return s.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self)) }
    }
    public mutating func u64() throws -> UInt64 {
        let s = try take(8)
        return s.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    }
    public mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    public mutating func uvarint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try u8()
            guard shift < 64 else { throw CoreError.corrupt("varint too long at byte \(offset)") }
            result |= UInt64(b & 0x7f) << shift
            if b < 0x80 { return result }
            shift += 7
        }
    }
    public mutating func varint() throws -> Int64 {
        let u = try uvarint()
        return Int64(bitPattern: (u >> 1) ^ (0 &- (u & 1)))
    }
    public mutating func count(max: Int) throws -> Int {
        let n = try uvarint()
        guard n <= UInt64(max) else { throw CoreError.corrupt("count \(n) out of range at byte \(offset)") }
        return Int(n)
    }
    public mutating func string() throws -> String {
        let n = try count(max: remaining)
        let s = try take(n)
        guard let str = String(validating: s, as: UTF8.self) else {
            throw CoreError.corrupt("invalid UTF-8 at byte \(offset - n)")
        }
        return str
    }
    public mutating func raw(_ n: Int) throws -> [UInt8] { Array(try take(n)) }
    public mutating func id() throws -> BlobID {
        let s = try take(32)
        return s.withUnsafeBytes { BlobID(bytes: $0) }
    }
}

extension String {
    /// The text on one line: control characters (newline, tab, escape…) written as `\n`,
    /// `\t`, `\u{1b}`. For logs and one-line error messages that quote outside input, so that
    /// a value cannot forge a line of its own or drive a terminal.
    public var escapingControlCharacters: String {
        guard unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f || (0x80..<0xa0).contains($0.value) || FileName.escapes.contains($0.value) }) else { return self }
        var out = ""
        for u in unicodeScalars {
            switch u.value {
            case 0x0a: out += "\\n"
            case 0x0d: out += "\\r"
            case 0x09: out += "\\t"
            case 0..<0x20, 0x7f, 0x80..<0xa0: out += "\\u{" + String(u.value, radix: 16) + "}"
            case FileName.escapes: out += "\\x" + String(u.value - FileName.escapeBase, radix: 16, uppercase: true)  // a name's byte that is not UTF-8
            default: out.unicodeScalars.append(u)
            }
        }
        return out
    }
}

extension Array where Element == UInt8 {
    /// Where `needle` first occurs, or nil. A plain loop over the bytes (`Data.contains` and
    /// the standard library's `firstRange(of:)` take a generic search that costs more than
    /// parsing a small file).
    public func offset(of needle: [UInt8]) -> Int? {
        guard let first = needle.first else { return 0 }
        guard count >= needle.count else { return nil }
        return withUnsafeBufferPointer { b in
            needle.withUnsafeBufferPointer { n in
                for i in 0...(b.count - n.count) where b[i] == first {
                    if memcmp(b.baseAddress! + i, n.baseAddress!, n.count) == 0 { return i }
                }
                return nil
            }
        }
    }
}
