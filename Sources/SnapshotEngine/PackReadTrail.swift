#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import SnapshotCore

/// The stretch of a pack that reads in offset order have gone through, dropped from the page
/// cache 2 MiB at a time as they move on (`Repository.dropCachedPages`). A restore (each
/// large file's entries) and `verify --read-data` (each pack's) read a pack once: the pages
/// they free are the ones their next reads fill, instead of new ones, and a repository's
/// worth of packs does not displace what the system had cached. Not for reads that jump
/// between packs (a small-file restore), where a call per entry would cost more than it saves.
struct PackReadTrail {
    let repository: Repository
    private(set) var pack: BlobID?
    private(set) var start = 0
    private(set) var end = 0
    static let step = 2 << 20
    /// Entries up to this far past the trail's end extend it (readahead read the gap).
    static let gap = 1 << 20

    init(repository: Repository) { self.repository = repository }

    /// Notes an entry about to be read; drops what lies behind the reads.
    mutating func reading(_ location: BlobLocation) {
        let offset = Int(location.offset), next = offset + Int(location.length)
        if pack == location.pack && offset >= end && offset - end <= Self.gap {
            // What is behind the entry before this one is done with.
            if end - start >= Self.step {
                repository.dropCachedPages(of: location.pack, offset: start, length: end - start)
                start = end
            }
            end = next
            return
        }
        release()
        (pack, start, end) = (location.pack, offset, next)
    }

    /// Drops the rest of the trail (the file is written, the pack read).
    mutating func release() {
        if let pack { repository.dropCachedPages(of: pack, offset: start, length: end - start) }
        pack = nil
    }
}
