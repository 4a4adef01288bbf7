#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// How a file's bytes are cut into chunks.
///
/// `contentDefined` is FastCDC (Xia et al., 2020) with normalized chunking, level 2: below the
/// average size a cut needs `log2(avg)+2` zero hash bits, above it `log2(avg)-2`, so sizes
/// cluster around the average while an insertion moves only the boundaries near it.
/// `fixed` cuts every `size` bytes: the right choice for files that are overwritten in
/// place at fixed offsets (Qdrant's mmap vector storage), where content-defined cuts gain
/// nothing and small blocks keep a scattered update small.
public enum ChunkingScheme: Sendable, Hashable {
    case contentDefined(min: Int, average: Int, max: Int)
    case fixed(size: Int)

    /// Fixed-size blocks (vector storage).
    public var isFixed: Bool {
        if case .fixed = self { return true }
        return false
    }

    /// The largest chunk this scheme emits.
    public var maxSize: Int {
        switch self {
        case .contentDefined(_, _, let max): return max
        case .fixed(let size): return size
        }
    }
}

/// A FastCDC cut-point finder. Immutable and thread-safe.
public struct Chunker: Sendable {
    public let scheme: ChunkingScheme
    private let gear: [UInt64]
    private let maskSmall: UInt64
    private let maskLarge: UInt64

    /// - Parameter seed: selects the gear table; the repository stores a random one so that
    ///   chunk boundaries do not reveal content across repositories.
    public init(scheme: ChunkingScheme, seed: UInt64) {
        self.scheme = scheme
        var state = seed
        var table = [UInt64](repeating: 0, count: 256)
        for i in 0..<256 {
            // splitmix64
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            table[i] = z ^ (z >> 31)
        }
        gear = table
        if case .contentDefined(_, let avg, _) = scheme {
            let bits = max(4, Int.bitWidth - 1 - avg.leadingZeroBitCount)
            // The gear hash's high bits depend on the most recent 64 bytes; test those.
            maskSmall = Self.highMask(bits + 2)
            maskLarge = Self.highMask(bits - 2)
        } else {
            maskSmall = 0
            maskLarge = 0
        }
    }

