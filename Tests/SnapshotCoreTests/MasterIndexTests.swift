import Foundation
@testable import SnapshotCore
import Testing

/// The compact index against a plain dictionary: index files added in any order and at any
/// time, blobs packed by this process, duplicates, lookups in between.
@Suite struct MasterIndexTests {
    @Test func answersLikeADictionaryThroughMergesAndFolds() {
        var rng = SystemRandomNumberGenerator()
        func id(_ n: Int) -> BlobID { BlobID.hash(Array("blob \(n)".utf8)) }
        let index = MasterIndex()
        var reference: [BlobID: BlobLocation] = [:]
        var next = 0
        func entries(_ count: Int) -> (BlobID, [PackEntry]) {
            let pack = BlobID.random()
            var out: [PackEntry] = []
            for k in 0..<count {
                let e = PackEntry(id: id(next), type: BlobType(rawValue: UInt8(k % 3))!, offset: UInt32(k * 100), length: UInt32(90 + k % 7), rawLength: UInt32(200 + k))
                out.append(e)
                next += 1
            }
            return (pack, out)
        }
        func record(_ pack: BlobID, _ list: [PackEntry]) {
            for e in list where reference[e.id] == nil {
                reference[e.id] = BlobLocation(pack: pack, type: e.type, offset: e.offset, length: e.length, rawLength: e.rawLength)
            }
        }
        for round in 0..<12 {
            // An index file of several packs (as a repository's open reads them).
            var file: [(pack: BlobID, entries: [PackEntry])] = []
            for _ in 0..<3 {
                let (p, list) = entries(Int.random(in: 1...700, using: &rng))
                file.append((p, list))
                record(p, list)
            }
            index.add(file)
            // Blobs this process packs: past the fold threshold now and then.
            let (p, list) = entries(round % 4 == 0 ? 5000 : 50)
            for e in list { #expect(index.reserve(e.id)) }
            index.packFinished(p, entries: list)
            record(p, list)
            // The same blob again in another pack: still found, still not reserved anew.
            let dup = PackEntry(id: id(Int.random(in: 0..<next, using: &rng)), type: .data, offset: 1, length: 2, rawLength: 3)
            index.add([(BlobID.random(), [dup])])
            #expect(!index.reserve(dup.id))
            for n in stride(from: 0, to: next, by: 17) {
                let l = index.location(of: id(n))
                #expect(l != nil)
                if let l, let r = reference[id(n)], l != r {
                    // A duplicate may answer with its other copy: then it is that one.
                    #expect(l.offset == 1 && l.length == 2 && l.rawLength == 3, "blob \(n)")
                }
            }
            #expect(index.location(of: id(next + 1)) == nil)
            #expect(index.reserve(BlobID.hash(Array("never stored \(round)".utf8))))
        }
        let all = index.allLocations()
        #expect(all.count == reference.count)
        #expect(Set(all.keys) == Set(reference.keys))
        #expect(index.takeNewPacks().count == 12)
        #expect(index.takeNewPacks().isEmpty)
    }
}
