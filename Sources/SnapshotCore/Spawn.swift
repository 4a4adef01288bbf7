#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Starts programs with posix_spawn: a clean signal mask and default dispositions (a
/// thread of the caller may block SIGTERM and friends, and Foundation's `Process` passes
/// that on, so a child would ignore the SIGTERM meant to stop it), standard input from
/// /dev/null, and optionally a process group of its own (so that a timeout can stop the
/// child and everything it started).
public enum Spawn {
    /// Starts `path` with `arguments` (argv[0] is `path`) and `environment`; `files` adds
    /// the file actions (output redirections, working directory). Returns the child's pid.
    public static func start(
        _ path: String, _ arguments: [String], environment: [String: String], newProcessGroup: Bool = false,
        files: (inout posix_spawn_file_actions_t) -> Void = { _ in }
    ) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        files(&actions)
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
        var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
        if newProcessGroup {
            posix_spawnattr_setpgroup(&attr, 0)
            flags |= POSIX_SPAWN_SETPGROUP
        }
        posix_spawnattr_setflags(&attr, Int16(flags))
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let env: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { for p in env { free(p) } }
        var pid = pid_t()
        let rc = posix_spawn(&pid, path, &actions, &attr, argv, env)
        guard rc == 0 else { throw RepositoryError.io(path: path, operation: "start", errno: rc) }
        return pid
    }
}
