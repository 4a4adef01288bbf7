import COpenSSL
import Foundation

/// Encryption to age X25519 recipients (age-encryption.org/v1), so that `age -d -i KEYFILE`
/// decrypts an export: X25519, HKDF-SHA256 and ChaCha20-Poly1305, all from OpenSSL.
public enum Age {
    public enum Failure: Error, CustomStringConvertible {
        case badRecipient(String)
        case crypto(String)
        public var description: String {
            switch self {
            case .badRecipient(let r): return "not an age X25519 recipient (age1…): \(r)"
            case .crypto(let what): return "age encryption failed: \(what)"
            }
        }
    }

    /// The 32-byte X25519 public key of an `age1…` recipient (bech32, checksum checked).
    public static func parseRecipient(_ text: String) throws -> [UInt8] {
        let s = text.trimmingCharacters(in: .whitespaces).lowercased()
        guard s.hasPrefix("age1"), let data = bech32Decode(s, hrp: "age"), data.count == 32 else { throw Failure.badRecipient(text) }
        return data
    }

    /// Recipients from `--recipient` values: an `age1…` key, or a file of them (one per line,
    /// `#` comments).
    public static func recipients(_ values: [String]) throws -> [[UInt8]] {
        var out: [[UInt8]] = []
        for v in values {
            if v.hasPrefix("age1") {
                out.append(try parseRecipient(v))
            } else {
                let lines = String(decoding: try POSIX.readFile(v), as: UTF8.self).split(separator: "\n")
                let keys = lines.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
                guard !keys.isEmpty else { throw Failure.badRecipient("\(v) holds no recipient") }
                out += try keys.map(parseRecipient)
            }
        }
        return out
    }

