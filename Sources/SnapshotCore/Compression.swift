#if canImport(Glibc)
import Glibc
#endif
import CZstd

/// zstd compression of single blobs.
///
/// A `Compressor` owns zstd contexts and is not thread-safe: give each worker its own.
public final class Compressor {
    private let cctx: OpaquePointer
    private let dctx: OpaquePointer
    private var scratch: [UInt8] = []
    public let level: Int32

    public init(level: Int) {
        self.level = Int32(level)
        cctx = ZSTD_createCCtx()
        dctx = ZSTD_createDCtx()
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, self.level)
    }

    deinit {
        ZSTD_freeCCtx(cctx)
        ZSTD_freeDCtx(dctx)
    }

    /// Compresses `input`; returns nil when the result would not save at least 1/32 of the size,
    /// in which case the caller stores the bytes raw.
    public func compress(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        let bound = ZSTD_compressBound(input.count)
        if scratch.count < bound { scratch = [UInt8](repeating: 0, count: bound) }
        let n = scratch.withUnsafeMutableBytes { out in
            ZSTD_compress2(cctx, out.baseAddress, out.count, input.baseAddress, input.count)
        }
        guard ZSTD_isError(n) == 0, n < input.count - input.count / 32 else { return nil }
        return Array(scratch[0..<n])
    }

    /// Decompresses into exactly `rawLength` bytes.
    public func decompress(_ input: UnsafeRawBufferPointer, rawLength: Int) throws -> [UInt8] {
        var n = 0
        let out = [UInt8](unsafeUninitializedCapacity: rawLength) { buf, count in
            n = ZSTD_decompressDCtx(dctx, buf.baseAddress, rawLength, input.baseAddress, input.count)
            // On error the bytes are garbage but initialised memory is not required for UInt8.
            count = rawLength
        }
        if ZSTD_isError(n) != 0 {
            throw CoreError.corrupt("zstd: \(String(cString: ZSTD_getErrorName(n)))")
        }
        guard n == rawLength else {
            throw CoreError.corrupt("zstd: \(n) bytes decompressed, \(rawLength) expected")
        }
        return out
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
