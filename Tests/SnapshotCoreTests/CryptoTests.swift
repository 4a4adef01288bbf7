import Dispatch
import Foundation
import SnapshotCore
import Synchronization
import Testing

/// The primitives through their per-thread reused contexts: known answers, keys switched
/// back and forth on one thread, a failed open followed by good ones, and many threads.
@Suite struct CryptoTests {
    static func hex(_ text: String) -> [UInt8] {
        var out: [UInt8] = []
        var i = text.startIndex
        while i < text.endIndex {
            let j = text.index(i, offsetBy: 2)
            out.append(UInt8(text[i..<j], radix: 16)!)
            i = j
        }
        return out
    }

    static func hmac(_ data: [UInt8], _ key: [UInt8]) -> String {
        data.withUnsafeBytes { Crypto.hmac($0, key: key) }.hex
    }

    /// RFC 4231, test cases 1 and 2, alternating so that the context is re-keyed each time.
    @Test func hmacMatchesRFC4231WhateverKeyCameBefore() {
        let key1 = [UInt8](repeating: 0x0b, count: 20)
        let key2 = Array("Jefe".utf8)
        for _ in 0..<3 {
            #expect(Self.hmac(Array("Hi There".utf8), key1) == "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
            #expect(Self.hmac(Array("what do ya want for nothing?".utf8), key2) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
            #expect(Self.hmac(Array("what do ya want for nothing?".utf8), key2) == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        }
        // An empty message, twice in a row (re-initialised with no key in between).
        #expect(Self.hmac([], key2) == Self.hmac([], key2))
        #expect(Self.hmac([], key2) != Self.hmac([], key1))
    }

    @Test func sealedBytesOpenOnlyWithTheirKeyAndContextAcrossKeySwitches() {
        let a = Crypto.random(32), b = Crypto.random(32)
        let message = Array("the same plaintext".utf8)
        let sealedA = Crypto.seal(message, key: a, context: "blob")
        let sealedB = Crypto.seal(message, key: b, context: "blob")
        let again = Crypto.seal(message, key: a, context: "blob")
        #expect(sealedA.count == message.count + Crypto.overhead)
        #expect(sealedA != again, "a fresh nonce each time")
        #expect(Array(sealedA[0..<Crypto.nonceSize]) != Array(again[0..<Crypto.nonceSize]))
        for _ in 0..<2 {
            #expect(Crypto.open(sealedA, key: b, context: "blob") == nil)
            #expect(Crypto.open(sealedA, key: a, context: "index") == nil)
            #expect(Crypto.open(sealedA, key: a, context: "blob") == message)
            #expect(Crypto.open(sealedB, key: b, context: "blob") == message)
            var flipped = again
            flipped[Crypto.nonceSize] ^= 1
            #expect(Crypto.open(flipped, key: a, context: "blob") == nil)
            #expect(Crypto.open(again, key: a, context: "blob") == message)
        }
        #expect(Crypto.open(Crypto.seal([], key: a, context: "key"), key: a, context: "key") == [])
        // Into a buffer: only one of the plaintext's exact size; damage is refused there too.
        var out = [UInt8](repeating: 0, count: message.count + 1)
        out.withUnsafeMutableBytes { o in
            sealedA.withUnsafeBytes { s in
                #expect(!Crypto.open(s, key: a, context: "blob", into: o))
                #expect(!Crypto.open(s, key: a, context: "blob", into: UnsafeMutableRawBufferPointer(rebasing: o[0..<(message.count - 1)])))
                #expect(Crypto.open(s, key: a, context: "blob", into: UnsafeMutableRawBufferPointer(rebasing: o[1...])))
            }
        }
        #expect(Array(out[1...]) == message)
        var damaged = sealedA
        damaged[damaged.count - 1] ^= 0x80
        damaged.withUnsafeBytes { s in
            out.withUnsafeMutableBytes { o in #expect(!Crypto.open(s, key: a, context: "blob", into: UnsafeMutableRawBufferPointer(rebasing: o[1...]))) }
        }
    }

    @Test func threadsKeepTheirOwnContexts() {
        let keys = (0..<4).map { _ in Crypto.random(32) }
        let messages = (0..<50).map { Array("message \($0)".utf8) + Crypto.random($0 * 37) }
        // Worked out on this thread first; every thread must agree, keys switching each call.
        let expected = keys.map { key in messages.map { m in m.withUnsafeBytes { Crypto.hmac($0, key: key) } } }
        let failures = Atomic(0)
        DispatchQueue.concurrentPerform(iterations: 8) { t in
            for i in 0..<2_000 {
                let k = (t + i) % keys.count, m = (t * 7 + i) % messages.count
                let sealed = Crypto.seal(messages[m], key: keys[k], context: "blob")
                if Crypto.open(sealed, key: keys[k], context: "blob") != messages[m]
                    || Crypto.open(sealed, key: keys[(k + 1) % keys.count], context: "blob") != nil
                    || messages[m].withUnsafeBytes({ Crypto.hmac($0, key: keys[k]) }) != expected[k][m]
                {
                    failures.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
    }
}
