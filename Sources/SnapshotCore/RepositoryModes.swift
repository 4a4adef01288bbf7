#if canImport(Glibc)
import Glibc
#endif

/// The modes the repository is created with, whatever the umask (a umask can only make
/// them stricter): a snapshot holds every secret of the system it protects.
public enum RepositoryModes {
    /// The repository, type and snapshot directories: the owner, and a group of readers
    /// (operators who list and restore).
    public static let directory: mode_t = 0o750
    /// metadata.json and manifest.json: readable by that group.
    public static let snapshotFile: mode_t = 0o640
    /// `.store` and everything in it: the owner only.
    public static let storeDirectory: mode_t = 0o700
    public static let storeFile: mode_t = 0o600

    /// Where the repository is looser than these modes: one line per kind of entry, with
    /// how many and an example (`verify` prints them as warnings).
    public static func looser(in repository: String) -> [String] {
        var found: [String: (count: Int, example: String, mode: mode_t)] = [:]
        func check(_ path: String, kind: String, allowed: mode_t) {
            var st = stat()
            guard lstat(path, &st) == 0, (st.st_mode & S_IFMT) != S_IFLNK else { return }
            let extra = st.st_mode & 0o777 & ~allowed
            guard extra != 0 else { return }
            let f = found[kind] ?? (0, path, st.st_mode & 0o777)
            found[kind] = (f.count + 1, f.example, f.mode)
        }
        func walkStore(_ path: String) {
            check(path, kind: "store directories (want 0700)", allowed: storeDirectory)
            for name in (try? POSIX.listDirectory(path)) ?? [] {
                let child = path + "/" + name
                if POSIX.isDirectory(child) { walkStore(child) } else { check(child, kind: "store files (want 0600)", allowed: storeFile) }
            }
        }
        check(repository, kind: "the repository directory (want 0750)", allowed: directory)
        for name in (try? POSIX.listDirectory(repository)) ?? [] {
            let child = repository + "/" + name
            if name == ".store" {
                walkStore(child)
                continue
            }
            guard POSIX.isDirectory(child) else { continue }
            check(child, kind: "type directories (want 0750)", allowed: directory)
            for id in (try? POSIX.listDirectory(child)) ?? [] where id != "latest" {
                let snapshot = child + "/" + id
                check(snapshot, kind: "snapshot directories (want 0750)", allowed: directory)
                for file in (try? POSIX.listDirectory(snapshot)) ?? [] {
                    check(snapshot + "/" + file, kind: "snapshot files (want 0640)", allowed: snapshotFile)
                }
            }
        }
        return found.sorted { $0.key < $1.key }.map { kind, f in
            "\(f.count) \(kind) open to more than that, e.g. \(f.example) (mode \(String(f.mode, radix: 8))); `chmod -R go-rwx \(repository)/.store` and `chmod -R o-rwx,g-w \(repository)` fix it"
        }
    }
}
