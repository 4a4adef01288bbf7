#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import Testing
import TestSupport

enum SmallFileSystems {
    static func installed(_ tool: String) -> Bool {
        ["/usr/sbin/", "/sbin/"].contains { (dir: String) in access(dir + tool, X_OK) == 0 }
    }

    /// Root with the tools, a free loop device and the right to mount (a container's root
    /// may have neither).
    static let available: Bool = {
        guard getuid() == 0, installed("losetup"), installed("mkfs.ext4") else { return false }
        let probe = TemporaryDirectory("snapshot-mountprobe")
        let r = try? CLI.shell("losetup --find >/dev/null && mkdir m && mount -t tmpfs -o size=1m none m && umount m", in: probe.path)
        return r?.status == 0
    }()
}

/// A full disk as a user meets it: the repository and a restore target on a small ext4 file
/// system of their own (an image on a loop device, so root only), filled up.
@Suite(.enabled(if: SmallFileSystems.available, "needs root, losetup, mkfs.ext4, a free loop device and mount, for a small file system of its own"))
struct FullDiskTests {
    /// An ext4 file system of `megabytes` MiB mounted at `mount`, for as long as it lives.
    final class SmallFileSystem {
        let dir: TemporaryDirectory
        let mount: String
        private var device = ""

        init(megabytes: Int) throws {
            dir = TemporaryDirectory("snapshot-fulldisk")
            mount = dir.sub("mnt")
            let image = dir.sub("fs.img")
            let r = try CLI.shell("""
                set -e; mkdir -p mnt; truncate -s \(megabytes)M fs.img; mkfs.ext4 -q -F fs.img
                dev=$(losetup --find --show fs.img); echo "$dev"; mount "$dev" mnt
                """, in: dir.path)
            device = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            try #require(r.status == 0, "could not mount \(image): \(r.stderr)")
        }

        /// Bytes free, counting the blocks ext4 keeps for root (these tests run as root).
        var free: Int {
            var s = statvfs()
            return statvfs(mount, &s) == 0 ? Int(s.f_bfree) * Int(s.f_frsize) : -1
        }

        deinit {
            _ = try? CLI.shell("umount mnt; losetup -d '\(device)'", in: dir.path)
        }
    }

