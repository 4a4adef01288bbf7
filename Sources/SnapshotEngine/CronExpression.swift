import Foundation

/// A five-field cron expression (minute hour day-of-month month day-of-week) with `*`,
/// lists, ranges and steps, and names for months and weekdays; Sunday is 0 or 7. As in
/// Vixie cron, when both day fields are restricted a day matches either.
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    public let text: String
    let minutes: Set<Int>
    let hours: Set<Int>
    let days: Set<Int>
    let months: Set<Int>
    let weekdays: Set<Int>
    let daysRestricted: Bool
    let weekdaysRestricted: Bool

    public var description: String { text }

    public enum ParseError: Error, CustomStringConvertible, Equatable {
        case fields(Int)
        case field(String, String)

        public var description: String {
            switch self {
            case .fields(let n): return "a cron expression has 5 fields (minute hour day month weekday), not \(n)"
            case .field(let name, let value): return "bad \(name) field \"\(value)\""
            }
        }
    }

    public init(_ text: String) throws {
        self.text = text
        let f = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard f.count == 5 else { throw ParseError.fields(f.count) }
        let monthNames = ["jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12]
        let dayNames = ["sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6]
        minutes = try Self.parse(f[0], "minute", 0...59, [:])
        hours = try Self.parse(f[1], "hour", 0...23, [:])
        days = try Self.parse(f[2], "day-of-month", 1...31, [:])
        months = try Self.parse(f[3], "month", 1...12, monthNames)
        weekdays = Set(try Self.parse(f[4], "day-of-week", 0...7, dayNames).map { $0 % 7 })
        daysRestricted = f[2] != "*"
        weekdaysRestricted = f[4] != "*"
    }

    static func parse(_ field: String, _ name: String, _ range: ClosedRange<Int>, _ names: [String: Int]) throws -> Set<Int> {
        var out = Set<Int>()
        func value(_ s: String) throws -> Int {
            if let v = Int(s), range.contains(v) { return v }
            if let v = names[s.lowercased()] { return v }
            throw ParseError.field(name, field)
        }
        for part in field.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
            var base = part
            var step = 1
            if let slash = part.firstIndex(of: "/") {
                base = String(part[..<slash])
                guard let s = Int(part[part.index(after: slash)...]), s > 0 else { throw ParseError.field(name, field) }
                step = s
            }
            var lo = range.lowerBound, hi = range.upperBound
            if base != "*" {
                if let dash = base.firstIndex(of: "-") {
                    lo = try value(String(base[..<dash]))
                    hi = try value(String(base[base.index(after: dash)...]))
                } else {
                    lo = try value(base)
                    hi = part.contains("/") ? range.upperBound : lo
                }
            }
            guard lo <= hi else { throw ParseError.field(name, field) }
            out.formUnion(stride(from: lo, through: hi, by: step))
        }
        return out
    }

    func matches(_ c: DateComponents) -> Bool {
        guard minutes.contains(c.minute!), hours.contains(c.hour!), months.contains(c.month!) else { return false }
        let dayOK = days.contains(c.day!)
        let weekdayOK = weekdays.contains(c.weekday! - 1)
        if daysRestricted && weekdaysRestricted { return dayOK || weekdayOK }
        return dayOK && weekdayOK
    }

    /// The first time strictly after `date` that matches, in `timeZone`; nil if none within
    /// five years (an impossible date such as 30 February).
    public func next(after date: Date, in timeZone: TimeZone) -> Date? {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        var t = Date(timeIntervalSince1970: (date.timeIntervalSince1970 / 60).rounded(.down) * 60 + 60)
        let end = date.addingTimeInterval(5 * 366 * 86400)
        while t < end {
            let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: t)
            if !months.contains(c.month!) {
                t = calendar.date(from: DateComponents(year: c.year, month: c.month! + 1, day: 1, hour: 0, minute: 0)) ?? t.addingTimeInterval(86400)
                continue
            }
            let dayOK = daysRestricted && weekdaysRestricted ? (days.contains(c.day!) || weekdays.contains(c.weekday! - 1)) : (days.contains(c.day!) && weekdays.contains(c.weekday! - 1))
            if !dayOK {
                t = calendar.date(from: DateComponents(year: c.year, month: c.month, day: c.day! + 1, hour: 0, minute: 0)) ?? t.addingTimeInterval(86400)
                continue
            }
            if !hours.contains(c.hour!) {
                t = calendar.date(from: DateComponents(year: c.year, month: c.month, day: c.day, hour: c.hour! + 1, minute: 0)) ?? t.addingTimeInterval(3600)
                continue
            }
            if matches(c) { return t }
            t = t.addingTimeInterval(60)
        }
        return nil
    }
}
