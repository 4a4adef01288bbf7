@testable import SnapshotAgent
import Testing

/// The agent's turn-taking: a timed check never starts while a job has the repository, and
/// a job that arrives during a check runs as soon as the check leaves.
@Suite struct RepositoryGateTests {
    @Test func aCheckSkipsWhileAJobRunsAndAJobWaitsForACheck() async throws {
        let gate = RepositoryGate()
        #expect(await gate.tryEnter())          // a check reads
        let job = Task { await gate.enter(); return true }
        #expect(await !gate.tryEnter())         // nobody else while it does
        await gate.leave()                      // the check is done: the job goes
        #expect(await job.value)
        #expect(await !gate.tryEnter())         // a timed check skips while the job runs
        await gate.leave()
        #expect(await gate.tryEnter())          // and runs again afterwards
        await gate.leave()
    }
}
