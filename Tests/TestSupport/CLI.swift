import Foundation

/// Runs the built `snapshot` executable (`.build/debug/snapshot`, built by `swift build`
/// before `swift test`; override with SNAPSHOT_TEST_BIN).
public enum CLI {
    public static var binary: String {
        if let b = ProcessInfo.processInfo.environment["SNAPSHOT_TEST_BIN"] { return b }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/snapshot").path
    }

    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// The project's root directory (where Package.swift is).
    public static var projectRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// Runs one of the seed's wrapper scripts (`scripts/NAME`) as cron would: from another
    /// directory, with the built binary as SNAPSHOT_BIN and `environment` added.
    public static func script(_ name: String, _ arguments: [String], environment: [String: String]) throws -> Result {
        try capture(projectRoot + "/scripts/" + name, arguments, in: "/", environment: environment.merging(["SNAPSHOT_BIN": binary]) { a, _ in a })
    }

    /// Runs a shell command line (`/bin/sh -c`) in `directory`; both streams captured.
    public static func shell(_ command: String, in directory: String, environment: [String: String] = [:]) throws -> Result {
        try capture("/bin/sh", ["-c", command], in: directory, environment: environment)
    }

    /// Runs a program to completion with `environment` added to ours; both streams captured.
    public static func capture(_ path: String, _ arguments: [String], in directory: String, environment: [String: String]) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        p.currentDirectoryURL = URL(fileURLWithPath: directory)
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// Runs to completion and captures both streams.
    public static func run(_ arguments: [String], in directory: String? = nil, environment: [String: String] = [:], asNobody: Bool = false) throws -> Result {
        let p = try start(arguments, in: directory, environment: environment, asNobody: asNobody)
        let out = p.outPipe.fileHandleForReading.readDataToEndOfFile()
        let err = p.errPipe.fileHandleForReading.readDataToEndOfFile()
        p.process.waitUntilExit()
        return Result(status: p.process.terminationStatus, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
    }

    /// Runs another program to completion; its exit status.
    public static func runTool(_ path: String, _ arguments: [String], in directory: String? = nil, environment: [String: String] = [:]) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        return p.terminationStatus
    }

    public struct Running {
        public let process: Process
        let outPipe: Pipe
        let errPipe: Pipe
        private let seenOut = OutputSoFar()

        final class OutputSoFar: @unchecked Sendable {
            var text = ""
        }

        /// Reads stdout until a whole line contains `text` (true) or the stream ends (false).
        public func waitForStdoutLine(containing text: String) -> Bool {
            while true {
                let lines = seenOut.text.split(separator: "\n", omittingEmptySubsequences: true)
                let complete = seenOut.text.hasSuffix("\n") ? lines[...] : lines.dropLast()
                if complete.contains(where: { $0.contains(text) }) {
                    // Consumed: the next wait looks at what comes after.
                    seenOut.text = ""
                    return true
                }
                let data = outPipe.fileHandleForReading.availableData
                if data.isEmpty { return false }
                seenOut.text += String(decoding: data, as: UTF8.self)
            }
        }

        /// Reads stdout until it holds `count` whole lines (returned) or the stream ends (nil):
        /// for commands that print one line per event (`watch`).
        public func waitForStdoutLines(_ count: Int) -> [String]? {
            while true {
                let lines = seenOut.text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
                if seenOut.text.hasSuffix("\n") || lines.count > count, lines.count >= count { return Array(lines.prefix(count)) }
                let data = outPipe.fileHandleForReading.availableData
                if data.isEmpty { return nil }
                seenOut.text += String(decoding: data, as: UTF8.self)
            }
        }

        /// Reads stderr until it contains `text` (true) or the stream ends (false): waits for
        /// what the process says it is doing, not for time.
        public func waitForStderr(_ text: String) -> Bool {
            var seen = ""
            while true {
                let data = errPipe.fileHandleForReading.availableData
                if data.isEmpty { return false }
                seen += String(decoding: data, as: UTF8.self)
                if seen.contains(text) { return true }
            }
        }

        /// Waits for the exit; its status.
        public func finish() -> Int32 {
            _ = outPipe.fileHandleForReading.readDataToEndOfFile()
            _ = errPipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return process.terminationStatus
        }
    }

    /// Starts without waiting (for kill tests). Output goes to pipes nobody reads, so keep it small.
    public static func start(_ arguments: [String], in directory: String? = nil, environment: [String: String] = [:], asNobody: Bool = false) throws -> Running {
        let p = Process()
        if asNobody {
            // As an unprivileged user, for tests of permission handling when run as root.
            p.executableURL = URL(fileURLWithPath: "/usr/bin/setpriv")
            p.arguments = ["--reuid=65534", "--regid=65534", "--clear-groups", binary] + arguments
        } else {
            p.executableURL = URL(fileURLWithPath: binary)
            p.arguments = arguments
        }
        var env = ProcessInfo.processInfo.environment
        env.removeValue(forKey: "SNAPSHOT_REPO")
        env.removeValue(forKey: "SNAPSHOT_CONFIG")
        for (k, v) in environment { env[k] = v }
        p.environment = env
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        return Running(process: p, outPipe: out, errPipe: err)
    }
}
