import Foundation
import SnapshotCore
import Testing
import TestSupport

/// Files encrypted here open with the real `age` tool (Debian's `age`, which make test installs).
@Suite struct AgeTests {
    @Test func ageDecryptsWhatWeEncryptToItsRecipients() throws {
        let dir = TemporaryDirectory("snapshot-age")
        let made = try CLI.shell("age-keygen -o one.txt 2>/dev/null && age-keygen -o two.txt 2>/dev/null", in: dir.path)
        #expect(made.status == 0, "age-keygen: \(made.stderr)")
        func recipient(_ file: String) throws -> String {
            let text = String(decoding: try POSIX.readFile(dir.sub(file)), as: UTF8.self)
            return try #require(text.split(separator: "\n").first { $0.hasPrefix("# public key: ") }.map { String($0.dropFirst("# public key: ".count)) })
        }
        let one = try recipient("one.txt"), two = try recipient("two.txt")
        Fixture.write(dir.sub("recipients.txt"), Array("# the operators\n\(two)\n".utf8))
        // Empty, exactly one chunk, and several chunks with a short last one.
        for (name, size) in [("empty", 0), ("chunk", 64 << 10), ("many", 150_000)] {
            let plain = Fixture.bytes(size, seed: UInt64(size))
            Fixture.write(dir.sub(name), plain)
            try Age.encrypt(input: dir.sub(name), output: dir.sub(name + ".age"), recipients: try Age.recipients([one, dir.sub("recipients.txt")]))
            for key in ["one.txt", "two.txt"] {
                let r = try CLI.shell("age -d -i \(key) \(name).age > \(name).out", in: dir.path)
                #expect(r.status == 0, "\(name) with \(key): \(r.stderr)")
                #expect(try POSIX.readFile(dir.sub(name + ".out")) == plain, "\(name) with \(key)")
            }
        }
        // A wrong key does not open it; a mistyped recipient is refused before anything is written.
        #expect(try CLI.shell("age-keygen -o three.txt 2>/dev/null && age -d -i three.txt many.age", in: dir.path).status != 0)
        #expect(throws: Age.Failure.self) { try Age.recipients([String(one.dropLast()) + (one.last == "q" ? "p" : "q")]) }
    }
}
