#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A loopback TCP port where an MQTT broker should be, but none answers: the network
/// states an agent must survive without hanging, made on this machine alone.
public final class StalledListener: @unchecked Sendable {
    public enum Behaviour: Sendable {
        /// TCP connects, but nothing ever comes back (a hung broker).
        case silent
        /// The accept queue is full, so the kernel drops new SYNs and `connect` blocks
        /// (a host that does not answer).
        case connectHangs
    }

    public let port: Int
    private let listener: Int32
    private var fillers: [Int32] = []

    public var url: String { "mqtt://127.0.0.1:\(port)" }

    public init(_ behaviour: Behaviour) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && listen(fd, behaviour == .silent ? 64 : 0) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard bound else { close(fd); throw NSError(domain: "StalledListener", code: Int(errno)) }
        listener = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
        if behaviour == .connectHangs {
            // Two connections that are never accepted fill a backlog of 0.
            for _ in 0..<2 {
                let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
                _ = withUnsafePointer(to: &addr) { p in
                    p.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                fillers.append(filler)
            }
            usleep(50_000)
        }
    }

    deinit {
        for fd in fillers { close(fd) }
        close(listener)
    }
}
