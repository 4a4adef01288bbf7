#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// The repository lock on an object store, which has no flock: one small object per holder,
/// `.store/locks/<kind>-<host>-<pid>-<random>`, saying who holds it and until when. Kinds:
/// `shared` (readers), `create` (create and copy, which only add: beside readers, but one at a
/// time, since two could name their snapshots alike) and `exclusive` (alone).
///
/// A holder renews its object every `lifetime / 5`; an object whose time has passed is
/// ignored (and removed by the next writer), so a writer that crashed, lost its network or
/// was killed holds the repository for at most `lifetime` — and not at all on its own host,
/// where a lock object whose process is gone is stale at once. Taking it: list the lock objects;
/// if none conflicts, save ours, list again, and back off (remove ours) if one that conflicts
/// appeared meanwhile. Two holders whose clocks differ by more than the lifetime can disagree
/// about expiry; hosts are expected to keep time (NTP).
public final class RemoteLock: Sendable {
    /// How long a lock object holds without renewal.
    public static let lifetime: Double = 300

    struct Record: Codable {
        var mode: String
        var holder: String
        var host: String?
        var pid: Int32?
        /// Seconds since 1970.
        var expires: Double
    }

    let storage: any RepositoryStorage
    let key: String
    let record: Record
    private let released = Mutex(false)
    private let wakeup = DispatchSemaphore(value: 0)

    public enum Kind: String, Sendable { case shared, create, exclusive }

    public init(storage: any RepositoryStorage, kind: Kind, purpose: String, wait: Double) throws {
        self.storage = storage
        let modeName = kind.rawValue
        key = ".store/locks/\(modeName)-\(POSIX.hostName())-\(getpid())-\(BlobID.random().hex.prefix(8))"
        record = Record(
            mode: modeName, holder: "PID \(getpid()) on host \(POSIX.hostName()) (\(purpose), since \(Timestamp.now().iso8601))",
            host: POSIX.hostName(), pid: getpid(), expires: 0)
        let deadline = Date().timeIntervalSince1970 + wait
        while true {
            if let conflict = try Self.conflict(storage, kind: kind, except: nil) {
                if Date().timeIntervalSince1970 < deadline {
                    usleep(UInt32.random(in: 500_000...1_500_000))
                    continue
                }
                throw RepositoryError.locked(path: storage.location, holder: conflict + (wait > 0 ? " (waited \(Int(wait)) s)" : ""))
            }
            try save()
            if let conflict = try Self.conflict(storage, kind: kind, except: key) {
                try? storage.remove(key)
                if Date().timeIntervalSince1970 < deadline {
                    usleep(UInt32.random(in: 500_000...1_500_000))
                    continue
                }
                throw RepositoryError.locked(path: storage.location, holder: conflict)
            }
            break
        }
        let renew = Thread { [self] in
            while wakeup.wait(timeout: .now() + Self.lifetime / 5) == .timedOut {
                guard !released.withLock({ $0 }) else { return }
                try? save()
            }
        }
        renew.start()
    }

    private func save() throws {
        var r = record
        r.expires = Date().timeIntervalSince1970 + Self.lifetime
        try storage.save(key, Array(try JSONEncoder().encode(r)))
    }

    /// The holder of a live lock object that conflicts with taking `kind`, or nil. Expired
    /// objects are removed on the way.
    static func conflict(_ storage: any RepositoryStorage, kind: Kind, except own: String?) throws -> String? {
        let now = Date().timeIntervalSince1970
        for o in try storage.list(prefix: ".store/locks/") where o.key != own {
            let name = o.key.dropFirst(".store/locks/".count)
            guard name.hasPrefix("shared-") || name.hasPrefix("create-") || name.hasPrefix("exclusive-") else { continue }
            guard let bytes = try storage.loadIfPresent(o.key), let r = try? JSONDecoder().decode(Record.self, from: Data(bytes)) else {
                continue  // gone meanwhile, or not a lock object
            }
            // Expired, or its holder was a process of this host that is gone: stale.
            if r.expires < now || (r.host == POSIX.hostName() && r.pid.map { kill($0, 0) != 0 && errno == ESRCH } == true) {
                try? storage.remove(o.key)
                continue
            }
            let other = Kind(rawValue: r.mode) ?? .exclusive
            switch (kind, other) {
            case (.exclusive, _), (_, .exclusive), (.create, .create): return r.holder
            default: continue
            }
        }
        return nil
    }

    public func release() {
        let first = released.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        guard first else { return }
        wakeup.signal()
        try? storage.remove(key)
    }

    deinit { release() }
}
