import ArgumentParser
import Foundation
import SnapshotCore
import SnapshotEngine

extension Snapshot {
    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "list", abstract: "List snapshots, newest first.")

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("Only snapshots of this type.", valueName: "type"))
        var type: SnapshotType?

        var options: ListOptions {
            var o = ListOptions()
            o.type = type
            return o
        }

        func validate() throws {
            do { try options.validate() } catch { throw ValidationError("--\(error)") }
        }

        func run() async throws {
            let context = try Context(global, remote: true)
            let (records, damaged) = try await context.run { try context.service.listing(options) }
            if global.json {
                // Damaged snapshots last, as {"snapshot_id","type","damaged"}.
                var out = try records.map { try JSONSerialization.jsonObject(with: JSONEncoder.snapshot.encode($0.metadata)) }
                out += try damaged.map { try JSONSerialization.jsonObject(with: JSONEncoder.snapshot.encode(DamagedListing(snapshotID: $0.id, type: $0.type, damaged: $0.problem))) }
                FileHandle.standardOutput.write(try JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]))
                FileHandle.standardOutput.write(Data([0x0a]))
                return
            }
            var rows = [["ID", "TYPE", "NAME", "SIZE", "ADDED", "DURATION", "VERIFIED"]]
            for r in records {
                let m = r.metadata
                let verified = m.verified.map { $0.ok ? "ok \($0.timestamp.prefix(10))" : "FAILED" } ?? "-"
                rows.append([r.id, r.type.name, m.name.isEmpty ? "-" : m.name, formatBytes(m.sizeBytes), formatBytes(m.storedBytes), String(format: "%.2f s", m.durationS), verified])
            }
            for d in damaged { rows.append([d.id, d.type.name, "-", "-", "-", "-", "DAMAGED"]) }
            printTable(rows)
            for d in damaged { print("\(d.type)/\(d.id): \(d.problem)") }
            if !global.quiet {
                print("\(records.count) snapshot\(records.count == 1 ? "" : "s")\(damaged.isEmpty ? "" : ", \(damaged.count) damaged (`snapshot delete --snapshot TYPE/ID` removes one)")")
            }
        }
    }
}

/// Prints rows as left-aligned columns.
func printTable(_ rows: [[String]]) {
    guard let first = rows.first else { return }
    var widths = first.map(\.count)
    for row in rows {
        for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
    }
    for row in rows {
        var line = ""
        for (i, cell) in row.enumerated() {
            line += i == row.count - 1 ? cell : cell.padding(toLength: widths[i] + 2, withPad: " ", startingAt: 0)
        }
        print(line)
    }
}
