#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore

/// What killed processes leave behind, and its removal by the next writing command: staging
/// directories of in-place restores beside the live data, partial pack files, scratch
/// directories under `.store/tmp`. Each belongs to a process (PID and host, in a marker or
/// in its name) and is removed only when that process is gone from this host.
enum Leftovers {
    /// Written into each in-place restore's staging directory: who it belongs to.
    static let ownerFile = ".owner"

    static var owner: String { "PID \(getpid()) on host \(POSIX.hostName())\n" }

    /// True when `pid` on `host` is a process of this host that no longer exists.
    static func isGone(pid: Int32, host: String) -> Bool {
        host == POSIX.hostName() && pid > 0 && pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH
    }

    static func isGone(ownerText: String) -> Bool {
        let w = ownerText.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard w.count >= 5, w[0] == "PID", let pid = Int32(w[1]), w[3] == "host" else { return false }
        return isGone(pid: pid, host: String(w[4]))
    }

    /// Removes what dead processes left; returns one line per removal, saying what and whose.
    static func clean(repository: String, config: SnapshotConfig) -> [String] {
        var removed: [String] = []
        // Partial packs: `<pack>.tmp-<host>-<pid>`.
        let data = repository + "/.store/data"
        for dir in (try? POSIX.listDirectory(data)) ?? [] {
            for name in (try? POSIX.listDirectory(data + "/" + dir)) ?? [] {
                guard let r = name.range(of: ".tmp-") else { continue }
                let tail = name[r.upperBound...]
                guard let dash = tail.lastIndex(of: "-"), let pid = Int32(tail[tail.index(after: dash)...]),
                    isGone(pid: pid, host: String(tail[..<dash]))
                else { continue }
                let path = data + "/\(dir)/\(name)"
                if unlink(path) == 0 { removed.append("a partial pack \(path) of PID \(pid), which is gone") }
            }
        }
        // Scratch directories: `export-<pid>-…`, `import-<pid>`, `qdrant-…-<pid>-…`.
        let tmp = repository + "/.store/tmp"
        for name in (try? POSIX.listDirectory(tmp)) ?? [] {
            let parts = name.split(separator: "-")
            guard let pidPart = parts.first(where: { Int32($0) != nil }), let pid = Int32(pidPart), isGone(pid: pid, host: POSIX.hostName()) else { continue }
            if (try? POSIX.removeTree(tmp + "/" + name)) != nil { removed.append("the scratch directory \(tmp)/\(name) of PID \(pid), which is gone") }
        }
        // In-place restore staging beside each configured files component:
        // `.snapshot-restore-<snapshot id>-<pid>-<component>`, with the owner inside.
        var componentsByParent: [String: [String]] = [:]
        for (name, source) in config.components {
            if case .files(let path, _) = source { componentsByParent[POSIX.parent(of: path), default: []].append(name) }
        }
        for (parent, components) in componentsByParent.sorted(by: { $0.key < $1.key }) {
            for name in (try? POSIX.listDirectory(parent)) ?? [] where name.hasPrefix(".snapshot-restore-") {
                let dir = parent + "/" + name
                var owner = (try? POSIX.readFile(dir + "/" + ownerFile)).map { String(decoding: $0, as: UTF8.self) }
                if owner == nil, let pid = stagingPID(name, components: components) {
                    // Killed between creating the directory and writing its owner: the
                    // name says whose it is (a staging directory lives on this host).
                    owner = "PID \(pid) on host \(POSIX.hostName())"
                }
                guard let owner, isGone(ownerText: owner) else { continue }
                if (try? POSIX.removeTree(dir)) != nil {
                    removed.append("the staging directory \(dir) of an in-place restore that was killed (\(owner.trimmingCharacters(in: .whitespacesAndNewlines)))")
                }
            }
        }
        return removed
    }
}

extension Leftovers {
    /// Removes the scratch directories that creates on an object store left in the temporary
    /// directory when they were killed (`snapshot-<pid>-<8 hex digits>`, this user's, of a
    /// process that is gone); one line per removal.
    static func cleanTemporary() -> [String] {
        let tmp = POSIX.temporaryDirectory()
        var removed: [String] = []
        for name in (try? POSIX.listDirectory(tmp)) ?? [] where name.hasPrefix("snapshot-") {
            let parts = name.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 3, let pid = Int32(parts[1]), parts[2].count == 8,
                parts[2].allSatisfy({ $0.isHexDigit && !$0.isUppercase }), isGone(pid: pid, host: POSIX.hostName())
            else { continue }
            var st = stat()
            let path = tmp + "/" + name
            guard lstat(path, &st) == 0, st.st_mode & S_IFMT == S_IFDIR, st.st_uid == getuid() else { continue }
            if (try? POSIX.removeTree(path)) != nil { removed.append("the scratch directory \(path) of PID \(pid), which is gone") }
        }
        return removed
    }

    /// The PID in a staging directory's name, `.snapshot-restore-<id>-<pid>-<component>`
    /// for one of `components` (whose names may hold '-' too, hence matched whole).
    static func stagingPID(_ name: String, components: [String]) -> Int32? {
        let body = name.dropFirst(".snapshot-restore-".count)
        for c in components where body.hasSuffix("-" + c) {
            let rest = body.dropLast(c.count + 1)
            guard let dash = rest.lastIndex(of: "-"), SnapshotCatalog.isValidID(String(rest[..<dash])),
                let pid = Int32(rest[rest.index(after: dash)...])
            else { continue }
            return pid
        }
        return nil
    }
}

extension SnapshotService {
    /// Removes what killed runs left (see `Leftovers`), telling `notice` about each.
    func removeLeftovers() {
        for line in Leftovers.clean(repository: repositoryPath, config: config) { notice?("removed \(line)") }
    }
}
