#if canImport(Glibc)
import Glibc
#endif
import SnapshotCore
import Testing
import TestSupport

/// What a restore writes through: nothing it does may reach outside its directory, whatever
/// symlinks are (or appear) inside it.
@Suite struct ConfinedDirectoryTests {
    let dir = TemporaryDirectory("snapshot-confined")
    var target: String { dir.sub("target") }
    var outside: String { dir.sub("outside") }

    init() throws {
        try POSIX.makeDirectories(target + "/real")
        try POSIX.makeDirectories(outside)
        Fixture.write(target + "/real/x", Array("inside\n".utf8))
        Fixture.write(outside + "/victim", Array("keep\n".utf8), mode: 0o644)
        // A directory of the restore swapped for a link to the outside, as a concurrent
        // process (or a forged tree) could make it.
        #expect(symlink(outside, target + "/swapped") == 0)
        #expect(symlink(outside + "/victim", target + "/real/link") == 0)
    }

    func expectRefused(_ what: String, _ body: () throws -> Void) {
        #expect(throws: RepositoryError.self, "\(what) went through a symlink") { try body() }
    }

    @Test func nothingIsCreatedChangedOrLinkedThroughASymlinkOnTheWay() throws {
        let d = try ConfinedDirectory(target)
        expectRefused("open") { _ = try d.open(target + "/swapped/new", flags: O_WRONLY | O_CREAT, mode: 0o644) }
        expectRefused("open of the link itself") { _ = try d.open(target + "/real/link", flags: O_WRONLY | O_TRUNC) }
        expectRefused("mkdir") { try d.mkdir(target + "/swapped/dir", mode: 0o755) }
        expectRefused("symlink") { try d.symlink("/etc/passwd", at: target + "/swapped/l") }
        expectRefused("mkfifo") { try d.mknod(target + "/swapped/fifo", mode: S_IFIFO | 0o644, device: 0) }
        expectRefused("link") { try d.link(target + "/real/x", at: target + "/swapped/victim") }
        expectRefused("chmod") { try d.setMetadata(target + "/swapped/victim", uid: 0, gid: 0, mode: 0o4777, mtime: Timestamp(seconds: 0), isSymlink: false, chown: false) }
        expectRefused("escape") { _ = try d.open(target + "/../outside/victim", flags: O_WRONLY | O_TRUNC) }
        expectRefused("outside path") { _ = try d.open(outside + "/victim", flags: O_WRONLY | O_TRUNC) }
        // chmod of the link in place changes the link's target never.
        try d.setMetadata(target + "/real/link", uid: 0, gid: 0, mode: 0o4777, mtime: Timestamp(seconds: 1), isSymlink: true, chown: false)
        var st = stat()
        #expect(stat(outside + "/victim", &st) == 0 && st.st_mode & 0o7777 == 0o644)
        #expect(try POSIX.listDirectory(outside) == ["victim"])
        #expect(try POSIX.readFile(outside + "/victim") == Array("keep\n".utf8))
    }

    @Test func removingASymlinkRemovesOnlyTheLink() throws {
        let d = try ConfinedDirectory(target)
        try d.removeTree(target + "/swapped")
        try d.removeTree(target + "/real")
        #expect(try POSIX.listDirectory(target) == [])
        #expect(try POSIX.listDirectory(outside) == ["victim"])
        #expect(try POSIX.readFile(outside + "/victim") == Array("keep\n".utf8))
    }

    @Test func ordinaryWorkGoesThrough() throws {
        let d = try ConfinedDirectory(target)
        try d.mkdir(target + "/real/sub", mode: 0o700)
        let fd = try d.open(target + "/real/sub/f", flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        #expect(write(fd, "data", 4) == 4)
        close(fd)
        try d.link(target + "/real/sub/f", at: target + "/real/g")
        try d.setMetadata(target + "/real/sub", uid: 0, gid: 0, mode: 0o750, mtime: Timestamp(seconds: 1_700_000_000), isSymlink: false, chown: false)
        var st = stat()
        #expect(lstat(target + "/real/sub", &st) == 0 && st.st_mode & 0o7777 == 0o750 && st.st_mtim.tv_sec == 1_700_000_000)
        #expect(lstat(target + "/real/g", &st) == 0 && st.st_nlink == 2)
        #expect(try d.lstat(target + "/real/missing") == nil)
    }
}
