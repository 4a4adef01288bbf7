#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

/// Linux names are bytes: names that are not UTF-8 (Latin-1 left-overs, truncated
/// sequences) are captured, listed, read and restored byte for byte.
@Suite struct NonUTF8NameTests {
    /// `dir` (UTF-8) joined with a name given as bytes.
    func join(_ dir: String, _ name: [UInt8]) -> [UInt8] { Array(dir.utf8) + [0x2F] + name }

    /// Runs `body` with `path` NUL-terminated, for a system call.
    func c<T>(_ path: [UInt8], _ body: (UnsafePointer<CChar>) -> T) -> T {
        (path + [0]).map { CChar(bitPattern: $0) }.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    func write(_ path: [UInt8], _ content: String) {
        let fd = c(path) { open($0, O_WRONLY | O_CREAT | O_TRUNC, 0o644) }
        #expect(fd >= 0)
        _ = Array(content.utf8).withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    /// Every entry below `dir` as (relative path bytes, what it is: content, link target or
    /// "dir"), read with readdir so that no name is decoded.
    func tree(_ dir: [UInt8]) -> [[UInt8]: [UInt8]] {
        var out: [[UInt8]: [UInt8]] = [:]
        func walk(_ path: [UInt8], _ rel: [UInt8]) {
            guard let d = c(path, { opendir($0) }) else { return }
            defer { closedir(d) }
            while let e = readdir(d) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
                if name == [0x2E] || name == [0x2E, 0x2E] { continue }
                let full = path + [0x2F] + name, r = rel.isEmpty ? name : rel + [0x2F] + name
                var st = stat()
                guard c(full, { lstat($0, &st) }) == 0 else { continue }
                switch st.st_mode & S_IFMT {
                case S_IFDIR:
                    out[r] = Array("dir".utf8)
                    walk(full, r)
                case S_IFLNK:
                    var buf = [CChar](repeating: 0, count: 4096)
                    let n = c(full) { readlink($0, &buf, buf.count) }
                    out[r] = Array("-> ".utf8) + buf[0..<max(0, n)].map { UInt8(bitPattern: $0) }
                default:
                    let fd = c(full) { open($0, O_RDONLY) }
                    var bytes = [UInt8](repeating: 0, count: 4096)
                    let n = read(fd, &bytes, bytes.count)
                    close(fd)
                    out[r] = Array(bytes[0..<max(0, n)])
                }
            }
        }
        walk(dir, [])
        return out
    }

    @Test func namesThatAreNotUTF8RoundTripByteForByte() throws {
        let dir = TemporaryDirectory("snapshot-names")
        let src = dir.sub("src"), repo = dir.sub("repo")
        try POSIX.makeDirectories(src)
        let cafe: [UInt8] = [0x63, 0x61, 0x66, 0xE9]                       // "café" in Latin-1
        let sub: [UInt8] = [0x64, 0xFF, 0xFE]                                // no UTF-8 at all
        let inner: [UInt8] = [0x66, 0x80, 0x81, 0x2E, 0x74, 0x78, 0x74]      // stray continuation bytes
        let genuine = Array("g-\u{10FFBF}".utf8)                           // UTF-8 in the range the mapping uses
        write(join(src, cafe), "latin-1\n")
        write(join(src, genuine), "plane 16\n")
        write(join(src, Array("ok-ü.txt".utf8)), "utf-8\n")
        #expect(c(join(src, sub)) { mkdir($0, 0o755) } == 0)
        write(join(src, sub) + [0x2F] + inner, "inside\n")
        let link: [UInt8] = [0x6C, 0x6E, 0xFE]
        #expect(c(cafe) { target in c(join(src, link)) { symlink(target, $0) } } == 0)
        let hard: [UInt8] = [0x68, 0xE9]
        #expect(c(join(src, cafe)) { existing in c(join(src, hard)) { Glibc.link(existing, $0) } } == 0)
        var before = tree(Array(src.utf8))
        #expect(before.count == 7, "\(before.keys.map { String(decoding: $0, as: UTF8.self) })")

        let created = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "incremental"])
        #expect(created.status == 0 && !created.stderr.contains("not captured"), "\(created.stderr)")
        let restored = try CLI.run(["--repo", repo, "restore", "--snapshot", "latest", "--target", dir.sub("out"), "--verify"])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(tree(Array(dir.sub("out/src").utf8)) == before)

