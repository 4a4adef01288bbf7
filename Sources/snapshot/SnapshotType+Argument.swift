import ArgumentParser
import SnapshotCore

/// `--type T` on the command line: a valid type name, or a usage error saying the rule.
/// Whether the type is configured is checked when the command runs.
extension SnapshotType: ExpressibleByArgument {
    public init?(argument: String) {
        self.init(argument)
    }

    public var defaultValueDescription: String { name }
}
