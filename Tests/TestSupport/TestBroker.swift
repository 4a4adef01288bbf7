#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A real mosquitto broker on a free loopback port, with a generated config, for tests.
/// Stopped by PID (SIGTERM) when released; `restart()` keeps the port.
public final class TestBroker: @unchecked Sendable {
    public let port: Int
    public let directory = TemporaryDirectory("snapshot-broker")
    private var process: ChildProcess?

    public var url: String { "mqtt://127.0.0.1:\(port)" }

    /// Starts mosquitto (from Debian's `mosquitto` package) and waits until it accepts
    /// connections. `listenerOptions` go under the listener (TLS files, a password file).
    public init(listenerOptions: [String] = []) throws {
        port = try Self.freePort()
        let anonymous = listenerOptions.contains { $0.hasPrefix("password_file") } ? "false" : "true"
        let config = """
            per_listener_settings true
            listener \(port) 127.0.0.1
            \(listenerOptions.joined(separator: "\n"))
            allow_anonymous \(anonymous)
            set_tcp_nodelay true
            user root
            persistence false
            log_dest file \(directory.path)/mosquitto.log
            max_queued_messages 100000

            """
        try config.write(toFile: directory.path + "/mosquitto.conf", atomically: true, encoding: .utf8)
        try start()
    }

    public static var binary: String {
        for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto"] where FileManager.default.isExecutableFile(atPath: p) {
            return p
        }
        return "mosquitto"
    }

    public func start() throws {
        let p = try ChildProcess(Self.binary, ["-c", directory.path + "/mosquitto.conf"])
        process = p
        try Self.waitForPort(port, process: p, what: "mosquitto", timeout: 10)
    }

    /// Waits until `process` accepts connections on `port` (a server a test started).
    public static func waitForPort(_ port: Int, process: ChildProcess, what: String, timeout: Double = 30) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if canConnect(port: port) { return }
            guard process.isRunning else { break }
            usleep(20_000)
        }
        throw NSError(domain: "TestBroker", code: 1, userInfo: [NSLocalizedDescriptionKey: "\(what) did not start on port \(port)"])
    }

    public func stop() {
        process?.stop(SIGTERM)
        process = nil
    }

    public func restart() throws {
        stop()
        try start()
    }

    deinit { stop() }

    /// A free loopback TCP port (for other test servers).
    public static func freePortForTests() throws -> Int { try freePort() }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw NSError(domain: "TestBroker", code: 2) }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    public static func canConnectForTests(port: Int) -> Bool { canConnect(port: port) }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}
