import Foundation
import SnapshotCore

extension Archiver {
    /// Reads changed files on the worker threads while the scan goes on. The scanning thread
    /// submits files and gets back those read since, in any order; at most `capacity` wait at
    /// a time (the scan waits beyond that), so memory follows the files in flight, not the
    /// tree. Files of `largeFile` bytes or more go first, largest first, so that a big file
    /// found late does not leave one thread chunking it alone at the end. Each thread keeps
    /// its writer from file to file, so packs fill up; `close()` writes out the last ones.
    final class ReadPipeline: @unchecked Sendable {
        static let capacity = 4096
        static let largeFile: UInt64 = 4 << 20

        private let archiver: Archiver
        private let request: CreateRequest
        private let chunking: ChunkingPolicy
        private let threads: Int
        private let condition = NSCondition()
        // Guarded by `condition`:
        private var small: [FileJob] = []
        private var head = 0
        private var large: [FileJob] = []
        private var read: [FileJob] = []
        private var outstanding = 0
        private var failure: (any Error)?
        private var closing = false
        private var started = false
        private var running = 0
        /// Threads waiting for files, and whether the scan waits (for room, or for the end).
        private var idleWorkers = 0
        private var scanWaits = false
        private var finished: [Worker] = []

        init(archiver: Archiver, request: CreateRequest) {
            self.archiver = archiver
            self.request = request
            chunking = request.chunking ?? archiver.repository.config.chunkingPolicy
            threads = max(1, request.workers)
        }

        /// Queues a file; returns the files read since the last call. Throws the first
        /// error of a reading thread.
        func submit(_ job: FileJob) throws -> [FileJob] {
            condition.lock()
            defer { condition.unlock() }
            if !started { start() }
            if small.count - head >= Self.capacity {
                // Full: wait until the threads have taken half of it.
                while small.count - head > Self.capacity / 2 && failure == nil { waitForThreads() }
            }
            if let failure { throw failure }
            if job.node.size >= Self.largeFile { large.append(job) } else { small.append(job) }
            outstanding += 1
            if idleWorkers > 0 { condition.signal() }
            return takeRead()
        }

        /// Waits until every file submitted is read; returns those not handed back yet.
        func waitForAll() throws -> [FileJob] {
            condition.lock()
            defer { condition.unlock() }
            while outstanding > 0 && failure == nil { waitForThreads() }
            if let failure { throw failure }
            return takeRead()
        }

        /// Called with the lock held, by the scanning thread.
        private func waitForThreads() {
            scanWaits = true
            condition.wait()
            scanWaits = false
        }

        /// Ends the threads once the queue is empty and writes out their last packs; the new
        /// data's raw and stored bytes.
        func close() throws -> (raw: Int, stored: Int) {
            condition.lock()
            closing = true
            condition.broadcast()
            while running > 0 { condition.wait() }
            let workers = finished
            finished = []
            let failure = self.failure
            condition.unlock()
            if let failure { throw failure }
            var raw = 0, stored = 0
            for worker in workers {
                try worker.writer.flush()
                raw += worker.writer.newRawBytes
                stored += worker.writer.newStoredBytes
            }
            return (raw, stored)
        }

        /// After an error elsewhere: drops what waits and ends the threads (their packs are
        /// left unindexed, for prune).
        func abandon() {
            condition.lock()
            if failure == nil { failure = EngineError.cancelled }
            closing = true
            small = []
            head = 0
            large = []
            condition.broadcast()
            while running > 0 { condition.wait() }
            finished = []
            condition.unlock()
        }

        private func takeRead() -> [FileJob] {
            defer { read = [] }
            return read
        }

        /// Called with the lock held.
        private func start() {
            started = true
            running = threads
            WorkerThreads.start(threads) { _ in self.work() }
        }

        /// Files a thread takes at a time from the queue of small ones.
        static let take = 16

        private func work() {
            let worker = Worker(
                writer: archiver.repository.makeBlobWriter(compressionLevel: request.compressionLevel), bufferSize: Archiver.readBufferSize(chunking))
            let seed = archiver.repository.config.chunkerSeed
            var jobs: [FileJob] = []
            jobs.reserveCapacity(Self.take)
            condition.lock()
            while true {
                while small.count == head && large.isEmpty && !closing && failure == nil {
                    idleWorkers += 1
                    condition.wait()
                    idleWorkers -= 1
                }
                if failure != nil || (small.count == head && large.isEmpty) { break }
                jobs.removeAll(keepingCapacity: true)
                if !large.isEmpty {
                    let i = large.indices.max { large[$0].node.size < large[$1].node.size }!
                    jobs.append(large.remove(at: i))
                } else {
                    let n = min(Self.take, small.count - head, max(1, (small.count - head) / threads))
                    jobs.append(contentsOf: small[head..<head + n])
                    head += n
                    if head >= 1024 && head * 2 >= small.count {
                        small.removeFirst(head)
                        head = 0
                    }
                    // The scan waits for room once the queue is full, until half of it is taken.
                    if scanWaits && small.count - head <= Self.capacity / 2 { condition.broadcast() }
                }
                condition.unlock()
                var error: (any Error)?
                do {
                    for job in jobs {
                        try archiver.read(job, worker: worker, policy: chunking, seed: seed)
                        archiver.progress.filesDone.add(1, ordering: .relaxed)
                    }
                } catch let e {
                    error = e
                }
                condition.lock()
                if let error {
                    if failure == nil { failure = error }
                    condition.broadcast()
                    break
                }
                read.append(contentsOf: jobs)
                outstanding -= jobs.count
                if scanWaits && outstanding == 0 { condition.broadcast() }
            }
            finished.append(worker)
            running -= 1
            condition.broadcast()
            condition.unlock()
        }
    }
}
