/// One problem found in a configuration or profile file, printed as `FILE:LINE: message`.
public struct ConfigProblem: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    /// 1-based line, or nil when the problem concerns the file as a whole.
    public var line: Int?
    public var message: String

    public init(file: String, line: Int?, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    /// `FILE:LINE: message` on one line: control characters a message quotes from the file
    /// (a key or value with `\n` in it) are shown escaped, so each problem stays one line.
    public var description: String {
        var text = ""
        for scalar in message.unicodeScalars {
            switch scalar {
            case "\n": text += "\\n"
            case "\r": text += "\\r"
            case "\t": text += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                text += "\\u{\(String(scalar.value, radix: 16, uppercase: true))}"
            default: text.unicodeScalars.append(scalar)
            }
        }
        if let line, line > 0 { return "\(file):\(line): \(text)" }
        return "\(file): \(text)"
    }
}

/// All problems found while loading a configuration; loading reports every problem, not the first.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var problems: [ConfigProblem]

    public init(_ problems: [ConfigProblem]) { self.problems = problems }

    public var description: String { problems.map(\.description).joined(separator: "\n") }
}

extension TOMLParser {
    /// Parses `text` read from `file`; a syntax error comes back as one `FILE:LINE` problem.
    public static func parse(_ text: String, file: String) throws(ConfigErrors) -> TOMLTable {
        do {
            return try parse(text)
        } catch {
            throw ConfigErrors([ConfigProblem(file: file, line: error.line, message: error.message)])
        }
    }

    /// Parses the bytes of `file` (invalid UTF-8 is a `FILE:LINE` problem, not replaced).
    public static func parse(bytes: [UInt8], file: String) throws(ConfigErrors) -> TOMLTable {
        do {
            return try parse(bytes: bytes)
        } catch {
            throw ConfigErrors([ConfigProblem(file: file, line: error.line, message: error.message)])
        }
    }
}

/// Collects problems for one file while its tables are decoded.
final class ProblemLog {
    let file: String
    private(set) var problems: [ConfigProblem] = []

    init(file: String) { self.file = file }

    func report(_ line: Int?, _ message: String) {
        problems.append(ConfigProblem(file: file, line: line, message: message))
    }
}

/// Reads typed keys out of one TOML table, reporting wrong types, out-of-range values and,
/// at `finish()`, every key it was not asked for (a misspelt key must not be silently ignored).
struct TableReader {
    let table: TOMLTable
    /// How the table is named in messages: "[upstream]", "[[device]] 'axlebox-1'".
    let context: String
    let log: ProblemLog
    private var consumed: Set<String> = []

    init(_ table: TOMLTable, context: String, log: ProblemLog) {
        self.table = table
        self.context = context
        self.log = log
    }

    func line(of key: String) -> Int? { table[key]?.line ?? (table.line > 0 ? table.line : nil) }

    /// Whether `key` is present; it counts as consumed (the caller reports it if misplaced).
    mutating func has(_ key: String) -> Bool {
        consumed.insert(key)
        return table[key] != nil
    }

    mutating func string(_ key: String, required: Bool = false) -> String? {
        guard let value = take(key, required: required) else { return nil }
        guard case .string(let text) = value.kind else {
            return wrongType(key, value, expected: "a string")
        }
        return text
    }

    mutating func integer<I: FixedWidthInteger>(
        _ key: String, in range: ClosedRange<I>, required: Bool = false, as type: I.Type = I.self
    ) -> I? {
        guard let value = take(key, required: required) else { return nil }
        guard case .integer(let number) = value.kind else {
            return wrongType(key, value, expected: "an integer")
        }
        guard let converted = I(exactly: number), range.contains(converted) else {
            log.report(value.line, "\(key) = \(number) is out of range (\(range.lowerBound)...\(range.upperBound))")
            return nil
        }
        return converted
    }

    /// A float key; integers are accepted too (`scale = 1`).
    mutating func double(_ key: String, required: Bool = false, finite: Bool = true) -> Double? {
        guard let value = take(key, required: required) else { return nil }
        let number: Double
        switch value.kind {
        case .float(let x): number = x
        case .integer(let n): number = Double(n)
        default: return wrongType(key, value, expected: "a number")
        }
        if finite, !number.isFinite {
            log.report(value.line, "\(key) must be a finite number")
            return nil
        }
        return number
    }

