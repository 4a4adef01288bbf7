#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CSystemShims
import Dispatch
import SnapshotCore

/// Moves global options given before the subcommand (`snapshot --repo R init`, as restic
/// users and the benchmark write them) to after it, where every subcommand parses them.
@main
enum Entrypoint {
    static let valued: Set<String> = ["--repo", "--config", "--password-file", "--lock-wait"]
    static let flags: Set<String> = ["--json", "--quiet", "--debug"]
    static let groups: Set<String> = ["key"]

    static func reorder(_ args: [String]) -> [String] {
        var globals: [String] = []
        var i = 0
        while i < args.count {
            let a = args[i]
            let name = a.split(separator: "=", maxSplits: 1).first.map(String.init) ?? a
            if valued.contains(name) {
                globals.append(a)
                if !a.contains("="), i + 1 < args.count {
                    globals.append(args[i + 1])
                    i += 1
                }
                i += 1
            } else if flags.contains(a) {
                globals.append(a)
                i += 1
            } else {
                break
            }
        }
        guard !globals.isEmpty, i < args.count else { return args }
        // A command group (`key list`): the options go after its subcommand.
        let command = groups.contains(args[i]) && i + 1 < args.count ? Array(args[i...(i + 1)]) : [args[i]]
        return command + globals + args[(i + command.count)...]
    }

    /// With --debug: the object store requests this command made, by method, and bytes moved.
    static func debugRequests() {
        let t = S3Storage.traffic.withLock { $0 }
        guard !t.requests.isEmpty else { return }
        let methods: [String] = t.requests.keys.sorted().map { key in "\(key) \(t.requests[key] ?? 0)" }
        Context.debugLine("S3 requests: \(methods.joined(separator: ", ")); \(t.sent) bytes sent, \(t.received) received")
    }

    /// Runs the command on the cooperative pool while the main thread waits for it. (An
    /// `async` main parks the main thread with `dispatch_main()`, whose thread-exit cleanup
    /// opens a descriptor: under a tight `ulimit -n` that could crash the process, SIGILL,
    /// instead of letting the command exit 74 naming the limit.)
    static func main() {
        // Two malloc arenas, not one per busy thread: the reading threads of a 200,000-file
        // create otherwise keep ~25 MiB more in their own arenas, at no gain in speed.
        _ = snapshot_limit_malloc_arenas(2)
        // Below this many open files the runtime itself (libdispatch's thread pool monitor
        // reads /proc) cannot work: say so rather than crash somewhere later.
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < minimumOpenFiles {
            if limit.rlim_max >= minimumOpenFiles {
                limit.rlim_cur = minimumOpenFiles
                _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            } else {
                let line = "snapshot: error: the open-file limit is \(limit.rlim_cur) (ulimit -n); snapshot needs at least \(minimumOpenFiles): \(POSIX.errorText(EMFILE))\n"
                _ = line.withCString { write(2, $0, strlen($0)) }
                exit(74)
            }
        }
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            await run()
            done.signal()
        }
        done.wait()
    }

    static let minimumOpenFiles: rlim_t = 20

    static func run() async {
        _ = Context.started  // --debug timings count from here
        let arguments = reorder(Array(CommandLine.arguments.dropFirst()))
        let debug = arguments.contains("--debug")
        do {
            var command = try Snapshot.parseAsRoot(arguments)
            if var asynchronous = command as? AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
            if debug { debugRequests(); Context.debugLine("done, exit 0") }
        } catch {
            if debug { debugRequests(); Context.debugLine("done, exit \(Snapshot.exitCode(for: error).rawValue)") }
            endWithoutCleanup()
            Snapshot.exit(withError: error)
        }
        endWithoutCleanup()
    }

    /// Makes `exit` end the process as soon as the output is flushed, before the cleanup
    /// handlers the libraries registered run. OpenSSL's frees its locks while threads that
    /// are not ours (URLSession's libcurl, libdispatch workers) may still be in it: a
    /// process that had done everything right then crashed on its way out, SIGSEGV in
    /// `pthread_rwlock_rdlock` (seen once in CI after a create on S3; a C program hashing on
    /// one thread while another exits crashes that way one time in five). Registered last,
    /// so it runs first: every library that registers a handler has done so by now.
    static func endWithoutCleanup() {
        on_exit({ status, _ in
            fflush(nil)
            _exit(status)
        }, nil)
    }
}
