#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

/// Encrypted repositories as a user meets them: init with a password, every command with it,
/// nothing readable without it, several passwords, and the repository's bytes holding no
/// plaintext — not the contents, not a file name, not a path.
@Suite struct EncryptionTests {
    let dir = TemporaryDirectory("snapshot-encrypted")
    var repo: String { dir.sub("repo") }
    var src: String { dir.sub("secret-project") }

    init() throws {
        Fixture.write(src + "/configs/api-keys.yaml", Array("openai: MARKER-7f3c9e-plaintext\n".utf8))
        Fixture.write(src + "/vectors.bin", Fixture.bytes(1_500_000, seed: 3))
        Fixture.write(src + "/notes.txt", Fixture.text(lines: 20_000))
        Fixture.write(dir.sub("pw"), Array("correct horse\n".utf8), mode: 0o600)
        Fixture.write(dir.sub("pw2"), Array("battery staple\n".utf8), mode: 0o600)
        Fixture.write(dir.sub("wrong"), Array("incorrect\n".utf8), mode: 0o600)
    }

    func cli(_ args: [String], password: String? = "pw", environment: [String: String] = [:]) throws -> CLI.Result {
        try CLI.run(["--repo", repo] + (password.map { ["--password-file", dir.sub($0)] } ?? []) + args, environment: environment)
    }

    func allBytes(under path: String) throws -> [UInt8] {
        var out: [UInt8] = []
        let e = FileManager.default.enumerator(atPath: path)
        while let f = e?.nextObject() as? String {
            var st = stat()
            if lstat(path + "/" + f, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG { out += try POSIX.readFile(path + "/" + f) }
            out += Array(f.utf8)
        }
        return out
    }

    @Test func anEncryptedRepositoryOpensOnlyWithItsPasswordAndHoldsNoPlaintext() throws {
        let made = try cli(["init", "--encryption", "aes-256-gcm"])
        #expect(made.status == 0 && made.stdout.contains("encrypted (aes-256-gcm)"), "\(made.stderr)")
        let id = try cli(["create", "--path", src, "--type", "data", "--tag", "owner=MARKER-tag"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!id.isEmpty)

        // Without the password, or with a wrong one: exit 77 and one clear line.
        let none = try cli(["list"], password: nil)
        #expect(none.status == 77 && none.stderr.contains("the repository is encrypted: give its password with --password-file"), "\(none.stderr)")
        let wrong = try cli(["restore", "--snapshot", "latest", "--target", dir.sub("out")], password: "wrong")
        #expect(wrong.status == 77 && wrong.stderr.contains("wrong password"), "\(wrong.stderr)")
        #expect(!POSIX.exists(dir.sub("out")))
        // The password from the environment works as well as the file.
        #expect(try cli(["list"], password: nil, environment: ["SNAPSHOT_PASSWORD": "correct horse"]).status == 0)
        #expect(try cli(["list"], password: nil, environment: ["SNAPSHOT_PASSWORD_FILE": dir.sub("pw")]).status == 0)
        // A password file others may read is refused, as ssh refuses such keys.
        chmod(dir.sub("pw2"), 0o644)
        let open = try cli(["list"], password: "pw2")
        #expect(open.status == 77 && open.stderr.contains("may be opened by group or others (mode 644)"), "\(open.stderr)")
        chmod(dir.sub("pw2"), 0o600)

        // With it, everything works: show (tags and sources back), restore, verify.
        let shown = try #require(try JSONSerialization.jsonObject(with: Data(try cli(["show", "--snapshot", id, "--json"]).stdout.utf8)) as? [String: Any])
        #expect((shown["tags"] as? [String: String])?["owner"] == "MARKER-tag")
        #expect(((shown["components"] as? [String: Any])?["secret-project"] as? [String: Any])?["source"] as? String == src)
        #expect(try cli(["restore", "--snapshot", id, "--target", dir.sub("out")]).status == 0)
        #expect(TreeComparison.differences(src, dir.sub("out/secret-project")) == [])
        #expect(try cli(["verify", "--all", "--read-data"]).status == 0)
        // metadata.json shows what is no secret.
        let visible = try #require(try JSONSerialization.jsonObject(with: Data(try POSIX.readFile(repo + "/data/\(id)/metadata.json"))) as? [String: Any])
        #expect(visible["snapshot_id"] as? String == id && visible["type"] as? String == "data" && (visible["size_bytes"] as? Int ?? 0) > 0)
        #expect(visible["sealed"] is String)

        // No byte of the repository gives away a content, a name, a tag or a path.
        let everything = try allBytes(under: repo)
        for marker in ["MARKER-7f3c9e", "MARKER-tag", "api-keys", "secret-project/configs", "vectors.bin"] {
            #expect(!everything.contains(subsequence: Array(marker.utf8)), "\(marker) is readable in the repository")
        }
        // The chunker seed is not in the config, and blob ids are keyed: the same content has
        // other ids here than in a plain repository.
        let config = String(decoding: try POSIX.readFile(repo + "/.store/config"), as: UTF8.self)
        #expect(config.contains("\"chunker_seed\" : 0") && config.contains("aes-256-gcm"), "\(config)")
        let plain = dir.sub("plain")
        #expect(try CLI.run(["--repo", plain, "create", "--path", src, "--type", "data"]).status == 0)
        let encryptedIDs = Set(try packBlobIDs(repo)), plainIDs = Set(try packBlobIDs(plain))
        #expect(!encryptedIDs.isEmpty && encryptedIDs.isDisjoint(with: plainIDs))
    }

    func packBlobIDs(_ repository: String) throws -> [BlobID] {
        var out: [BlobID] = []
        for d in try POSIX.listDirectory(repository + "/.store/data") {
            for f in try POSIX.listDirectory(repository + "/.store/data/" + d) {
                out += try PackFormat.readTrailer(path: repository + "/.store/data/\(d)/\(f)").map(\.id)
            }
        }
        return out
    }

    @Test func severalPasswordsOpenOneRepositoryAndOneCanBeChanged() throws {
        #expect(try cli(["init"]).stdout.contains("encrypted"), "a password given: encrypted by default")
        #expect(try cli(["create", "--path", src]).status == 0)
        let added = try cli(["key", "add", "--new-password-file", dir.sub("pw2")])
        #expect(added.status == 0, "\(added.stderr)")
        #expect(try cli(["list"], password: "pw2").status == 0)
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(try cli(["key", "list", "--json"]).stdout.utf8)) as? [[String: Any]])
        #expect(listed.count == 2 && listed.filter { $0["current"] as? Bool == true }.count == 1)
        let current = try #require(listed.first { $0["current"] as? Bool == true }?["id"] as? String)
        let other = try #require(listed.first { $0["current"] as? Bool == false }?["id"] as? String)
        // The key the password opened cannot be removed with it; the other can.
        let refused = try cli(["key", "remove", current])
        #expect(refused.status == 77, "\(refused.stderr)")
        #expect(try cli(["key", "remove", other]).status == 0)
        #expect(try cli(["list"], password: "pw2").status == 77)
        // passwd: the old password stops working, the new one opens the same data.
        Fixture.write(dir.sub("pw3"), Array("new one\n".utf8), mode: 0o600)
        #expect(try cli(["key", "passwd", "--new-password-file", dir.sub("pw3")]).status == 0)
        #expect(try cli(["list"]).status == 77)
        #expect(try cli(["verify", "--all", "--read-data"], password: "pw3").status == 0)
        #expect(try cli(["restore", "--snapshot", "latest", "--target", dir.sub("out")], password: "pw3").status == 0)
        #expect(TreeComparison.differences(src, dir.sub("out/secret-project")) == [])
        // Keys of a plain repository: a clear refusal.
        #expect(try CLI.run(["--repo", dir.sub("plain"), "create", "--path", src]).status == 0)
        #expect(try CLI.run(["--repo", dir.sub("plain"), "key", "list"]).status == 77)
    }

