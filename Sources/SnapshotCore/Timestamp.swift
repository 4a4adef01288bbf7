#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A point in time with nanosecond precision, formatted in UTC.
public struct Timestamp: Sendable, Hashable, Comparable, Codable {
    public var seconds: Int64
    public var nanoseconds: Int32

    public init(seconds: Int64, nanoseconds: Int32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    public static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(seconds: Int64(ts.tv_sec), nanoseconds: Int32(ts.tv_nsec))
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }

    public var timeInterval: Double { Double(seconds) + Double(nanoseconds) / 1e9 }

    private var utc: tm {
        var t = time_t(seconds)
        var out = tm()
        gmtime_r(&t, &out)
        return out
    }

    private static func pad(_ v: Int32, _ width: Int = 2) -> String {
        let s = String(v)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }

    /// `2024-01-15T10:30:00Z`.
    public var iso8601: String {
        let t = utc
        return "\(Self.pad(t.tm_year + 1900, 4))-\(Self.pad(t.tm_mon + 1))-\(Self.pad(t.tm_mday))T\(Self.pad(t.tm_hour)):\(Self.pad(t.tm_min)):\(Self.pad(t.tm_sec))Z"
    }

    /// The snapshot id form, `2024-01-15_10-30-00`.
    public var snapshotID: String {
        let t = utc
        return "\(Self.pad(t.tm_year + 1900, 4))-\(Self.pad(t.tm_mon + 1))-\(Self.pad(t.tm_mday))_\(Self.pad(t.tm_hour))-\(Self.pad(t.tm_min))-\(Self.pad(t.tm_sec))"
    }

    /// Parses ISO 8601: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS[.fff]]` with `Z`, `±HH:MM` or
    /// no zone (read as UTC). Nil for anything else.
    public init?(iso8601 text: String) {
        let s = Array(text.utf8)
        var i = 0
        func num(_ n: Int) -> Int? {
            guard i + n <= s.count else { return nil }
            var v = 0
            for k in 0..<n {
                let c = s[i + k]
                guard c >= 48 && c <= 57 else { return nil }
                v = v * 10 + Int(c - 48)
            }
            i += n
            return v
        }
        func expect(_ c: Character) -> Bool {
            guard i < s.count, s[i] == c.asciiValue! else { return false }
            i += 1
            return true
        }
        guard let y = num(4), expect("-"), let mo = num(2), expect("-"), let d = num(2) else { return nil }
        var h = 0, mi = 0, sec = 0, nanos = 0, offset = 0
        if i < s.count {
            guard s[i] == UInt8(ascii: "T") || s[i] == UInt8(ascii: " ") else { return nil }
            i += 1
            guard let hh = num(2), expect(":"), let mm = num(2) else { return nil }
            h = hh; mi = mm
            if expect(":") {
                guard let ss = num(2) else { return nil }
                sec = ss
                if expect(".") {
                    var digits = 0
                    while i < s.count, s[i] >= 48, s[i] <= 57 {
                        if digits < 9 { nanos = nanos * 10 + Int(s[i] - 48); digits += 1 }
                        i += 1
                    }
                    guard digits > 0 else { return nil }
                    for _ in digits..<9 { nanos *= 10 }
                }
            }
            if i < s.count {
                if expect("Z") {
                } else if s[i] == UInt8(ascii: "+") || s[i] == UInt8(ascii: "-") {
                    let sign = s[i] == UInt8(ascii: "+") ? 1 : -1
                    i += 1
                    guard let oh = num(2) else { return nil }
                    _ = expect(":")
                    guard let om = num(2) else { return nil }
                    offset = sign * (oh * 3600 + om * 60)
                } else {
                    return nil
                }
            }
        }
        guard i == s.count, (1...12).contains(mo), (1...31).contains(d), h < 24, mi < 60, sec < 61 else { return nil }
        var t = tm()
        t.tm_year = Int32(y - 1900)
        t.tm_mon = Int32(mo - 1)
        t.tm_mday = Int32(d)
        t.tm_hour = Int32(h)
        t.tm_min = Int32(mi)
        t.tm_sec = Int32(sec)
        let epoch = timegm(&t)
        self.init(seconds: Int64(epoch) - Int64(offset), nanoseconds: Int32(nanos))
    }
}
