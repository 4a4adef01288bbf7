#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotEngine
import Testing
import TestSupport

/// A continuous watch on a scratch source, run on its own thread, with its events collected.
/// Tests wait for events (a snapshot, a failure), never for time.
final class WatchHarness: @unchecked Sendable {
    let dir = TemporaryDirectory("snapshot-watch")
    var src: String { dir.sub("src") }
    var repo: String { dir.sub("repo") }
    let service: SnapshotService
    private let cond = NSCondition()
    private var snapshots: [(record: SnapshotRecord, changed: Int, files: Int, rescan: Bool)] = []
    private var unchanged = 0
    private var failures: [String] = []
    private var watch: ContinuousWatch?
    private var running = false
    /// When set, the watch thread stops in `.taking` until `release()`: it reads no
    /// notifications meanwhile (the kernel's queue fills).
    private var holdNextSnapshot = false
    private var held = false

    init(debounce: String = "0.2s", maxInterval: String = "30s") throws {
        try POSIX.makeDirectories(dir.sub("src"))
        let yaml = """
            components:
              src: {path: src, exclude: ["*.tmp"]}
            types:
              system: [src]
            continuous:
              - {components: [src], debounce: "\(debounce)", max_interval: "\(maxInterval)"}
            """
        let config = try SnapshotConfig.parse(yaml, file: "test.yaml", workingDirectory: dir.path)
        service = SnapshotService(config: config, repositoryPath: dir.sub("repo"))
    }

    func start() throws {
        let watch = try ContinuousWatch(service: service, entries: service.config.continuous) { [self] event in
            cond.lock()
            defer { cond.unlock() }
            switch event {
            case .snapshot(let r, let changed, let files, _, _, let rescan): snapshots.append((r, changed, files, rescan))
            case .unchanged: unchanged += 1
            case .failed(let m, _): failures.append(m)
            case .taking where holdNextSnapshot:
                holdNextSnapshot = false
                held = true
                cond.broadcast()
                while held { cond.wait() }
            default: break
            }
            cond.broadcast()
        }
        self.watch = watch
        running = true
        Thread { [self] in
            do { try watch.run() } catch { cond.lock(); failures.append("run: \(error)"); cond.unlock() }
            cond.lock()
            running = false
            cond.broadcast()
            cond.unlock()
        }.start()
    }

    /// Stops the watch and waits for its thread to end; lets go of the watch, whose event
    /// handler holds this harness (else neither is freed, nor the scratch directory removed).
    func stop() {
        watch?.stop()
        cond.lock()
        while running { _ = cond.wait(until: Date().addingTimeInterval(60)) }
        cond.unlock()
        watch = nil
    }

    private func waitFor(_ what: String, _ done: () -> Bool) {
        cond.lock()
        defer { cond.unlock() }
        let deadline = Date().addingTimeInterval(60)
        while !done() {
            if !cond.wait(until: deadline) {
                Issue.record("timed out waiting for \(what); failures: \(failures)")
                return
            }
        }
    }

    var snapshotCount: Int { cond.lock(); defer { cond.unlock() }; return snapshots.count }
    var unchangedCount: Int { cond.lock(); defer { cond.unlock() }; return unchanged }
    var failureMessages: [String] { cond.lock(); defer { cond.unlock() }; return failures }
    var all: [(record: SnapshotRecord, changed: Int, files: Int, rescan: Bool)] { cond.lock(); defer { cond.unlock() }; return snapshots }

    func waitForSnapshots(_ n: Int) { waitFor("\(n) snapshots") { snapshots.count >= n } }
    func waitForUnchanged(_ n: Int) { waitFor("\(n) unchanged passes") { unchanged >= n } }

    func holdNext() { cond.lock(); holdNextSnapshot = true; cond.unlock() }
    func waitUntilHeld() { waitFor("the watch to begin a snapshot") { held } }
    func release() { cond.lock(); held = false; cond.broadcast(); cond.unlock() }

    /// The tree a `full` snapshot (reading every file) gives of the source as it is now.
    func freshTree() throws -> BlobID {
        let repository = try Repository.open(at: repo)
        let record = try Archiver(repository: repository).create(CreateRequest(type: .full, sources: [FileSource(name: "src", path: src, excludes: ["*.tmp"])]))
        return try tree(of: record)
    }

