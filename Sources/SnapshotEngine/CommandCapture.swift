#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore

/// Runs a `command` component. The command line comes only from the configuration file
/// (never from an MQTT payload) and runs under `/bin/sh -c`, with a time limit.
public enum CommandCapture {
    /// Captures stdout as `output` (or `<name>.txt`). With `parse: csv` the stdout is kept
    /// as `<name>.csv` and `output` gets the JSON array of its rows. A command that is not
    /// installed (exit 127) is recorded in the details when `optional`, and an error otherwise.
    public static func capture(name: String, command: String, parse: String?, output: String?, optional: Bool, timeout: Double = 60, directory: String? = nil) throws -> GeneratedSource {
        let result = try run(command, timeout: timeout, directory: directory)
        var details = ComponentDetails()
        details.exitCode = Int(result.status)
        details.stderr = String(decoding: result.stderr.prefix(4096), as: UTF8.self)
        if result.status == 127 || result.status == 126 {
            guard optional else {
                throw EngineError.componentFailed(component: name, detail: "command not found: \(command)")
            }
            details.note = "command not available: \(command.split(separator: " ").first ?? "")"
            return GeneratedSource(name: name, kind: .command, source: command, files: [], details: details)
        }
        if result.timedOut {
            throw EngineError.componentFailed(component: name, detail: "command timed out after \(Int(timeout)) s: \(command)")
        }
        guard result.status == 0 else {
            let message = "command exited \(result.status): \(command)\(details.stderr!.isEmpty ? "" : ": " + details.stderr!.split(separator: "\n").prefix(1).joined())"
            if optional {
                details.note = message
                return GeneratedSource(name: name, kind: .command, source: command, files: [], details: details)
            }
            throw EngineError.componentFailed(component: name, detail: message)
        }
        var files: [(String, [UInt8])] = []
        if parse == "csv" {
            files.append((name + ".csv", result.stdout))
            let json = try CSVTable.json(String(decoding: result.stdout, as: UTF8.self))
            files.append((output ?? name + ".json", json))
        } else {
            files.append((output ?? name + ".txt", result.stdout))
        }
        return GeneratedSource(name: name, kind: .command, source: command, files: files, details: details)
    }

    typealias Output = ShellCommand.Output

    /// Runs `command` under /bin/sh, in `directory` (default: ours), with `environment`
    /// added to ours; a timeout kills everything it started (see `ShellCommand`).
    static func run(_ command: String, timeout: Double, directory: String? = nil, environment: [String: String] = [:]) throws -> Output {
        try ShellCommand.run(command, timeout: timeout, directory: directory, environment: environment)
    }
}

/// CSV with a header row (as `nvidia-smi --format=csv` prints it) → a JSON array of objects.
public enum CSVTable {
    /// Keys are the header cells, units included (`memory.used [MiB]`). A value is a number
    /// when it is one, also after removing the unit its header declares (`81559 MiB` under
    /// `[MiB]`, `0 %` under `[%]`); anything else stays a string.
    public static func json(_ text: String) throws -> [UInt8] {
        let lines = text.split(whereSeparator: \.isNewline).map(String.init).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        guard let header = lines.first else { return Array("[]\n".utf8) }
        let keys = split(header)
        var rows: [[String: Any]] = []
        for (n, line) in lines.dropFirst().enumerated() {
            let cells = split(line)
            guard cells.count == keys.count else {
                throw EngineError.componentFailed(component: "csv", detail: "row \(n + 2) has \(cells.count) cells, the header has \(keys.count)")
            }
            var row: [String: Any] = [:]
            for (key, cell) in zip(keys, cells) { row[key] = value(cell, unit: unit(of: key)) }
            rows.append(row)
        }
        let data = try JSONSerialization.data(withJSONObject: rows, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return Array(data) + [0x0a]
    }

    static func split(_ line: String) -> [String] {
        var cells: [String] = []
        var current = ""
        var quoted = false
        for ch in line {
            if ch == "\"" {
                quoted.toggle()
            } else if ch == "," && !quoted {
                cells.append(current.trimmingCharacters(in: .whitespaces))
                current = ""
            } else {
                current.append(ch)
            }
        }
        cells.append(current.trimmingCharacters(in: .whitespaces))
        return cells
    }

    static func unit(of key: String) -> String? {
        guard let open = key.lastIndex(of: "["), key.hasSuffix("]") else { return nil }
        return String(key[key.index(after: open)..<key.index(before: key.endIndex)])
    }

    static func value(_ cell: String, unit: String?) -> Any {
        if let n = number(cell) { return n }
        if let unit, cell.hasSuffix(unit) {
            let bare = cell.dropLast(unit.count).trimmingCharacters(in: .whitespaces)
            if let n = number(bare) { return n }
        }
        return cell
    }

    static func number(_ s: String) -> Any? {
        if let i = Int(s) { return i }
        if let d = Double(s), d.isFinite, s.contains(".") { return d }
        return nil
    }
}

/// Captures an `env` component: the variables matching the patterns, as environment.json,
/// with values of names that look secret replaced by "[REDACTED]".
public enum EnvironmentCapture {
    public static let secretPatterns = ["*KEY*", "*SECRET*", "*TOKEN*", "*PASSWORD*", "*PASSWD*", "*CREDENTIAL*"]

    public static func capture(name: String, patterns: [String], environment: [String: String] = ProcessInfo.processInfo.environment) throws -> GeneratedSource {
        var selected: [String: String] = [:]
        var redacted = 0
        for (key, value) in environment where patterns.contains(where: { fnmatch($0, key, 0) == 0 }) {
            if secretPatterns.contains(where: { fnmatch($0, key.uppercased(), 0) == 0 }) {
                selected[key] = "[REDACTED]"
                redacted += 1
            } else {
                selected[key] = value
            }
        }
        let data = try JSONSerialization.data(withJSONObject: selected, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        var details = ComponentDetails()
        details.note = "\(selected.count) variables, \(redacted) redacted"
        return GeneratedSource(name: name, kind: .env, source: patterns.joined(separator: " "), files: [("environment.json", Array(data) + [0x0a])], details: details)
    }
}
