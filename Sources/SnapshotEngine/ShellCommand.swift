#if canImport(Glibc)
import Glibc
#endif
import CSystemShims
import Foundation
import SnapshotCore

/// A shell command (hook, command component) run to completion with a time limit.
///
/// `/bin/sh -c` starts in a process group of its own, so that a timeout kills everything the
/// command started, not only the shell. One thread (the caller's, which must not be on the
/// cooperative pool) waits for output on both pipes and for the shell's exit on a pidfd,
/// with `poll`. Once the shell has exited, output is awaited for at most `drainGrace`
/// seconds more: a background process it left behind (a hook that starts a service) may
/// hold the pipes open for as long as it runs.
enum ShellCommand {
    struct Output {
        var status: Int32
        var stdout: [UInt8]
        var stderr: [UInt8]
        var timedOut: Bool
    }

    static let drainGrace = 1.0

    /// Runs `command` under /bin/sh in `directory` (default: ours) with `environment` added
    /// to ours. `status` is the exit code, or 128 + the signal that ended the shell.
    static func run(_ command: String, timeout: Double, directory: String? = nil, environment: [String: String] = [:]) throws -> Output {
        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
        guard snapshot_pipe_cloexec(&outPipe) == 0 else { throw RepositoryError.fromErrno(path: "/bin/sh", operation: "pipe") }
        guard snapshot_pipe_cloexec(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            throw RepositoryError.fromErrno(path: "/bin/sh", operation: "pipe")
        }
        let pid: pid_t
        do {
            pid = try Spawn.start("/bin/sh", ["-c", command], environment: ProcessInfo.processInfo.environment.merging(environment) { $1 }, newProcessGroup: true) { actions in
                posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
                posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
                if let directory { _ = snapshot_spawn_addchdir(&actions, directory) }
            }
        } catch {
            close(outPipe[0]); close(outPipe[1]); close(errPipe[0]); close(errPipe[1])
            throw error
        }
        close(outPipe[1])
        close(errPipe[1])
        return wait(pid: pid, out: outPipe[0], err: errPipe[0], timeout: timeout)
    }

    private static func wait(pid: pid_t, out: Int32, err: Int32, timeout: Double) -> Output {
        var output = Output(status: 0, stdout: [], stderr: [], timedOut: false)
        var open = [out: true, err: true]
        let pidfd = snapshot_pidfd_open(pid)  // -1 before Linux 5.3: then poll wakes every 50 ms
        defer {
            close(out)
            close(err)
            if pidfd >= 0 { close(pidfd) }
        }
        let deadline = Date().addingTimeInterval(timeout)
        var exited: Date?
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let now = Date()
            if exited == nil, !output.timedOut, now >= deadline {
                kill(-pid, SIGKILL)  // the whole group: the shell and everything it started
                output.timedOut = true
            }
            if let exited, !open.values.contains(true) || now >= exited.addingTimeInterval(drainGrace) { break }
            var fds = open.filter(\.value).map { pollfd(fd: $0.key, events: Int16(POLLIN), revents: 0) }
            if exited == nil, pidfd >= 0 { fds.append(pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)) }
            let until = exited.map { $0.addingTimeInterval(drainGrace) } ?? (output.timedOut ? now.addingTimeInterval(drainGrace) : deadline)
            var wait = Int32(max(0, min(until.timeIntervalSince(now), 3600)) * 1000) + 1
            if exited == nil, pidfd < 0 { wait = min(wait, 50) }
            _ = poll(&fds, nfds_t(fds.count), wait)
            for f in fds where f.fd != pidfd && f.revents != 0 {
                let n = read(f.fd, &buffer, buffer.count)
                if n > 0 {
                    if f.fd == out { output.stdout += buffer[0..<n] } else { output.stderr += buffer[0..<n] }
                } else if n == 0 || (errno != EINTR && errno != EAGAIN) {
                    open[f.fd] = false
                }
            }
            if exited == nil {
                var status: Int32 = 0
                if waitpid(pid, &status, WNOHANG) == pid {
                    exited = Date()
                    let signal = status & 0x7f
                    output.status = signal == 0 ? (status >> 8) & 0xff : 128 + signal
                }
            }
        }
        return output
    }
}
