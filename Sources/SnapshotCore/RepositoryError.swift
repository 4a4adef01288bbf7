#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors from the repository format layer. Each message says what went wrong and where.
public enum RepositoryError: Error, CustomStringConvertible, Sendable {
    /// No repository at the path.
    case notFound(path: String)
    /// A repository file could not be parsed or failed its checksum.
    case corrupt(file: String, detail: String)
    /// A system call failed on a path.
    case io(path: String, operation: String, errno: Int32)
    /// Another process holds a conflicting lock.
    case locked(path: String, holder: String)
    /// Access to a path was denied.
    case permission(path: String, operation: String)
    /// An encrypted repository without its password, with a wrong one, or a secret file
    /// others may read.
    case key(path: String, detail: String)
    /// A reference that names no snapshot, or names several.
    case snapshotNotFound(reference: String, detail: String)
    /// The repository was written by a newer format version.
    case unsupportedVersion(path: String, version: Int)
    /// A blob that the index or a tree refers to is missing.
    case missingBlob(id: BlobID, context: String)
    /// An object store refused or failed a request after its retries: what was asked of
    /// which object, the HTTP status (0 when no answer came) and the store's words.
    case remote(path: String, operation: String, status: Int, detail: String)

    /// Builds an error from the current `errno`, separating permission problems.
    public static func fromErrno(path: String, operation: String, errno code: Int32 = errno) -> RepositoryError {
        if code == EACCES || code == EPERM {
            return .permission(path: path, operation: operation)
        }
        return .io(path: path, operation: operation, errno: code)
    }

    /// A write that failed for want of room: a full file system (ENOSPC) or quota (EDQUOT).
    public var isOutOfSpace: Bool {
        if case .io(_, _, let code) = self { return code == ENOSPC || code == EDQUOT }
        return false
    }

    /// True for a failed read of `path` (as opposed to a failure writing the repository).
    public func isReadFailure(of path: String) -> Bool {
        switch self {
        case .io(let p, let op, _), .permission(let p, let op): return p == path && op == "read"
        default: return false
        }
    }

    /// A failure of the machine, not of the data (out of descriptors or memory, an I/O
    /// error, a denied access): never to be reported as damage.
    public var isResourceError: Bool {
        switch self {
        case .io, .permission, .remote: return true
        default: return false
        }
    }

    /// The system's words for what went wrong (`Input/output error`), without the path.
    public var systemReason: String {
        switch self {
        case .io(_, _, let code): return POSIX.errorText(code)
        case .permission: return POSIX.errorText(EACCES)
        default: return description
        }
    }

    public var description: String {
        switch self {
        case .notFound(let path):
            return "no repository at \(path) (create one with `snapshot init` or `snapshot create`)"
        case .corrupt(let file, let detail):
            return "damaged repository file \(file): \(detail)"
        case .io(let path, let operation, let code):
            return "\(operation) \(path): \(POSIX.errorText(code))"
        case .locked(let path, let holder):
            return "repository \(path) is locked by \(holder); try again when it finishes"
        case .key(let path, let detail):
            return "\(path): \(detail)"
        case .permission(let path, let operation):
            return "\(operation) \(path): permission denied"
        case .snapshotNotFound(let reference, let detail):
            return "snapshot \"\(reference)\": \(detail)"
        case .unsupportedVersion(let path, let version):
            return "repository \(path) has format version \(version); this snapshot build reads up to \(Repository.formatVersion)"
        case .missingBlob(let id, let context):
            return "blob \(id.short) missing (\(context))"
        case .remote(let path, let operation, let status, let detail):
            return "\(operation) \(path): \(status > 0 ? "HTTP \(status) " : "")\(detail)"
        }
    }
}

/// Internal parse failure, rewrapped with a file name by the caller.
enum CoreError: Error {
    case corrupt(String)
}
