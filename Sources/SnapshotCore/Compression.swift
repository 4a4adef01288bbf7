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