    /// The length of the chunk cut at the start of a run of zeros at least `scheme.maxSize`
    /// long — the same for every chunk inside a sparse file's holes: the cut depends only on
    /// the bytes before it. Computed once per gear table and scheme.
    public var zeroRunLength: Int {
        if case .fixed(let size) = scheme { return size }
        let key = ZeroRunKey(gear0: gear[0], scheme: scheme)
        if let known = Self.zeroRuns.withLock({ $0[key] }) { return known }
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: scheme.maxSize, alignment: 64)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        let n = cut(UnsafeRawBufferPointer(zeros))
        Self.zeroRuns.withLock { $0[key] = n }
        return n
    }

    struct ZeroRunKey: Hashable {
        let gear0: UInt64
        let scheme: ChunkingScheme
    }

    private static let zeroRuns = Mutex<[ZeroRunKey: Int]>([:])

    /// Whether every byte of `data` is zero (eight at a time).
    public static func isZero(_ data: UnsafeRawBufferPointer) -> Bool {
        guard let p = data.baseAddress else { return true }
        let words = data.count / 8
        var i = 0
        while i + 4 <= words {
            let a = p.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) | p.loadUnaligned(fromByteOffset: i * 8 + 8, as: UInt64.self)
            let b = p.loadUnaligned(fromByteOffset: i * 8 + 16, as: UInt64.self) | p.loadUnaligned(fromByteOffset: i * 8 + 24, as: UInt64.self)
            if a | b != 0 { return false }
            i += 4
        }
        while i < words {
            if p.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) != 0 { return false }
            i += 1
        }
        for j in (words * 8)..<data.count where data[j] != 0 { return false }
        return true
    }

    private static func highMask(_ bits: Int) -> UInt64 {
        bits >= 64 ? ~0 : ((UInt64(1) << UInt64(bits)) - 1) << UInt64(64 - bits)
    }

    /// The length of the chunk that starts at the beginning of `data`. When `data` is shorter
    /// than `scheme.maxSize`, the caller must pass all remaining bytes of the file (the end
    /// of the file is a cut).
    @inline(__always)
    public func cut(_ data: UnsafeRawBufferPointer) -> Int {
        let n = data.count
        switch scheme {
        case .fixed(let size):
            return Swift.min(size, n)
        case .contentDefined(let minSize, let avg, let maxSize):
            if n <= minSize { return n }
            let normal = Swift.min(avg, n)
            let end = Swift.min(maxSize, n)
            let bytes = data.bindMemory(to: UInt8.self)
            return gear.withUnsafeBufferPointer { g in
                var fp: UInt64 = 0
                var i = minSize
                if let cut = Self.scan(bytes, g, &fp, &i, upTo: normal, mask: maskSmall) { return cut }
                if let cut = Self.scan(bytes, g, &fp, &i, upTo: end, mask: maskLarge) { return cut }
                return end
            }
        }
    }

    /// Rolls the gear hash over `bytes[i..<stop]` and returns the position after the first
    /// byte where `fp & mask == 0`, or nil with `fp` and `i` at `stop`.
    ///
    /// Four bytes per step with the same result as one at a time: `fp` after four bytes is
    /// `fp << 4` plus a sum of the four table values that does not depend on `fp`, so the
    /// loop's dependency chain is one shift and one add per four bytes instead of per byte
    /// (the byte-wise loop ran at ~2 cycles per byte, its chain's latency).
    @inline(__always)
    private static func scan(_ bytes: UnsafeBufferPointer<UInt8>, _ g: UnsafeBufferPointer<UInt64>, _ fp: inout UInt64, _ i: inout Int, upTo stop: Int, mask: UInt64) -> Int? {
        while i + 4 <= stop {
            let g0 = g[Int(bytes[i])], g1 = g[Int(bytes[i + 1])], g2 = g[Int(bytes[i + 2])], g3 = g[Int(bytes[i + 3])]
            let f1 = (fp << 1) &+ g0
            let f2 = (fp << 2) &+ ((g0 << 1) &+ g1)
            let f3 = (fp << 3) &+ ((g0 << 2) &+ (g1 << 1) &+ g2)
            let f4 = (fp << 4) &+ ((g0 << 3) &+ (g1 << 2) &+ (g2 << 1) &+ g3)
            if f1 & mask == 0 || f2 & mask == 0 || f3 & mask == 0 || f4 & mask == 0 {
                if f1 & mask == 0 { return i + 1 }
                if f2 & mask == 0 { return i + 2 }
                if f3 & mask == 0 { return i + 3 }
                return i + 4
            }
            fp = f4
            i += 4
        }
        while i < stop {
            fp = (fp << 1) &+ g[Int(bytes[i])]
            i += 1
            if fp & mask == 0 { return i }
        }
        return nil
    }
}

/// Which chunking scheme a file gets, by name.
public struct ChunkingPolicy: Sendable, Equatable {
    /// The scheme for files that match no fixed-block pattern.
    public var defaultScheme: ChunkingScheme
    /// Files whose name ends with one of these suffixes use `fixedScheme`.
    public var fixedSuffixes: [String]
    public var fixedScheme: ChunkingScheme

    /// Version 2, what new repositories use: content-defined chunks of 64 KiB–1 MiB (average
    /// 256 KiB) for most files, 32 KiB fixed blocks for Qdrant mmap vector storage
    /// (`*.mmap`). Chosen by measurement on the benchmark dataset (see docs/design.md).
    public static let standard = ChunkingPolicy(
        defaultScheme: .contentDefined(min: 64 << 10, average: 256 << 10, max: 1 << 20),
        fixedSuffixes: [".mmap"],
        fixedScheme: .fixed(size: 32 << 10))

    /// Version 1, kept by repositories made before version 2: 128 KiB–2 MiB (average
    /// 512 KiB), 64 KiB fixed blocks.
    public static let version1 = ChunkingPolicy(
        defaultScheme: .contentDefined(min: 128 << 10, average: 512 << 10, max: 2 << 20),
        fixedSuffixes: [".mmap"],
        fixedScheme: .fixed(size: 64 << 10))

    /// The version new repositories record.
    public static let currentVersion = 2

    /// The policy a repository's config names (a version this build does not know cuts as
    /// the current one: only deduplication against older chunks depends on it).
    public static func version(_ n: Int) -> ChunkingPolicy { n == 1 ? version1 : standard }

    public init(defaultScheme: ChunkingScheme, fixedSuffixes: [String], fixedScheme: ChunkingScheme) {
        self.defaultScheme = defaultScheme
        self.fixedSuffixes = fixedSuffixes
        self.fixedScheme = fixedScheme
    }

    public func scheme(forFileNamed name: String) -> ChunkingScheme {
        for suffix in fixedSuffixes where name.hasSuffix(suffix) { return fixedScheme }
        return defaultScheme
    }
}

