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
