#if canImport(Glibc)
import Glibc
#endif
import CZstd

/// How a new blob is compressed (`BlobWriter.storeNew`).
public enum BlobCompression: Sendable {
    /// Stored as it is.
    case none
    /// zstd at the writer's level.
    case zstd
    /// Float planes (`Compressor.compressPlanes`); zstd in a repository older than format
    /// version 2.
    case floatPlanes
    /// Half planes (`Compressor.compressHalfPlanes`); zstd in a repository older than format
    /// version 3.
    case halfPlanes
    /// zstd and the planes codecs the repository allows tried, the smallest kept (the first
    /// chunks of a file, to learn which suits it).
    case smaller
}

/// zstd compression of single blobs.
///
/// A `Compressor` owns zstd contexts and is not thread-safe: give each worker its own.
public final class Compressor {
    private let cctx: OpaquePointer
    private let dctx: OpaquePointer
    /// For the top byte plane of float planes: level 1 with matches of 7 bytes or more.
    private let planeCctx: OpaquePointer
    /// For the exponent plane of half planes: the same with a 256-entry hash table (on
    /// 128 KiB planes of bfloat16 weights: 505 MB/s against 294 with the default table, and
    /// a little smaller). Made on first use.
    private var halfContext: OpaquePointer?
    private var halfCctx: OpaquePointer {
        if let c = halfContext { return c }
        let c = ZSTD_createCCtx()!
        ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1)
        ZSTD_CCtx_setParameter(c, ZSTD_c_minMatch, 7)
        ZSTD_CCtx_setParameter(c, ZSTD_c_hashLog, 8)
        halfContext = c
        return c
    }
    /// Where `encoded(_:codec:)` encodes payloads (what it returns points into it).
    private var scratch = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var planes: [UInt8] = []
    public let level: Int32

    public init(level: Int) {
        self.level = Int32(level)
        cctx = ZSTD_createCCtx()
        dctx = ZSTD_createDCtx()
        planeCctx = ZSTD_createCCtx()
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, self.level)
        ZSTD_CCtx_setParameter(planeCctx, ZSTD_c_compressionLevel, 1)
        ZSTD_CCtx_setParameter(planeCctx, ZSTD_c_minMatch, 7)
    }

    deinit {
        ZSTD_freeCCtx(cctx)
        ZSTD_freeCCtx(planeCctx)
        if let halfContext { ZSTD_freeCCtx(halfContext) }
        ZSTD_freeDCtx(dctx)
        scratch.deallocate()
    }

    /// `scratch` with room for `count` bytes (its contents are not kept).
    private func scratch(_ count: Int) -> UnsafeMutableRawBufferPointer {
        if scratch.count < count {
            scratch.deallocate()
            scratch = .allocate(byteCount: count, alignment: 64)
        }
        return scratch
    }

    /// Compresses `input`; returns nil when the result would not save at least 1/32 of the size,
    /// in which case the caller stores the bytes raw.
    public func compress(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        encoded(input, codec: PackFormat.compressionZstd).map { Array($0) }
    }

    /// The room `encode(_:codec:into:)` needs for `count` bytes of input.
    public static func bound(codec: UInt8, count: Int) -> Int {
        switch codec {
        case PackFormat.compressionPlanes: return 4 + ZSTD_compressBound(count / 4) + 3 * (count / 4) + count % 4
        case PackFormat.compressionHalfPlanes: return 5 + ZSTD_compressBound(count / 2) + count / 2 + count % 2
        default: return ZSTD_compressBound(count)
        }
    }

    /// Encodes `input` with `codec` (`PackFormat.compressionZstd`, `…Planes`, `…HalfPlanes`)
    /// into the start of `out`, which has room for `bound(codec:count:)` bytes: a pack
    /// writer's buffer, so that the payload is not copied there afterwards. Returns the
    /// payload's length, or nil when it would not save 1/32 of the size (what `out` then
    /// holds is undefined).
    public func encode(_ input: UnsafeRawBufferPointer, codec: UInt8, into out: UnsafeMutableRawBufferPointer) -> Int? {
        precondition(out.count >= Self.bound(codec: codec, count: input.count))
        let n: Int?
        switch codec {
        case PackFormat.compressionPlanes: n = encodePlanes(input, into: out)
        case PackFormat.compressionHalfPlanes: n = encodeHalfPlanes(input, into: out)
        default:
            let r = ZSTD_compress2(cctx, out.baseAddress, out.count, input.baseAddress, input.count)
            n = ZSTD_isError(r) == 0 ? r : nil
        }
        guard let n, n < input.count - input.count / 32 else { return nil }
        return n
    }

    /// `encode` into the compressor's own buffer; the payload is valid until its next call.
    public func encoded(_ input: UnsafeRawBufferPointer, codec: UInt8) -> UnsafeRawBufferPointer? {
        let out = scratch(Self.bound(codec: codec, count: input.count))
        return encode(input, codec: codec, into: out).map { UnsafeRawBufferPointer(rebasing: out[0..<$0]) }
    }

    /// Half planes (entry codec 3): float planes for 2-byte floats (bfloat16, float16 —
    /// model weights). The bytes taken as 2-byte words are split into the plane of the byte
    /// that holds sign and exponent, compressed (zstd level 1, matches of 7+ bytes, a
    /// 256-entry hash table: little is matched, nearly all is the entropy coder's), and the
    /// plane of mantissa bytes, stored as it is. Which byte of a pair holds the exponent
    /// depends on where the chunk starts in the file, so the plane with fewer distinct values
    /// among its first 4,096 bytes is taken for it. Payload: u8 phase (0: the exponent byte
    /// is the first of each pair, 1: the second), u32 length of the zstd frame, the frame,
    /// the other plane, then the odd byte at the end if any. On bfloat16 weights: 15 %
    /// smaller than zstd level 3 on the same chunks, at twice its speed. nil when it would
    /// not save 1/32 of the size.
    public func compressHalfPlanes(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        encoded(input, codec: PackFormat.compressionHalfPlanes).map { Array($0) }
    }

    /// Half planes into `out` (room for `bound`): the exponent plane is gathered and its frame
    /// written first, then the raw plane is split to its place after the frame.
    private func encodeHalfPlanes(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int? {
        let n = input.count / 2, tail = input.count % 2
        guard n >= 128 else { return nil }
        if planes.count < n { planes = [UInt8](repeating: 0, count: n) }
        let bytes = input.bindMemory(to: UInt8.self)
        // Distinct values of each byte of a pair: slot `phase << 8 | byte`.
        var seen = [Bool](repeating: false, count: 512)
        var distinct = [0, 0]
        for k in 0..<min(n, 4096) {
            for phase in 0..<2 {
                let slot = phase << 8 | Int(bytes[2 * k + phase])
                if !seen[slot] {
                    seen[slot] = true
                    distinct[phase] += 1
                }
            }
        }
        let phase = distinct[1] < distinct[0] ? 1 : 0
        // [phase, frame length, frame, low plane, odd byte]
        let frame: Int? = planes.withUnsafeMutableBufferPointer { p in
            let high = p.baseAddress!
            for k in 0..<n { high[k] = bytes[2 * k + phase] }
            let frame = ZSTD_compress2(halfCctx, out.baseAddress! + 5, ZSTD_compressBound(n), high, n)
            return ZSTD_isError(frame) == 0 && frame < n ? frame : nil
        }
        guard let frame, 5 + frame + n + tail < input.count - input.count / 32 else { return nil }
        let low = (out.baseAddress! + 5 + frame).assumingMemoryBound(to: UInt8.self)
        for k in 0..<n { low[k] = bytes[2 * k + 1 - phase] }
        if tail > 0 { low[n] = bytes[2 * n] }
        out[0] = UInt8(phase)
        out.storeBytes(of: UInt32(frame).littleEndian, toByteOffset: 1, as: UInt32.self)
        return 5 + frame + n + tail
    }

    /// Undoes `compressHalfPlanes` into `out`, which must be exactly as long as the original.
    public func decompressHalfPlanes(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws {
        let n = out.count / 2, tail = out.count % 2
        guard input.count >= 5, input[0] <= 1 else { throw CoreError.corrupt("half planes: no phase and frame length") }
        let phase = Int(input[0])
        let frame = Int(UInt32(littleEndian: input.loadUnaligned(fromByteOffset: 1, as: UInt32.self)))
        guard frame <= input.count - 5, input.count - 5 - frame == n + tail else {
            throw CoreError.corrupt("half planes: \(input.count) bytes do not hold \(out.count)")
        }
        try decompressPlane(UnsafeRawBufferPointer(rebasing: input[5..<5 + frame]), count: n)
        guard let o = out.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return }
        planes.withUnsafeBufferPointer { high in
            let low = input.baseAddress!.assumingMemoryBound(to: UInt8.self) + 5 + frame
            for k in 0..<n {
                o[2 * k + phase] = high[k]
                o[2 * k + 1 - phase] = low[k]
            }
            if tail > 0 { o[2 * n] = low[n] }
        }
    }

    /// Float planes (entry codec 2; see docs/design.md, "Packs"): the bytes taken as
    /// little-endian 4-byte words are split into four planes — byte 0 of every word, then
    /// byte 1, byte 2, byte 3 — and only the last plane is compressed: for float32 vectors
    /// it holds the sign and exponent, which repeat, while the other three are mantissa
    /// noise that no compressor shrinks. Payload: u32 length of the zstd frame of plane 3,
    /// that frame, planes 0, 1 and 2 raw, then the 0–3 bytes after the last whole word.
    /// On Qdrant-like vectors: 15.5 % saved at ~1.9 GB/s, where zstd level 3 on the same
    /// blocks saves 6.3 % at ~0.9 GB/s. nil when it would not save 1/32 of the size.
    public func compressPlanes(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        encoded(input, codec: PackFormat.compressionPlanes).map { Array($0) }
    }

    /// Float planes into `out` (room for `bound`): plane 3 is gathered and its frame written
    /// first, then planes 0–2 are split to their places after the frame (a second pass over
    /// a chunk still in the cache, where copying the planes there would be a third).
    private func encodePlanes(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int? {
        let n = input.count / 4, tail = input.count % 4
        guard n >= 64 else { return nil }
        if planes.count < n { planes = [UInt8](repeating: 0, count: n) }
        // [frame length, frame, planes 0, 1, 2, the bytes after the last word]
        let frame: Int? = planes.withUnsafeMutableBufferPointer { p in
            let p3 = p.baseAddress!
            for k in 0..<n {
                p3[k] = UInt8(truncatingIfNeeded: UInt32(littleEndian: input.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self)) >> 24)
            }
            let frame = ZSTD_compress2(planeCctx, out.baseAddress! + 4, ZSTD_compressBound(n), p3, n)
            return ZSTD_isError(frame) == 0 && frame < n ? frame : nil
        }
        guard let frame, 4 + frame + 3 * n + tail < input.count - input.count / 32 else { return nil }
        let p0 = (out.baseAddress! + 4 + frame).assumingMemoryBound(to: UInt8.self), p1 = p0 + n, p2 = p0 + 2 * n
        for k in 0..<n {
            let w = UInt32(littleEndian: input.loadUnaligned(fromByteOffset: 4 * k, as: UInt32.self))
            p0[k] = UInt8(truncatingIfNeeded: w)
            p1[k] = UInt8(truncatingIfNeeded: w >> 8)
            p2[k] = UInt8(truncatingIfNeeded: w >> 16)
        }
        if tail > 0 { (p0 + 3 * n).update(from: input.baseAddress!.assumingMemoryBound(to: UInt8.self) + 4 * n, count: tail) }
        out.storeBytes(of: UInt32(frame).littleEndian, toByteOffset: 0, as: UInt32.self)
        return 4 + frame + 3 * n + tail
    }

    /// Undoes `compressPlanes` into exactly `rawLength` bytes.
    public func decompressPlanes(_ input: UnsafeRawBufferPointer, rawLength: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: rawLength) { out, count in
            try decompressPlanes(input, into: UnsafeMutableRawBufferPointer(out))
            count = rawLength
        }
    }

    /// Undoes `compressPlanes` into `out`, which must be exactly as long as the original.
    public func decompressPlanes(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws {
        let rawLength = out.count
        let n = rawLength / 4, tail = rawLength % 4
        guard input.count >= 4 else { throw CoreError.corrupt("float planes: no frame length") }
        let frame = Int(UInt32(littleEndian: input.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        guard frame <= input.count - 4, input.count - 4 - frame == 3 * n + tail else {
            throw CoreError.corrupt("float planes: \(input.count) bytes do not hold \(rawLength)")
        }
        try decompressPlane(UnsafeRawBufferPointer(rebasing: input[4..<4 + frame]), count: n)
        guard let o = out.baseAddress else { return }
        planes.withUnsafeBufferPointer { p3 in
            let raw = input.baseAddress!.assumingMemoryBound(to: UInt8.self) + 4 + frame
            let p0 = raw, p1 = raw + n, p2 = raw + 2 * n
            for k in 0..<n {
                let w = UInt32(p0[k]) | UInt32(p1[k]) << 8 | UInt32(p2[k]) << 16 | UInt32(p3[k]) << 24
                o.storeBytes(of: w.littleEndian, toByteOffset: 4 * k, as: UInt32.self)
            }
            for t in 0..<tail { out[4 * n + t] = raw[3 * n + t] }
        }
    }

    /// Decompresses the compressed plane of a planes codec into the first `count` bytes of
    /// `planes`.
    private func decompressPlane(_ frame: UnsafeRawBufferPointer, count: Int) throws {
        if planes.count < count { planes = [UInt8](repeating: 0, count: count) }
        try planes.withUnsafeMutableBytes { try decompress(frame, into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<count])) }
    }

    /// Decompresses into exactly `rawLength` bytes.
    public func decompress(_ input: UnsafeRawBufferPointer, rawLength: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: rawLength) { out, count in
            try decompress(input, into: UnsafeMutableRawBufferPointer(out))
            count = rawLength
        }
    }

    /// Decompresses into `out`, which the frame must fill exactly.
    public func decompress(_ input: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws {
        let n = ZSTD_decompressDCtx(dctx, out.baseAddress, out.count, input.baseAddress, input.count)
        if ZSTD_isError(n) != 0 {
            throw CoreError.corrupt("zstd: \(String(cString: ZSTD_getErrorName(n)))")
        }
        guard n == out.count else {
            throw CoreError.corrupt("zstd: \(n) bytes decompressed, \(out.count) expected")
        }
    }
}

