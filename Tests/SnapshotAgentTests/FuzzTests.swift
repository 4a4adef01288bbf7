#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import SnapshotAgent
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT
import Testing
import TestSupport

/// Seeded random-mutation fuzzing of everything that reads outside input: the MQTT command
/// decoder, the YAML config loader, and every repository file reader. Each case must end in a
/// value or a thrown error — a crash ends the test run, a case over 2 s counts as a hang.
/// `make test` runs FUZZ_ITERATIONS (default 400) cases per target; `make fuzz` 25,000 per
/// target (225,000 in all), with FUZZ_SEED to reproduce a run.
@Suite struct FuzzTests {
    static var iterations: Int { Int(ProcessInfo.processInfo.environment["FUZZ_ITERATIONS"] ?? "") ?? 400 }
    static var seed: UInt64 { UInt64(ProcessInfo.processInfo.environment["FUZZ_SEED"] ?? "") ?? 20261128 }

    /// The same seed gives the same cases.
    typealias Random = SplitMix

    /// Bytes that break parsers: JSON and YAML syntax, escapes, huge numbers, varint and
    /// length prefixes at their limits, NUL, invalid UTF-8, path tricks.
    static let tokens: [[UInt8]] = [
        "{", "}", "[", "]", "\"", ":", ",", "\\", "\\u0000", "\\ud800", "1e309", "-1", "99999999999999999999", "0x", "null", "true",
        "\n", "\t", "  - ", ": &a", "*a", "!!binary", "---", "...", "..", "/", "../../", "/etc/passwd", "%", "\u{202E}",
    ].map { Array($0.utf8) } + [[0], [0xff], [0xc3], [0xed, 0xa0, 0x80], [0xff, 0xff, 0xff, 0xff, 0x0f], [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01], [0xef, 0xbb, 0xbf]]

    static func mutate(_ input: [UInt8], _ r: inout Random) -> [UInt8] {
        var b = input
        for _ in 0..<(1 + r.below(4)) {
            switch r.below(8) {
            case 0 where !b.isEmpty:  // flip a bit
                let i = r.below(b.count)
                b[i] ^= UInt8(1 << r.below(8))
            case 1 where !b.isEmpty:  // a random byte
                b[r.below(b.count)] = UInt8(truncatingIfNeeded: r.next())
            case 2:  // insert a token
                b.insert(contentsOf: tokens[r.below(tokens.count)], at: r.below(b.count + 1))
            case 3 where !b.isEmpty:  // delete a range
                let i = r.below(b.count)
                b.removeSubrange(i..<min(b.count, i + 1 + r.below(16)))
            case 4 where !b.isEmpty:  // duplicate a range
                let i = r.below(b.count)
                let part = Array(b[i..<min(b.count, i + 1 + r.below(64))])
                b.insert(contentsOf: part, at: r.below(b.count + 1))
            case 5 where !b.isEmpty:  // truncate
                b.removeLast(r.below(b.count))
            case 6:  // random bytes
                b.insert(contentsOf: (0..<(1 + r.below(8))).map { _ in UInt8(truncatingIfNeeded: r.next()) }, at: r.below(b.count + 1))
            default:  // an extreme byte
                if !b.isEmpty { b[r.below(b.count)] = [0, 0x7f, 0x80, 0xff][r.below(4)] }
            }
        }
        return b
    }

    /// Runs `body` on `iterations` mutations of the seeds; returns the hangs found.
    static func fuzz(_ name: String, seeds: [[UInt8]], salt: UInt64, _ body: ([UInt8]) -> Void) -> [String] {
        var r = Random(state: seed ^ salt)
        var hangs: [String] = []
        for i in 0..<iterations {
            let input = mutate(seeds[i % seeds.count], &r)
            let t0 = Date()
            body(input)
            if Date().timeIntervalSince(t0) > 2 { hangs.append("\(name) case \(i) (seed \(seed)): \(Date().timeIntervalSince(t0)) s") }
        }
        print("fuzz \(name): \(iterations) cases, \(hangs.count) hangs")
        return hangs
    }

