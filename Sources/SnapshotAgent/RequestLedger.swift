import Foundation
import SnapshotCore
import Synchronization

/// Remembers recent request ids and their outcome on disk, so that a command delivered twice
/// (a QoS 1 redelivery, also across an agent restart) is answered again but never run twice.
/// Keeps the newest `capacity` entries. Thread-safe.
///
/// `record` updates memory at once and writes the file on a thread of its own: writes are
/// one at a time (so no two share a temporary file), and records that arrive while one is
/// being written are saved together by the next. Nothing waits for the disk before a
/// command is answered; `flush()` (the agent's shutdown) writes what is pending.
public final class RequestLedger: Sendable {
    public struct Entry: Codable, Sendable, Equatable {
        public var requestID: String
        public var jobID: String
        public var action: String
        /// `accepted`, `running`, or the final status.
        public var status: String
        /// The final response document, once there is one.
        public var final: String?

        enum CodingKeys: String, CodingKey {
            case requestID = "request_id"
            case jobID = "job_id"
            case action, status, final
        }
    }

    private let path: String
    private let capacity: Int
    private let entries: Mutex<[Entry]>
    /// A write is scheduled and has not yet read `entries`.
    private let pending = Atomic<Bool>(false)
    private let writing = Mutex<Void>(())

    /// Loads the ledger; a missing or unreadable file starts empty (the loss is only that
    /// very old duplicates would run again).
    public init(path: String, capacity: Int = 1000) {
        self.path = path
        self.capacity = capacity
        var loaded: [Entry] = []
        if let bytes = try? POSIX.readFile(path), let decoded = try? JSONDecoder().decode([Entry].self, from: Data(bytes)) {
            loaded = decoded
        }
        entries = Mutex(loaded)
    }

    public func lookup(_ requestID: String) -> Entry? {
        entries.withLock { list in list.last { $0.requestID == requestID } }
    }

    /// Adds or updates the entry of `entry.requestID`; the file follows shortly.
    public func record(_ entry: Entry) {
        entries.withLock { list in
            if let i = list.lastIndex(where: { $0.requestID == entry.requestID }) {
                list[i] = entry
            } else {
                list.append(entry)
                if list.count > capacity { list.removeFirst(list.count - capacity) }
            }
        }
        guard !pending.exchange(true, ordering: .acquiringAndReleasing) else { return }
        Thread.detachNewThread { [self] in flush() }
    }

    /// Writes the ledger as it is now (atomically: temporary file, fsync, rename).
    public func flush() {
        writing.withLock { _ in
            pending.store(false, ordering: .releasing)
            let snapshot = entries.withLock { $0 }
            do {
                try POSIX.makeDirectories(POSIX.parent(of: path), mode: RepositoryModes.storeDirectory)
                try POSIX.writeFileAtomically(path, Array(try JSONEncoder().encode(snapshot)))
            } catch {
                // The ledger is an aid against duplicates; failing to write it must not stop the agent.
            }
        }
    }
}
