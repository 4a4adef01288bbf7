import Foundation
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

/// Float planes (entry codec 2): vector storage is stored as byte planes with only the
/// sign/exponent plane compressed — smaller and faster than zstd on whole blocks — in
/// repositories of format version 2 or later; a repository of version 1 never gets such an
/// entry. Half planes (codec 3) do the same for 2-byte floats (model weights), from version 3.
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

    /// Little-endian bfloat16 values (the top half of float32): model weights.
    static func weights(_ count: Int, seed: UInt64) -> [UInt8] {
        let floats = vectors(count, seed: seed)
        var out: [UInt8] = []
        out.reserveCapacity(2 * count)
        for k in 0..<count { out += [floats[4 * k + 2], floats[4 * k + 3]] }
        return out
    }

    @Test func halfPlanesRoundTripEveryLengthAndPhaseAndRefuseWhatDoesNotAddUp() throws {
        let c = Compressor(level: 3)
        let data = Self.weights(70_000, seed: 5)
        // Little-endian: the exponent byte is the second of each pair (phase 1), or the
        // first when the chunk starts at an odd offset (phase 0).
        for start in [0, 1] {
            for length in [256, 257, 131_072, 131_073] {
                let input = Array(data[start..<start + length])
                let packed = try #require(input.withUnsafeBytes { c.compressHalfPlanes($0) })
                #expect(packed[0] == UInt8(1 - start), "phase of a chunk starting at \(start)")
                let whole = input.withUnsafeBytes { c.compress($0) }?.count ?? length
                #expect(packed.count < whole, "half planes beat zstd on bfloat16 (\(packed.count) vs \(whole) of \(length))")
                var out = [UInt8](repeating: 0, count: length)
                try packed.withUnsafeBytes { p in try out.withUnsafeMutableBytes { try c.decompressHalfPlanes(p, into: $0) } }
                #expect(out == input)
            }
        }
        #expect(Fixture.bytes(65536, seed: 2).withUnsafeBytes { c.compressHalfPlanes($0) } == nil)
        #expect(Array(data[0..<200]).withUnsafeBytes { c.compressHalfPlanes($0) } == nil)
        // Damage: a phase that is not 0 or 1, a wrong frame length, a cut payload, a wrong
        // raw length, no header at all.
        let input = Array(data[0..<65536])
        let packed = try #require(input.withUnsafeBytes { c.compressHalfPlanes($0) })
        func decodes(_ bytes: [UInt8], _ length: Int) -> Bool {
            var out = [UInt8](repeating: 0, count: length)
            return (try? bytes.withUnsafeBytes { p in try out.withUnsafeMutableBytes { try c.decompressHalfPlanes(p, into: $0) } }) != nil
        }
        #expect(decodes(packed, 65536))
        var phase = packed
        phase[0] = 2
        var frame = packed
        frame[1] &+= 1
        #expect(!decodes(phase, 65536) && !decodes(frame, 65536))
        #expect(!decodes(Array(packed.dropLast()), 65536) && !decodes(packed, 65538) && !decodes([0, 0, 0], 0))
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

    /// A plain local repository's writer encodes payloads straight into its pack's write
    /// buffer, an encrypted one's into the compressor's buffer before sealing: every codec,
    /// and each one's refusal (data it does not shrink by 1/32 is stored raw, over whatever
    /// the refused attempt left in the buffer), reads back as it was, with the codec the
    /// writer reported in its header; what the writer counts as stored is what the packs
    /// hold. ~30 MiB crosses the 1 MiB write buffer and the 16 MiB pack target many times;
    /// a 1 MiB chunk's room would not fit that buffer, so it is encoded aside in both.
    @Test func everyCodecReadsBackWhetherEncodedInThePackOrSealed() throws {
        let dir = TemporaryDirectory()
        let (zstd, planes, half, raw) = (PackFormat.compressionZstd, PackFormat.compressionPlanes, PackFormat.compressionHalfPlanes, PackFormat.compressionRaw)
        var blobs: [(data: [UInt8], compression: BlobCompression, codec: UInt8)] = []
        for seed in UInt64(1)...6 {
            let text = Fixture.text(lines: 12_000, seed: Int(seed))
            blobs += [
                (Array(text.prefix(1 << 20)), .zstd, zstd),  // as large as a chunk gets
                (Array(text.dropFirst(1000).prefix(400_000)), .zstd, zstd),
                (Fixture.bytes(200_000 + Int(seed), seed: seed), .zstd, raw),
                (Self.vectors(16_384, seed: seed), .floatPlanes, planes),
                (Self.vectors(16_384, seed: seed + 10) + [1, 2, 3], .floatPlanes, planes),  // a tail
                (Fixture.bytes(65_536, seed: seed + 20), .floatPlanes, raw),
                (Self.weights(65_536, seed: seed) + [9], .halfPlanes, half),  // an odd byte
                (Fixture.bytes(131_072, seed: seed + 30), .halfPlanes, raw),
                (Array(text.prefix(63)), .zstd, raw),  // too short to try
                (Array(text.suffix(300_000)), .none, raw),
            ]
            // Pieces of a megabyte or more fill the buffer to where the next must flush it.
            blobs += (0..<3).map { k in (Array(Fixture.bytes(1 << 20, seed: seed * 100 + UInt64(k))), .zstd, raw) }
        }
        for made in try TestRepository.plainAndEncrypted(in: dir) {
            let (repo, encrypted) = (made.repository, made.encrypted)
            let writer = repo.makeBlobWriter(compressionLevel: 3)
            var ids: [BlobID] = []
            for blob in blobs {
                let id = blob.data.withUnsafeBytes { repo.blobID($0) }
                ids.append(id)
                guard writer.reserve(id) else { continue }
                let codec = try blob.data.withUnsafeBytes { try writer.storeNew(id: id, data: $0, type: .data, compression: blob.compression) }
                #expect(codec == blob.codec, "\(blob.data.count) bytes as \(blob.compression), encrypted \(encrypted)")
            }
            try writer.flush()
            try repo.commitIndex()
            let reopened = try made.reopen()
            let reader = BlobReader(repository: reopened)
            var stored = 0, rawBytes = 0
            var counted = Set<BlobID>()
            for (blob, id) in zip(blobs, ids) {
                let location = try #require(reopened.location(of: id))
                let header = try reopened.readEntry(location)[0]
                #expect(header & 0x03 == blob.codec && (header & PackFormat.encrypted != 0) == encrypted)
                #expect(try reader.read(id, check: true) == blob.data)
                if counted.insert(id).inserted { (stored, rawBytes) = (stored + Int(location.length), rawBytes + blob.data.count) }
            }
            #expect(writer.newStoredBytes == stored)
            #expect(writer.newRawBytes == rawBytes)
            // Each pack's trailer has the entries the index has for it, one after another.
            for pack in Set(ids.compactMap { reopened.location(of: $0)?.pack }) {
                var end: UInt32 = 0
                for entry in try reopened.readTrailer(pack).sorted(by: { $0.offset < $1.offset }) {
                    let indexed = try #require(reopened.location(of: entry.id))
                    #expect(indexed.pack == pack && indexed.offset == entry.offset && indexed.length == entry.length)
                    #expect(entry.offset == end)
                    end = entry.offset + entry.length
                }
            }
        }
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
        #expect(try h.open().config.version == 3)
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

    @Test func modelWeightsAreStoredAsHalfPlanesOnlyInAVersionThreeRepository() throws {
        let h = try EngineHarness()
        // 6 MiB of bfloat16 weights after a small header (an odd offset, as in safetensors),
        // and 5 MiB of text: both large enough to try the planes codecs.
        Fixture.write(h.source + "/model.safetensors", Array("{\"weight\":{\"dtype\":\"BF16\"}}".utf8) + Self.weights(3 << 20, seed: 6))
        Fixture.write(h.source + "/big.log", Fixture.text(lines: 80_000))
        #expect(try h.open().config.version == 3)
        let first = try h.create(type: .full)
        let weights = try Self.codecs(h, first, file: "model.safetensors")
        #expect(weights.count > 4 && weights.allSatisfy { $0 == PackFormat.compressionHalfPlanes }, "\(weights)")
        #expect(try Self.codecs(h, first, file: "big.log").allSatisfy { $0 == PackFormat.compressionZstd })
        _ = try h.restore(first.id, to: h.dir.sub("out"))
        #expect(TreeComparison.differences(h.source, h.dir.sub("out/src")) == [])

        // Version 2: no half planes (zstd wins over float planes on 2-byte floats).
        try Self.setVersion(2, h.repoPath)
        Fixture.write(h.source + "/model.safetensors", Self.weights(3 << 20, seed: 7))
        let second = try h.create(type: .full)
        #expect(try Self.codecs(h, second, file: "model.safetensors").allSatisfy { $0 == PackFormat.compressionZstd })
        _ = try h.restore(second.id, to: h.dir.sub("out2"))
        #expect(TreeComparison.differences(h.source, h.dir.sub("out2/src")) == [])
        // ...and half planes in a version 2 repository are damage, named.
        let errors = try h.verify(readData: true).snapshots.flatMap(\.errors)
        #expect(!errors.isEmpty && errors.allSatisfy { $0.contains("half planes in a repository of format version 2") }, "\(errors)")
        try Self.setVersion(3, h.repoPath)
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
