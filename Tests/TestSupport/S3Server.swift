#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore

/// A real S3 API on loopback for tests: moto's server mode (`moto_server`, installed by
/// `make test` into the virtual environment `.build/venv`), on a free port, stopped by PID.
/// With `faulty`, requests go through Tests/Fixtures/s3_fault_proxy.py, which answers some
/// with 503 SlowDown, stalls some and cuts some responses short.
public final class S3Server: @unchecked Sendable {
    public let port: Int
    /// Where clients connect: moto's port, or the fault proxy's.
    public let endpointPort: Int
    public let directory = TemporaryDirectory("snapshot-s3")
    private var moto: ChildProcess?
    private var proxy: ChildProcess?

    public static var motoBinary: String { CLI.projectRoot + "/.build/venv/bin/moto_server" }

    /// - Parameter port: where moto listens (default: a free port).
    public init(faulty: Bool = false, seed: Int = 1, port chosen: Int? = nil) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.motoBinary) else {
            throw NSError(domain: "S3Server", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(Self.motoBinary) is missing: `make test` installs moto[server] into .build/venv"])
        }
        port = try chosen ?? TestBroker.freePortForTests()
        moto = try ChildProcess(Self.motoBinary, ["-H", "127.0.0.1", "-p", "\(port)"], logFile: directory.path + "/moto.log")
        try TestBroker.waitForPort(port, process: moto!, what: "moto_server")
        if faulty {
            endpointPort = try TestBroker.freePortForTests()
            let script = CLI.projectRoot + "/Tests/Fixtures/s3_fault_proxy.py"
            proxy = try ChildProcess("/usr/bin/env", ["python3", script, "\(endpointPort)", "\(port)", statsFile, "\(seed)"], logFile: directory.path + "/proxy.log")
            try TestBroker.waitForPort(endpointPort, process: proxy!, what: "the S3 fault proxy")
        } else {
            endpointPort = port
        }
    }

    deinit {
        proxy?.stop()
        moto?.stop()
    }

    public var endpoint: String { "http://127.0.0.1:\(endpointPort)" }
    public var statsFile: String { directory.path + "/proxy-stats.json" }

    /// The fault proxy's counts: requests, slowdown, stall, cut, passed.
    public var faultStats: [String: Int] {
        guard let data = FileManager.default.contents(atPath: statsFile) else { return [:] }
        return (try? JSONDecoder().decode([String: Int].self, from: data)) ?? [:]
    }

    /// The environment a client needs: credentials (moto takes any), region, endpoint; a
    /// short timeout so that a stalled request is retried within the test's time.
    public var environment: [String: String] {
        var env = ProcessInfo.processInfo.environment
        env["AWS_ACCESS_KEY_ID"] = "snapshot-test"
        env["AWS_SECRET_ACCESS_KEY"] = "snapshot-test-secret"
        env["AWS_REGION"] = "us-east-1"
        env["AWS_ENDPOINT_URL"] = endpoint
        env["SNAPSHOT_S3_TIMEOUT"] = "1"
        env.removeValue(forKey: "AWS_PROFILE")
        env.removeValue(forKey: "AWS_ENDPOINT_URL_S3")
        return env
    }

    /// A storage client on `s3://bucket/prefix`, creating the bucket.
    public func storage(_ url: String) throws -> S3Storage {
        let s = try S3Storage.open(url, environment: environment)
        try s.createBucketIfMissing()
        return s
    }
}
