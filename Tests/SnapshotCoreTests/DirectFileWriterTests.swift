#if canImport(Glibc)
import Glibc
#endif
import SnapshotCore
import Testing
import TestSupport

@Suite struct DirectFileWriterTests {
    /// /tmp takes O_DIRECT on ext4; /dev/shm (tmpfs) refuses it and the writer falls back.
    @Test(arguments: ["/tmp", "/dev/shm"]) func writesExactBytesWithOrWithoutDirectIO(base: String) throws {
        guard POSIX.isDirectory(base) else { return }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: DirectFileWriter.bufferSize, alignment: 4096)
        defer { buffer.deallocate() }
        let path = base + "/snapshot-direct-\(getpid())"
        defer { unlink(path) }
        for size in [0, 1, 4095, 4096, 4097, DirectFileWriter.bufferSize + 3, 2 * DirectFileWriter.bufferSize + 5000] {
            let data = Fixture.bytes(size, seed: UInt64(size))
            let w = try DirectFileWriter(path: path, mode: 0o600, buffer: buffer)
            // Uneven pieces, as chunks come, copied in or filled in place by turns.
            var offset = 0
            var step = 1
            var inPlace = false
            var fillTurn = 0
            while offset < data.count {
                let n = min(step, data.count - offset)
                if inPlace && n <= DirectFileWriter.bufferSize - 4096 {
                    // Filled in the buffer itself; a fill that fails appends nothing.
                    #expect(throws: CancellationError.self) { try w.append(count: n) { _ in throw CancellationError() } }
                    // Offered more room than it uses (a pack's compressed payload), or room
                    // it leaves empty (a refused codec): only what was written is appended.
                    let room = min(n + 5000, w.largestAppend)
                    #expect(try w.append(upTo: room) { _ in 0 } == 0)
                    fillTurn += 1
                    if fillTurn % 2 == 0 {
                        try w.append(count: n) { out in data.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<offset + n])) } }
                    } else {
                        let written = try w.append(upTo: room) { out in
                            data.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<offset + n])) }
                            return n
                        }
                        #expect(written == n)
                    }
                } else {
                    try data.withUnsafeBytes { try w.append(UnsafeRawBufferPointer(rebasing: $0[offset..<offset + n])) }
                }
                offset += n
                step = step * 3 + 7
                inPlace.toggle()
            }
            try w.finish(sync: true)
            #expect(w.size == size)
            #expect(try POSIX.readFile(path) == data, "size \(size) on \(base) (direct: \(w.direct))")
        }
    }
}
