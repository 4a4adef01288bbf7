import Foundation
import SnapshotCore

extension SnapshotConfig {
    /// The components a snapshot of `type` captures: `incremental` and `differential`
    /// capture `full`'s.
    public func componentNames(for type: SnapshotType) throws -> [String] {
        guard let names = types[type.componentsFrom] else {
            throw EngineError.unknownType(type.name, known: configuredTypes.map(\.name))
        }
        return names
    }

    /// The types a snapshot can be taken of: the configured ones, and incremental and
    /// differential when full is configured.
    public var configuredTypes: [SnapshotType] {
        Set(types.keys).union(types[.full] == nil ? [] : [.incremental, .differential]).sorted()
    }

    /// The types `create --path` accepts as a label: the built-in and the configured ones.
    public var creatableTypes: Set<SnapshotType> { Set(SnapshotType.builtIn).union(types.keys) }

    /// The sources for `create`: one files component per `--path` (named after its last
    /// element) when `paths` is not empty, otherwise the type's configured components.
    /// Components of kinds this build cannot capture yet are returned separately so that
    /// the snapshot can record them as not captured.
    public func sources(type: SnapshotType, paths: [String], extraExcludes: [String], workingDirectory: String) throws -> CapturePlan {
        if !paths.isEmpty {
            guard creatableTypes.contains(type) else {
                throw EngineError.unknownType(type.name, known: creatableTypes.sorted().map(\.name))
            }
            var out: [FileSource] = []
            for path in paths {
                let absolute = POSIX.absolute(path, relativeTo: workingDirectory)
                var name = POSIX.lastComponent(absolute)
                if name == "/" || name.isEmpty { name = "root" }
                guard !out.contains(where: { $0.name == name }) else {
                    throw EngineError.usage("--path \(path): another --path is also named \"\(name)\"; each path becomes a component named after its last element")
                }
                out.append(FileSource(name: name, path: absolute, excludes: extraExcludes))
            }
            return CapturePlan(files: out, generated: [])
        }
        var files: [FileSource] = []
        var other: [(String, ComponentSource)] = []
        for name in try componentNames(for: type) {
            guard let source = component(name) else {
                throw EngineError.unknownComponent(name, known: components.map(\.name))
            }
            switch source {
            case .files(let path, let exclude):
                files.append(FileSource(name: name, path: path, excludes: exclude + extraExcludes))
            default:
                other.append((name, source))
            }
        }
        return CapturePlan(files: files, generated: other)
    }
}

/// The components one `create` captures.
public struct CapturePlan: Sendable {
    public var files: [FileSource]
    /// Components whose files are produced at capture time.
    public var generated: [(name: String, source: ComponentSource)]

    /// Downloads every `qdrant` component's collection snapshots into a scratch directory
    /// under `scratchRoot`; they are captured as files from there. Returns the sources and
    /// the directories to remove afterwards.
    public func downloadQdrant(scratchRoot: String) async throws -> (sources: [FileSource], directories: [String]) {
        var sources: [FileSource] = []
        var dirs: [String] = []
        do {
            for (name, source) in generated {
                guard case .qdrant(let url, let collections, let keyEnv) = source else { continue }
                let dir = scratchRoot + "/qdrant-\(getpid())-\(name)"
                try POSIX.removeTree(dir)
                dirs.append(dir)
                let key = ProcessInfo.processInfo.environment[keyEnv].flatMap { $0.isEmpty ? nil : $0 }
                _ = try await QdrantClient(baseURL: url, apiKey: key).capture(component: name, collections: collections, into: dir)
                sources.append(FileSource(name: name, path: dir, kind: .qdrant, label: url))
            }
        } catch {
            for d in dirs { try? POSIX.removeTree(d) }
            throw error
        }
        return (sources, dirs)
    }

    /// Runs the command, env and mqtt components; commands run in `directory` (the config's
    /// root), each on a thread of its own. Every failure names its component.
    public func captureGenerated(broker: BrokerSettings, directory: String? = nil) async throws -> [GeneratedSource] {
        var captured: [GeneratedSource] = []
        for (name, source) in generated {
            switch source {
            case .command(let command, let parse, let output, let optional):
                captured.append(try await Blocking.run {
                    try CommandCapture.capture(name: name, command: command, parse: parse, output: output, optional: optional, directory: directory)
                })
            case .env(let patterns):
                captured.append(try EnvironmentCapture.capture(name: name, patterns: patterns))
            case .mqtt(let filters):
                captured.append(try await MQTTCapture.capture(name: name, filters: filters, broker: broker))
            case .files, .qdrant:
                break
            }
        }
        return captured
    }
}