    /// `key unlock`: the password's key is derived once, then commands of this session need
    /// no password until `key forget` — or until the key file it opened is replaced.
    @Test func anUnlockedRepositoryOpensWithoutItsPasswordUntilForgotten() throws {
        #expect(try cli(["init"]).status == 0)
        #expect(try cli(["create", "--path", src]).status == 0)
        #expect(try cli(["key", "unlock", "--for", "0"]).status == 64)
        #expect(try cli(["key", "unlock"], password: "wrong").status == 77)
        #expect(try cli(["list"], password: nil).status == 77, "not unlocked by a refused unlock")
        let unlocked = try cli(["key", "unlock", "--for", "10m", "--json"])
        if unlocked.status == 74 {
            // A sandbox that refuses keyctl (containers' seccomp profiles do): one clear line,
            // and everything else works with the password as before.
            #expect(unlocked.stderr.contains("kernel keyring"), "\(unlocked.stderr)")
            return
        }
        #expect(unlocked.status == 0, "\(unlocked.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(unlocked.stdout.utf8)) as? [String: Any])
        let keyID = try #require(report["key"] as? String)
        defer { _ = try? cli(["key", "forget"], password: nil) }

        // No password now: create, restore and verify open the keys from the kernel keyring
        // (and say so with --debug), deriving nothing.
        Fixture.write(src + "/notes.txt", Fixture.text(lines: 500))
        let created = try cli(["create", "--path", src, "--debug"], password: nil)
        #expect(created.status == 0 && created.stderr.contains("the master keys opened by kernel keyring"), "\(created.stderr)")
        let restored = try cli(["restore", "--snapshot", "latest", "--target", dir.sub("out")], password: nil)
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(TreeComparison.differences(src, dir.sub("out/secret-project")) == [])
        #expect(try cli(["verify", "--all", "--read-data"], password: nil).status == 0)
        // The key commands still prove the password.
        #expect(try cli(["key", "list"], password: nil).status == 77)

        // The cached key is bound to the key file that sealed it: the same name holding
        // another sealing (here: of the same keys, for another password) does not open.
        #expect(try cli(["key", "add", "--new-password-file", dir.sub("pw2")]).status == 0)
        let other = try #require(try POSIX.listDirectory(repo + "/.store/keys").first { $0 != keyID })
        let original = try POSIX.readFile(repo + "/.store/keys/" + keyID)
        let forged = String(decoding: try POSIX.readFile(repo + "/.store/keys/" + other), as: UTF8.self).replacingOccurrences(of: other, with: keyID)
        Fixture.write(repo + "/.store/keys/" + keyID, Array(forged.utf8), mode: 0o600)
        #expect(try cli(["list"], password: nil).status == 77)
        Fixture.write(repo + "/.store/keys/" + keyID, original, mode: 0o600)
        #expect(try cli(["list"], password: nil).status == 0)

        // Forgotten: the password is needed again; a second forget finds nothing.
        let forgot = try cli(["key", "forget"], password: nil)
        #expect(forgot.status == 0 && forgot.stdout.contains("forgot the unlocked key"), "\(forgot.stdout)")
        #expect(try cli(["key", "forget"], password: nil).stdout.contains("nothing was unlocked"))
        #expect(try cli(["list"], password: nil).status == 77)

        // A changed password ends the unlock of the key file it replaced.
        #expect(try cli(["key", "unlock"]).status == 0)
        #expect(try cli(["list"], password: nil).status == 0)
        Fixture.write(dir.sub("pw3"), Array("new one\n".utf8), mode: 0o600)
        #expect(try cli(["key", "passwd", "--new-password-file", dir.sub("pw3")]).status == 0)
        #expect(try cli(["list"], password: nil).status == 77)
        #expect(try cli(["verify", "--all", "--read-data"], password: "pw3").status == 0)
    }

