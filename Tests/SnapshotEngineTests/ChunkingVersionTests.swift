import Foundation
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

/// A repository keeps the chunking policy it was made with: new ones record version 2 in
/// their config, one made before (no `chunking` field) keeps cutting as version 1, so that a
/// file read again gives the chunks it gave before and they deduplicate.
@Suite struct ChunkingVersionTests {
    /// Rewrites a repository's config (and its copy) as a build before version 2 wrote it.
    static func makeVersionOne(_ path: String) throws {
        for name in ["config", "config.copy"] {
            let file = path + "/.store/" + name
            var json = try #require(try JSONSerialization.jsonObject(with: Data(POSIX.readFile(file))) as? [String: Any])
            json.removeValue(forKey: "chunking")
            try POSIX.writeFileAtomically(file, Array(try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])))
        }
    }

    @Test func aRepositoryCutsAsItWasMadeToCut() throws {
        let h = try EngineHarness()
        // 200,000 bytes of vector storage: 7 blocks of 32 KiB (version 2), 4 of 64 KiB (version 1).
        Fixture.write(h.source + "/chunk_0.mmap", Fixture.bytes(200_000, seed: 3))
        #expect(try h.open().config.chunking == 2)
        let new = try h.create(type: .full)
        #expect(try Self.chunkCount(h, new) == 7)

        try Self.makeVersionOne(h.repoPath)
        let old = try h.open()
        #expect(old.config.chunking == nil && old.config.chunkingPolicy == .version1)
        let again = try h.create(type: .full)
        #expect(try Self.chunkCount(h, again) == 4)
        // A repository made like it (`copy` to a new one) cuts the same way.
        let sibling = try Repository.initialize(in: LocalStorage(root: h.dir.sub("copy")), like: old)
        #expect(sibling.config.chunkingPolicy == .version1)
        try h.expectVerifies()
    }

    static func chunkCount(_ h: EngineHarness, _ record: SnapshotRecord) throws -> Int {
        let repo = try h.open()
        let manifest = try SnapshotCatalog(repositoryPath: h.repoPath).readManifest(record)
        let tree = try BlobReader(repository: repo).readTree(try #require(manifest.components["src"]).treeID, path: "src")
        return try #require(tree.nodes.first { $0.name == "chunk_0.mmap" }).content.count
    }
}

/// A changed file is cut where its previous version was while the bytes are the same, and
/// the result is exactly what cutting it afresh gives.
@Suite struct PreviousCutsTests {
    static func content(_ h: EngineHarness, _ record: SnapshotRecord, _ name: String) throws -> [BlobID] {
        let repo = try h.open()
        let manifest = try SnapshotCatalog(repositoryPath: h.repoPath).readManifest(record)
        let tree = try BlobReader(repository: repo).readTree(try #require(manifest.components["src"]).treeID, path: "src")
        return try #require(tree.nodes.first { $0.name == name }).content
    }

    @Test func aChangedFileCutsAsAFreshReadWould() throws {
        let h = try EngineHarness()
        // Text-like and random files of 12–16 chunks (64 KiB–1 MiB, average 256 KiB).
        let words = "queue worker payload vector timeout segment router summary ".utf8
        var text: [UInt8] = []
        var state: UInt64 = 7
        while text.count < 3 << 20 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let word = Array(words.split(separator: 0x20)[Int(state >> 60) % 8])
            text += word + [state >> 58 == 0 ? 0x0a : 0x20]
        }
        let random = Fixture.bytes(4 << 20, seed: 41)
        let files: [(String, [UInt8])] = [("grown.log", text), ("edited.bin", random), ("front.bin", random), ("same-size.bin", random)]
        for (name, bytes) in files { Fixture.write(h.source + "/" + name, bytes) }
        let first = try h.create()

        var edited = random
        edited.replaceSubrange(1_500_000..<1_500_010, with: [UInt8](repeating: 0xAA, count: 10))   // in the middle
        edited.insert(contentsOf: [1, 2, 3], at: 3_000_000)                                       // and further on
        var sameSize = random
        sameSize[random.count - 5] ^= 0xFF                                                         // in the last chunk
        Fixture.write(h.source + "/grown.log", text + Array(text[0..<700_000]))                    // appended
        Fixture.write(h.source + "/edited.bin", edited)
        Fixture.write(h.source + "/front.bin", [9] + random)                                       // at the start
        Fixture.write(h.source + "/same-size.bin", sameSize)
        let second = try h.create()
        // `full` has no parent: every file cut afresh.
        let fresh = try h.create(type: .full)
        for (name, _) in files {
            let guided = try Self.content(h, second, name)
            #expect(guided == (try Self.content(h, fresh, name)), "\(name)")
            #expect(guided != (try Self.content(h, first, name)), "\(name)")
        }
        // The unchanged chunks were kept: the appended log shares all but its old last chunk.
        let before = try Self.content(h, first, "grown.log"), after = try Self.content(h, second, "grown.log")
        #expect(Array(after.prefix(before.count - 1)) == Array(before.dropLast()))
        let target = h.dir.sub("out")
        _ = try h.restore(second.id, to: target)
        #expect(try POSIX.readFile(target + "/src/edited.bin") == edited)
        #expect(try POSIX.readFile(target + "/src/front.bin") == [9] + random)
        try h.expectVerifies()
    }
}