extension Chunker {
    /// Reads `fd` to its end through `buffer` and calls `body` with each chunk in order.
    /// The buffer must hold at least two maximum-size chunks. A read error throws
    /// `RepositoryError` naming `path`; `body` may throw to stop early.
    ///
    /// `propose`, when given, sees the bytes from each chunk's start (at least a maximum-size
    /// chunk of them unless the file ends sooner) before they are cut, and may name the
    /// chunk's length itself; nil lets the scheme cut. A caller that knows where the file's
    /// previous version was cut, and has checked that the same bytes are there, saves the
    /// search for the cut: FastCDC's cut depends only on the bytes from the chunk's start
    /// to the cut, so equal bytes cut at the same place.
    ///
    /// With `sparse`, the file's holes are not read: the kernel says where its data is
    /// (`SEEK_DATA`/`SEEK_HOLE`) and the bytes between are zeros written into the buffer —
    /// the same bytes, so the same chunks, without the kernel zero-filling every page of a
    /// 10 GiB image that holds 1 MiB.
    public func chunks(of fd: Int32, path: String, buffer: UnsafeMutableRawBufferPointer, sparse: Bool = false, propose: ((UnsafeRawBufferPointer) throws -> Int?)? = nil, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try chunks(reading: Self.reading(fd, path: path, sparse: sparse), buffer: buffer, zeroRuns: sparse, propose: propose, body)
    }

    /// Fills a buffer from `fd`, from where it is to its end (a read error throws, naming
    /// `path`); with `sparse`, holes as zeros without reading them.
    static func reading(_ fd: Int32, path: String, sparse: Bool = false) -> (UnsafeMutableRawBufferPointer) throws -> Int {
        if sparse, let holes = HoleMap(fd) {
            return { space in try holes.fill(space, path: path) }
        }
        return { space in
            while true {
                let n = read(fd, space.baseAddress!, space.count)
                if n >= 0 { return n }
                if errno != EINTR { throw RepositoryError.fromErrno(path: path, operation: "read") }
            }
        }
    }

    /// Chunks the bytes that `fill` supplies (it fills the space it is given from the start
    /// and returns how many bytes it wrote, 0 at the end), as `chunks(of:)` chunks a file.
    /// With `zeroRuns`, a run of zeros is cut without the search (see `chunkBatches`).
    public func chunks(reading fill: (UnsafeMutableRawBufferPointer) throws -> Int, buffer: UnsafeMutableRawBufferPointer, zeroRuns: Bool = false, propose: ((UnsafeRawBufferPointer) throws -> Int?)? = nil, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        precondition(buffer.count >= 2 * scheme.maxSize)
        var start = 0, end = 0, eof = false
        let zeroRun = zeroRuns && !scheme.isFixed ? zeroRunLength : 0
        while true {
            try refill(fill, buffer: buffer, start: &start, end: &end, eof: &eof)
            if end == start { return }
            let available = UnsafeRawBufferPointer(rebasing: buffer[start..<end])
            var n = 0
            if let propose, let proposed = try propose(available), proposed > 0, proposed <= available.count {
                n = proposed
            } else {
                n = cutOrZeroRun(available, zeroRun)
            }
            try body(UnsafeRawBufferPointer(rebasing: available[0..<n]))
            start += n
        }
    }

    /// Reads `fd` to its end as `chunks(of:)` does (without `propose`), but hands `body`
    /// every chunk the buffered bytes allow cutting at once — one or more, in order, at the
    /// same cuts — so that it can hash them in pairs (`BlobID.hashPair`). The chunks are
    /// valid only during the call.
    ///
    /// With `sparse`, holes are not read (as in `chunks(of:sparse:)`) and a run of zeros is
    /// cut without the search: where the next `zeroRunLength` bytes are all zero and at least
    /// a maximum-size chunk is buffered, the cut is there (what the search would find).
    public func chunkBatches(of fd: Int32, path: String, buffer: UnsafeMutableRawBufferPointer, sparse: Bool = false, _ body: ([UnsafeRawBufferPointer]) throws -> Void) throws {
        try chunkBatches(reading: Self.reading(fd, path: path, sparse: sparse), buffer: buffer, zeroRuns: sparse, body)
    }

