import Foundation
import Logging
import SnapshotCore
import SnapshotEngine
import SnapshotMQTT
import Synchronization

/// Command intake: routing, redelivery answers from the ledger, and queueing.
extension Agent {
    // MARK: commands

    func receiveCommands() async {
        for await message in client.messages {
            if Task.isCancelled { break }
            await handle(message)
        }
    }

    func handle(_ message: MQTTMessage) async {
        switch parser.route(message) {
        case .ignore:
            return
        case .reject(let action, let requestID, let error, let responseTopic, let correlation):
            logger.notice("rejected \(action) on \(message.topic): \(error.message)")
            let doc = response(requestID: requestID, jobID: nil, action: action, status: "rejected", result: nil, error: error)
            await respond(action: action, document: doc, responseTopic: responseTopic, correlationData: correlation)
        case .accept(let command):
            await accept(command)
        }
    }

    func nextJobID() -> String {
        "\(startID)-\(counter.add(1, ordering: .relaxed).newValue)"
    }

    func accept(_ command: Command) async {
        if let rid = command.requestID, let seen = ledger.lookup(rid) {
            // A redelivery: answer again, never run again.
            // Checked again under the lock that `finish` takes after recording the final, so
            // that a redelivery arriving as the job ends gets the final one way or the other.
            let final = memory.withLock { m -> String? in
                if let final = ledger.lookup(rid)?.final { return final }
                if let topic = command.responseTopic, !topic.isEmpty {
                    m.waitingReplies[rid, default: []].append((topic, command.correlationData))
                }
                return nil
            }
            if let final {
                await respond(action: seen.action, document: Array(final.utf8), responseTopic: command.responseTopic, correlationData: command.correlationData)
            } else {
                let doc = response(requestID: rid, jobID: seen.jobID, action: seen.action, status: "accepted", result: ["duplicate": true], error: nil)
                try? await publish(settings.responseTopic(seen.action), doc)
            }
            return
        }
        let jobID = nextJobID()
        switch command.work {
        case .ping:
            let accepted = response(requestID: command.requestID, jobID: jobID, action: "ping", status: "accepted", result: nil, error: nil)
            try? await publish(settings.responseTopic("ping"), accepted)
            let result: [String: Any] = ["pong": true, "agent": settings.id, "version": AgentSettings.version, "time": Timestamp.now().iso8601]
            await complete(command, jobID: jobID, status: "succeeded", result: result, error: nil)
        case .cancel(let target):
            let accepted = response(requestID: command.requestID, jobID: jobID, action: "cancel", status: "accepted", result: nil, error: nil)
            try? await publish(settings.responseTopic("cancel"), accepted)
            switch await queue.cancel(target) {
            case .removedWaiting(let job):
                await finish(job, status: "cancelled", result: nil, error: CommandError("cancelled", "cancelled by request before it started"))
                await complete(command, jobID: jobID, status: "succeeded", result: ["job_id": target, "was": "queued"], error: nil)
                await publishState()
            case .signalledRunning:
                await complete(command, jobID: jobID, status: "succeeded", result: ["job_id": target, "was": "running"], error: nil)
            case .notFound:
                await complete(command, jobID: jobID, status: "failed", result: nil, error: CommandError("not_found", "no queued or running job \(target)"))
            }
        default:
            let job = Job(id: jobID, command: command)
            let position: Int
            do {
                position = try await queue.enqueue(job)
            } catch {
                let reason = (error as? JobQueue.EnqueueError) == .full ? "the job queue is full" : "agent \(settings.id) is shutting down"
                let doc = response(requestID: command.requestID, jobID: nil, action: command.action, status: "rejected", result: nil, error: CommandError("busy", reason))
                await respond(action: command.action, document: doc, responseTopic: command.responseTopic, correlationData: command.correlationData)
                return
            }
            if let rid = command.requestID {
                ledger.record(.init(requestID: rid, jobID: jobID, action: command.action, status: "accepted", final: nil))
            }
            let doc = response(requestID: command.requestID, jobID: jobID, action: command.action, status: "accepted", result: ["queue_position": position], error: nil)
            try? await publish(settings.responseTopic(command.action), doc)
            await publishState()
        }
    }

    /// Publishes a final response for a command that ran inline (ping, cancel) and records it.
    func complete(_ command: Command, jobID: String, status: String, result: Any?, error: CommandError?) async {
        let doc = response(requestID: command.requestID, jobID: jobID, action: command.action, status: status, result: result, error: error)
        // A ping has no effect to protect against repetition: it is not written to the ledger.
        if let rid = command.requestID, command.action != "ping" {
            ledger.record(.init(requestID: rid, jobID: jobID, action: command.action, status: status, final: String(decoding: doc, as: UTF8.self)))
        }
        await respond(action: command.action, document: doc, responseTopic: command.responseTopic, correlationData: command.correlationData)
    }
}
