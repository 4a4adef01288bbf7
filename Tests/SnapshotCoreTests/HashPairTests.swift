import Foundation
@testable import SnapshotCore
import Testing
import TestSupport

/// SHA-256 and HMAC-SHA256 of two messages at once (CSHA256) against OpenSSL one at a
/// time: every length around the block and padding boundaries, unaligned starts, pairs of
/// unequal lengths, and keys shorter and longer than a block.
@Suite struct HashPairTests {
    /// Lengths where padding takes one or two blocks, and longer messages of unequal blocks.
    static let lengths = [0, 1, 3, 31, 55, 56, 57, 63, 64, 65, 100, 119, 120, 127, 128, 129, 191, 192, 1000, 4097, 65_536, 65_599, 300_001]
    /// A copy that stays where it is for the whole run (an array's address is only valid
    /// inside `withUnsafeBytes`).
    nonisolated(unsafe) static let data: UnsafeRawBufferPointer = {
        let bytes = Fixture.bytes(700_000, seed: 41)
        let copy = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 1)
        bytes.withUnsafeBytes { copy.copyMemory(from: $0) }
        return UnsafeRawBufferPointer(copy)
    }()

    static func slice(_ offset: Int, _ length: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: data[offset..<offset + length])
    }

    @Test func theFastPathRunsWhereTheCPUHasTheSHAExtensions() throws {
        #if arch(x86_64)
        let flags = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let sha = flags.split(separator: "\n").first { $0.hasPrefix("flags") }?.split(separator: " ").contains("sha_ni") ?? false
        #expect(BlobID.pairsInterleave == sha)
        #endif
    }

    @Test func knownAnswers() {
        let abc = Array("abc".utf8)
        let twoBlocks = Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        let (x, y) = abc.withUnsafeBytes { a in twoBlocks.withUnsafeBytes { b in BlobID.hashPair(a, b) } }
        #expect(x.hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(y.hex == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func pairsHashAsOneAtATime() {
        var offset = 0
        for la in Self.lengths {
            for lb in Self.lengths {
                // Starts at every remainder mod 16 (the loads are unaligned).
                offset = (offset + 7) % 300
                let a = Self.slice(offset, la), b = Self.slice(offset + 1 + la % 13, lb)
                let (x, y) = BlobID.hashPair(a, b)
                #expect(x == BlobID.hash(a), "a of \(la) bytes beside \(lb)")
                #expect(y == BlobID.hash(b), "b of \(lb) bytes beside \(la)")
                if x != BlobID.hash(a) || y != BlobID.hash(b) { return }
            }
        }
    }

    @Test func macPairsMatchOpenSSLForKeysOfAnyLength() throws {
        guard BlobID.pairsInterleave else { return }
        for keyLength in [0, 1, 20, 32, 63, 64, 65, 131, 200] {
            let key = Array(Fixture.bytes(keyLength, seed: UInt64(keyLength) + 5))
            let prepared = try #require(PairedMACKey(key))
            for (la, lb) in [(0, 0), (1, 64), (55, 56), (64, 119), (1000, 65_599), (300_001, 3)] {
                let a = Self.slice(11, la), b = Self.slice(500, lb)
                let (x, y) = Crypto.hmacPair(a, b, key: prepared)
                #expect(x == Crypto.hmac(a, key: key), "key \(keyLength), a \(la)")
                #expect(y == Crypto.hmac(b, key: key), "key \(keyLength), b \(lb)")
            }
        }
        // RFC 4231 test case 6: a 131-byte key, hashed first.
        let key = [UInt8](repeating: 0xaa, count: 131)
        let message = Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)
        let (x, _) = message.withUnsafeBytes { m in Crypto.hmacPair(m, m, key: PairedMACKey(key)!) }
        #expect(x.hex == "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
    }

    /// Blobs stored under the ids hashed in pairs read back with their ids checked one at a
    /// time, in a plain and in an encrypted repository (HMAC ids).
    @Test func aRepositoryHashesPairsAsItHashesOne() throws {
        let dir = TemporaryDirectory()
        for made in try TestRepository.plainAndEncrypted(in: dir) {
            let (repo, encrypted) = (made.repository, made.encrypted)
            #expect((repo.keys != nil) == encrypted)
            let blobs = [(0, 5), (64, 64), (4097, 100), (65_536, 65_599)].flatMap { [Self.slice(3, $0.0), Self.slice(90, $0.1)] } + [Self.slice(7, 1000)]
            let ids = repo.blobIDs(of: blobs)
            #expect(ids == blobs.map { repo.blobID($0) }, "encrypted \(encrypted)")
            let writer = repo.makeBlobWriter(compressionLevel: 3)
            for (blob, id) in zip(blobs, ids) where repo.index.reserve(id) {
                _ = try writer.storeNew(id: id, data: blob, type: .data, compression: .zstd)
            }
            try writer.flush()
            try repo.commitIndex()
            let reader = BlobReader(repository: try made.reopen())
            for (blob, id) in zip(blobs, ids) {
                #expect(try reader.read(id, check: true) == Array(blob))
            }
        }
    }
}
