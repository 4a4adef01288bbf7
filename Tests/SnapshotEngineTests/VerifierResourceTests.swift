@testable import SnapshotEngine
import SnapshotCore
import Testing
import TestSupport

/// A pack whose trailer cannot be read for want of the machine (here: an I/O error reading
/// it) is a resource failure, thrown; a pack whose trailer is garbage is damage, reported.
@Suite struct VerifierResourceTests {
    @Test func anUnreadableTrailerIsThrownAGarbledOneIsDamage() throws {
        let dir = TemporaryDirectory("snapshot-trailer")
        try POSIX.makeDirectories(dir.sub("pack-that-is-a-directory"))
        #expect(throws: RepositoryError.self) { _ = try Verifier.checkTrailer(dir.sub("pack-that-is-a-directory"), indexed: []) }
        Fixture.write(dir.sub("garbled"), Fixture.bytes(4096, seed: 3))
        let problem = try Verifier.checkTrailer(dir.sub("garbled"), indexed: [])
        #expect(problem?.contains("the index could not be rebuilt from it") == true, "\(problem ?? "nil")")
    }
}
