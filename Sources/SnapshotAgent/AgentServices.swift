import ServiceLifecycle

/// The agent's parts, each a `Service` in the agent's `ServiceGroup`. On a graceful shutdown
/// the group stops them in reverse order: the job runner first (it cancels the running job,
/// answers the waiting ones and returns), then the loops, which keep the agent answering
/// until then.
extension Agent {
    /// One of the agent's loops (command intake, connection watch, timers, schedule): it
    /// runs until the group's graceful shutdown cancels it.
    struct Loop: Service, CustomStringConvertible {
        let description: String
        let body: @Sendable () async -> Void

        func run() async throws {
            await cancelWhenGracefulShutdown { await body() }
        }
    }

    /// Runs jobs one at a time until the queue is closed and drained; a graceful shutdown
    /// closes it. Its return ends the group.
    struct JobRunner: Service, CustomStringConvertible {
        let agent: Agent
        var description: String { "job runner" }

        func run() async throws {
            await withGracefulShutdownHandler {
                await agent.runJobs()
            } onGracefulShutdown: {
                Task { await agent.beginShutdown() }
            }
        }
    }
}
