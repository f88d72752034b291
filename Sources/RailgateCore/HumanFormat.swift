/// Text for people: the one place the command line's human output gets its units, ranges,
/// plurals and columns, so every command says `3.4 KiB`, `1h02m`, `seqs 12-16` and `1 record`
/// the same way. Pure functions, no I/O; safe from any thread. Machine-readable output
/// (`--json`) never goes through here.
public enum HumanFormat {
    /// Bytes in binary units: `512 B`, `1.5 KiB`, `64 MiB`, `2.0 GiB`. One decimal below 10 of a
    /// unit, none from 10 up; a value that rounds to 1024 of a unit moves to the next one.
    public static func bytes(_ count: Int) -> String {
        if count < 0 { return "-" + bytes(-count) }
        if count < 1024 { return "\(count) B" }
        let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        var value = Double(count) / 1024
        var index = 0
        while index < units.count - 1, value.rounded() >= 1024 {
            value /= 1024
            index += 1
        }
        if value < 9.95 { return "\(oneDecimal(value)) \(units[index])" }
        return "\(Int(value.rounded())) \(units[index])"
    }

    /// A duration as a person says it, the two largest units: `0s`, `45s`, `3m05s`, `1h02m`,
    /// `2d03h`. Whole seconds (truncated); negative durations get a `-`.
    public static func duration(seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        if seconds < 0 { return "-" + duration(seconds: -seconds) }
        let whole = seconds >= Double(Int.max) ? Int.max : Int(seconds)
        if whole < 60 { return "\(whole)s" }
        if whole < 3600 { return "\(whole / 60)m\(twoDigits(whole % 60))s" }
        if whole < 86_400 { return "\(whole / 3600)h\(twoDigits(whole / 60 % 60))m" }
        return "\(whole / 86_400)d\(twoDigits(whole / 3600 % 24))h"
    }

    /// A short time in milliseconds: `850 ms` below a second, `1.2 s` below 10 s, then as
    /// `duration(seconds:)`.
    public static func milliseconds(_ ms: Double) -> String {
        guard ms.isFinite else { return "?" }
        if ms < 0 { return "-" + milliseconds(-ms) }
        if ms < 999.5 { return "\(Int(ms.rounded())) ms" }
        if ms < 9950 { return "\(oneDecimal(ms / 1000)) s" }
        return duration(seconds: ms / 1000)
    }

    /// An inclusive range of numbers: `12-16`, `12` when both ends are one number, `none` when
    /// `last` is below `first` (an empty range).
    public static func range<N: BinaryInteger>(_ first: N, _ last: N) -> String {
        if last < first { return "none" }
        if first == last { return "\(first)" }
        return "\(first)-\(last)"
    }

    /// A count with its noun, plural right: `0 records`, `1 record`, `2 batches`
    /// (`plural` for nouns that do not take an `s`).
    public static func count<N: BinaryInteger>(_ number: N, _ singular: String, plural: String? = nil) -> String {
        "\(number) \(number == 1 ? singular : plural ?? singular + "s")"
    }

    /// A value with its unit, as a profile names it: `41.5 degC`, `5 bar`; `%` follows the
    /// number directly; no unit (nil or empty), the value alone.
    public static func quantity(_ value: String, unit: String?) -> String {
        guard let unit, !unit.isEmpty else { return value }
        return unit == "%" ? value + unit : "\(value) \(unit)"
    }

    /// A share as a whole percentage of `whole`: `0%`, `42%`, `100%` (`whole` 0 is 0%).
    public static func percent(_ part: Double, of whole: Double) -> String {
        guard whole > 0, part.isFinite else { return "0%" }
        return "\(Int((part / whole * 100).rounded()))%"
    }

    /// A rate in bytes per hour: `1.5 KiB/h`.
    public static func bytesPerHour(_ rate: Double) -> String {
        guard rate.isFinite else { return "?" }
        return bytes(Int(rate.rounded())) + "/h"
    }

    /// Rows laid out in aligned columns, two spaces apart, each column as wide as its widest
    /// cell; columns in `rightAligned` (0-based) are padded on the left (numbers). Trailing
    /// spaces are trimmed; rows may have fewer cells than others.
    public static func columns(_ rows: [[String]], rightAligned: Set<Int> = [], indent: String = "") -> [String] {
        let columnCount = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columnCount)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        return rows.map { row in
            var line = indent
            for (index, cell) in row.enumerated() {
                if index > 0 { line += "  " }
                let padding = String(repeating: " ", count: widths[index] - cell.count)
                line += rightAligned.contains(index) ? padding + cell : cell + padding
            }
            while line.last == " " { line.removeLast() }
            return line
        }
    }

    private static func oneDecimal(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    private static func twoDigits(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
}

/// "Did you mean": the nearest of a set of known names to a misspelt one.
public enum NameSuggestion {
    /// The candidate closest to `word` by edit distance (insertions, deletions, substitutions
    /// and swaps of neighbours each count 1; case ignored), if it is close enough to be a slip
    /// rather than another word: at most 1 edit for words up to 4 characters, 2 up to 8, else 3.
    /// Ties go to the first candidate in order.
    public static func closest(to word: String, among candidates: some Sequence<String>) -> String? {
        let limit = word.count <= 4 ? 1 : word.count <= 8 ? 2 : 3
        var best: (name: String, distance: Int)?
        for candidate in candidates where candidate != word {
            let distance = editDistance(word.lowercased(), candidate.lowercased())
            if distance <= limit, distance < (best?.distance ?? .max) { best = (candidate, distance) }
        }
        return best?.name
    }

    /// The optimal string alignment distance between `a` and `b` (Levenshtein plus the swap of
    /// two neighbouring characters as one edit), over characters.
    public static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previousPrevious = [Int](repeating: 0, count: b.count + 1)
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    current[j] = min(current[j], previousPrevious[j - 2] + 1)
                }
            }
            (previousPrevious, previous, current) = (previous, current, previousPrevious)
        }
        return previous[b.count]
    }
}