    /// `chunkBatches(of:)` over the bytes that `fill` supplies.
    public func chunkBatches(reading fill: (UnsafeMutableRawBufferPointer) throws -> Int, buffer: UnsafeMutableRawBufferPointer, zeroRuns: Bool = false, _ body: ([UnsafeRawBufferPointer]) throws -> Void) throws {
        precondition(buffer.count >= 2 * scheme.maxSize)
        var start = 0, end = 0, eof = false
        var batch: [UnsafeRawBufferPointer] = []
        let zeroRun = zeroRuns && !scheme.isFixed ? zeroRunLength : 0
        while true {
            try refill(fill, buffer: buffer, start: &start, end: &end, eof: &eof)
            if end == start { return }
            batch.removeAll(keepingCapacity: true)
            // A cut looks at up to a maximum-size chunk of bytes: cut while that many are
            // buffered (or the file has ended), as `chunks` would before reading more.
            repeat {
                let n = cutOrZeroRun(UnsafeRawBufferPointer(rebasing: buffer[start..<end]), zeroRun)
                batch.append(UnsafeRawBufferPointer(rebasing: buffer[start..<start + n]))
                start += n
            } while start < end && (eof || end - start >= scheme.maxSize)
            try body(batch)
        }
    }

    /// `cut(available)`, or `zeroRun` (> 0) where the bytes start with that many zeros and a
    /// maximum-size chunk is there: the cut the search would find in a run of zeros.
    @inline(__always)
    private func cutOrZeroRun(_ available: UnsafeRawBufferPointer, _ zeroRun: Int) -> Int {
        if zeroRun > 0 && available.count >= scheme.maxSize && Self.isZero(UnsafeRawBufferPointer(rebasing: available[0..<zeroRun])) { return zeroRun }
        return cut(available)
    }

    /// Moves the unread bytes `start..<end` to the buffer's front and fills it up, unless at
    /// least a maximum-size chunk of them is buffered or the input has ended.
    private func refill(_ fill: (UnsafeMutableRawBufferPointer) throws -> Int, buffer: UnsafeMutableRawBufferPointer, start: inout Int, end: inout Int, eof: inout Bool) throws {
        guard !eof && end - start < scheme.maxSize else { return }
        if start > 0 {
            if end > start { memmove(buffer.baseAddress!, buffer.baseAddress! + start, end - start) }
            end -= start
            start = 0
        }
        while end < buffer.count {
            let n = try fill(UnsafeMutableRawBufferPointer(rebasing: buffer[end...]))
            if n == 0 {
                eof = true
                return
            }
            end += n
        }
    }
}

/// Reads a sparse file as `read(2)` would, from its current offset to the end it had when
/// opened, writing zeros for its holes instead of reading them. Where the file system does
/// not report holes, `SEEK_DATA` finds data everywhere and every byte is read.
final class HoleMap {
    /// Linux `SEEK_DATA` and `SEEK_HOLE` (not exported by Glibc's module map).
    static let seekData: Int32 = 3
    static let seekHole: Int32 = 4

    private let fd: Int32
    private var position: off_t
    private let size: off_t
    /// The data extent at or after `position`: [dataStart, dataEnd); stale once passed.
    private var dataStart: off_t = -1
    private var dataEnd: off_t = -1

    init?(_ fd: Int32) {
        var st = stat()
        let at = lseek(fd, 0, SEEK_CUR)
        guard at >= 0, fstat(fd, &st) == 0 else { return nil }
        self.fd = fd
        position = at
        size = st.st_size
    }

    func fill(_ space: UnsafeMutableRawBufferPointer, path: String) throws -> Int {
        guard position < size, space.count > 0 else { return 0 }
        if position >= dataEnd {
            let data = lseek(fd, position, Self.seekData)
            if data < 0 {
                // ENXIO: no data from here to the end (a hole to the end of the file).
                guard errno == ENXIO else { throw RepositoryError.fromErrno(path: path, operation: "read") }
                (dataStart, dataEnd) = (size, size)
            } else {
                let hole = lseek(fd, data, Self.seekHole)
                guard hole >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "read") }
                (dataStart, dataEnd) = (data, min(hole, size))
            }
        }
        if position < dataStart {
            let n = Int(min(off_t(space.count), min(dataStart, size) - position))
            space.baseAddress!.initializeMemory(as: UInt8.self, repeating: 0, count: n)
            position += off_t(n)
            return n
        }
        let want = Int(min(off_t(space.count), dataEnd - position))
        while true {
            let n = pread(fd, space.baseAddress!, want, position)
            if n > 0 {
                position += off_t(n)
                return n
            }
            if n == 0 { return 0 }  // shorter than when it was opened
            if errno != EINTR { throw RepositoryError.fromErrno(path: path, operation: "read") }
        }
    }
}
