#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore

/// A child process started with posix_spawn and a clean signal mask.
///
/// Foundation's `Process` passes on the test runner's blocked signals (SIGTERM and SIGINT
/// among them), so a broker or agent started that way ignores the SIGTERM a test sends.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    private var status: Int32?

    /// Starts `path` with `arguments`; stdout and stderr go to `logFile` (or /dev/null).
    public init(_ path: String, _ arguments: [String], environment: [String: String]? = nil, logFile: String? = nil) throws {
        let out = logFile ?? "/dev/null"
        do {
            pid = try Spawn.start(path, arguments, environment: environment ?? ProcessInfo.processInfo.environment) { actions in
                posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0o644)
                posix_spawn_file_actions_adddup2(&actions, 1, 2)
            }
        } catch {
            throw NSError(domain: "ChildProcess", code: 1, userInfo: [NSLocalizedDescriptionKey: "cannot start \(path): \(error)"])
        }
    }

    /// True until the child has exited (and been reaped).
    public var isRunning: Bool {
        if status != nil { return false }
        var s: Int32 = 0
        let r = waitpid(pid, &s, WNOHANG)
        if r == pid { status = s; return false }
        return r == 0
    }

    /// Sends `signal` and waits up to `timeout` seconds; then SIGKILL. Returns the wait status.
    @discardableResult
    public func stop(_ signal: Int32 = SIGTERM, timeout: Double = 10) -> Int32 {
        if isRunning { kill(pid, signal) }
        let end = Date().addingTimeInterval(timeout)
        while isRunning && Date() < end { usleep(5_000) }
        if isRunning {
            kill(pid, SIGKILL)
            while isRunning { usleep(5_000) }
        }
        return status ?? 0
    }

    /// Waits for a normal exit; the exit code, or 128+signal.
    public func wait(timeout: Double = 60) -> Int32? {
        let end = Date().addingTimeInterval(timeout)
        while isRunning && Date() < end { usleep(5_000) }
        guard let s = status else { return nil }
        let sig = s & 0x7f
        return sig == 0 ? (s >> 8) & 0xff : 128 + sig
    }

    deinit { if status == nil { stop(SIGKILL, timeout: 1) } }
}
