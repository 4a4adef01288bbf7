#if canImport(Glibc)
import Glibc
#endif
import COpenSSL
import CSHA256
import Foundation

/// The primitives of encrypted repositories, all from OpenSSL: AES-256-GCM, HMAC-SHA256,
/// scrypt and the system's random source.
public enum Crypto {
    public static let keySize = 32
    public static let nonceSize = 12
    public static let tagSize = 16
    /// What sealing adds to the plaintext: nonce and tag.
    public static let overhead = nonceSize + tagSize

    public static func random(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        precondition(RAND_bytes(&out, Int32(count)) == 1, "RAND_bytes failed")
        return out
    }

    /// AES-256-GCM: a fresh random nonce, then the ciphertext, then the tag. `context` is
    /// authenticated, not stored: a sealed index cannot pass for a sealed blob.
    public static func seal(_ plain: UnsafeRawBufferPointer, key: [UInt8], context: String) -> [UInt8] {
        precondition(key.count == keySize)
        let thread = ThreadContexts.current
        let ctx = thread.cipher(key: key, encrypt: true)
        var ok = false
        let out = [UInt8](unsafeUninitializedCapacity: nonceSize + plain.count + tagSize) { o, count in
            count = nonceSize + plain.count + tagSize
            let base = o.baseAddress!
            thread.nextNonce(into: base)
            var n: Int32 = 0
            ok = withBytes(of: context) { aad in
                EVP_EncryptInit_ex(ctx, nil, nil, nil, base) == 1 && EVP_EncryptUpdate(ctx, nil, &n, aad.baseAddress, Int32(aad.count)) == 1
            }
            guard ok else { return }
            if plain.count > 0 {
                ok = EVP_EncryptUpdate(ctx, base + nonceSize, &n, plain.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(plain.count)) == 1
            }
            ok = ok && EVP_EncryptFinal_ex(ctx, base + nonceSize + plain.count, &n) == 1
                && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, Int32(tagSize), base + nonceSize + plain.count) == 1
        }
        precondition(ok, "AES-256-GCM encryption failed")
        return out
    }

    public static func seal(_ plain: [UInt8], key: [UInt8], context: String) -> [UInt8] {
        plain.withUnsafeBytes { seal($0, key: key, context: context) }
    }

    /// Opens what `seal` made; nil when the key, the context or any byte is wrong. (The
    /// output is never zero-filled first: restores and checks open every blob.)
    public static func open(_ sealed: UnsafeRawBufferPointer, key: [UInt8], context: String) -> [UInt8]? {
        guard sealed.count >= overhead else { return nil }
        var ok = false
        let out = [UInt8](unsafeUninitializedCapacity: max(sealed.count - overhead, 1)) { o, count in
            count = sealed.count - overhead
            ok = open(sealed, key: key, context: context, into: UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(o)[0..<count]))
        }
        return ok ? out : nil
    }

    /// Opens what `seal` made into `out`, whose size must be the plaintext's (the sealed
    /// size less `overhead`); false when the key, the context or any byte is wrong, or the
    /// size is not that. On false `out` holds garbage. A restore opens a blob stored
    /// without compression straight into its write buffer.
    public static func open(_ sealed: UnsafeRawBufferPointer, key: [UInt8], context: String, into out: UnsafeMutableRawBufferPointer) -> Bool {
        guard sealed.count >= overhead, key.count == keySize, out.count == sealed.count - overhead else { return false }
        let length = out.count
        let ctx = ThreadContexts.current.cipher(key: key, encrypt: false)
        let base = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var n: Int32 = 0
        guard withBytes(of: context, { aad in
            EVP_DecryptInit_ex(ctx, nil, nil, nil, base) == 1 && EVP_DecryptUpdate(ctx, nil, &n, aad.baseAddress, Int32(aad.count)) == 1
        })
        else { return false }
        // A stand-in address for an empty plaintext: OpenSSL takes one even for no bytes.
        var empty: UInt8 = 0
        return withUnsafeMutablePointer(to: &empty) { spare in
            let o = out.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? spare
            if length > 0 {
                guard EVP_DecryptUpdate(ctx, o, &n, base + nonceSize, Int32(length)) == 1 else { return false }
            }
            guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, Int32(tagSize), UnsafeMutableRawPointer(mutating: base + nonceSize + length)) == 1 else { return false }
            return EVP_DecryptFinal_ex(ctx, o + length, &n) == 1
        }
    }

    public static func open(_ sealed: [UInt8], key: [UInt8], context: String) -> [UInt8]? {
        sealed.withUnsafeBytes { open($0, key: key, context: context) }
    }

    /// A string's UTF-8 bytes without copying them where Swift holds them contiguously.
    private static func withBytes(of text: String, _ body: (UnsafeBufferPointer<UInt8>) -> Bool) -> Bool {
        text.utf8.withContiguousStorageIfAvailable(body) ?? Array(text.utf8).withUnsafeBufferPointer(body)
    }

    /// HMAC-SHA256 of `data` under `key`.
    public static func hmac(_ data: UnsafeRawBufferPointer, key: [UInt8]) -> BlobID {
        let ctx = ThreadContexts.current.mac(key: key)
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &digest) { out in
            var size = 0
            let ok = EVP_MAC_init(ctx, nil, 0, nil) == 1
                && EVP_MAC_update(ctx, data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count) == 1
                && EVP_MAC_final(ctx, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &size, 32) == 1
            precondition(ok && size == 32, "HMAC failed")
        }
        return withUnsafeBytes(of: &digest) { BlobID(bytes: $0) }
    }

    /// HMAC-SHA256 of `a` and of `b` under a key prepared for pairs (`PairedMACKey`): both
    /// hashed at once, as `BlobID.hashPair` does.
    static func hmacPair(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer, key: PairedMACKey) -> (BlobID, BlobID) {
        BlobID.pair { snapshot_hmac_sha256_pair(key.prepared, a.baseAddress, a.count, b.baseAddress, b.count, $0, $1) }
    }

    /// scrypt; nil when the parameters are out of range (or memory for them is refused).
    public static func scrypt(password: [UInt8], salt: [UInt8], n: UInt64, r: UInt64, p: UInt64, length: Int = keySize) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: length)
        let maxmem = UInt64(128) * r * n * p + (UInt64(64) << 20)
        let text = password.map { CChar(bitPattern: $0) } + [0]
        let ok = text.withUnsafeBufferPointer { pw in
            salt.withUnsafeBufferPointer { s in
                EVP_PBE_scrypt(pw.baseAddress, password.count, s.baseAddress, s.count, n, r, p, maxmem, &out, length)
            }
        }
        return ok == 1 ? out : nil
    }
}

