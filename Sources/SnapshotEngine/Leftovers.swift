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
        // In-place restore staging beside each configured files component.
        var parents = Set<String>()
        for (_, source) in config.components {
            if case .files(let path, _) = source { parents.insert(POSIX.parent(of: path)) }
        }
        for parent in parents.sorted() {
            for name in (try? POSIX.listDirectory(parent)) ?? [] where name.hasPrefix(".snapshot-restore-") {
                let dir = parent + "/" + name
                let owner = (try? POSIX.readFile(dir + "/" + ownerFile)).map { String(decoding: $0, as: UTF8.self) }
                guard let owner, isGone(ownerText: owner) else { continue }
                if (try? POSIX.removeTree(dir)) != nil {
                    removed.append("the staging directory \(dir) of an in-place restore that was killed (\(owner.trimmingCharacters(in: .whitespacesAndNewlines)))")
                }
            }
        }
        return removed
    }
}

extension SnapshotService {
    /// Removes what killed runs left (see `Leftovers`), telling `notice` about each.
    func removeLeftovers() {
        for line in Leftovers.clean(repository: repositoryPath, config: config) { notice?("removed \(line)") }
    }
}
