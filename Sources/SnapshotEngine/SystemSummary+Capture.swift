import Foundation
import SnapshotCore

extension SystemSummary {
    /// File extensions counted as models under a component's `weights/`.
    static let modelExtensions: Set<String> = ["safetensors", "gguf", "onnx", "pt", "bin"]

    /// Counts what a snapshot captured: the retained topics of its mqtt components and the
    /// layout of its file components (see `SystemSummary`). Reads directory listings only.
    static func of(sources: [FileSource], generated: [GeneratedSource]) -> SystemSummary {
        var topics: [[Substring]] = []
        for g in generated where g.kind == .mqtt {
            for f in g.files {
                guard let list = try? JSONDecoder().decode([StoredMessage].self, from: Data(f.bytes)) else { continue }
                topics += list.map { $0.topic.split(separator: "/", omittingEmptySubsequences: false) }
            }
        }
        func names(under root: Substring) -> Set<String> {
            Set(topics.compactMap { $0.count >= 3 && $0[0] == root ? String($0[1]) : nil })
        }
        var models = names(under: "models")
        var collections = 0
        for source in sources {
            if source.kind == .qdrant {
                collections += (try? POSIX.listDirectory(source.path))?.count ?? 0
                continue
            }
            let dir = source.path + "/collections"
            if let entries = try? POSIX.listDirectory(dir) {
                collections += entries.filter { POSIX.isDirectory(dir + "/" + $0) }.count
            }
            for file in (try? POSIX.listDirectory(source.path + "/weights")) ?? [] {
                let parts = file.split(separator: ".")
                if parts.count > 1, let ext = parts.last, modelExtensions.contains(String(ext)) {
                    models.insert(parts.dropLast().joined(separator: "."))
                }
            }
        }
        return SystemSummary(
            orchestrator: topics.filter { $0.count >= 2 && $0[0] == "orchestrator" }.count,
            workers: names(under: "workers").count, collections: collections, models: models.count)
    }
}
