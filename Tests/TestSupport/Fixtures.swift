#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore

/// A new plain and a new encrypted repository (aes-256-gcm, password "pw") under `dir`, each
/// with a way to open it again as a later command would.
public struct TestRepository {
    public let encrypted: Bool
    public let repository: Repository
    public let reopen: () throws -> Repository

    public static func plainAndEncrypted(in dir: TemporaryDirectory) throws -> [TestRepository] {
        let password = Array("pw".utf8)
        return try [false, true].map { encrypted in
            let path = dir.sub(encrypted ? "enc" : "plain")
            let repository = encrypted
                ? try Repository.initialize(at: path, encryption: "aes-256-gcm", password: password)
                : try Repository.initialize(at: path)
            return TestRepository(encrypted: encrypted, repository: repository) {
                try Repository.open(at: path, keyring: encrypted ? Keyring(repositoryPath: path, password: password) : nil)
            }
        }
    }
}

/// A scratch directory removed when the value is released.
public final class TemporaryDirectory: @unchecked Sendable {
    public let path: String

    public init(_ label: String = "snapshot-test") {
        var template = Array("/tmp/\(label)-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        precondition(p != nil, "mkdtemp failed")
        path = template.withUnsafeBufferPointer { buf in
            String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }

    public func sub(_ name: String) -> String { path + "/" + name }

    /// Writes `snapshots.yaml` here — root this directory (or `root`), repository `repo/`
    /// here (or `repository`), one files component `name` at `componentPath` in type `type`,
    /// then `extra` (YAML, top level) — and returns its path.
    public func config(component name: String = "data", path componentPath: String = "data", type: String = "full", root: String? = nil, repository: String? = nil, extra: String = "") -> String {
        let file = sub("snapshots.yaml")
        Fixture.write(file, Array("""
            root: \(root ?? path)
            repository: \(repository ?? sub("repo"))
            components:
              \(name): {path: \(componentPath)}
            types:
              \(type): [\(name)]
            \(extra)
            """.utf8))
        return file
    }

    deinit { try? POSIX.removeTree(path) }
}

/// Writes files for tests.
public enum Fixture {
    /// Deterministic pseudo-random bytes.
    public static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed &+ 0x9E37_79B9_7F4A_7C15
        var out = [UInt8](repeating: 0, count: count)
        var i = 0
        while i < count {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            var w = state
            for _ in 0..<8 where i < count {
                out[i] = UInt8(truncatingIfNeeded: w)
                w >>= 8
                i += 1
            }
        }
        return out
    }

    /// Text that compresses well.
    public static func text(lines: Int, seed: Int = 0) -> [UInt8] {
        var s = ""
        for i in 0..<lines {
            s += "2024-11-01T00:00:\(String(format: "%02d", i % 60))Z INFO worker-\(i % 4) task=\(i + seed) topic=tasks/\(i % 97)/result latency_ms=\((i * 7) % 1500)\n"
        }
        return Array(s.utf8)
    }

    public static func write(_ path: String, _ bytes: [UInt8], mode: mode_t = 0o644, mtime: Int? = nil) {
        try! POSIX.makeDirectories(POSIX.parent(of: path))
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
        precondition(fd >= 0, "cannot create \(path)")
        try! POSIX.writeAll(fd, bytes, path: path)
        fchmod(fd, mode)
        close(fd)
        if let mtime { setMtime(path, mtime) }
    }

    public static func setMtime(_ path: String, _ seconds: Int, nanoseconds: Int = 0) {
        var times = [timespec(tv_sec: seconds, tv_nsec: nanoseconds), timespec(tv_sec: seconds, tv_nsec: nanoseconds)]
        utimensat(AT_FDCWD, path, &times, AT_SYMLINK_NOFOLLOW)
    }

    /// A tree with every fidelity case the engine promises: regular, empty and large files,
    /// nested and empty directories, relative and outward symlinks, a hard-link pair, a sparse
    /// file, a 0600 file, a setgid directory, UTF-8 and space names, and set mtimes.
    public static func fidelityTree(at root: String) {
        write(root + "/configs/system.yaml", Array("system:\n  name: test\n".utf8), mtime: 1_700_000_000)
        write(root + "/configs/secret.yaml", Array("token: abc\n".utf8), mode: 0o600, mtime: 1_700_000_001)
        write(root + "/empty.txt", [], mtime: 1_700_000_002)
        write(root + "/storage/vectors/chunk_0.mmap", bytes(700_000, seed: 1), mtime: 1_700_000_003)
        write(root + "/models/weights.bin", bytes(3_000_000, seed: 2), mtime: 1_700_000_004)
        // A copy (not a hard link): its chunks are restored from the first copy.
        write(root + "/models/archive/weights-copy.bin", bytes(3_000_000, seed: 2), mtime: 1_700_000_010)
        write(root + "/logs/system.log", text(lines: 20_000), mtime: 1_700_000_005)
        write(root + "/names/modèle-routeur-説明.md", Array("ü\n".utf8), mtime: 1_700_000_006)
        write(root + "/names/crash report 2024.txt", Array("oops\n".utf8), mtime: 1_700_000_007)
        write(root + "/exec.sh", Array("#!/bin/sh\necho hi\n".utf8), mode: 0o755, mtime: 1_700_000_008)
        try! POSIX.makeDirectories(root + "/empty-dir")
        symlink("../configs/system.yaml", root + "/names/link-to-config")
        symlink("/etc/hostname", root + "/names/outside-link")
        symlink("dangling-target", root + "/names/dangling")
        link(root + "/configs/system.yaml", root + "/names/hardlink.yaml")
        // Sparse: 8 MiB hole, a few bytes of data, another 8 MiB hole.
        let sparse = root + "/storage/wal/open-prealloc"
        try! POSIX.makeDirectories(POSIX.parent(of: sparse))
        let fd = open(sparse, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        _ = pwrite(fd, "data", 4, 8 << 20)
        ftruncate(fd, 16 << 20)
        close(fd)
        setMtime(sparse, 1_700_000_009)
        try! POSIX.makeDirectories(root + "/setgid")
        chmod(root + "/setgid", 0o2775)
        for dir in ["configs", "names", "storage/vectors", "storage/wal", "storage", "models/archive", "models", "logs", "empty-dir", "setgid"] {
            setMtime(root + "/" + dir, 1_690_000_000)
        }
    }
}

/// Damage for tests of verify and repair.
public enum Damage {
    /// Flips one byte in the middle of `blob`'s entry in its pack (where the index places it
    /// now).
    public static func flipByte(of blob: BlobID, in repository: Repository) {
        guard let location = repository.index.location(of: blob) else {
            preconditionFailure("blob \(blob.short) is not in the index")
        }
        let fd = open(repository.packPath(location.pack), O_RDWR)
        precondition(fd >= 0, "open \(repository.packPath(location.pack))")
        defer { close(fd) }
        var byte: UInt8 = 0
        let at = off_t(location.offset + location.length / 2)
        _ = pread(fd, &byte, 1, at)
        byte ^= 0x01
        _ = pwrite(fd, &byte, 1, at)
    }
}

/// Where a symlink points (nil when it is not one).
public enum FileStatLink {
    public static func target(_ path: String) -> String? {
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = buf.withUnsafeMutableBytes { readlink(path, $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4096) }
        return n < 0 ? nil : String(decoding: buf[0..<n], as: UTF8.self)
    }
}
