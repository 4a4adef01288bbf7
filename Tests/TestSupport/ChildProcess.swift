#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A child process started with posix_spawn and a clean signal mask.
///
/// Foundation's `Process` passes on the test runner's blocked signals (SIGTERM and SIGINT
/// among them), so a broker or agent started that way ignores the SIGTERM a test sends.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    private var status: Int32?

    /// Starts `path` with `arguments`; stdout and stderr go to `logFile` (or /dev/null).
    public init(_ path: String, _ arguments: [String], environment: [String: String]? = nil, logFile: String? = nil) throws {
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGPIPE, SIGUSR1, SIGUSR2] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        let out = logFile ?? "/dev/null"
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in env { free(p) } }
        var child = pid_t()
        let rc = posix_spawn(&child, path, &actions, &attr, argv, env)
        guard rc == 0 else {
            throw NSError(domain: "ChildProcess", code: Int(rc), userInfo: [NSLocalizedDescriptionKey: "cannot start \(path): \(String(cString: strerror(rc)))"])
        }
        pid = child
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
