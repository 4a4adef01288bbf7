import Foundation
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

/// Float planes (entry codec 2): vector storage is stored as byte planes with only the
/// sign/exponent plane compressed — smaller and faster than zstd on whole blocks — in
/// repositories of format version 2; a repository of version 1 never gets such an entry.
@Suite struct FloatPlanesTests {
    /// Little-endian float32 values like an embedding's: small, of either sign.
    static func vectors(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        var out: [UInt8] = []
        out.reserveCapacity(4 * count)
        for _ in 0..<count {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            let unit = Float(state >> 40) / Float(1 << 24)  // 0..<1
            let value = (unit - 0.5) * 0.3
            withUnsafeBytes(of: value.bitPattern.littleEndian) { out += $0 }
        }
        return out
    }

    @Test func planesRoundTripEveryLengthAndRefuseWhatDoesNotAddUp() throws {
        let c = Compressor(level: 3)
        let data = Self.vectors(8200, seed: 1)
        for length in [256, 257, 258, 259, 32768, 32771] {
            let input = Array(data[0..<length])
            let packed = try #require(input.withUnsafeBytes { c.compressPlanes($0) })
            let whole = input.withUnsafeBytes { c.compress($0) }?.count ?? length
            #expect(packed.count < whole, "float planes beat zstd on floats (\(packed.count) vs \(whole) of \(length))")
            #expect(try packed.withUnsafeBytes { try c.decompressPlanes($0, rawLength: length) } == input)
        }
        // Noise does not shrink; neither do blocks too small to be worth it.
        #expect(Fixture.bytes(32768, seed: 2).withUnsafeBytes { c.compressPlanes($0) } == nil)
        #expect(Array(data[0..<200]).withUnsafeBytes { c.compressPlanes($0) } == nil)
        // Damage: a wrong frame length, a cut payload, a wrong raw length are errors.
        let input = Array(data[0..<32768])
        let packed = try #require(input.withUnsafeBytes { c.compressPlanes($0) })
        var longer = packed
        longer[0] &+= 1
        #expect(throws: (any Error).self) { try longer.withUnsafeBytes { try c.decompressPlanes($0, rawLength: 32768) } }
        #expect(throws: (any Error).self) { try Array(packed.dropLast()).withUnsafeBytes { try c.decompressPlanes($0, rawLength: 32768) } }
        #expect(throws: (any Error).self) { try packed.withUnsafeBytes { try c.decompressPlanes($0, rawLength: 32772) } }
        #expect(throws: (any Error).self) { try [UInt8](repeating: 0xff, count: 3).withUnsafeBytes { try c.decompressPlanes($0, rawLength: 0) } }
    }

    /// The header codec of every stored block of one file in a snapshot.
    static func codecs(_ h: EngineHarness, _ record: SnapshotRecord, file: String) throws -> [UInt8] {
        let repo = try h.open()
        let manifest = try SnapshotCatalog(repositoryPath: h.repoPath).readManifest(record)
        let tree = try BlobReader(repository: repo).readTree(try #require(manifest.components["src"]).treeID, path: "src")
        let node = try #require(tree.nodes.first { $0.name == file })
        return try node.content.map { id in try repo.readEntry(try #require(repo.location(of: id)))[0] & 0x03 }
    }

    @Test func vectorStorageIsStoredAsFloatPlanesOnlyInAVersionTwoRepository() throws {
        let h = try EngineHarness()
        Fixture.write(h.source + "/chunk_0.mmap", Self.vectors(100_000, seed: 3))
        // A fixed-block file that is text, not floats: its first blocks show zstd wins.
        Fixture.write(h.source + "/ids.mmap", Fixture.text(lines: 8000))
        #expect(try h.open().config.version == 2)
        let first = try h.create(type: .full)
        let vectorCodecs = try Self.codecs(h, first, file: "chunk_0.mmap")
        #expect(vectorCodecs.count == 13 && vectorCodecs.allSatisfy { $0 == PackFormat.compressionPlanes }, "\(vectorCodecs)")
        #expect(try Self.codecs(h, first, file: "ids.mmap").allSatisfy { $0 == PackFormat.compressionZstd })
        _ = try h.restore(first.id, to: h.dir.sub("out"))
        #expect(TreeComparison.differences(h.source, h.dir.sub("out/src")) == [])

        // A repository of format version 1 (made by an older build): zstd, never planes.
        try Self.setVersion(1, h.repoPath)
        Fixture.write(h.source + "/chunk_0.mmap", Self.vectors(100_000, seed: 4))
        let second = try h.create(type: .full)
        #expect(try Self.codecs(h, second, file: "chunk_0.mmap").allSatisfy { $0 == PackFormat.compressionZstd })
        _ = try h.restore(second.id, to: h.dir.sub("out2"))
        #expect(TreeComparison.differences(h.source, h.dir.sub("out2/src")) == [])
        // ...and what a version 1 repository holds as float planes is damage, named.
        let errors = try h.verify(readData: true).snapshots.flatMap(\.errors)
        #expect(!errors.isEmpty && errors.allSatisfy { $0.contains("float planes in a repository of format version 1") }, "\(errors)")
        try Self.setVersion(2, h.repoPath)
        try h.expectVerifies()
    }

    static func setVersion(_ version: Int, _ path: String) throws {
        for name in ["config", "config.copy"] {
            let file = path + "/.store/" + name
            var json = try #require(try JSONSerialization.jsonObject(with: Data(POSIX.readFile(file))) as? [String: Any])
            json["version"] = version
            try POSIX.writeFileAtomically(file, Array(try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])))
        }
    }
}