    @Test func aFullDiskFailsCreateAndRestoreCleanlyAndNothingIsLost() throws {
        let fs = try SmallFileSystem(megabytes: 24)
        let work = TemporaryDirectory("snapshot-fulldisk-src")
        let src = work.sub("src"), repo = fs.mount + "/repo"
        Fixture.write(src + "/conf/app.yaml", Fixture.text(lines: 300))
        Fixture.write(src + "/data/small.bin", Fixture.bytes(1_500_000, seed: 1))
        let a = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "data", "--time", "2026-01-01T00:00:00Z"])
        try #require(a.status == 0, "\(a.stderr)")
        let first = a.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try CLI.shell("cp -a src srcA", in: work.path).status == 0)  // the tree as the snapshot has it
        let freeBefore = fs.free

        // 40 MB that does not compress: more than the file system holds.
        for k in 0..<8 { Fixture.write(src + "/data/big\(k).bin", Fixture.bytes(5_000_000, seed: UInt64(10 + k))) }
        let b = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "data", "--time", "2026-01-02T00:00:00Z"])
        #expect(b.status == 74, "\(b.stderr)")
        let line = b.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!line.contains("\n") && line.hasPrefix("snapshot: error: ") && line.contains("No space left on device") && line.contains(repo + "/.store/"), "\(b.stderr)")
        // Nothing committed, no partial pack left, the space given back.
        let list = try CLI.run(["--repo", repo, "list", "--json"])
        #expect(list.status == 0 && list.stdout.contains(first) && !list.stdout.contains("2026-01-02"), "\(list.stdout)")
        let leftovers = try CLI.shell("find .store -name '*.tmp*' | wc -l", in: repo)
        #expect(leftovers.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        #expect(fs.free >= freeBefore - (1 << 20), "free \(fs.free) after, \(freeBefore) before")

        // A restore onto the full disk (room for its directories, not for its files) stops
        // naming the file it could not write (whichever of its threads met the end first).
        let filler = fs.mount + "/filler"
        // (ext4 keeps 2 % of a small file system out of reach of everyone, root included,
        // so ~1 MB counted free is ~0.5 MB usable; a short filler is fine.)
        _ = try CLI.shell("head -c \(max(0, fs.free - 1_000_000)) /dev/zero > '\(filler)'; sync -f .", in: fs.mount)
        #expect(fs.free < 1_400_000, "\(fs.free) bytes still free")
        let out = fs.mount + "/out"
        let full = try CLI.run(["--repo", repo, "restore", "--snapshot", first, "--target", out])
        #expect(full.status == 74, "\(full.stderr)")
        let restoreLine = full.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!restoreLine.contains("\n") && restoreLine.contains("No space left on device") && restoreLine.contains(out + "/src/"), "\(full.stderr)")

        // With room again the same restore is exact, and the repository verifies.
        unlink(filler)
        #expect(try CLI.shell("rm -rf out", in: fs.mount).status == 0)
        let restored = try CLI.run(["--repo", repo, "restore", "--snapshot", first, "--target", out])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(TreeComparison.differences(work.sub("srcA"), out + "/src") == [])
        let verify = try CLI.run(["--repo", repo, "verify", "--all", "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    /// An in-place restore whose staging copy does not fit beside the live tree leaves the
    /// live tree as it was and no staging directory; with room it swaps the snapshot in.
    @Test func anInPlaceRestoreThatDoesNotFitLeavesTheLiveTreeAlone() throws {
        let fs = try SmallFileSystem(megabytes: 24)
        let work = TemporaryDirectory("snapshot-fulldisk-repo")
        let live = fs.mount + "/live", repo = work.sub("repo")
        Fixture.write(live + "/model.bin", Fixture.bytes(3_000_000, seed: 5))
        Fixture.write(live + "/state.txt", Array("snapshot\n".utf8))
        let a = try CLI.run(["--repo", repo, "create", "--path", live, "--type", "full"])
        try #require(a.status == 0, "\(a.stderr)")
        let id = a.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try CLI.shell("cp -a live \(work.sub("snapshotted"))", in: fs.mount).status == 0)
        Fixture.write(live + "/state.txt", Array("changed since\n".utf8))
        #expect(try CLI.shell("cp -a live \(work.sub("changed"))", in: fs.mount).status == 0)

        // Room for less than the staging copy of the 3 MB file (see the test above).
        _ = try CLI.shell("head -c \(max(0, fs.free - 1_000_000)) /dev/zero > filler; sync -f .", in: fs.mount)
        let full = try CLI.run(["--repo", repo, "restore", "--snapshot", id, "--type", "full"])
        #expect(full.status == 74, "\(full.stderr)")
        let line = full.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!line.contains("\n") && line.contains("No space left on device") && line.contains(fs.mount + "/.snapshot-restore-"), "\(full.stderr)")
        #expect(TreeComparison.differences(work.sub("changed"), live) == [])
        #expect(try POSIX.listDirectory(fs.mount).filter { $0.hasPrefix(".snapshot-restore-") } == [])

        unlink(fs.mount + "/filler")
        let restored = try CLI.run(["--repo", repo, "restore", "--snapshot", id, "--type", "full"])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(TreeComparison.differences(work.sub("snapshotted"), live) == [])
        #expect(try POSIX.listDirectory(fs.mount).filter { $0.hasPrefix(".snapshot-restore-") } == [])
        let verify = try CLI.run(["--repo", repo, "verify", "--all", "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    /// A prune on a disk too full to repack still deletes what is wholly unused (often what
    /// makes room), removes the packs its repacking had finished, leaves the packs it would
    /// repack as they were and says so; every snapshot verifies and restores. With room, the
    /// next prune repacks.
    @Test func aPruneWithoutRoomToRepackStillReclaimsWhatItCan() throws {
        let fs = try SmallFileSystem(megabytes: 160)
        let work = TemporaryDirectory("snapshot-fulldisk-prune")
        let src = work.sub("src"), repo = fs.mount + "/repo"
        func create(_ time: String) throws -> String {
            let r = try CLI.run(["--repo", repo, "create", "--path", src, "--type", "data", "--time", time])
            try #require(r.status == 0, "\(r.stderr)")
            return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func packs() throws -> Set<String> {
            Set(try CLI.shell("find .store/data -type f", in: repo).stdout.split(separator: "\n").map(String.init))
        }
        // A snapshot of a file of its own: once deleted, its packs are wholly unused.
        Fixture.write(src + "/once.bin", Fixture.bytes(3_000_000, seed: 6))
        let only = try create("2026-01-01T00:00:00Z")
        unlink(src + "/once.bin")
        // Two snapshots of a 60 MB file with 1 MB of every 4 changed: once the first is
        // deleted its packs are a quarter unused, so prune repacks ~45 MB of live data.
        var big = Fixture.bytes(60_000_000, seed: 7)
        Fixture.write(src + "/big.bin", big)
        let first = try create("2026-01-02T00:00:00Z")
        for k in stride(from: 0, to: 60_000_000, by: 4_000_000) {
            big.replaceSubrange(k..<k + 1_000_000, with: Fixture.bytes(1_000_000, seed: UInt64(100 + k)))
        }
        Fixture.write(src + "/big.bin", big)
        let kept = try create("2026-01-03T00:00:00Z")
        for id in [only, first] { #expect(try CLI.run(["--repo", repo, "delete", "--snapshot", id]).status == 0) }

        // Room for one new 16 MiB pack and the index, not for the ~45 MB the repack writes.
        _ = try CLI.shell("head -c \(max(0, fs.free - 23_000_000)) /dev/zero > filler; sync -f .", in: fs.mount)
        let before = try packs(), freeBefore = fs.free
        let full = try CLI.run(["--repo", repo, "prune"])
        #expect(full.status == 0, "\(full.stdout)\(full.stderr)")
        #expect(full.stderr.contains("snapshot: warning: ") && full.stderr.contains(" packs (") && full.stderr.contains("not repacked: No space left on device; run prune again once there is room"), "\(full.stderr)")
        #expect(full.stdout.contains(" packs deleted, 0 repacked)") && !full.stdout.contains("(0 packs deleted"), "\(full.stdout)")
        // Only deletions: no pack the repacking wrote is left, nor a partial one.
        let after = try packs()
        #expect(after.isSubset(of: before) && after.count < before.count, "\(before) → \(after)")
        #expect(fs.free >= freeBefore + 2_500_000, "free \(fs.free) after, \(freeBefore) before")
        let verify = try CLI.run(["--repo", repo, "verify", "--all", "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
        let out = work.sub("out")
        #expect(try CLI.run(["--repo", repo, "restore", "--snapshot", kept, "--target", out]).status == 0)
        #expect(try POSIX.readFile(out + "/src/big.bin") == big)

        unlink(fs.mount + "/filler")
        let pruned = try CLI.run(["--repo", repo, "prune"])
        #expect(pruned.status == 0 && pruned.stdout.contains("(0 packs deleted, ") && !pruned.stdout.contains(" 0 repacked)") && pruned.stderr.isEmpty, "\(pruned.stdout)\(pruned.stderr)")
        let again = try CLI.run(["--repo", repo, "verify", "--all", "--read-data"])
        #expect(again.status == 0, "\(again.stdout)\(again.stderr)")
    }
}

/// A repository on a read-only mount (the backup disk mounted read-only for a recovery):
/// every reader works, with the lock file there (a read-only descriptor takes the shared
/// lock) or without one; writers fail with one line naming the file system.
@Suite(.enabled(if: SmallFileSystems.available, "needs root and the right to mount, for a read-only bind mount"))
struct ReadOnlyRepositoryTests {
    @Test func everyReaderWorksOnAReadOnlyMount() throws {
        let dir = TemporaryDirectory("snapshot-readonly")
        let src = dir.sub("src"), repo = dir.sub("repo")
        Fixture.write(src + "/a.txt", Array("alpha\n".utf8))
        Fixture.write(src + "/logs/b.log", Fixture.text(lines: 2_000))
        #expect(try CLI.run(["--repo", repo, "create", "--path", src, "--type", "full"]).status == 0)
        Fixture.write(src + "/a.txt", Array("beta\n".utf8))
        #expect(try CLI.run(["--repo", repo, "create", "--path", src, "--type", "incremental"]).status == 0)
        func mounted(_ body: () throws -> Void) throws {
            let m = try CLI.shell("mount --bind \(repo) \(repo) && mount -o remount,ro,bind \(repo)", in: dir.path)
            #expect(m.status == 0, "\(m.stderr)")
            defer { _ = try? CLI.shell("umount \(repo)", in: dir.path) }
            try body()
        }
        func run(_ args: [String]) throws -> CLI.Result { try CLI.run(["--repo", repo] + args) }
        try mounted {
            #expect(try run(["list"]).status == 0)
            let verify = try run(["verify", "--all", "--read-data"])
            #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
            #expect(try run(["cat", "--snapshot", "latest", "src/a.txt"]).stdout == "beta\n")
            #expect(try run(["diff", "full/latest", "incremental/latest"]).stdout.contains("src/a.txt"))
            #expect(try run(["test-recovery", "--snapshot", "latest"]).status == 0)
            let archive = dir.sub("out.tar")
            let exported = try run(["export", "--snapshot", "latest", "--output", archive])
            #expect(exported.status == 0, "\(exported.stderr)")
            #expect(try CLI.run(["--repo", dir.sub("other"), "import", archive]).status == 0)
            for writer in [["create", "--path", src, "--type", "full"], ["prune"], ["delete", "--snapshot", "full/latest"]] {
                let r = try run(writer)
                #expect(r.status == 74 && r.stderr.contains("Read-only file system") && r.stderr.split(separator: "\n").count == 1, "\(writer[0]): \(r.status) \(r.stderr)")
            }
        }
        // No lock file at all (a repository copied without it): readers run without one.
        try POSIX.removeTree(repo + "/.store/lock")
        try mounted {
            let restored = try run(["restore", "--snapshot", "latest", "--target", dir.sub("back")])
            #expect(restored.status == 0, "\(restored.stderr)")
            #expect(try POSIX.readFile(dir.sub("back/src/a.txt")) == Array("beta\n".utf8))
            #expect(try POSIX.readFile(dir.sub("back/src/logs/b.log")) == Fixture.text(lines: 2_000))
        }
        #expect(try CLI.run(["--repo", dir.sub("other"), "verify", "--all", "--read-data"]).status == 0)
        let verify = try run(["verify", "--all", "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }
}

/// A component that is a mount point (a data disk mounted at its directory) cannot be
/// exchanged with a staged copy: the in-place restore says so before anything runs or is
/// staged, and a restore with --target still works.
@Suite(.enabled(if: SmallFileSystems.available, "needs root and the right to mount, for a mount point of its own"))
struct MountPointComponentTests {
    @Test func aMountPointIsRefusedBeforeAnythingRuns() throws {
        let dir = TemporaryDirectory("snapshot-mountpoint")
        let data = dir.sub("data")
        try POSIX.makeDirectories(data)
        let m = try CLI.shell("mount -t tmpfs -o size=4m none data", in: dir.path)
        #expect(m.status == 0, "\(m.stderr)")
        defer { _ = try? CLI.shell("umount \(data)", in: dir.path) }
        Fixture.write(data + "/f.txt", Array("v1\n".utf8))
        let config = dir.config()
        func run(_ args: [String]) throws -> CLI.Result { try CLI.run(["--config", config] + args) }
        #expect(try run(["create", "--type", "full"]).status == 0)
        Fixture.write(data + "/f.txt", Array("v2\n".utf8))
        let inPlace = try run(["restore", "--snapshot", "latest"])
        #expect(inPlace.status == 64 && inPlace.stderr.contains("\(data) is a mount point") && inPlace.stderr.split(separator: "\n").count == 1, "\(inPlace.stderr)")
        #expect(try POSIX.readFile(data + "/f.txt") == Array("v2\n".utf8))
        // check-dependencies says so ahead of need, the component itself being fine.
        let check = try run(["check-dependencies"])
        #expect(check.stdout.contains("ok   component data: \(data) readable; no in-place restore: \(data) is a mount point"), "\(check.stdout)")
        // Nothing ran: no pre-restore snapshot was taken.
        #expect(try run(["list", "--json"]).stdout.components(separatedBy: "\"snapshot_id\"").count == 2)
        #expect(try run(["restore", "--snapshot", "latest", "--target", dir.sub("out")]).status == 0)
        #expect(try POSIX.readFile(dir.sub("out/data/f.txt")) == Array("v1\n".utf8))
        let verify = try run(["verify", "--all", "--read-data"])
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }
}
