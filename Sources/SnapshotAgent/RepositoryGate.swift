/// The agent's own turn-taking on its repository. The repository lock never waits (a second
/// writer is refused at once, as the CLI promises), so the agent must not collide with
/// itself: a job waits for an alert check that is reading (checks are short), and a timed
/// alert check skips its turn while a job runs (the runner checks again after the job).
actor RepositoryGate {
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    /// Waits for the repository; every `enter` is paired with one `leave`.
    func enter() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    /// Takes the repository if nobody has it.
    func tryEnter() -> Bool {
        guard !busy else { return false }
        busy = true
        return true
    }

    /// Hands the repository to the next waiter, or frees it.
    func leave() {
        if waiters.isEmpty {
            busy = false
        } else {
            waiters.removeFirst().resume()
        }
    }
}