    @Test func rebuildRepairAndPruneWorkOnAnEncryptedRepository() throws {
        #expect(try cli(["init"]).status == 0)
        for day in 0..<3 {
            Fixture.write(src + "/day.bin", Fixture.bytes(300_000, seed: UInt64(day)))
            #expect(try cli(["create", "--path", src, "--time", Timestamp(seconds: Int64(1_767_225_600 + day * 86400)).iso8601]).status == 0)
        }
        // A lost index and a garbled metadata.json come back from the (sealed) packs.
        for f in try POSIX.listDirectory(repo + "/.store/index") { unlink(repo + "/.store/index/" + f) }
        let id = try #require(try POSIX.listDirectory(repo + "/full").filter { $0 != "latest" }.sorted().first)
        Fixture.write(repo + "/full/\(id)/metadata.json", Array("{".utf8))
        let rebuilt = try cli(["rebuild-metadata"])
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        #expect(try cli(["verify", "--all", "--read-data"]).status == 0)
        // A damaged blob heals from the live file.
        let repository = try Repository.open(at: repo, keyring: Keyring(repositoryPath: repo, password: Array("correct horse".utf8)))
        let catalog = SnapshotCatalog(repository: repository)
        let latest = try catalog.resolve("latest")
        let tree = try BlobReader(repository: repository).readTree(try #require(try catalog.readManifest(latest).components["secret-project"]).treeID, path: "")
        Damage.flipByte(of: try #require(tree.nodes.first { $0.name == "vectors.bin" }).content[0], in: repository)
        #expect(try cli(["verify", "--all", "--read-data"]).status == 1)
        let repaired = try cli(["repair", "--snapshot", "latest"])
        #expect(repaired.status == 0 && repaired.stdout.contains("healed secret-project/vectors.bin"), "\(repaired.stdout) \(repaired.stderr)")
        #expect(try cli(["delete", "--snapshot", id]).status == 0)
        #expect(try cli(["prune"]).status == 0)
        #expect(try cli(["verify", "--all", "--read-data"]).status == 0)
    }
}

extension Array where Element == UInt8 {
    func contains(subsequence needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, needle.count <= count else { return false }
        let first = needle[0]
        var i = 0
        while i <= count - needle.count {
            if self[i] == first && Array(self[i..<(i + needle.count)]) == needle { return true }
            i += 1
        }
        return false
    }
}