extension Compressor {
    /// Compresses the file `input` into a zstd frame at `output` (streaming: exports).
    public static func compressFile(input: String, output: String, level: Int = 3) throws {
        try stream(input: input, output: output) { cctxOrDctx, inBuf, outBuf, last in
            ZSTD_compressStream2(cctxOrDctx, &outBuf, &inBuf, last ? ZSTD_e_end : ZSTD_e_continue)
        } make: {
            let c = ZSTD_createCCtx()!
            ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, Int32(level))
            ZSTD_CCtx_setParameter(c, ZSTD_c_nbWorkers, 2)
            return c
        } free: { ZSTD_freeCCtx($0) }
    }

    /// Decompresses the zstd file `input` to `output` (imports); damaged input throws.
    public static func decompressFile(input: String, output: String) throws {
        var sawEnd = false
        try stream(input: input, output: output) { d, inBuf, outBuf, _ in
            let r = ZSTD_decompressStream(d, &outBuf, &inBuf)
            if r == 0 { sawEnd = true }
            return r
        } make: { ZSTD_createDCtx()! } free: { ZSTD_freeDCtx($0) }
        guard sawEnd else { throw RepositoryError.corrupt(file: input, detail: "zstd stream cut short") }
    }

    private static func stream(
        input: String, output: String,
        step: (OpaquePointer, inout ZSTD_inBuffer, inout ZSTD_outBuffer, Bool) -> Int,
        make: () -> OpaquePointer, free: (OpaquePointer) -> Void
    ) throws {
        let (inFD, outFD) = try POSIX.openTransform(input: input, output: output)
        defer { close(inFD); close(outFD) }
        let ctx = make()
        defer { free(ctx) }
        var outBytes = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let chunk = try POSIX.readUpTo(inFD, 1 << 20, path: input)
            let last = chunk.count < 1 << 20
            var pending = true
            try chunk.withUnsafeBytes { raw in
                var inBuf = ZSTD_inBuffer(src: raw.baseAddress, size: raw.count, pos: 0)
                while pending {
                    let before = inBuf.pos
                    let produced: Int = try outBytes.withUnsafeMutableBytes { o in
                        var outBuf = ZSTD_outBuffer(dst: o.baseAddress, size: o.count, pos: 0)
                        let r = step(ctx, &inBuf, &outBuf, last)
                        if ZSTD_isError(r) != 0 { throw RepositoryError.corrupt(file: input, detail: "zstd: \(String(cString: ZSTD_getErrorName(r)))") }
                        // Done with this input when it is consumed and, at the end, flushed;
                        // a step that makes no progress (a cut-short stream) ends it too.
                        let progressed = inBuf.pos > before || outBuf.pos > 0
                        pending = progressed && (inBuf.pos < inBuf.size || (last && r != 0) || outBuf.pos == outBuf.size)
                        return outBuf.pos
                    }
                    try POSIX.writeAll(outFD, Array(outBytes[0..<produced]), path: output)
                    if raw.count == 0 && !last { pending = false }
                }
            }
            if last { break }
        }
        guard fsync(outFD) == 0 else { throw RepositoryError.fromErrno(path: output, operation: "fsync") }
    }
}
