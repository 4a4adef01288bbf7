import SnapshotCore
import Testing
import TestSupport

@Suite struct ChunkerTests {
    let scheme = ChunkingScheme.contentDefined(min: 16 << 10, average: 64 << 10, max: 256 << 10)

    func chunks(_ data: [UInt8], _ chunker: Chunker) -> [[UInt8]] {
        var out: [[UInt8]] = []
        data.withUnsafeBytes { raw in
            var start = 0
            while start < raw.count {
                let n = chunker.cut(UnsafeRawBufferPointer(rebasing: raw[start...]))
                out.append(Array(raw[start..<start + n]))
                start += n
            }
        }
        return out
    }

    @Test func sizesStayWithinBoundsAndCoverTheInput() {
        let data = Fixture.bytes(4 << 20, seed: 7)
        let c = chunks(data, Chunker(scheme: scheme, seed: 1))
        #expect(c.flatMap { $0 } == data)
        for chunk in c.dropLast() {
            #expect(chunk.count >= 16 << 10 && chunk.count <= 256 << 10)
        }
        let average = data.count / c.count
        #expect(average > 32 << 10 && average < 128 << 10, "average \(average)")
    }

    @Test func anInsertionChangesOnlyNearbyChunks() {
        let data = Fixture.bytes(4 << 20, seed: 9)
        var edited = data
        edited.insert(contentsOf: [1, 2, 3, 4, 5], at: 2 << 20)
        let chunker = Chunker(scheme: scheme, seed: 3)
        let before = Set(chunks(data, chunker).map { BlobID.hash($0) })
        let after = chunks(edited, chunker).map { BlobID.hash($0) }
        let changed = after.filter { !before.contains($0) }.count
        #expect(changed <= 2, "\(changed) of \(after.count) chunks changed")
    }

    @Test func theSeedMovesBoundaries() {
        let data = Fixture.bytes(2 << 20, seed: 11)
        let a = chunks(data, Chunker(scheme: scheme, seed: 1)).map(\.count)
        let b = chunks(data, Chunker(scheme: scheme, seed: 2)).map(\.count)
        #expect(a != b)
        #expect(a == chunks(data, Chunker(scheme: scheme, seed: 1)).map(\.count))
    }

    @Test func fixedBlocksCutAtTheBlockSize() {
        let data = Fixture.bytes(200_000, seed: 1)
        let c = chunks(data, Chunker(scheme: .fixed(size: 65536), seed: 0)).map(\.count)
        #expect(c == [65536, 65536, 65536, 200_000 - 3 * 65536])
    }