    @Test func theMQTTCommandDecoderAnswersEveryPayload() throws {
        let dir = TemporaryDirectory("snapshot-fuzz-mqtt")
        let parser = CommandParser(settings: AgentSettings(
            id: "host1", groups: ["gpu"], prefix: "snapshots", allow: Set(MQTTSection.actions), maxPayload: 4096,
            restoreRoots: [dir.path], hmacKey: Array("key".utf8), broker: BrokerSettings(), ledgerPath: dir.sub("ledger.json")))
        let payloads = [
            #"{"type":"system","name":"pre-deployment","request_id":"r1","tag":["k=v"]}"#,
            #"{"snapshot":"latest","component":["configs"],"verify":true,"target":"\#(dir.path)/out"}"#,
            #"{"mode":"full","snapshot":"system/latest","validate":true,"ts":1767225600,"signature":"00"}"#,
            #"{"type":"data","dry_run":true}"#, #"{"snapshot":"2026-01-01_00-00-00","read_data":true,"all":false}"#, "{}", "",
        ].map { Array($0.utf8) }
        let topics = MQTTSection.actions.map { "snapshots/cmd/host1/\($0)" } + ["snapshots/cmd/create", "snapshots/cmd/gpu/verify", "snapshots/cmd/all/ping", "snapshots/cmd//", "snapshots/cmd/host1/../x"]
        var r = Random(state: Self.seed)
        let hangs = Self.fuzz("mqtt", seeds: payloads, salt: 1) { payload in
            let topic = topics[r.below(topics.count)]
            _ = parser.route(MQTTMessage(topic: topic, payload: payload, qos: 1))
            _ = parser.route(MQTTMessage(topic: String(decoding: Self.mutate(Array(topic.utf8), &r), as: UTF8.self), payload: payload, qos: 0))
        }
        #expect(hangs.isEmpty, "\(hangs)")
    }

    @Test func theConfigLoaderRejectsOrAcceptsEveryText() throws {
        let dir = TemporaryDirectory("snapshot-fuzz-yaml")
        let bundled = (try? POSIX.readFile(CLI.projectRoot + "/configs/snapshots.yaml")) ?? []
        let small = Array("""
            root: /srv/agents
            repository: snapshots
            compression_level: 3
            components:
              configs: {path: configs, exclude: ["*.tmp"]}
              workers: {mqtt: ["workers/+/status"]}
              gpu: {command: "nvidia-smi --query-gpu=name --format=csv", parse: csv, optional: true}
            types:
              nightly: [configs, workers]
            schedule:
              - {cron: "0 2 * * *", type: nightly}
            mqtt: {broker: "mqtt://127.0.0.1:1883", allow: [create, verify], max_payload: 65536}
            hooks: {stop_services: "true"}

            """.utf8)
        let hangs = Self.fuzz("yaml", seeds: [bundled, small].filter { !$0.isEmpty }, salt: 2) { text in
            _ = try? SnapshotConfig.parse(String(decoding: text, as: UTF8.self), file: "fuzz.yaml", workingDirectory: dir.path)
        }
        #expect(hangs.isEmpty, "\(hangs)")
    }