        // Listed with each such byte as \xNN, and found again by that name.
        let ls = try CLI.run(["--repo", repo, "ls", "--snapshot", "latest"])
        for shown in ["src/caf\\xE9", "src/d\\xFF\\xFE/f\\x80\\x81.txt", "src/g-\\xF4\\x8F\\xBE\\xBF", "src/ln\\xFE", "src/ok-ü.txt"] {
            #expect(ls.stdout.contains(shown + "\n"), "\(shown): \(ls.stdout)")
        }
        let cat = try CLI.run(["--repo", repo, "cat", "--snapshot", "latest", "src/d\\xFF\\xFE/f\\x80\\x81.txt"])
        #expect(cat.status == 0 && cat.stdout == "inside\n", "\(cat.stdout) \(cat.stderr)")
        // An unchanged second snapshot finds every file unchanged by its name.
        let again = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "incremental", "--debug"])
        #expect(again.status == 0 && again.stderr.contains("reading 0 files, 0 bytes"), "\(again.stderr.suffix(600))")
        // Through an archive: SHA256SUMS holds each name's bytes (and a newline escaped, as
        // sha256sum writes it), sha256sum -c agrees, and the import restores the same tree.
        write(join(src, Array("new\nline".utf8)), "two lines\n")
        #expect(try CLI.run(["--repo", repo, "create", "--path", src, "--type", "incremental"]).status == 0)
        before[Array("new\nline".utf8)] = Array("two lines\n".utf8)
        let archive = dir.sub("export.tar")
        #expect(try CLI.run(["--repo", repo, "export", "--snapshot", "latest", "--output", archive]).status == 0)
        let sums = try CLI.shell("mkdir x && tar -xf \(archive) -C x && cd x/snapshot && sha256sum --quiet -c SHA256SUMS", in: dir.path)
        #expect(sums.status == 0, "\(sums.stdout) \(sums.stderr)")
        let imported = try CLI.run(["--repo", dir.sub("other"), "import", archive])
        #expect(imported.status == 0, "\(imported.stderr)")
        #expect(try CLI.run(["--repo", dir.sub("other"), "restore", "--snapshot", "latest", "--target", dir.sub("back")]).status == 0)
        #expect(tree(Array(dir.sub("back/src").utf8)) == before)
        #expect(try CLI.run(["--repo", dir.sub("other"), "verify", "--all", "--read-data"]).status == 0)

        // In place (a config naming the same directory): a changed and a removed file come
        // back, and the staging directory, names and all, is gone afterwards.
        Fixture.write(dir.sub("snapshots.yaml"), Array("""
            root: \(dir.path)
            repository: \(repo)
            components:
              src: {path: src}
            types:
              full: [src]

            """.utf8))
        write(join(src, sub) + [0x2F] + inner, "changed\n")
        #expect(c(join(src, cafe)) { unlink($0) } == 0)
        let inPlace = try CLI.run(["--config", dir.sub("snapshots.yaml"), "restore", "--snapshot", "latest"])
        #expect(inPlace.status == 0, "\(inPlace.stderr)")
        #expect(tree(Array(src.utf8)) == before)
        #expect(try POSIX.listDirectory(dir.path).filter { $0.hasPrefix(".snapshot-restore") }.isEmpty)
        #expect(try CLI.run(["--repo", repo, "verify", "--all", "--read-data"]).status == 0)
    }
}
