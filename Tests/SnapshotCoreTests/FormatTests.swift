import Foundation
import SnapshotCore
import Testing
import TestSupport

@Suite struct FormatTests {
    /// Both checksum versions against values computed independently (Python's hashlib over
    /// the lines docs/design.md describes).
    @Test func componentChecksumsMatchTheDocumentedLines() throws {
        func id(_ s: String) -> BlobID { BlobID.hash(Array(s.utf8)) }
        var b = Node(name: "b", kind: .file)
        b.size = 3
        b.content = [id("2"), id("3")]
        let sub = Tree(nodes: [b])
        var a = Node(name: "a.txt", kind: .file)
        a.size = 5
        a.content = [id("1")]
        var d = Node(name: "d", kind: .directory)
        d.subtree = id("sub")
        var l = Node(name: "l", kind: .symlink)
        l.size = 5
        l.linkTarget = "a.txt"
        let root = Tree(nodes: [a, d, l])
        let trees = [id("root"): root, id("sub"): sub]
        let load: (BlobID, String) throws -> Tree = { i, _ in trees[i]! }
        #expect(try ComponentDigest.compute(root: id("root"), version: 1, loadTree: load) == "sha256:77630f4fddc159e2bc178d69733ff8789cad146aac4dc084389bbc3e2b4a73ed")
        let v2 = try ComponentDigest.summarize(root: id("root"), version: 2, loadTree: load)
        #expect(v2.digest == "sha256:36ac4a076a08c5269396b849669ef0c559f0186393e4d4a927752a9ee8db4db3")
        #expect(v2.files == 2 && v2.bytes == 8)
        // A cache answers for a tree id without loading it again.
        let cache = DigestCache()
        _ = try ComponentDigest.summarize(root: id("root"), cache: cache, loadTree: load)
        #expect(try ComponentDigest.summarize(root: id("root"), cache: cache) { _, _ in throw RepositoryError.missingBlob(id: id("x"), context: "cached") }.digest == v2.digest)
    }

    @Test func byteSearchFindsTheFirstOccurrence() {
        let crlf: [UInt8] = [0x0d, 0x0a, 0x0d, 0x0a]
        #expect(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\r\n\r\n".utf8).offset(of: crlf) == 23)
        #expect(Array("ab\r\n\r\n".utf8).offset(of: crlf) == 2)
        #expect(Array("ab\r\n\r".utf8).offset(of: crlf) == nil)
        #expect([UInt8]().offset(of: crlf) == nil && [1, 2].offset(of: []) == 0)
    }

    @Test func sha256MatchesTheStandardVector() {
        #expect(BlobID.hash(Array("abc".utf8)).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let id = BlobID.hash(Array("x".utf8))
        #expect(BlobID(hex: id.hex) == id)
        #expect(BlobID(hex: "zz") == nil)
        #expect(BlobID(hex: String(repeating: "g", count: 64)) == nil)
    }

    @Test func compressionRoundTripsAndDeclinesNoise() throws {
        let c = Compressor(level: 3)
        let text = Fixture.text(lines: 2000)
        let packed = try #require(text.withUnsafeBytes { c.compress($0) })
        #expect(packed.count < text.count / 3)
        let back = try packed.withUnsafeBytes { try c.decompress($0, rawLength: text.count) }
        #expect(back == text)
        let noise = Fixture.bytes(100_000, seed: 5)
        #expect(noise.withUnsafeBytes { c.compress($0) } == nil)
        #expect(throws: (any Error).self) { try [UInt8](repeating: 7, count: 20).withUnsafeBytes { try c.decompress($0, rawLength: 100) } }
    }