    func tree(of record: SnapshotRecord) throws -> BlobID {
        try SnapshotCatalog(repositoryPath: repo).readManifest(record).components["src"]!.treeID
    }

    /// Waits until the newest continuous snapshot holds the source exactly as it is now
    /// (compared with a full snapshot's tree); returns the files read by the continuous
    /// snapshots taken since `since`.
    @discardableResult
    func expectCaughtUp(since: Int, _ comment: Comment, sourceLocation: SourceLocation = #_sourceLocation) throws -> Int {
        let fresh = try freshTree()
        var seen = since
        while true {
            let list = all
            if list.count > since, let last = list.last, try tree(of: last.record) == fresh {
                return list[since...].reduce(0) { $0 + $1.files }
            }
            seen = max(seen, list.count)
            if list.count > 200 {
                Issue.record("continuous snapshots never caught up: \(comment)", sourceLocation: sourceLocation)
                return -1
            }
            waitForSnapshots(seen + 1)
            if all.count <= seen {
                Issue.record("no snapshot after: \(comment)", sourceLocation: sourceLocation)
                return -1
            }
        }
    }

    func expectVerifies(sourceLocation: SourceLocation = #_sourceLocation) throws {
        let repository = try Repository.open(at: repo)
        let report = Verifier(repository: repository).verify(try SnapshotCatalog(repositoryPath: repo).all(), readData: true)
        #expect(report.ok, "verify: \(report.snapshots.flatMap(\.errors))", sourceLocation: sourceLocation)
    }
}

@Suite("Continuous snapshots")
struct ContinuousTests {
    func write(_ path: String, _ text: String) {
        Fixture.write(path, Array(text.utf8))
    }

    @Test("each change is snapshotted reading only what changed")
    func changes() throws {
        let h = try WatchHarness()
        for d in 0..<5 {
            for f in 0..<20 { write(h.src + "/d\(d)/sub/f\(f).txt", "file \(d)/\(f)\n") }
        }
        write(h.src + "/top.txt", "top\n")
        try h.start()
        h.waitForSnapshots(1)
        #expect(h.all[0].rescan && h.all[0].files == 101, "the start-up scan reads everything once")

        var n = h.snapshotCount
        write(h.src + "/new.txt", "new\n")
        #expect(try h.expectCaughtUp(since: n, "new file") == 1)

        n = h.snapshotCount
        write(h.src + "/d3/sub/f7.txt", "changed deep file\n")
        #expect(try h.expectCaughtUp(since: n, "changed deep file") == 1)

        n = h.snapshotCount
        unlink(h.src + "/d1/sub/f2.txt")
        #expect(try h.expectCaughtUp(since: n, "deletion") == 0)

        n = h.snapshotCount
        rename(h.src + "/d2/sub/f3.txt", h.src + "/d4/moved.txt")
        #expect(try h.expectCaughtUp(since: n, "rename") == 0, "a rename reads nothing: it is one change, not a delete and an add")

        n = h.snapshotCount
        for i in 0..<3 { write(h.src + "/fresh/a/b/n\(i).txt", "new dir \(i)\n") }
        #expect(try h.expectCaughtUp(since: n, "new directory with files") == 3)

        n = h.snapshotCount
        write(h.src + "/top.txt.tmp", "edited top\n")
        rename(h.src + "/top.txt.tmp", h.src + "/top.txt")
        #expect(try h.expectCaughtUp(since: n, "editor-style atomic replace") == 1)

        n = h.snapshotCount
        rename(h.src + "/d0", h.src + "/d0-renamed")
        #expect(try h.expectCaughtUp(since: n, "directory rename") == 0)
        n = h.snapshotCount
        write(h.src + "/d0-renamed/sub/f1.txt", "written after the move\n")
        #expect(try h.expectCaughtUp(since: n, "change inside the moved directory (watched at its new path)") == 1)

        // The whole source moved away and made anew: the watch follows the path, not the old tree.
        n = h.snapshotCount
        rename(h.src, h.dir.sub("src.old"))
        write(h.src + "/again/first.txt", "a new tree\n")
        try h.expectCaughtUp(since: n, "source directory replaced")
        n = h.snapshotCount
        write(h.dir.sub("src.old/top.txt"), "the old tree is not watched any more\n")
        write(h.src + "/again/second.txt", "watched again\n")
        #expect(try h.expectCaughtUp(since: n, "change in the new source directory") == 1)

        h.stop()
        #expect(h.failureMessages.isEmpty)
        // Every continuous snapshot restores on its own.
        let list = try SnapshotCatalog(repositoryPath: h.repo).all(type: .continuous)
        #expect(list.count == h.snapshotCount)
        #expect(list.allSatisfy { $0.metadata.parent != nil || $0.id == list.last!.id })
        try h.expectVerifies()
    }

