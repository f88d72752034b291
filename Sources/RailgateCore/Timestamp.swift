/// A wall-clock instant in milliseconds since the Unix epoch (UTC), as records carry it.
public struct Timestamp: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var millisecondsSinceEpoch: Int64

    public init(millisecondsSinceEpoch: Int64) { self.millisecondsSinceEpoch = millisecondsSinceEpoch }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.millisecondsSinceEpoch < rhs.millisecondsSinceEpoch
    }

    /// RFC 3339 in UTC with milliseconds: `2026-11-29T02:40:00.123Z`.
    public var description: String { format(withMilliseconds: true) }

    /// RFC 3339 in UTC, to the second: `2026-11-29T02:39:58Z` (the birth message's `started`).
    public var secondsDescription: String { format(withMilliseconds: false) }

    private func format(withMilliseconds: Bool) -> String {
        var text = [UInt8]()
        text.reserveCapacity(24)
        write(to: &text, withMilliseconds: withMilliseconds)
        return String(decoding: text, as: UTF8.self)
    }

    /// Appends the RFC 3339 form to `text`.
    public func write(to text: inout [UInt8], withMilliseconds: Bool) {
        let millis = millisecondsSinceEpoch
        let seconds = millis >= 0 ? millis / 1000 : (millis - 999) / 1000
        let milliseconds = Int(millis - seconds * 1000)
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = Int(seconds - days * 86_400)
        let (year, month, day) = Timestamp.civil(fromDays: days)
        func digits(_ value: Int, _ width: Int) {
            var divisor = 1
            for _ in 1..<width { divisor *= 10 }
            while divisor > 0 {
                text.append(UInt8(ascii: "0") + UInt8(value / divisor % 10))
                divisor /= 10
            }
        }
        digits(Int(year), 4)
        text.append(UInt8(ascii: "-"))
        digits(month, 2)
        text.append(UInt8(ascii: "-"))
        digits(day, 2)
        text.append(UInt8(ascii: "T"))
        digits(secondOfDay / 3600, 2)
        text.append(UInt8(ascii: ":"))
        digits(secondOfDay / 60 % 60, 2)
        text.append(UInt8(ascii: ":"))
        digits(secondOfDay % 60, 2)
        if withMilliseconds {
            text.append(UInt8(ascii: "."))
            digits(milliseconds, 3)
        }
        text.append(UInt8(ascii: "Z"))
    }

    /// Year, month, day of a day count since 1970-01-01 (H. Hinnant's civil_from_days).
    static func civil(fromDays days: Int64) -> (Int64, Int, Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}
