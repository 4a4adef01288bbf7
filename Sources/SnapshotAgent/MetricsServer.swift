#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotEngine
import Synchronization

/// A small HTTP/1.1 server for `GET /metrics`: one request per connection, answered and
/// closed (what Prometheus's scraper does). A thread accepts; each connection is read with a
/// 5 s timeout and at most 8 KiB of request head, so a slow or hostile client holds nothing.
///
/// Hand-written rather than Hummingbird: serving one GET needs none of an HTTP framework,
/// and Hummingbird would bring SwiftNIO (minutes of build on CI's two cores) for it.
final class MetricsServer: Sendable {
    let address: ListenAddress
    private let fd: Int32
    private let stopped = Atomic<Bool>(false)
    private let render: @Sendable () -> [UInt8]

    /// Binds and listens (throws when the address is taken or not ours); `start()` serves.
    init(address: ListenAddress, render: @escaping @Sendable () -> [UInt8]) throws {
        self.address = address
        self.render = render
        let v6 = address.host.contains(":")
        let s = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw EngineError.usage("metrics.listen \(address): \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound: Int32
        if v6 {
            var a = sockaddr_in6()
            a.sin6_family = sa_family_t(AF_INET6)
            a.sin6_port = UInt16(address.port).bigEndian
            inet_pton(AF_INET6, address.host, &a.sin6_addr)
            bound = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        } else {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = UInt16(address.port).bigEndian
            a.sin_addr.s_addr = inet_addr(address.host)
            bound = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        guard bound == 0, listen(s, 16) == 0 else {
            let e = errno
            close(s)
            throw EngineError.usage("metrics.listen \(address): \(String(cString: strerror(e)))")
        }
        fd = s
    }

    func start() {
        let t = Thread { [self] in
            while !stopped.load(ordering: .relaxed) {
                let c = accept(fd, nil, nil)
                if c < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return  // closed by stop()
                }
                _ = fcntl(c, F_SETFD, FD_CLOEXEC)
                serve(c)
                close(c)
            }
        }
        t.name = "metrics http"
        t.start()
    }

    func stop() {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    private func serve(_ c: Int32) {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var head: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 2048)
        while head.count < 8192 {
            let n = buffer.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return }
            head += buffer[0..<n]
            if head.count >= 4, head.withUnsafeBytes({ String(decoding: $0, as: UTF8.self) }).contains("\r\n\r\n") { break }
        }
        let line = String(decoding: head.prefix { $0 != 0x0d && $0 != 0x0a }, as: UTF8.self).split(separator: " ")
        guard line.count == 3, line[2].hasPrefix("HTTP/1.") else { return respond(c, 400, "Bad Request", Array("bad request\n".utf8)) }
        let method = line[0], target = line[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
        guard method == "GET" || method == "HEAD" else { return respond(c, 405, "Method Not Allowed", Array("GET /metrics\n".utf8), extra: "Allow: GET, HEAD\r\n") }
        guard target == "/metrics" else { return respond(c, 404, "Not Found", Array("not found: the metrics are at /metrics\n".utf8)) }
        respond(c, 200, "OK", render(), type: "text/plain; version=0.0.4; charset=utf-8", head: method == "HEAD")
    }

    private func respond(_ c: Int32, _ status: Int, _ reason: String, _ body: [UInt8], type: String = "text/plain; charset=utf-8", extra: String = "", head: Bool = false) {
        let header = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\(extra)\r\n"
        let bytes = Array(header.utf8) + (head ? [] : body)
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(c, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }
}
