#if canImport(Glibc)
import Glibc
#endif

/// File names on Linux are bytes (anything but `/` and NUL); a Swift `String` is Unicode.
/// A name that is not UTF-8 is carried as a string in which every byte that does not decode
/// stands as the character U+10FF00 + byte (U+10FF80…U+10FFFF, private use) — and so does
/// every byte of such a character found in a name, so that the mapping is one-to-one. Names
/// that are UTF-8 and hold none of those characters (all but the rarest) are the same string
/// either way, and cost one scan for the byte 0xF4.
///
/// Names enter through `decode` (directory listings, symlink targets, inotify events) and
/// leave through `withCString`/`bytes` (every system call, an archive's headers), so a
/// snapshot captures and restores them byte for byte; messages show such a byte as `\xNN`.
public enum FileName {
    static let escapeBase: UInt32 = 0x10FF00
    static let escapes: ClosedRange<UInt32> = 0x10FF80...0x10FFFF

    /// The string for a name's bytes.
    public static func decode(_ raw: UnsafeRawBufferPointer) -> String {
        if !raw.contains(0xF4), let s = String(validating: raw, as: UTF8.self) { return s }
        var out = String.UnicodeScalarView()
        var i = 0
        while i < raw.count {
            if let (value, length) = scalar(raw, at: i), !escapes.contains(value) {
                out.append(Unicode.Scalar(value)!)
                i += length
            } else {
                out.append(Unicode.Scalar(escapeBase + UInt32(raw[i]))!)
                i += 1
            }
        }
        return String(out)
    }

    public static func decode(_ bytes: [UInt8]) -> String {
        bytes.withUnsafeBytes { decode($0) }
    }

    /// The bytes a string stands for (its UTF-8 unless it holds escaped bytes).
    public static func bytes(_ s: String) -> [UInt8] {
        guard s.utf8.contains(0xF4) else { return Array(s.utf8) }
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        for u in s.unicodeScalars {
            if escapes.contains(u.value) {
                out.append(UInt8(u.value - escapeBase))
            } else {
                out.append(contentsOf: String(u).utf8)
            }
        }
        return out
    }

    /// Runs `body` with the NUL-terminated bytes of the name or path `s`, for a system call.
    public static func withCString<T>(_ s: String, _ body: (UnsafePointer<CChar>) throws -> T) rethrows -> T {
        guard s.utf8.contains(0xF4) else { return try s.withCString(body) }
        var b = bytes(s)
        b.append(0)
        return try b.withUnsafeBytes { try body($0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
    }

    /// `s` for people: each escaped byte written `\xNN` (`caf\xE9`); otherwise `s` itself.
    /// `ls`, `diff` and `cat` show paths so and take them back so.
    public static func display(_ s: String) -> String {
        guard hasEscapes(s) else { return s }
        var out = ""
        for u in s.unicodeScalars {
            if let b = escapedByte(u) { out += "\\x" + String(b, radix: 16, uppercase: true) } else { out.unicodeScalars.append(u) }
        }
        return out
    }

    /// Whether `s` stands for bytes that are not UTF-8.
    public static func hasEscapes(_ s: String) -> Bool {
        s.utf8.contains(0xF4) && s.unicodeScalars.contains { escapes.contains($0.value) }
    }

    /// The escaped byte a scalar stands for, if it is one.
    static func escapedByte(_ u: Unicode.Scalar) -> UInt8? {
        escapes.contains(u.value) ? UInt8(u.value - escapeBase) : nil
    }

    /// One UTF-8 scalar at `i`: its value and length, or nil where the bytes are not one
    /// (a stray continuation byte, a truncated or overlong sequence, a surrogate).
    static func scalar(_ raw: UnsafeRawBufferPointer, at i: Int) -> (UInt32, Int)? {
        let b0 = raw[i]
        if b0 < 0x80 { return (UInt32(b0), 1) }
        let length: Int, minimum: UInt32
        var value: UInt32
        switch b0 {
        case 0xC2...0xDF: (length, minimum, value) = (2, 0x80, UInt32(b0 & 0x1F))
        case 0xE0...0xEF: (length, minimum, value) = (3, 0x800, UInt32(b0 & 0x0F))
        case 0xF0...0xF4: (length, minimum, value) = (4, 0x10000, UInt32(b0 & 0x07))
        default: return nil
        }
        guard i + length <= raw.count else { return nil }
        for k in 1..<length {
            let c = raw[i + k]
            guard c & 0xC0 == 0x80 else { return nil }
            value = value << 6 | UInt32(c & 0x3F)
        }
        guard value >= minimum, value <= 0x10FFFF, !(0xD800...0xDFFF).contains(value) else { return nil }
        return (value, length)
    }
}

extension POSIX {
    /// realpath of the longest existing prefix of an absolute path, with the rest appended:
    /// where a path leads, also before it exists.
    public static func resolveExisting(_ path: String) -> String {
        var existing = path
        var rest: [String] = []
        while !existing.isEmpty && existing != "/" && FileIdentity(path: existing) == nil {
            rest.insert(POSIX.lastComponent(existing), at: 0)
            existing = POSIX.parent(of: existing)
        }
        var buf = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
        let resolved = buf.withUnsafeMutableBytes { out in
            FileName.withCString(existing) { realpath($0, out.baseAddress!.assumingMemoryBound(to: CChar.self)) } != nil
        }
        let base = resolved ? FileName.decode(Array(buf.prefix { $0 != 0 })) : existing
        return rest.isEmpty ? base : (base == "/" ? "" : base) + "/" + rest.joined(separator: "/")
    }

    /// Whether `path` is `directory` or lies below it (both resolved by the caller).
    public static func isWithin(_ path: String, _ directory: String) -> Bool {
        path == directory || path.hasPrefix(directory == "/" ? "/" : directory + "/")
    }

    /// open(2) of a path that may hold a name's escaped bytes (`FileName`).
    public static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0) -> Int32 {
        FileName.withCString(path) { Glibc.open($0, flags, mode) }
    }

    /// lstat(2) of such a path: 0, or -1 with errno.
    public static func lstat(_ path: String, _ st: inout stat) -> Int32 {
        FileName.withCString(path) { Glibc.lstat($0, &st) }
    }

    /// fstatat(2) of such a name in the directory open as `dir`.
    public static func fstatat(_ dir: Int32, _ name: String, _ st: inout stat, _ flags: Int32) -> Int32 {
        FileName.withCString(name) { Glibc.fstatat(dir, $0, &st, flags) }
    }
}

/// A file system object by device and inode: the same directory whatever path names it.
public struct FileIdentity: Hashable, Sendable {
    public let device: UInt64
    public let inode: UInt64

    public init(_ st: stat) {
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }

    /// What `path` names (a symlink followed), or nil when there is nothing.
    public init?(path: String) {
        var st = stat()
        guard FileName.withCString(path, { stat($0, &st) }) == 0 else { return nil }
        self.init(st)
    }
}