    mutating func bool(_ key: String) -> Bool? {
        guard let value = take(key, required: false) else { return nil }
        guard case .bool(let flag) = value.kind else { return wrongType(key, value, expected: "true or false") }
        return flag
    }

    /// A string key restricted to `choices`.
    mutating func choice(_ key: String, _ choices: [String], required: Bool = false) -> String? {
        guard let text = string(key, required: required) else { return nil }
        guard choices.contains(text) else {
            log.report(line(of: key), "\(key) = \"\(text)\" is not one of \(choices.joined(separator: ", "))")
            return nil
        }
        return text
    }

    mutating func stringArray(_ key: String) -> [String]? {
        guard let value = take(key, required: false) else { return nil }
        guard case .array(let elements) = value.kind else {
            return wrongType(key, value, expected: "an array of strings")
        }
        var strings: [String] = []
        for element in elements {
            guard case .string(let text) = element.kind else {
                log.report(element.line, "\(key) must hold strings only, found \(element.typeName)")
                return nil
            }
            strings.append(text)
        }
        return strings
    }

    /// An array of integers (decimal, hex `0x7FFF`, ...), each with its line; nil if absent.
    mutating func integerArray(_ key: String) -> [(value: Int64, line: Int)]? {
        guard let value = take(key, required: false) else { return nil }
        guard case .array(let elements) = value.kind else {
            return wrongType(key, value, expected: "an array of integers")
        }
        var integers: [(value: Int64, line: Int)] = []
        for element in elements {
            guard case .integer(let number) = element.kind else {
                log.report(element.line, "\(key) must hold integers only, found \(element.typeName)")
                return nil
            }
            integers.append((number, element.line))
        }
        return integers
    }

    /// The sub-table at `key` (for `[gateway]` and friends), or nil if absent.
    mutating func table(_ key: String) -> TOMLTable? {
        guard let value = take(key, required: false) else { return nil }
        guard case .table(let sub) = value.kind else { return wrongType(key, value, expected: "a table ([\(key)])") }
        return sub
    }

    /// The tables of an array of tables (`[[device]]`), or an empty list.
    mutating func tables(_ key: String) -> [TOMLTable] {
        guard let value = take(key, required: false) else { return [] }
        guard case .array(let elements) = value.kind else {
            return wrongType(key, value, expected: "an array of tables ([[\(key)]])") ?? []
        }
        var tables: [TOMLTable] = []
        for element in elements {
            guard case .table(let sub) = element.kind else {
                log.report(element.line, "\(key) must hold tables ([[\(key)]]), found \(element.typeName)")
                continue
            }
            tables.append(sub)
        }
        return tables
    }

    /// Reports every key of the table that no accessor consumed, with the nearest known key
    /// ("did you mean") when one is close; at the top of a file a table is named as a section.
    func finish() {
        for key in table.keys where !consumed.contains(key) {
            let suggestion = NameSuggestion.closest(to: key, among: consumed.sorted())
            var section: (String, String)?
            if table.line == 0, let value = table[key] {
                switch value.kind {
                case .table: section = ("[", "]")
                case .array(let elements)
                where elements.contains(where: { if case .table = $0.kind { true } else { false } }):
                    section = ("[[", "]]")
                default: break
                }
            }
            if let (open, close) = section {
                log.report(
                    table[key]?.line,
                    "unknown section \(open)\(key)\(close) in \(context)"
                        + (suggestion.map { "; did you mean \(open)\($0)\(close)?" } ?? ""))
            } else {
                log.report(
                    table[key]?.line,
                    "unknown key '\(key)' in \(context)" + (suggestion.map { "; did you mean '\($0)'?" } ?? ""))
            }
        }
    }

    private mutating func take(_ key: String, required: Bool) -> TOMLValue? {
        consumed.insert(key)
        guard let value = table[key] else {
            if required {
                log.report(table.line > 0 ? table.line : nil, "\(context) is missing the required key '\(key)'")
            }
            return nil
        }
        return value
    }

    private func wrongType<T>(_ key: String, _ value: TOMLValue, expected: String) -> T? {
        log.report(value.line, "\(key) must be \(expected), found \(value.typeName)")
        return nil
    }
}