    @Test func everyRepositoryFileReaderRejectsOrAcceptsEveryByte() throws {
        let dir = TemporaryDirectory("snapshot-fuzz-repo")
        let source = dir.sub("src"), repoPath = dir.sub("repo")
        Fixture.write(source + "/a.txt", Array("alpha\n".utf8))
        Fixture.write(source + "/sub/b.bin", Fixture.bytes(100_000, seed: 1))
        symlink("a.txt", source + "/link")
        POSIX.setXattr(source + "/a.txt", "user.x", [1, 2, 3])
        let repo = try Repository.initialize(at: repoPath)
        let record = try Archiver(repository: repo).create(CreateRequest(type: .full, sources: [FileSource(name: "src", path: source)]))
        let catalog = SnapshotCatalog(repositoryPath: repoPath)
        let manifest = try catalog.readManifest(record)
        let reader = BlobReader(repository: repo)
        let root = try reader.read(try #require(manifest.components["src"]).treeID)
        let indexFile = repoPath + "/.store/index/" + (try POSIX.listDirectory(repoPath + "/.store/index").first ?? "")
        let index = try POSIX.readFile(indexFile)
        var packs: [[UInt8]] = []
        for d in try POSIX.listDirectory(repoPath + "/.store/data") {
            for f in try POSIX.listDirectory(repoPath + "/.store/data/" + d) { packs.append(try POSIX.readFile(repoPath + "/.store/data/\(d)/\(f)")) }
        }
        let metadata = try POSIX.readFile(record.directory + "/metadata.json")
        let manifestFile = try POSIX.readFile(record.directory + "/manifest.json")
        // A key file with cheap scrypt parameters, so that mutations that keep it valid are fast.
        let keys = dir.sub("keys")
        try POSIX.makeDirectories(keys)
        let keyFile = KeyFile(id: "k", created: "", hostname: "", kdf: "scrypt", n: 1024, r: 1, p: 1,
                              salt: Data(Crypto.random(16)).base64EncodedString(),
                              data: Data(Crypto.seal(Crypto.random(64), key: Crypto.scrypt(password: [1], salt: [2], n: 1024, r: 1, p: 1)!, context: "key")).base64EncodedString())
        let keyBytes = Array(try JSONEncoder().encode(keyFile))

        var hangs: [String] = []
        hangs += Self.fuzz("tree", seeds: [root], salt: 3) { _ = try? Tree.decode($0) }
        hangs += Self.fuzz("index", seeds: [index], salt: 4) { _ = try? IndexFile.decode($0, file: "fuzz") }
        let scratch = dir.sub("pack")
        hangs += Self.fuzz("pack", seeds: packs, salt: 5) { bytes in
            Fixture.write(scratch, bytes)
            _ = try? PackFormat.readTrailer(path: scratch)
        }
        hangs += Self.fuzz("manifest", seeds: [manifestFile], salt: 6) { _ = try? JSONDecoder().decode(SnapshotManifest.self, from: Data($0)) }
        let metaPath = dir.sub("metadata.json")
        hangs += Self.fuzz("metadata", seeds: [metadata], salt: 7) { bytes in
            Fixture.write(metaPath, bytes)
            _ = try? catalog.readMetadata(metaPath)
        }
        hangs += Self.fuzz("key file", seeds: [keyBytes], salt: 8) { bytes in
            guard let file = try? JSONDecoder().decode(KeyFile.self, from: Data(bytes)) else { return }
            _ = Keyring.open(file, password: [1])
        }
        // Blob payloads: zstd frames and sealed entries with any declared length.
        let frame = Array(Compressor(level: 3).compress(Fixture.text(lines: 200).withUnsafeBytes { UnsafeRawBufferPointer($0) }) ?? [])
        hangs += Self.fuzz("zstd", seeds: [frame], salt: 9) { bytes in
            _ = try? bytes.withUnsafeBytes { try Compressor(level: 1).decompress($0, rawLength: bytes.count * 4) }
        }
        // Float planes: a frame length, a zstd frame and raw planes; the raw length as the
        // payload's sizes imply it, so that mutated frames reach the zstd decoder.
        var floats: [UInt8] = []
        for k in 0..<8192 { withUnsafeBytes(of: (Float(sin(Double(k) * 0.37)) * 0.2).bitPattern.littleEndian) { floats += $0 } }
        let planes = try #require(floats.withUnsafeBytes { Compressor(level: 3).compressPlanes($0) })
        hangs += Self.fuzz("float planes", seeds: [planes], salt: 10) { bytes in
            guard bytes.count >= 4 else { return }
            let frame = Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16 | Int(bytes[3]) << 24
            let rest = max(0, bytes.count - 4 - frame)
            for rawLength in [rest / 3 * 4 + rest % 3, 32768] {
                _ = try? bytes.withUnsafeBytes { try Compressor(level: 1).decompressPlanes($0, rawLength: rawLength) }
            }
        }
        // Half planes: a phase, a frame length, a zstd frame and the raw plane; the raw length
        // as the payload implies it.
        var halves: [UInt8] = []
        for k in 0..<16384 { withUnsafeBytes(of: (Float(sin(Double(k) * 0.37)) * 0.2).bitPattern.littleEndian) { halves += $0[2...3] } }
        let half = try #require(halves.withUnsafeBytes { Compressor(level: 3).compressHalfPlanes($0) })
        hangs += Self.fuzz("half planes", seeds: [half], salt: 11) { bytes in
            guard bytes.count >= 5 else { return }
            let frame = Int(bytes[1]) | Int(bytes[2]) << 8 | Int(bytes[3]) << 16 | Int(bytes[4]) << 24
            let rest = max(0, bytes.count - 5 - frame)
            for rawLength in [rest * 2, rest * 2 - 1, 32768] where rawLength >= 0 {
                var out = [UInt8](repeating: 0, count: rawLength)
                _ = try? bytes.withUnsafeBytes { p in try out.withUnsafeMutableBytes { try Compressor(level: 1).decompressHalfPlanes(p, into: $0) } }
            }
        }
        #expect(hangs.isEmpty, "\(hangs)")
        #expect(Verifier(repository: try Repository.open(at: repoPath)).verify(try catalog.all(), readData: true).ok)
    }
}
