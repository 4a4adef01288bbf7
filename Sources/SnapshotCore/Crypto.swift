import COpenSSL
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
        let nonce = random(nonceSize)
        var out = [UInt8](repeating: 0, count: nonceSize + plain.count + tagSize)
        out.replaceSubrange(0..<nonceSize, with: nonce)
        let ctx = EVP_CIPHER_CTX_new()!
        defer { EVP_CIPHER_CTX_free(ctx) }
        var n: Int32 = 0
        let aad = Array(context.utf8)
        let ok = out.withUnsafeMutableBufferPointer { o -> Bool in
            guard EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nil, key, nonce) == 1,
                EVP_EncryptUpdate(ctx, nil, &n, aad, Int32(aad.count)) == 1
            else { return false }
            if plain.count > 0 {
                guard EVP_EncryptUpdate(ctx, o.baseAddress! + nonceSize, &n, plain.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(plain.count)) == 1 else { return false }
            }
            guard EVP_EncryptFinal_ex(ctx, o.baseAddress! + nonceSize + plain.count, &n) == 1 else { return false }
            return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, Int32(tagSize), o.baseAddress! + nonceSize + plain.count) == 1
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
        guard sealed.count >= overhead, key.count == keySize else { return nil }
        let length = sealed.count - overhead
        let ctx = EVP_CIPHER_CTX_new()!
        defer { EVP_CIPHER_CTX_free(ctx) }
        let aad = Array(context.utf8)
        let base = sealed.baseAddress!.assumingMemoryBound(to: UInt8.self)
        var ok = false
        let out = [UInt8](unsafeUninitializedCapacity: max(length, 1)) { o, count in
            count = length
            var n: Int32 = 0
            guard EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nil, key, base) == 1,
                EVP_DecryptUpdate(ctx, nil, &n, aad, Int32(aad.count)) == 1
            else { return }
            if length > 0 {
                guard EVP_DecryptUpdate(ctx, o.baseAddress!, &n, base + nonceSize, Int32(length)) == 1 else { return }
            }
            guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, Int32(tagSize), UnsafeMutableRawPointer(mutating: base + nonceSize + length)) == 1 else { return }
            ok = EVP_DecryptFinal_ex(ctx, o.baseAddress! + length, &n) == 1
        }
        return ok ? out : nil
    }

    public static func open(_ sealed: [UInt8], key: [UInt8], context: String) -> [UInt8]? {
        sealed.withUnsafeBytes { open($0, key: key, context: context) }
    }

    /// HMAC-SHA256 of `data` under `key`.
    public static func hmac(_ data: UnsafeRawBufferPointer, key: [UInt8]) -> BlobID {
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &digest) { out in
            var size: UInt32 = 0
            let r = HMAC(EVP_sha256(), key, Int32(key.count), data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count, out.baseAddress!.assumingMemoryBound(to: UInt8.self), &size)
            precondition(r != nil && size == 32, "HMAC failed")
        }
        return withUnsafeBytes(of: &digest) { BlobID(bytes: $0) }
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