    /// The cut points of the standard scheme are part of the repository format: a file
    /// chunked differently from last time no longer deduplicates against its old chunks.
    @Test func theStandardSchemeKeepsItsCutPoints() {
        let data = Fixture.bytes(6 << 20, seed: 5)
        let sizes = chunks(data, Chunker(scheme: ChunkingPolicy.standard.defaultScheme, seed: 1)).map(\.count)
        #expect(sizes == [395250, 317552, 313968, 364757, 123745, 373115, 310459, 172501, 303207, 393682, 277086,
                          330237, 450674, 404175, 236818, 271210, 296030, 301291, 294371, 296984, 64344])
    }

    /// FastCDC as the paper states it, one byte at a time: what the unrolled `cut` must match.
    func referenceCut(_ data: ArraySlice<UInt8>, min minSize: Int, average: Int, max maxSize: Int, seed: UInt64) -> Int {
        let n = data.count
        if n <= minSize { return n }
        var state = seed
        var gear = [UInt64](repeating: 0, count: 256)
        for i in 0..<256 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            gear[i] = z ^ (z >> 31)
        }
        let bits = Int.bitWidth - 1 - average.leadingZeroBitCount
        let small = ((UInt64(1) << UInt64(bits + 2)) - 1) << UInt64(64 - bits - 2)
        let large = ((UInt64(1) << UInt64(bits - 2)) - 1) << UInt64(64 - bits + 2)
        var fp: UInt64 = 0
        for i in minSize..<Swift.min(maxSize, n) {
            fp = (fp << 1) &+ gear[Int(data[data.startIndex + i])]
            if fp & (i < average ? small : large) == 0 { return i + 1 }
        }
        return Swift.min(maxSize, n)
    }

    @Test func cutsMatchTheBytewiseDefinition() {
        // Small sizes so that many cuts, every remainder mod 4 and both masks are exercised;
        // low-entropy inputs cut late or at the maximum.
        let inputs: [[UInt8]] = [
            Fixture.bytes(3 << 20, seed: 21),
            [UInt8](repeating: 0, count: 300_000),
            (0..<400_000).map { UInt8(truncatingIfNeeded: $0 % 251) },
            Array("2025-11-24T00:00:01.000Z WARN  [reviewer] payload window queue worker\n".utf8)
                .repeated(to: 500_000),
        ]
        for (number, data) in inputs.enumerated() {
            for seed: UInt64 in [1, 2, 3] {
                let chunker = Chunker(scheme: .contentDefined(min: 1 << 10, average: 4 << 10, max: 16 << 10), seed: seed)
                var start = 0
                while start < data.count {
                    // Every remainder of a short tail too.
                    for tail in [0, 1, 2, 3, 4097] where data.count - start > tail {
                        let slice = data[start..<data.count - tail]
                        let got = slice.withUnsafeBytes { chunker.cut($0) }
                        let want = referenceCut(slice, min: 1 << 10, average: 4 << 10, max: 16 << 10, seed: seed)
                        #expect(got == want, "input \(number), seed \(seed), at \(start), tail \(tail)")
                        if got != want { return }
                    }
                    start += data[start...].withUnsafeBytes { chunker.cut($0) }
                }
            }
        }
    }

    @Test func policyPicksFixedBlocksForVectorStorage() {
        #expect(ChunkingPolicy.standard.scheme(forFileNamed: "chunk_0.mmap") == .fixed(size: 32 << 10))
        #expect(ChunkingPolicy.standard.scheme(forFileNamed: "system.log") == ChunkingPolicy.standard.defaultScheme)
        #expect(ChunkingPolicy.version1.scheme(forFileNamed: "chunk_0.mmap") == .fixed(size: 64 << 10))
        #expect(ChunkingPolicy.version(1) == .version1 && ChunkingPolicy.version(2) == .standard)
    }
}


extension Array where Element == UInt8 {
    fileprivate func repeated(to count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count { out.append(contentsOf: self.prefix(count - out.count)) }
        return out
    }
}

/// `chunkBatches` hands over the same chunks as `chunks`, however the reads come in.
@Suite struct ChunkBatchTests {
    static func reader(_ data: [UInt8], pieces: Int) -> (UnsafeMutableRawBufferPointer) -> Int {
        var at = 0
        return { space in
            let n = min(space.count, pieces, data.count - at)
            data.withUnsafeBytes { space.baseAddress!.copyMemory(from: $0.baseAddress! + at, byteCount: n) }
            at += n
            return n
        }
    }

    @Test func batchesCutWhereSingleChunksDo() {
        let schemes: [ChunkingScheme] = [.contentDefined(min: 1 << 10, average: 4 << 10, max: 16 << 10), .fixed(size: 3000)]
        let inputs: [[UInt8]] = [[], [7], Fixture.bytes(16 << 10, seed: 2), Fixture.bytes(1 << 20, seed: 3) + [UInt8](repeating: 0, count: 100_000)]
        for scheme in schemes {
            let chunker = Chunker(scheme: scheme, seed: 9)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 2 * scheme.maxSize + 4096, alignment: 4096)
            defer { buffer.deallocate() }
            for data in inputs {
                for pieces in [1 << 30, 5000, 777] {
                    var single: [[UInt8]] = []
                    try! chunker.chunks(reading: Self.reader(data, pieces: pieces), buffer: buffer) { single.append(Array($0)) }
                    var batched: [[UInt8]] = []
                    var batches = 0
                    try! chunker.chunkBatches(reading: Self.reader(data, pieces: pieces), buffer: buffer) { chunks in
                        #expect(!chunks.isEmpty)
                        batches += 1
                        batched += chunks.map { Array($0) }
                    }
                    let same = batched == single, whole = batched.flatMap { $0 } == data
                    #expect(same && whole, "\(scheme), \(data.count) bytes read \(pieces) at a time: cuts \(batched.map(\.count)) against \(single.map(\.count))")
                    // More than one chunk at a time wherever the buffer holds several.
                    if data.count > 4 * scheme.maxSize { #expect(batches < single.count) }
                }
            }
        }
    }
}
