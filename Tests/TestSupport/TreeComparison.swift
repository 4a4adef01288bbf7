#if canImport(Glibc)
import Glibc
#endif
import SnapshotCore

/// Compares two directory trees the way a person checking a restore would: every entry's
/// kind, content (SHA-256), symlink target, permission bits, mtime (files, links and
/// directories), hard-link groups and sparseness. Returns the differences, empty when equal.
public enum TreeComparison {
    struct Entry: Equatable {
        var kind: String
        var mode: UInt32
        var mtime: Int
        var digest: String
        var sparse: Bool
        var linkGroup: [String]
    }

    static func scan(_ root: String) -> [String: Entry] {
        var out: [String: Entry] = [:]
        var inodes: [String: [String]] = [:]
        func walk(_ dir: String, _ rel: String) {
            for name in (try? POSIX.listDirectory(dir)) ?? [] {
                let path = dir + "/" + name
                let r = rel.isEmpty ? name : rel + "/" + name
                var st = stat()
                guard lstat(path, &st) == 0 else { continue }
                var e = Entry(kind: "?", mode: UInt32(st.st_mode & 0o7777), mtime: Int(st.st_mtim.tv_sec), digest: "", sparse: false, linkGroup: [])
                switch st.st_mode & S_IFMT {
                case S_IFDIR:
                    e.kind = "dir"
                    walk(path, r)
                case S_IFLNK:
                    e.kind = "symlink"
                    var buf = [UInt8](repeating: 0, count: 4096)
                    let n = buf.withUnsafeMutableBytes { readlink(path, $0.baseAddress!.assumingMemoryBound(to: CChar.self), 4096) }
                    e.digest = String(decoding: buf[0..<max(0, n)], as: UTF8.self)
                    e.mode = 0
                case S_IFREG:
                    e.kind = "file"
                    e.digest = BlobID.hash((try? POSIX.readFile(path)) ?? []).hex
                    e.sparse = Int(st.st_blocks) * 512 + 65536 <= Int(st.st_size)
                    if st.st_nlink > 1 { inodes["\(st.st_dev):\(st.st_ino)", default: []].append(r) }
                default:
                    e.kind = "other"
                }
                out[r] = e
            }
        }
        walk(root, "")
        for group in inodes.values {
            for p in group { out[p]?.linkGroup = group.sorted() }
        }
        return out
    }

    public static func differences(_ a: String, _ b: String) -> [String] {
        let x = scan(a), y = scan(b)
        var diffs: [String] = []
        for (path, ea) in x.sorted(by: { $0.key < $1.key }) {
            guard let eb = y[path] else {
                diffs.append("missing: \(path)")
                continue
            }
            if ea.kind != eb.kind { diffs.append("kind: \(path) \(ea.kind) vs \(eb.kind)") }
            if ea.digest != eb.digest { diffs.append("content: \(path)") }
            if ea.mode != eb.mode { diffs.append("mode: \(path) \(String(ea.mode, radix: 8)) vs \(String(eb.mode, radix: 8))") }
            if ea.mtime != eb.mtime { diffs.append("mtime: \(path) \(ea.mtime) vs \(eb.mtime)") }
            if ea.sparse && !eb.sparse { diffs.append("sparse lost: \(path)") }
            if ea.linkGroup != eb.linkGroup { diffs.append("hardlinks: \(path) \(ea.linkGroup) vs \(eb.linkGroup)") }
        }
        for path in y.keys where x[path] == nil { diffs.append("extra: \(path)") }
        return diffs
    }
}