/// An HMAC-SHA256 key prepared for hashing pairs of messages (the hash states after its
/// padded key blocks, as secret as the key). Only where `BlobID.pairsInterleave`.
/// Immutable after init, so shared between threads; wiped when released.
final class PairedMACKey: @unchecked Sendable {
    let prepared: UnsafeMutablePointer<snapshot_hmac_sha256_key>

    init?(_ key: [UInt8]) {
        guard BlobID.pairsInterleave else { return nil }
        prepared = .allocate(capacity: 1)
        prepared.initialize(to: snapshot_hmac_sha256_key())
        key.withUnsafeBytes { snapshot_hmac_sha256_prepare($0.baseAddress, $0.count, prepared) }
    }

    deinit {
        OPENSSL_cleanse(prepared, MemoryLayout<snapshot_hmac_sha256_key>.size)
        prepared.deallocate()
    }
}

/// OpenSSL contexts kept per thread and reused: fetching an algorithm, allocating a context
/// and expanding a key cost several microseconds per call — more than sealing or hashing a
/// small file's blob (200,000 of them in a create). Nonces are drawn from the system's
/// random source 64 at a time (still random, never counters; a forked child draws anew).
final class ThreadContexts {
    /// Fetched once; OpenSSL algorithm objects are immutable and shared between threads.
    nonisolated(unsafe) private static let aesGCM: OpaquePointer = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil)!
    nonisolated(unsafe) private static let hmacAlgorithm: OpaquePointer = EVP_MAC_fetch(nil, "HMAC", nil)!
    private static let slot: pthread_key_t = {
        var key = pthread_key_t()
        precondition(pthread_key_create(&key) { p in
            if let p { Unmanaged<ThreadContexts>.fromOpaque(p).release() }
        } == 0)
        return key
    }()

    static var current: ThreadContexts {
        if let p = pthread_getspecific(slot) { return Unmanaged<ThreadContexts>.fromOpaque(p).takeUnretainedValue() }
        let made = ThreadContexts()
        pthread_setspecific(slot, Unmanaged.passRetained(made).toOpaque())
        return made
    }

    private var macContext: OpaquePointer?
    private var macKey: [UInt8] = []
    private var encryptContext: OpaquePointer?
    private var encryptKey: [UInt8] = []
    private var decryptContext: OpaquePointer?
    private var decryptKey: [UInt8] = []
    private var nonces = [UInt8](repeating: 0, count: 64 * Crypto.nonceSize)
    private var nonceAt = 64
    private var noncePID: pid_t = 0

    deinit {
        if let macContext { EVP_MAC_CTX_free(macContext) }
        if let encryptContext { EVP_CIPHER_CTX_free(encryptContext) }
        if let decryptContext { EVP_CIPHER_CTX_free(decryptContext) }
        OPENSSL_cleanse(&nonces, nonces.count)
    }

    /// An HMAC-SHA256 context keyed with `key` (re-initialised per message with no key).
    func mac(key: [UInt8]) -> OpaquePointer {
        if let macContext, key == macKey { return macContext }
        if macContext == nil { macContext = EVP_MAC_CTX_new(Self.hmacAlgorithm) }
        var digest = Array("SHA256".utf8CString)
        let ok = digest.withUnsafeMutableBufferPointer { name in
            var params = [OSSL_PARAM_construct_utf8_string("digest", name.baseAddress, 0), OSSL_PARAM_construct_end()]
            return EVP_MAC_init(macContext, key, key.count, &params) == 1
        }
        precondition(ok, "HMAC-SHA256 initialisation failed")
        macKey = key
        return macContext!
    }

    /// An AES-256-GCM context with `key` expanded (the nonce is set per message).
    func cipher(key: [UInt8], encrypt: Bool) -> OpaquePointer {
        if encrypt, let encryptContext, key == encryptKey { return encryptContext }
        if !encrypt, let decryptContext, key == decryptKey { return decryptContext }
        let ctx = (encrypt ? encryptContext : decryptContext) ?? EVP_CIPHER_CTX_new()!
        let ok = encrypt ? EVP_EncryptInit_ex(ctx, Self.aesGCM, nil, key, nil) : EVP_DecryptInit_ex(ctx, Self.aesGCM, nil, key, nil)
        precondition(ok == 1, "AES-256-GCM initialisation failed")
        if encrypt {
            encryptContext = ctx
            encryptKey = key
        } else {
            decryptContext = ctx
            decryptKey = key
        }
        return ctx
    }

    /// Writes a fresh random nonce.
    func nextNonce(into out: UnsafeMutablePointer<UInt8>) {
        let pid = getpid()
        if nonceAt == 64 || pid != noncePID {
            precondition(RAND_bytes(&nonces, Int32(nonces.count)) == 1, "RAND_bytes failed")
            nonceAt = 0
            noncePID = pid
        }
        nonces.withUnsafeBufferPointer { out.update(from: $0.baseAddress! + nonceAt * Crypto.nonceSize, count: Crypto.nonceSize) }
        nonceAt += 1
    }
}
