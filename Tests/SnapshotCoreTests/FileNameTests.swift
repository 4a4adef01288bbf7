@testable import SnapshotCore
import Testing
import TestSupport

/// Names that are not UTF-8 travel as strings and come back as the same bytes.
@Suite struct FileNameTests {
    @Test func everyByteStringComesBackAsItWas() {
        var rng = SplitMix(state: 7)
        // Random names biased towards the bytes that matter: high bytes, lead bytes,
        // continuation bytes and the 0xF4 0x8F 0xBE/0xBF prefixes of the escape range.
        let alphabet: [UInt8] = [0x41, 0x2E, 0x80, 0x8F, 0xBE, 0xBF, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xED, 0xA0, 0xF0, 0x9F, 0xF4, 0xF5, 0xFE, 0xFF, 0xC0]
        for _ in 0..<20_000 {
            let count = Int(rng.next() % 12) + 1
            let name = (0..<count).map { _ in rng.next() % 3 == 0 ? UInt8(truncatingIfNeeded: rng.next() % 255 + 1) : alphabet[Int(rng.next() % UInt64(alphabet.count))] }
            let s = FileName.decode(name)
            #expect(FileName.bytes(s) == name, "\(name)")
            #expect(FileName.withCString(s) { p in Array(UnsafeBufferPointer(start: p, count: name.count + 1)).map { UInt8(bitPattern: $0) } } == name + [0])
            if let utf8 = String(validating: name, as: UTF8.self), !utf8.unicodeScalars.contains(where: { FileName.escapes.contains($0.value) }) {
                #expect(s == utf8 && !FileName.hasEscapes(s), "\(name)")
            } else {
                #expect(FileName.hasEscapes(s), "\(name)")
            }
        }
    }

    @Test func shownWithEachByteThatIsNotUTF8AsHex() {
        #expect(FileName.display(FileName.decode([0x63, 0x61, 0x66, 0xE9])) == "caf\\xE9")
        // A character of the escape range in a UTF-8 name is escaped byte by byte.
        let genuine = FileName.decode(Array("g-\u{10FFBF}".utf8))
        #expect(FileName.display(genuine) == "g-\\xF4\\x8F\\xBE\\xBF")
        #expect(FileName.bytes(genuine) == Array("g-\u{10FFBF}".utf8))
        #expect(FileName.display("ok-ü.txt") == "ok-ü.txt")
        #expect(FileName.decode(Array("ok-ü.txt".utf8)) == "ok-ü.txt")
        // Messages show them the same way, and control characters as before.
        #expect((FileName.decode([0x61, 0x0A, 0xFF])).escapingControlCharacters == "a\\n\\xFF")
    }
}
