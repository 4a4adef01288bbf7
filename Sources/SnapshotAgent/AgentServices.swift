import ServiceLifecycle

/// The agent's parts, each a `Service` in the agent's `ServiceGroup`. On a graceful shutdown
/// the group stops them in reverse order: the job runner first (it cancels the running job,
/// answers the waiting ones and returns), then the others, which keep the agent answering
/// until then.
extension Agent {
    /// Publishes the retained topics again after every (re)connect, and the metrics on a timer.
    struct StatusPublisher: Service {
        let agent: Agent

        func run() async throws {
            await cancelWhenGracefulShutdown {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask { await agent.watchConnection() }
                    group.addTask { await agent.metricsTimer() }
                }
            }
        }
    }

    /// Routes `<prefix>/cmd/#` messages: answers at once, queues jobs.
    struct CommandIntake: Service {
        let agent: Agent

        func run() async throws {
            await cancelWhenGracefulShutdown { await agent.receiveCommands() }
        }
    }

    /// The alert checks, after each job and on a timer.
    struct AlertMonitor: Service {
        let agent: Agent

        func run() async throws {
            await cancelWhenGracefulShutdown { await agent.alertTimer() }
        }
    }

    /// The config's `schedule:` entries, queued as jobs when they fall due.
    struct ScheduleRunner: Service {
        let agent: Agent

        func run() async throws {
            await cancelWhenGracefulShutdown { await agent.runSchedule() }
        }
    }

    /// Runs jobs one at a time until the queue is closed and drained; a graceful shutdown
    /// closes it. Its return ends the group.
    struct JobRunner: Service {
        let agent: Agent

        func run() async throws {
            await withGracefulShutdownHandler {
                await agent.runJobs()
            } onGracefulShutdown: {
                Task { await agent.beginShutdown() }
            }
        }
    }
}
