#if canImport(Glibc)
import Glibc
#endif
import Foundation
import SnapshotCore
import SnapshotEngine
import Synchronization

/// One HTTP request: method, path (without the query), headers (names lower-cased), body.
public struct HTTPRequest: Sendable {
    public var method: String
    public var path: String
    public var headers: [String: String]
    public var body: [UInt8]
}

/// What to answer: a whole response, or a stream (Server-Sent Events) that `write`s until it
/// returns false (the client went away or the server stops).
public enum HTTPReply: Sendable {
    case full(status: Int, type: String, body: [UInt8])
    case stream(type: String, body: @Sendable (_ write: @Sendable ([UInt8]) -> Bool) -> Void)

    static func text(_ status: Int, _ text: String) -> HTTPReply { .full(status: status, type: "text/plain; charset=utf-8", body: Array(text.utf8)) }
}

/// A small HTTP/1.1 server: `/metrics` of the agent and `snapshot dashboard`. Each connection
/// gets a thread of its own (at most 64 at once; more are answered 503), carries one request
/// (read within 5 s: 8 KiB of head, 64 KiB of body at most) and is closed after the answer —
/// except a stream, which lasts until its client goes.
///
/// Hand-written rather than Hummingbird: a scrape, one page, one event stream and one POST
/// need none of an HTTP framework, and Hummingbird would bring SwiftNIO (minutes of build on
/// CI's two cores) for them.
public final class HTTPServer: Sendable {
    public let address: ListenAddress
    private let fd: Int32
    private let stopped = Atomic<Bool>(false)
    private let connections = Atomic<Int>(0)
    private let handler: @Sendable (HTTPRequest) -> HTTPReply
    static let maxConnections = 64

    /// Binds and listens (throws a usage error naming the address when it is taken or not
    /// this host's); `start()` serves.
    public init(address: ListenAddress, handler: @escaping @Sendable (HTTPRequest) -> HTTPReply) throws {
        self.address = address
        self.handler = handler
        let v6 = address.host.contains(":")
        let s = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw EngineError.usage("listen \(address): \(String(cString: strerror(errno)))") }
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
        guard bound == 0, listen(s, 64) == 0 else {
            let e = errno
            close(s)
            throw EngineError.usage("listen \(address): \(String(cString: strerror(e)))")
        }
        fd = s
    }

    public var isStopped: Bool { stopped.load(ordering: .relaxed) }

    public func start() {
        let t = Thread { [self] in
            while !stopped.load(ordering: .relaxed) {
                let c = accept(fd, nil, nil)
                if c < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return  // closed by stop()
                }
                _ = fcntl(c, F_SETFD, FD_CLOEXEC)
                guard connections.add(1, ordering: .relaxed).newValue <= Self.maxConnections else {
                    respond(c, .text(503, "busy\n"), method: "GET")
                    close(c)
                    connections.subtract(1, ordering: .relaxed)
                    continue
                }
                let worker = Thread { [self] in
                    serve(c)
                    close(c)
                    connections.subtract(1, ordering: .relaxed)
                }
                worker.name = "http connection"
                worker.start()
            }
        }
        t.name = "http accept"
        t.start()
    }

    public func stop() {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    private func serve(_ c: Int32) {
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        var headEnd: Int?
        while headEnd == nil {
            guard data.count < 8192 else { return respond(c, .text(431, "request head too large\n"), method: "GET") }
            let n = buffer.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return }
            data += buffer[0..<n]
            headEnd = data.offset(of: [0x0d, 0x0a, 0x0d, 0x0a])
        }
        let head = String(decoding: data[0..<headEnd!], as: UTF8.self).components(separatedBy: "\r\n")
        let line = head[0].split(separator: " ")
        guard line.count == 3, line[2].hasPrefix("HTTP/1.") else { return respond(c, .text(400, "bad request\n"), method: "GET") }
        var headers: [String: String] = [:]
        for h in head.dropFirst() {
            guard let colon = h.firstIndex(of: ":") else { continue }
            headers[h[..<colon].lowercased()] = h[h.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let length = Int(headers["content-length"] ?? "0") ?? -1
        guard (0...65536).contains(length) else { return respond(c, .text(413, "body too large or Content-Length unreadable\n"), method: "GET") }
        var body = Array(data[(headEnd! + 4)...])
        while body.count < length {
            let n = buffer.withUnsafeMutableBytes { recv(c, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return }
            body += buffer[0..<n]
        }
        let method = String(line[0])
        let path = line[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
        respond(c, handler(HTTPRequest(method: method, path: path, headers: headers, body: Array(body.prefix(length)))), method: method)
    }

    private func respond(_ c: Int32, _ reply: HTTPReply, method: String) {
        switch reply {
        case .full(let status, let type, let body):
            let header = "HTTP/1.1 \(status) \(Self.reason(status))\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nCache-Control: no-store\r\nConnection: close\r\n\(status == 405 ? "Allow: GET, HEAD\r\n" : "")\r\n"
            _ = Self.send(c, Array(header.utf8) + (method == "HEAD" ? [] : body))
        case .stream(let type, let body):
            let header = "HTTP/1.1 200 OK\r\nContent-Type: \(type)\r\nCache-Control: no-store\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n"
            guard Self.send(c, Array(header.utf8)) else { return }
            body { [self] bytes in !stopped.load(ordering: .relaxed) && Self.send(c, bytes) }
        }
    }

    static func send(_ c: Int32, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(c, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            sent += n
        }
        return true
    }

    static func reason(_ status: Int) -> String {
        [200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
         431: "Request Header Fields Too Large", 502: "Bad Gateway", 503: "Service Unavailable"][status] ?? "Status"
    }
}