    @Test func treesRoundTripAndRejectEscapingNames() throws {
        var file = Node(name: "a b ü.txt", kind: .file)
        file.mode = 0o640
        file.size = 5
        file.content = [BlobID.hash(Array("hello".utf8))]
        file.mtime = Timestamp(seconds: -5, nanoseconds: 123)
        var link = Node(name: "l", kind: .symlink)
        link.linkTarget = "../../etc/passwd"
        var dir = Node(name: "d", kind: .directory)
        dir.subtree = BlobID.hash([1])
        let tree = Tree(nodes: [link, file, dir])
        #expect(tree.nodes.map(\.name) == ["a b ü.txt", "d", "l"])
        #expect(try Tree.decode(tree.encode()) == tree)
        // Names twice or out of order: one path could be a directory and a symlink at once.
        var directoryX = Node(name: "x", kind: .directory)
        directoryX.subtree = BlobID.hash([1])
        var escape = Node(name: "x", kind: .symlink)
        escape.linkTarget = "/etc"
        var twice = Tree(nodes: [])
        twice.nodes = [directoryX, escape]
        #expect(throws: (any Error).self) { try Tree.decode(twice.encode()) }
        var unsorted = Tree(nodes: [])
        unsorted.nodes = [Node(name: "b", kind: .fifo), Node(name: "a", kind: .fifo)]
        #expect(throws: (any Error).self) { try Tree.decode(unsorted.encode()) }
        #expect(throws: (any Error).self) {
            try JSONDecoder().decode(SnapshotManifest.self, from: Data(#"{"format":1,"snapshot_id":"2024-01-01_00-00-00","type":"full","components":{"../x":{"kind":"files","source":"/","tree":"\#(BlobID.hash([2]).hex)"}}}"#.utf8))
        }
        for bad in ["..", ".", "a/b", ""] {
            let t = Tree(nodes: [Node(name: bad, kind: .fifo)])
            #expect(throws: (any Error).self) { try Tree.decode(t.encode()) }
        }
        var bytes = tree.encode()
        bytes.removeLast(3)
        #expect(throws: (any Error).self) { try Tree.decode(bytes) }
    }

    @Test func indexFilesRoundTripAndDetectDamage() throws {
        let pack = BlobID.random()
        var entries: [PackEntry] = []
        for i in 0..<50 {
            let type: BlobType = i % 2 == 0 ? .data : .tree
            entries.append(PackEntry(id: BlobID.hash([UInt8(i)]), type: type, offset: UInt32(i * 100), length: 100, rawLength: 250))
        }
        let bytes = IndexFile.encode([(pack, entries)])
        let decoded = try IndexFile.decode(bytes, file: "idx")
        #expect(decoded.count == 1 && decoded[0].pack == pack && decoded[0].entries == entries)
        for position in [0, 10, bytes.count / 2, bytes.count - 1] {
            var damaged = bytes
            damaged[position] ^= 0x40
            #expect(throws: RepositoryError.self) { try IndexFile.decode(damaged, file: "idx") }
        }
        #expect(throws: RepositoryError.self) { try IndexFile.decode(Array(bytes.prefix(20)), file: "idx") }
        #expect(throws: RepositoryError.self) { try IndexFile.decode([], file: "idx") }
    }

    @Test func timestampsParseAndFormat() throws {
        let t = try #require(Timestamp(iso8601: "2024-01-15T10:30:00Z"))
        #expect(t.snapshotID == "2024-01-15_10-30-00")
        #expect(t.iso8601 == "2024-01-15T10:30:00Z")
        #expect(Timestamp(iso8601: "2024-01-15T12:30:00+02:00") == t)
        #expect(Timestamp(iso8601: "2024-01-15")?.iso8601 == "2024-01-15T00:00:00Z")
        #expect(Timestamp(iso8601: "2024-01-15T10:30:00.5Z")?.nanoseconds == 500_000_000)
        for bad in ["", "yesterday", "2024-13-01", "2024-01-15T25:00:00Z", "2024-01-15T10:30:00Zjunk"] {
            #expect(Timestamp(iso8601: bad) == nil, "\(bad)")
        }
    }
}