    @Test("a storm of 100 writes ends in one snapshot")
    func storm() throws {
        let h = try WatchHarness(debounce: "1s")
        write(h.src + "/seed.txt", "seed\n")
        try h.start()
        h.waitForSnapshots(1)
        for i in 0..<100 { write(h.src + "/storm/s\(i % 10)/file\(i).txt", "storm \(i)\n") }
        let read = try h.expectCaughtUp(since: 1, "storm")
        h.stop()
        #expect(h.snapshotCount == 2, "one snapshot for the whole storm, not one per write")
        #expect(read == 100)
        try h.expectVerifies()
    }

    @Test("a notification overflow forces one full rescan, which misses nothing")
    func overflow() throws {
        let h = try WatchHarness(debounce: "0.1s")
        try POSIX.makeDirectories(h.src + "/many")
        write(h.src + "/a.txt", "a\n")
        write(h.src + "/other/late.txt", "before\n")
        try h.start()
        h.waitForSnapshots(1)
        // Hold the watch inside its next snapshot, so that nobody reads the kernel's queue,
        // and queue more events than it holds (two per empty file: create, close).
        let limit = Int((try? String(contentsOfFile: "/proc/sys/fs/inotify/max_queued_events", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 16384
        let files = limit / 2 + 500
        try #require(files <= 200_000, "max_queued_events is \(limit): too many files to overflow it here")
        h.holdNext()
        write(h.src + "/a.txt", "a changed\n")
        h.waitUntilHeld()
        for i in 0..<files {
            let fd = open(h.src + "/many/e\(i)", O_WRONLY | O_CREAT, 0o644)
            close(fd)
        }
        // Past the queue's end: this change's events are lost, only the rescan finds it.
        write(h.src + "/other/late.txt", "after the overflow\n")
        h.release()
        try h.expectCaughtUp(since: 1, "overflow")
        h.stop()
        #expect(h.all.dropFirst().contains { $0.rescan }, "the overflow made one snapshot compare everything")
        #expect(h.failureMessages.isEmpty)
        try h.expectVerifies()
    }

    @Test("a restarted watch catches what changed while it was down, and takes nothing when nothing did")
    func restart() throws {
        let h = try WatchHarness()
        for i in 0..<10 { write(h.src + "/f\(i).txt", "v1 \(i)\n") }
        try h.start()
        h.waitForSnapshots(1)
        h.stop()
        // Changes while nothing watches.
        write(h.src + "/f3.txt", "v2 changed while down\n")
        write(h.src + "/added.txt", "added while down\n")
        unlink(h.src + "/f5.txt")
        try h.start()
        let read = try h.expectCaughtUp(since: 1, "restart")
        #expect(read == 2, "the start-up scan compares with the last continuous snapshot and reads only changed files")
        h.stop()
        // Nothing changed since: a restart commits nothing.
        let before = h.snapshotCount
        try h.start()
        h.waitForUnchanged(1)
        h.stop()
        #expect(h.snapshotCount == before)
        try h.expectVerifies()
    }

    @Test("continuous@TIME is the newest continuous snapshot at or before that time")
    func pointInTime() throws {
        let h = try WatchHarness()
        write(h.src + "/f.txt", "x\n")
        let repository = try { () throws -> Repository in
            try Repository.initialize(at: h.repo)
            return try Repository.open(at: h.repo)
        }()
        for t in ["2026-11-28T10:00:00Z", "2026-11-28T10:10:00Z", "2026-11-28T10:20:00Z"] {
            write(h.src + "/f.txt", t)
            _ = try Archiver(repository: repository).create(CreateRequest(type: .continuous, time: Timestamp(iso8601: t), sources: [FileSource(name: "src", path: h.src)]))
        }
        let catalog = SnapshotCatalog(repositoryPath: h.repo)
        #expect(try catalog.resolve("continuous@2026-11-28T10:15:00Z").id == "2026-11-28_10-10-00")
        #expect(try catalog.resolve("continuous@2026-11-28T10:10:00Z").id == "2026-11-28_10-10-00")
        #expect(try catalog.resolve("continuous@2026-11-28T11:10:00+01:00").id == "2026-11-28_10-10-00")
        #expect(try catalog.resolve("continuous@2026-12-01T00:00:00Z").id == "2026-11-28_10-20-00")
        #expect(throws: RepositoryError.self) { try catalog.resolve("continuous@2026-11-28T09:59:59Z") }
        #expect(throws: RepositoryError.self) { try catalog.resolve("continuous@yesterday") }
        #expect(throws: RepositoryError.self) { try catalog.resolve("continuous@2026-11-28T10:15:00Z", type: .system) }
        // A name with '@' in it still resolves by name.
        let named = try Archiver(repository: repository).create(CreateRequest(type: .continuous, name: "ops@host", time: Timestamp(iso8601: "2026-11-28T09:00:00Z"), sources: [FileSource(name: "src", path: h.src)]))
        #expect(try catalog.resolve("ops@host").id == named.id)
        // `latest` follows the newest, also when an older one is committed after it, and a
        // lost link is made again by the next commit.
        #expect(FileStatLink.target(h.repo + "/continuous/latest") == "2026-11-28_10-20-00")
        unlink(h.repo + "/continuous/latest")
        _ = try Archiver(repository: repository).create(CreateRequest(type: .continuous, time: Timestamp(iso8601: "2026-11-28T08:00:00Z"), sources: [FileSource(name: "src", path: h.src)]))
        #expect(FileStatLink.target(h.repo + "/continuous/latest") == "2026-11-28_10-20-00")
        try h.expectVerifies()
    }

    @Test("a repository inside a watched tree is neither watched nor snapshotted")
    func theRepositoryInsideAWatchedTreeIsLeftOut() throws {
        let dir = TemporaryDirectory("snapshot-watch-repo")
        let tree = dir.sub("tree"), repo = dir.sub("tree/snapshots")
        write(tree + "/data/a.txt", "a\n")
        try Repository.initialize(at: repo)
        let watcher = try ChangeWatcher(roots: [ChangeWatcher.Root(name: "all", path: tree, excludes: [])], leavingOut: FileIdentity(path: repo))
        defer { watcher.stop() }
        // A snapshot's writes into the repository, then a change of the data: only the
        // second is seen (the first would start another snapshot, and that one the next).
        write(repo + "/.store/data/00/pack", "pack\n")
        write(tree + "/data/b.txt", "b\n")
        var seen = ComponentChanges()
        while !seen.paths.contains("data/b.txt") {
            #expect(watcher.wait(timeout: 10))
            if let c = watcher.take()["all"] { seen.merge(c) }
        }
        #expect(seen.paths.allSatisfy { !$0.hasPrefix("snapshots") }, "\(seen.paths)")
        // And a create of that tree holds the data, not the repository.
        let repository = try Repository.open(at: repo)
        for _ in 0..<2 {
            let record = try Archiver(repository: repository).create(CreateRequest(type: .full, sources: [FileSource(name: "all", path: tree)]))
            let listed = try Browser(repository: repository).list(try SnapshotCatalog(repositoryPath: repo).readManifest(record)).map(\.path)
            #expect(listed == ["all", "all/data", "all/data/a.txt", "all/data/b.txt"], "\(listed)")
        }
        let report = Verifier(repository: try Repository.open(at: repo)).verify(try SnapshotCatalog(repositoryPath: repo).all(), readData: true)
        #expect(report.ok, "\(report)")
    }
}
