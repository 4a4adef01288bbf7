import ArgumentParser
import SnapshotCore
import SnapshotEngine


struct Snapshot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Content-addressed snapshots of an MQTT agent system: create, verify, restore.",
        discussion: "Exit codes: 0 ok, 1 problem found, 2 critical, 64 usage, 65 bad input data, 74 I/O error, 75 repository locked, 77 permission or key error.",
        version: SnapshotVersion.string,
        subcommands: [Init.self, Create.self, List.self, Show.self, Ls.self, Cat.self, Diff.self, Verify.self, Restore.self, Recover.self, TestRecovery.self, Prune.self, Delete.self, Monitor.self, Analyze.self, CheckDependencies.self, RebuildMetadata.self, Repair.self, Sanitize.self, Export.self, Import.self, Copy.self, Key.self, Watch.self, Fleet.self, DashboardCommand.self, AgentCommand.self])
}

/// The options every subcommand takes (README.md, "Global options").
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The repository (env SNAPSHOT_REPO; default ./snapshots or the config's `repository`).", valueName: "path"))
    var repo: String?

    @Option(name: .long, help: ArgumentHelp("Agent/components config (env SNAPSHOT_CONFIG).", valueName: "path"))
    var config: String?

    @Option(name: .long, help: ArgumentHelp("Key for an encrypted repository (env SNAPSHOT_PASSWORD_FILE or SNAPSHOT_PASSWORD).", valueName: "path"))
    var passwordFile: String?

    @Option(name: .long, help: ArgumentHelp("How long to wait for a lock another command holds: 30s, 5m, 1h (default 0: exit 75 at once, naming the holder).", valueName: "duration"))
    var lockWait: String?

    @Flag(name: .long, help: "Machine-readable output: one JSON document on stdout; progress as JSON lines on stderr.")
    var json = false

    @Flag(name: .long, help: "Print less.")
    var quiet = false

    @Flag(name: .long, help: "Print much more, on stderr.")
    var debug = false
}

enum SnapshotVersion {
    static let string = "0.1.0"
}
