import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import SnapshotCore

/// Qdrant's collection snapshot API (https://qdrant.tech/documentation/concepts/snapshots/):
/// copying the storage directory of a running Qdrant is unsafe, so a `qdrant` component asks
/// the server for one snapshot per collection, downloads it, checks its SHA-256 against the
/// checksum Qdrant reports, and deletes the server-side copy. An in-place restore uploads
/// each snapshot with `priority=snapshot`. Tested against a stand-in server that follows
/// the documented endpoints (Tests/Fixtures/qdrant_standin.py): no Qdrant server can be
/// installed on the build machines.
public struct QdrantClient: Sendable {
    public let baseURL: String
    public let apiKey: String?

    public init(baseURL: String, apiKey: String? = nil) {
        var url = baseURL
        while url.hasSuffix("/") { url.removeLast() }
        self.baseURL = url
        self.apiKey = apiKey
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    private func request(_ method: String, _ path: String, body: Data? = nil, contentType: String? = nil) -> URLRequest {
        var r = URLRequest(url: URL(string: baseURL + path)!)
        r.httpMethod = method
        r.timeoutInterval = 600
        if let apiKey { r.setValue(apiKey, forHTTPHeaderField: "api-key") }
        if let contentType { r.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        r.httpBody = body
        return r
    }

    private func send(_ r: URLRequest) async throws -> Data {
        let (data, response) = try await URLSession.shared.data(for: r)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            let text = String(decoding: data.prefix(300), as: UTF8.self)
            throw Failure(description: "\(r.httpMethod ?? "") \(r.url?.path ?? ""): HTTP \(status) \(text)")
        }
        return data
    }

    private func result(_ data: Data) throws -> Any {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let result = object["result"] else {
            throw Failure(description: "unexpected answer: \(String(decoding: data.prefix(200), as: UTF8.self))")
        }
        return result
    }

    /// Names of all collections.
    public func collections() async throws -> [String] {
        let r = try result(try await send(request("GET", "/collections")))
        guard let list = (r as? [String: Any])?["collections"] as? [[String: Any]] else { throw Failure(description: "no collection list") }
        return list.compactMap { $0["name"] as? String }.sorted()
    }

    /// Creates a snapshot of a collection: its name and reported SHA-256.
    public func createSnapshot(_ collection: String) async throws -> (name: String, checksum: String?) {
        let r = try result(try await send(request("POST", "/collections/\(Self.escape(collection))/snapshots?wait=true")))
        guard let d = r as? [String: Any], let name = d["name"] as? String else { throw Failure(description: "no snapshot name") }
        return (name, d["checksum"] as? String)
    }

    /// Downloads a snapshot to `path` and returns its SHA-256.
    public func download(_ collection: String, _ name: String, to path: String) async throws -> String {
        let (temp, response) = try await URLSession.shared.download(for: request("GET", "/collections/\(Self.escape(collection))/snapshots/\(Self.escape(name))"))
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            try? FileManager.default.removeItem(at: temp)
            throw Failure(description: "download of \(collection)/\(name): HTTP \(status)")
        }
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(at: temp, to: URL(fileURLWithPath: path))
        return try Self.sha256(path)
    }

    public func deleteSnapshot(_ collection: String, _ name: String) async throws {
        _ = try await send(request("DELETE", "/collections/\(Self.escape(collection))/snapshots/\(Self.escape(name))"))
    }

    /// Uploads a snapshot file into a collection (recovering it) with `priority=snapshot`.
    public func upload(_ collection: String, file: String) async throws {
        let boundary = "snapshot-\(UUID().uuidString)"
        var body = Data("--\(boundary)\r\nContent-Disposition: form-data; name=\"snapshot\"; filename=\"\(collection).snapshot\"\r\nContent-Type: application/octet-stream\r\n\r\n".utf8)
        body.append(try Data(contentsOf: URL(fileURLWithPath: file)))
        body.append(Data("\r\n--\(boundary)--\r\n".utf8))
        _ = try await send(request("POST", "/collections/\(Self.escape(collection))/snapshots/upload?priority=snapshot&wait=true", body: body, contentType: "multipart/form-data; boundary=\(boundary)"))
    }

    static func escape(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? s
    }

    static func sha256(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw RepositoryError.fromErrno(path: path, operation: "open") }
        defer { close(fd) }
        var stream = SHA256Stream()
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { throw RepositoryError.fromErrno(path: path, operation: "read") }
            if n == 0 { break }
            buffer.withUnsafeBytes { stream.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        return stream.finish().hex
    }

    /// Snapshots every collection (or the named ones) into `directory` as
    /// `<collection>.snapshot`, checking each download's SHA-256 against Qdrant's checksum and
    /// deleting the server-side copy also after a failure. Errors name the component.
    public func capture(component: String, collections wanted: [String], into directory: String) async throws -> Int {
        let names: [String]
        do {
            names = wanted.isEmpty ? try await collections() : wanted
        } catch {
            throw EngineError.componentFailed(component: component, detail: "Qdrant at \(baseURL): \(error)")
        }
        try POSIX.makeDirectories(directory, mode: RepositoryModes.storeDirectory)
        for c in names {
            let snapshot: (name: String, checksum: String?)
            do {
                snapshot = try await createSnapshot(c)
            } catch {
                throw EngineError.componentFailed(component: component, detail: "Qdrant snapshot of collection \(c): \(error)")
            }
            do {
                let digest = try await download(c, snapshot.name, to: directory + "/" + c + ".snapshot")
                if let expected = snapshot.checksum, expected.lowercased() != digest {
                    throw Failure(description: "checksum mismatch (Qdrant says \(expected), downloaded \(digest))")
                }
                try await deleteSnapshot(c, snapshot.name)
            } catch {
                try? await deleteSnapshot(c, snapshot.name)
                throw EngineError.componentFailed(component: component, detail: "Qdrant snapshot \(snapshot.name) of collection \(c): \(error)")
            }
        }
        return names.count
    }
}