    static func bech32Decode(_ s: String, hrp: String) -> [UInt8]? {
        let charset = Array("qpzry9x8gf2tvdw0s3jn54khce6mua7l".utf8)
        let bytes = Array(s.utf8)
        guard let sep = bytes.lastIndex(of: UInt8(ascii: "1")), String(decoding: bytes[..<sep], as: UTF8.self) == hrp, bytes.count - sep - 1 >= 6 else { return nil }
        var values: [UInt8] = []
        for c in bytes[(sep + 1)...] {
            guard let i = charset.firstIndex(of: c) else { return nil }
            values.append(UInt8(i))
        }
        func polymod(_ v: [UInt8]) -> UInt32 {
            let gen: [UInt32] = [0x3b6a_57b2, 0x2650_8e6d, 0x1ea1_19fa, 0x3d42_33dd, 0x2a14_62b3]
            var chk: UInt32 = 1
            for x in v {
                let b = chk >> 25
                chk = (chk & 0x1ff_ffff) << 5 ^ UInt32(x)
                for i in 0..<5 where (b >> i) & 1 == 1 { chk ^= gen[i] }
            }
            return chk
        }
        let h = Array(hrp.utf8)
        guard polymod(h.map { $0 >> 5 } + [0] + h.map { $0 & 31 } + values) == 1 else { return nil }
        var acc: UInt32 = 0, bits = 0
        var out: [UInt8] = []
        for v in values.dropLast(6) {
            acc = acc << 5 | UInt32(v)
            bits += 5
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((acc >> UInt32(bits)) & 0xff))
            }
        }
        guard bits < 5, acc & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return out
    }

    static func base64(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString().replacingOccurrences(of: "=", with: "")
    }

    static func x25519(privateKey: [UInt8], peer: [UInt8]) throws -> [UInt8] {
        guard let key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nil, privateKey, 32),
            let peerKey = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nil, peer, 32)
        else { throw Failure.crypto("X25519 keys") }
        defer { EVP_PKEY_free(key); EVP_PKEY_free(peerKey) }
        let ctx = EVP_PKEY_CTX_new(key, nil)
        defer { EVP_PKEY_CTX_free(ctx) }
        var out = [UInt8](repeating: 0, count: 32)
        var length = 32
        guard EVP_PKEY_derive_init(ctx) == 1, EVP_PKEY_derive_set_peer(ctx, peerKey) == 1, EVP_PKEY_derive(ctx, &out, &length) == 1, length == 32 else {
            throw Failure.crypto("X25519")
        }
        return out
    }

    static func publicKey(privateKey: [UInt8]) throws -> [UInt8] {
        guard let key = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nil, privateKey, 32) else { throw Failure.crypto("X25519 key") }
        defer { EVP_PKEY_free(key) }
        var out = [UInt8](repeating: 0, count: 32)
        var length = 32
        guard EVP_PKEY_get_raw_public_key(key, &out, &length) == 1 else { throw Failure.crypto("X25519 public key") }
        return out
    }

    /// HKDF-SHA256 (RFC 5869), from HMAC.
    static func hkdf(ikm: [UInt8], salt: [UInt8], info: String, length: Int = 32) -> [UInt8] {
        let prk = ikm.withUnsafeBytes { Crypto.hmac($0, key: salt.isEmpty ? [UInt8](repeating: 0, count: 32) : salt) }.bytes
        var out: [UInt8] = [], t: [UInt8] = [], i: UInt8 = 1
        while out.count < length {
            let block = (t + Array(info.utf8) + [i]).withUnsafeBytes { Crypto.hmac($0, key: prk) }.bytes
            out += block
            t = block
            i += 1
        }
        return Array(out.prefix(length))
    }

    static func chacha20Poly1305(key: [UInt8], nonce: [UInt8], _ plain: UnsafeRawBufferPointer) throws -> [UInt8] {
        let ctx = EVP_CIPHER_CTX_new()!
        defer { EVP_CIPHER_CTX_free(ctx) }
        var out = [UInt8](repeating: 0, count: plain.count + 16)
        var n: Int32 = 0
        let ok = out.withUnsafeMutableBufferPointer { o -> Bool in
            guard EVP_EncryptInit_ex(ctx, EVP_chacha20_poly1305(), nil, key, nonce) == 1 else { return false }
            if plain.count > 0 {
                guard EVP_EncryptUpdate(ctx, o.baseAddress!, &n, plain.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(plain.count)) == 1 else { return false }
            }
            guard EVP_EncryptFinal_ex(ctx, o.baseAddress! + plain.count, &n) == 1 else { return false }
            return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, o.baseAddress! + plain.count) == 1
        }
        guard ok else { throw Failure.crypto("ChaCha20-Poly1305") }
        return out
    }

    /// Encrypts the file at `input` to `recipients`, writing the age file to `output`.
    public static func encrypt(input: String, output: String, recipients: [[UInt8]]) throws {
        precondition(!recipients.isEmpty)
        let fileKey = Crypto.random(16)
        var header = "age-encryption.org/v1\n"
        for recipient in recipients {
            let ephemeral = Crypto.random(32)
            let share = try publicKey(privateKey: ephemeral)
            let shared = try x25519(privateKey: ephemeral, peer: recipient)
            guard shared.contains(where: { $0 != 0 }) else { throw Failure.badRecipient(base64(recipient)) }
            let wrapKey = hkdf(ikm: shared, salt: share + recipient, info: "age-encryption.org/v1/X25519")
            let body = try fileKey.withUnsafeBytes { try chacha20Poly1305(key: wrapKey, nonce: [UInt8](repeating: 0, count: 12), $0) }
            header += "-> X25519 \(base64(share))\n\(base64(body))\n"
        }
        header += "---"
        let mac = Array(header.utf8).withUnsafeBytes { Crypto.hmac($0, key: hkdf(ikm: fileKey, salt: [], info: "header")) }.bytes
        header += " \(base64(mac))\n"

        let nonce = Crypto.random(16)
        let payloadKey = hkdf(ikm: fileKey, salt: nonce, info: "payload")
        let (inFD, outFD) = try POSIX.openTransform(input: input, output: output)
        defer { close(inFD); close(outFD) }
        try POSIX.writeAll(outFD, Array(header.utf8) + nonce, path: output)
        // 64 KiB chunks; the last one (possibly short, empty only for empty input) is flagged.
        let chunk = 64 << 10
        var current = try POSIX.readUpTo(inFD, chunk, path: input)
        var counter: UInt64 = 0
        while true {
            let next = current.count == chunk ? try POSIX.readUpTo(inFD, chunk, path: input) : []
            let last = next.isEmpty
            var chunkNonce = [UInt8](repeating: 0, count: 12)
            for i in 0..<8 { chunkNonce[10 - i] = UInt8((counter >> (8 * UInt64(i))) & 0xff) }
            chunkNonce[11] = last ? 1 : 0
            let sealed = try current.withUnsafeBytes { try chacha20Poly1305(key: payloadKey, nonce: chunkNonce, $0) }
            try POSIX.writeAll(outFD, sealed, path: output)
            if last { break }
            current = next
            counter += 1
        }
        guard fsync(outFD) == 0 else { throw RepositoryError.fromErrno(path: output, operation: "fsync") }
    }
}
