#if canImport(Glibc)
import Glibc
#endif
import CSystemShims
import Foundation

/// `snapshot key unlock`: an encrypted repository's master keys kept in the kernel's key
/// retention service (keyrings(7)) for a while, so that the commands of one login derive
/// the password's key (scrypt, a deliberate ~0.3 s) once instead of every time — what
/// ssh-agent does for ssh keys, without a daemon.
///
/// Where: the session keyring of the login (pam_keyinit gives each login one), or — for a
/// process without one — the user-session keyring shared by that user's processes without
/// one. A key is a "user" key named `snapshot:<repository id>:<key file id>`, readable and
/// searchable only by processes that possess that keyring (never by other users; with a
/// login's session keyring, not by the user's processes in other sessions), held in kernel
/// memory (never written to disk or swap), and gone at its
/// timeout, at `key forget`, or when its key file is removed or replaced (`key remove`,
/// `key passwd`): a key is looked up only under the id of a key file that is still there,
/// and used only if it is the one that file seals.
///
/// The payload: the master key material, then HMAC-SHA256 of the key file's sealed data
/// under that material (no password verifier: nothing in it helps guess the password).
public enum KeyCache {
    /// The longest an unlock may last (7 days), and the default (15 minutes, as sudo).
    public static let longest: Double = 7 * 86400
    public static let defaultDuration: Double = 15 * 60

    static func description(repository: String, keyID: String) -> String {
        "snapshot:\(repository):\(keyID)"
    }

    /// The keyring to use; nil with the reason when the kernel offers none (no keyring
    /// support, or a sandbox — containers' seccomp profiles often refuse keyctl).
    static func keyring() -> Result<Int, POSIXErrorReason> {
        let id = snapshot_key_session_keyring()
        return id < 0 ? .failure(POSIXErrorReason(errno: errno)) : .success(id)
    }

    struct POSIXErrorReason: Error {
        let errno: Int32
    }

    static func tag(material: [UInt8], sealed: [UInt8]) -> BlobID {
        sealed.withUnsafeBytes { Crypto.hmac($0, key: material) }
    }

    /// Keeps `material` (what key file `keyID`, sealing `sealed`, opens) for `seconds`.
    /// Throws `io` naming the cause when the kernel keeps no keys for this process.
    static func store(repository: String, keyID: String, sealed: [UInt8], material: [UInt8], seconds: Double, path: String) throws {
        let ring: Int
        switch keyring() {
        case .success(let id): ring = id
        case .failure(let reason): throw RepositoryError.io(path: path, operation: "use the kernel keyring (a container's seccomp profile may refuse keyctl) for", errno: reason.errno)
        }
        let payload = material + tag(material: material, sealed: sealed).bytes
        let name = description(repository: repository, keyID: keyID)
        let key = payload.withUnsafeBytes { snapshot_key_add(ring, name, $0.baseAddress, UInt($0.count), UInt32(max(1, min(seconds, longest)))) }
        guard key >= 0 else {
            throw RepositoryError.io(path: path, operation: "add the key to the kernel keyring for", errno: errno)
        }
    }

    /// The cached material for key file `keyID` (sealing `sealed`), if it is there, unexpired,
    /// and the one that file seals.
    static func lookup(repository: String, keyID: String, sealed: [UInt8]) -> [UInt8]? {
        guard case .success(let ring) = keyring() else { return nil }
        let key = snapshot_key_search(ring, description(repository: repository, keyID: keyID))
        guard key >= 0 else { return nil }
        var payload = [UInt8](repeating: 0, count: 2 * Crypto.keySize + 32)
        let n = payload.withUnsafeMutableBytes { snapshot_key_read(key, $0.baseAddress, UInt($0.count)) }
        guard n == payload.count else { return nil }
        let material = Array(payload[0..<(2 * Crypto.keySize)])
        let expected = tag(material: material, sealed: sealed).bytes
        // Constant time: a difference anywhere costs the same.
        var diff: UInt8 = 0
        for (a, b) in zip(expected, payload[(2 * Crypto.keySize)...]) { diff |= a ^ b }
        return diff == 0 ? material : nil
    }

    /// Forgets the cached keys of `keyIDs`; how many there were.
    static func forget(repository: String, keyIDs: [String]) -> Int {
        guard case .success(let ring) = keyring() else { return 0 }
        var count = 0
        for id in keyIDs {
            let key = snapshot_key_search(ring, description(repository: repository, keyID: id))
            if key >= 0, snapshot_key_invalidate(key) == 0 { count += 1 }
        }
        return count
    }
}
