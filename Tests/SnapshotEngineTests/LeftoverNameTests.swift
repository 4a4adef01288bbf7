@testable import SnapshotEngine
import Testing

/// A staging directory whose owner file was never written (killed in between) is known by
/// its name: `.snapshot-restore-<snapshot id>-<pid>-<component>`.
@Suite struct LeftoverNameTests {
    @Test func thePIDComesFromTheNameWhateverTheComponentIsCalled() {
        let components = ["configs", "model-2-weights", "storage"]
        #expect(Leftovers.stagingPID(".snapshot-restore-2026-11-28_13-46-11-6229-configs", components: components) == 6229)
        #expect(Leftovers.stagingPID(".snapshot-restore-2026-11-28_13-46-11-3-6229-configs", components: components) == 6229)
        #expect(Leftovers.stagingPID(".snapshot-restore-2026-11-28_13-46-11-41-model-2-weights", components: components) == 41)
        #expect(Leftovers.stagingPID(".snapshot-restore-2026-11-28_13-46-11-6229-logs", components: components) == nil, "not a configured component")
        #expect(Leftovers.stagingPID(".snapshot-restore-garbage-6229-configs", components: components) == nil)
        #expect(Leftovers.stagingPID(".snapshot-restore-2026-11-28_13-46-11-x-configs", components: components) == nil)
    }
}
