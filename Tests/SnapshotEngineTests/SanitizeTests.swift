import Foundation
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

@Suite struct SanitizerTests {
    static let corpus = CLI.projectRoot + "/Tests/Fixtures/pii"

    struct Expected: Decodable {
        var pii: [String]
        var keep: [String]
    }

    /// Precision and recall on the corpus: every listed secret or personal value gone, every
    /// look-alike kept (both modes), and pseudonyms stable across files.
    @Test func theCorpusLosesEveryPIIValueAndKeepsEveryLookAlike() throws {
        let expected = try JSONDecoder().decode(Expected.self, from: Data(try POSIX.readFile(Self.corpus + "/expected.json")))
        let files = try POSIX.listDirectory(Self.corpus).filter { $0 != "expected.json" && $0 != "README.md" }.sorted()
        let original = try files.map { String(decoding: try POSIX.readFile(Self.corpus + "/" + $0), as: UTF8.self) }.joined(separator: "\n")
        for value in expected.pii + expected.keep { #expect(original.contains(value), "the corpus lacks \(value)") }
        for mode in [Sanitizer.Mode.remove, .anonymize] {
            let sanitizer = try Sanitizer(mode: mode, secret: Array("repository secret".utf8))
            var text = ""
            var total = 0
            for f in files {
                let (out, counts) = sanitizer.apply(String(decoding: try POSIX.readFile(Self.corpus + "/" + f), as: UTF8.self))
                text += out + "\n"
                total += counts.values.reduce(0, +)
            }
            let missed = expected.pii.filter { text.contains($0) }
            let damaged = expected.keep.filter { !text.contains($0) }
            let recall = Double(expected.pii.count - missed.count) / Double(expected.pii.count)
            let precision = Double(total - damaged.count) / Double(max(total, 1))
            print("sanitize \(mode): recall \(recall) (\(expected.pii.count - missed.count)/\(expected.pii.count)), look-alikes kept \(expected.keep.count - damaged.count)/\(expected.keep.count), \(total) replacements, precision >= \(precision)")
            #expect(missed.isEmpty, "\(mode): still there: \(missed)")
            #expect(damaged.isEmpty, "\(mode): look-alikes changed: \(damaged)\n\(text)")
        }
        // The same value gets the same pseudonym everywhere; another secret, another one.
        let a = try Sanitizer(mode: .anonymize, secret: [1]), b = try Sanitizer(mode: .anonymize, secret: [2])
        let one = a.apply("mail ada@example.com\n").text, two = a.apply("cc: ada@example.com, more\n").text
        let pseudonym = try #require(one.split(separator: " ").last).trimmingCharacters(in: .newlines)
        #expect(pseudonym.hasSuffix("@anonymized.invalid") && two.contains(pseudonym))
        #expect(!b.apply("mail ada@example.com\n").text.contains(pseudonym))
        // Config rules: a pattern and a key of one's own.
        let custom = try Sanitizer(mode: .remove, secret: [1], extraPatterns: [("employee_id", "EMP-[0-9]{6}")], extraKeys: ["ssn"])
        let (out, counts) = custom.apply("owner: EMP-123456\nssn: 078-05-1120\n")
        #expect(out == "owner: [REDACTED:employee_id]\nssn: [REDACTED:secret_field]\n" && counts == ["employee_id": 1, "secret_field": 1], "\(out) \(counts)")
    }
}
