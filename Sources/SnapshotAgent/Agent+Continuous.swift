import Foundation
import Logging
import SnapshotCore
import SnapshotEngine

/// Continuous snapshots (the config's `continuous:`) and their retained status topic.
extension Agent {
    /// Runs the continuous watch on a thread of its own until the agent shuts down; returns at
    /// once when the config has no `continuous:` entry.
    func runContinuous() async {
        guard !service.config.continuous.isEmpty else { return }
        let (events, sink) = AsyncStream.makeStream(of: ContinuousEvent.self, bufferingPolicy: .bufferingNewest(256))
        let watch: ContinuousWatch
        do {
            watch = try ContinuousWatch(service: service, entries: service.config.continuous) { sink.yield($0) }
        } catch {
            logger.error("continuous snapshots: \("\(error)".escapingControlCharacters)")
            return
        }
        let logger = self.logger
        let thread = Thread {
            do {
                try watch.run()
            } catch {
                logger.error("continuous snapshots stopped: \("\(error)".escapingControlCharacters)")
            }
            sink.finish()
        }
        thread.name = "continuous"
        await withTaskCancellationHandler {
            thread.start()
            for await event in events { await handle(event, components: watch.componentNames) }
        } onCancel: {
            watch.stop()
        }
    }

    private func handle(_ event: ContinuousEvent, components: [String]) async {
        switch event {
        case .watching(let directories):
            logger.info("continuous snapshots of \(components.joined(separator: ", ")): watching \(directories) directories")
        case .snapshot(let record, let changed, let files, let bytes, let seconds, let rescan):
            logger.info("continuous/\(record.id): \(rescan ? "compared everything" : "\(changed) changed paths"), read \(files) files (\(bytes) bytes) in \(String(format: "%.3f", seconds)) s")
            memory.withLock {
                $0.last["continuous"] = LastOutcome(id: record.id, timestamp: record.metadata.timestamp, ok: true)
                $0.lastCreate = record.metadata
            }
            replicationWakeup.signal()
            await publishState()
        case .taking:
            break
        case .unchanged(let changed):
            logger.debug("continuous: \(changed) changed paths, nothing different to snapshot")
        case .failed(let message, let retry):
            logger.warning("continuous snapshot failed: \(message); trying again in \(Int(retry)) s")
        case .status(let s):
            let doc: [String: Any] = [
                "components": s.components, "pending_paths": s.pendingPaths, "lag_s": s.lagSeconds,
                "last_id": (s.lastID as Any?) ?? NSNull(), "last_at": (s.lastAt as Any?) ?? NSNull(),
                "watched_directories": s.watchedDirectories, "last_error": (s.lastError as Any?) ?? NSNull(),
            ]
            let payload = encode(doc)
            memory.withLock { $0.continuousStatus = payload }
            try? await publish(settings.continuousTopic, payload, retain: true)
        }
    }
}
