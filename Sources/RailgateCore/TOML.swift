/// A parsed TOML value together with the line it was written on, so that configuration
/// problems can be reported as `FILE:LINE: message`.
public struct TOMLValue {
    /// What the value is.
    public enum Kind {
        case string(String)
        case integer(Int64)
        case float(Double)
        case bool(Bool)
        case array([TOMLValue])
        case table(TOMLTable)
    }

    public var kind: Kind
    /// 1-based line of the key (or array element) that holds this value.
    public var line: Int

    /// The TOML type name, for messages ("expected an integer, found a string").
    public var typeName: String {
        switch kind {
        case .string: "a string"
        case .integer: "an integer"
        case .float: "a float"
        case .bool: "a boolean"
        case .array: "an array"
        case .table: "a table"
        }
    }
}

/// A TOML table: keys in the order they were written, each with its value and line.
public final class TOMLTable {
    public private(set) var keys: [String] = []
    private var values: [String: TOMLValue] = [:]
    /// Line of the `[header]` (or of the key, for an implicit or inline table); 0 for the root.
    public let line: Int
    fileprivate var isExplicitlyDefined = false
    fileprivate var isSealed = false  // inline tables and dotted-key parents may not be reopened
    /// The section (counted from 1 at each header) whose dotted keys created this table, if any:
    /// only that section's dotted keys may extend it, and no `[header]` may define it (TOML 1.0).
    fileprivate var dottedKeySection: Int?
    /// Keys of this table that hold an array of tables (`[[key]]`), which later headers may extend.
    fileprivate var arraysOfTables: Set<String> = []

    init(line: Int) { self.line = line }

    public subscript(key: String) -> TOMLValue? { values[key] }

    /// The number at `key` (an integer or a float), for small readers like scenario files.
    public func number(_ key: String) -> Double? {
        switch values[key]?.kind {
        case .integer(let value)?: Double(value)
        case .float(let value)?: value
        default: nil
        }
    }

    /// The string at `key`, if it is one.
    public func string(_ key: String) -> String? {
        if case .string(let value)? = values[key]?.kind { return value }
        return nil
    }

    fileprivate func set(_ key: String, _ value: TOMLValue) {
        if values[key] == nil { keys.append(key) }
        values[key] = value
    }

    /// Appends `element` to the array of tables at `key` in place (amortised O(1): the array is
    /// taken out of the dictionary first so that appending does not copy it).
    fileprivate func appendTable(_ element: TOMLValue, to key: String) {
        guard var holder = values.removeValue(forKey: key), case .array(var elements) = holder.kind else { return }
        holder.kind = .bool(false)  // drop the holder's reference to the array's storage
        elements.append(element)
        holder.kind = .array(elements)
        values[key] = holder
    }
}

/// Bounds on what `TOMLParser` accepts, so that no input can exhaust the stack, memory or time.
public struct TOMLLimits: Sendable {
    /// Largest document in bytes (default 4 MiB; railgate's configs and profiles are a few KiB).
    public var maxBytes = 4 << 20
    /// Longest line in bytes, newline excluded (default 64 KiB).
    public var maxLineBytes = 64 << 10
    /// Deepest nesting of arrays and inline tables, and most components in one dotted key (default 64).
    public var maxDepth = 64
    /// Most keys and `[[table]]` elements in the whole document (default 100,000).
    public var maxKeys = 100_000

    public init() {}
}

/// A syntax error in a TOML document.
public struct TOMLSyntaxError: Error, Equatable {
    public var line: Int
    public var message: String
}

/// Reads TOML 1.0 documents: tables, arrays of tables, dotted and quoted keys, basic and literal
/// strings (multi-line too), integers (decimal, hex, octal, binary), floats, booleans, arrays and
/// inline tables. Dates and times are refused with a clear message: no railgate key takes one.
///
/// Bounded by `TOMLLimits` (size, line length, nesting depth, key count): a document past a limit
/// is a `TOMLSyntaxError` naming the line, never a stack overflow. Strict like TOML 1.0: control
/// characters other than tab (a bare CR too) and invalid UTF-8 are refused; a leading UTF-8
/// byte-order mark is skipped. Time is linear in the document's size.
public struct TOMLParser {
    private let bytes: [UInt8]
    private let limits: TOMLLimits
    private var index = 0
    private var line = 1
    private var depth = 0
    private var keyCount = 0
    private var section = 0

    /// Parses `text` into its root table or throws the first `TOMLSyntaxError`.
    public static func parse(_ text: String, limits: TOMLLimits = TOMLLimits()) throws(TOMLSyntaxError) -> TOMLTable {
        try parse(bytes: Array(text.utf8), limits: limits)
    }

    /// Parses the UTF-8 bytes of a document (invalid UTF-8 is a syntax error on its line).
    public static func parse(bytes: [UInt8], limits: TOMLLimits = TOMLLimits()) throws(TOMLSyntaxError) -> TOMLTable {
        guard bytes.count <= limits.maxBytes else {
            throw TOMLSyntaxError(
                line: 1, message: "the document has \(bytes.count) bytes, more than \(limits.maxBytes)")
        }
        var parser = TOMLParser(bytes: bytes, limits: limits)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { parser.index = 3 }
        try parser.checkCharacters()
        return try parser.document()
    }

    private init(bytes: [UInt8], limits: TOMLLimits) {
        self.bytes = bytes
        self.limits = limits
    }

    /// One pass before parsing: valid UTF-8, no control character but tab, LF and CR-LF, no line
    /// longer than the limit. TOML allows no other control character anywhere, in strings and
    /// comments too.
    private func checkCharacters() throws(TOMLSyntaxError) {
        var position = index
        var lineNumber = 1
        var lineStart = position
        func failure(_ message: String) -> TOMLSyntaxError { TOMLSyntaxError(line: lineNumber, message: message) }
        while position < bytes.count {
            let byte = bytes[position]
            if byte < 0x80 {
                if byte == 0x0A {
                    lineNumber += 1
                    lineStart = position + 1
                } else if byte == 0x0D {
                    guard position + 1 < bytes.count, bytes[position + 1] == 0x0A else {
                        throw failure("a carriage return not followed by a newline")
                    }
                } else if (byte < 0x20 && byte != 0x09) || byte == 0x7F {
                    throw failure(
                        "control character U+\(String(byte, radix: 16, uppercase: true)) (write it as an escape)")
                }
                position += 1
            } else {
                let length = utf8SequenceLength(at: position)
                guard length > 0 else { throw failure("invalid UTF-8 at byte \(position)") }
                position += length
            }
            if position - lineStart > limits.maxLineBytes + 1 {
                throw failure("line longer than \(limits.maxLineBytes) bytes")
            }
        }
    }

    /// Length of the well-formed UTF-8 sequence starting at `position` (lead byte >= 0x80), or 0.
    private func utf8SequenceLength(at position: Int) -> Int {
        let lead = bytes[position]
        let length: Int
        var low: UInt8 = 0x80
        var high: UInt8 = 0xBF
        switch lead {
        case 0xC2...0xDF: length = 2
        case 0xE0:
            length = 3
            low = 0xA0
        case 0xE1...0xEC, 0xEE...0xEF: length = 3
        case 0xED:
            length = 3
            high = 0x9F
        case 0xF0:
            length = 4
            low = 0x90
        case 0xF1...0xF3: length = 4
        case 0xF4:
            length = 4
            high = 0x8F
        default: return 0
        }
        guard position + length <= bytes.count else { return 0 }
        let second = bytes[position + 1]
        guard second >= low, second <= high else { return 0 }
        for offset in 2..<length where bytes[position + offset] & 0xC0 != 0x80 { return 0 }
        return length
    }

    /// Counts one more key (or `[[table]]` element) against `TOMLLimits.maxKeys`.
    private mutating func countKey() throws(TOMLSyntaxError) {
        keyCount += 1
        guard keyCount <= limits.maxKeys else { throw fail("more than \(limits.maxKeys) keys") }
    }

    /// Enters one level of array or inline-table nesting, bounded by `TOMLLimits.maxDepth`.
    private mutating func enterNesting() throws(TOMLSyntaxError) {
        depth += 1
        guard depth <= limits.maxDepth else {
            throw fail("arrays and inline tables nested deeper than \(limits.maxDepth)")
        }
    }

    // MARK: Document structure

    private mutating func document() throws(TOMLSyntaxError) -> TOMLTable {
        let root = TOMLTable(line: 0)
        var current = root
        while true {
            skipWhitespaceCommentsAndNewlines()
            guard let byte = peek() else { return root }
            if byte == UInt8(ascii: "[") {
                current = try tableHeader(root: root)
            } else {
                try keyValue(into: current)
            }
            try endOfLine()
        }
    }

    private mutating func tableHeader(root: TOMLTable) throws(TOMLSyntaxError) -> TOMLTable {
        let headerLine = line
        section += 1
        advance()
        let isArray = peek() == UInt8(ascii: "[")
        if isArray { advance() }
        skipSpaces()
        let path = try key()
        skipSpaces()
        try expect("]")
        if isArray { try expect("]") }
        try countKey()

        var table = root
        for component in path.dropLast() {
            table = try descend(table, component, line: headerLine)
        }
        let last = path[path.count - 1]
        if isArray {
            let element = TOMLTable(line: headerLine)
            element.isExplicitlyDefined = true
            let value = TOMLValue(kind: .table(element), line: headerLine)
            if table.arraysOfTables.contains(last) {
                // No copy of the array may be alive here, or appending would copy it (quadratic).
                table.appendTable(value, to: last)
            } else if let existing = table[last] {
                throw fail("'\(last)' is already defined as \(existing.typeName) on line \(existing.line)")
            } else {
                table.set(last, TOMLValue(kind: .array([value]), line: headerLine))
                table.arraysOfTables.insert(last)
            }
            return element
        }
        if let existing = table[last] {
            guard case .table(let existingTable) = existing.kind, !existingTable.isExplicitlyDefined,
                !existingTable.isSealed, existingTable.dottedKeySection == nil
            else {
                throw fail("[\(path.joined(separator: "."))] is defined twice (first on line \(existing.line))")
            }
            existingTable.isExplicitlyDefined = true
            return existingTable
        }
        let created = TOMLTable(line: headerLine)
        created.isExplicitlyDefined = true
        table.set(last, TOMLValue(kind: .table(created), line: headerLine))
        return created
    }

    /// Follows one key component from `table` for a header, creating implicit tables and
    /// entering the last element of an array of tables.
    private mutating func descend(
        _ table: TOMLTable, _ component: String, line: Int
    ) throws(TOMLSyntaxError)
        -> TOMLTable
    {
        guard let existing = table[component] else {
            let created = TOMLTable(line: line)
            table.set(component, TOMLValue(kind: .table(created), line: line))
            return created
        }
        switch existing.kind {
        case .table(let child) where !child.isSealed:
            return child
        case .array(let elements) where table.arraysOfTables.contains(component):
            if let lastElement = elements.last, case .table(let child) = lastElement.kind, !child.isSealed {
                return child
            }
            fallthrough
        default:
            throw fail("'\(component)' is already defined as \(existing.typeName) on line \(existing.line)")
        }
    }

    private mutating func keyValue(into table: TOMLTable) throws(TOMLSyntaxError) {
        let keyLine = line
        let path = try key()
        skipSpaces()
        try expect("=")
        skipSpaces()
        try countKey()
        let value = try self.value(line: keyLine)
        var target = table
        for component in path.dropLast() {
            if let existing = target[component] {
                // Dotted keys may extend a table made by dotted keys of the same section (or an
                // implicit one), never a [header], an array of tables or an inline table.
                guard case .table(let child) = existing.kind, !child.isExplicitlyDefined, !child.isSealed,
                    child.dottedKeySection == nil || child.dottedKeySection == section
                else {
                    throw fail("'\(component)' is already defined as \(existing.typeName) on line \(existing.line)")
                }
                target = child
            } else {
                let created = TOMLTable(line: keyLine)
                created.dottedKeySection = section
                target.set(component, TOMLValue(kind: .table(created), line: keyLine))
                target = created
            }
        }
        let last = path[path.count - 1]
        if let existing = target[last] {
            throw fail("'\(path.joined(separator: "."))' is defined twice (first on line \(existing.line))")
        }
        target.set(last, value)
    }

    private mutating func key() throws(TOMLSyntaxError) -> [String] {
        var components: [String] = []
        while true {
            skipSpaces()
            guard let byte = peek() else { throw fail("expected a key") }
            switch byte {
            case UInt8(ascii: "\""):
                components.append(try basicString())
            case UInt8(ascii: "'"):
                components.append(try literalString())
            default:
                let start = index
                while let b = peek(), b.isBareKeyCharacter { advance() }
                guard index > start else { throw fail("expected a key, found \(describeTOMLByte(byte))") }
                components.append(String(decoding: bytes[start..<index], as: UTF8.self))
            }
            skipSpaces()
            guard peek() == UInt8(ascii: ".") else { return components }
            guard components.count < limits.maxDepth else { throw fail("a key of more than \(limits.maxDepth) parts") }
            advance()
        }
    }

    // MARK: Values

    private mutating func value(line valueLine: Int) throws(TOMLSyntaxError) -> TOMLValue {
        guard let byte = peek() else { throw fail("expected a value") }
        switch byte {
        case UInt8(ascii: "\""):
            if starts(with: "\"\"\"") { return TOMLValue(kind: .string(try multilineBasicString()), line: valueLine) }
            return TOMLValue(kind: .string(try basicString()), line: valueLine)
        case UInt8(ascii: "'"):
            if starts(with: "'''") { return TOMLValue(kind: .string(try multilineLiteralString()), line: valueLine) }
            return TOMLValue(kind: .string(try literalString()), line: valueLine)
        case UInt8(ascii: "["):
            return TOMLValue(kind: .array(try array()), line: valueLine)
        case UInt8(ascii: "{"):
            return TOMLValue(kind: .table(try inlineTable(line: valueLine)), line: valueLine)
        case UInt8(ascii: "t"), UInt8(ascii: "f"):
            if starts(with: "true") {
                index += 4
                return TOMLValue(kind: .bool(true), line: valueLine)
            }
            if starts(with: "false") {
                index += 5
                return TOMLValue(kind: .bool(false), line: valueLine)
            }
            throw fail("expected a value; strings must be quoted")
        default:
            return TOMLValue(kind: try number(), line: valueLine)
        }
    }

    private mutating func number() throws(TOMLSyntaxError) -> TOMLValue.Kind {
        let start = index
        while let b = peek(), b.isNumberCharacter { advance() }
        let token = String(decoding: bytes[start..<index], as: UTF8.self)
        guard !token.isEmpty else {
            let found = peek().map(describeTOMLByte) ?? "end of file"
            throw fail("expected a value, found \(found); strings must be quoted")
        }
        let shape = Array(token.utf8.prefix(8)).map { $0 >= 0x30 && $0 <= 0x39 ? UInt8(ascii: "9") : $0 }
        if token.contains(":") || shape == Array("9999-99-".utf8) {
            throw fail("dates and times are not used by railgate; quote the value if it is text")
        }
        var scanner = NumberScanner(bytes: Array(token.utf8))
        switch scanner.scan() {
        case .value(let kind): return kind
        case .tooLarge: throw fail("'\(token)' does not fit in a 64-bit integer")
        case .leadingZero: throw fail("'\(token)': leading zeros are not allowed in TOML numbers")
        case .invalid: throw fail("'\(token)' is not a valid TOML number")
        }
    }

    private mutating func array() throws(TOMLSyntaxError) -> [TOMLValue] {
        advance()  // [
        try enterNesting()
        defer { depth -= 1 }
        var elements: [TOMLValue] = []
        while true {
            skipWhitespaceCommentsAndNewlines()
            if peek() == UInt8(ascii: "]") {
                advance()
                return elements
            }
            elements.append(try value(line: line))
            skipWhitespaceCommentsAndNewlines()
            switch peek() {
            case UInt8(ascii: ","): advance()
            case UInt8(ascii: "]"):
                advance()
                return elements
            default: throw fail("expected ',' or ']' in an array")
            }
        }
    }

    private mutating func inlineTable(line tableLine: Int) throws(TOMLSyntaxError) -> TOMLTable {
        advance()  // {
        try enterNesting()
        defer { depth -= 1 }
        let table = TOMLTable(line: tableLine)
        skipSpaces()
        if peek() == UInt8(ascii: "}") {
            advance()
            table.isSealed = true
            return table
        }
        while true {
            skipSpaces()
            try keyValue(into: table)
            skipSpaces()
            switch peek() {
            case UInt8(ascii: ","): advance()
            case UInt8(ascii: "}"):
                advance()
                table.isSealed = true
                return table
            default: throw fail("expected ',' or '}' in an inline table (inline tables stay on one line)")
            }
        }
    }

    // MARK: Strings

    private mutating func basicString() throws(TOMLSyntaxError) -> String {
        advance()  // "
        var scalars = String.UnicodeScalarView()
        var run = index
        func flush(_ p: inout TOMLParser, _ s: inout String.UnicodeScalarView, to end: Int) {
            s.append(contentsOf: String(decoding: p.bytes[run..<end], as: UTF8.self).unicodeScalars)
        }
        while let byte = peek() {
            switch byte {
            case UInt8(ascii: "\""):
                flush(&self, &scalars, to: index)
                advance()
                return String(scalars)
            case UInt8(ascii: "\\"):
                flush(&self, &scalars, to: index)
                scalars.append(try escape())
                run = index
            case UInt8(ascii: "\n"):
                throw fail("unterminated string (use \"\"\" for text over several lines)")
            default:
                advance()
            }
        }
        throw fail("unterminated string")
    }

    private mutating func multilineBasicString() throws(TOMLSyntaxError) -> String {
        index += 3
        skipOneNewline()
        var scalars = String.UnicodeScalarView()
        var run = index
        while let byte = peek() {
            if starts(with: "\"\"\"") {
                var end = index + 3
                while end < bytes.count, bytes[end] == UInt8(ascii: "\""), end - index < 5 { end += 1 }
                scalars.append(contentsOf: multilineText(run..<(end - 3)).unicodeScalars)
                index = end
                return String(scalars)
            }
            if byte == UInt8(ascii: "\\") {
                scalars.append(contentsOf: multilineText(run..<index).unicodeScalars)
                if let next = self.byte(at: index + 1),
                    next == UInt8(ascii: "\n") || next == UInt8(ascii: " ")
                        || next == UInt8(ascii: "\t") || next == UInt8(ascii: "\r")
                {
                    // A line-ending backslash: only spaces may sit between it and the newline.
                    advance()
                    skipSpaces()
                    guard peek() == UInt8(ascii: "\n") || peek() == UInt8(ascii: "\r") else {
                        throw fail("a backslash followed by spaces must end the line in a multi-line string")
                    }
                    skipWhitespaceAndNewlines()
                } else {
                    scalars.append(try escape())
                }
                run = index
                continue
            }
            if byte == UInt8(ascii: "\n") { line += 1 }
            advance()
        }
        throw fail("unterminated multi-line string")
    }

    private mutating func literalString() throws(TOMLSyntaxError) -> String {
        advance()  // '
        let start = index
        while let byte = peek() {
            if byte == UInt8(ascii: "'") {
                let text = String(decoding: bytes[start..<index], as: UTF8.self)
                advance()
                return text
            }
            if byte == UInt8(ascii: "\n") { throw fail("unterminated literal string") }
            advance()
        }
        throw fail("unterminated literal string")
    }

    private mutating func multilineLiteralString() throws(TOMLSyntaxError) -> String {
        index += 3
        skipOneNewline()
        let start = index
        while let byte = peek() {
            if starts(with: "'''") {
                var end = index + 3
                while end < bytes.count, bytes[end] == UInt8(ascii: "'"), end - index < 5 { end += 1 }
                let text = multilineText(start..<(end - 3))
                index = end
                return text
            }
            if byte == UInt8(ascii: "\n") { line += 1 }
            advance()
        }
        throw fail("unterminated multi-line literal string")
    }

    private mutating func escape() throws(TOMLSyntaxError) -> Unicode.Scalar {
        advance()  // backslash
        guard let byte = peek() else { throw fail("unterminated escape") }
        advance()
        switch byte {
        case UInt8(ascii: "b"): return "\u{08}"
        case UInt8(ascii: "t"): return "\t"
        case UInt8(ascii: "n"): return "\n"
        case UInt8(ascii: "f"): return "\u{0C}"
        case UInt8(ascii: "r"): return "\r"
        case UInt8(ascii: "\""): return "\""
        case UInt8(ascii: "\\"): return "\\"
        case UInt8(ascii: "u"), UInt8(ascii: "U"):
            let length = byte == UInt8(ascii: "u") ? 4 : 8
            guard index + length <= bytes.count,
                bytes[index..<(index + length)].allSatisfy({ $0.hexDigitValue != nil }),
                let code = UInt32(String(decoding: bytes[index..<(index + length)], as: UTF8.self), radix: 16),
                let scalar = Unicode.Scalar(code)
            else { throw fail("invalid unicode escape") }
            index += length
            return scalar
        default:
            guard (0x20..<0x7F).contains(byte) else {
                throw fail("invalid escape: a backslash followed by \(describeTOMLByte(byte))")
            }
            throw fail("invalid escape '\\\(Character(Unicode.Scalar(byte)))'")
        }
    }

    /// Raw text of a multi-line string with CR-LF read as LF, as TOML lets parsers normalise
    /// (and tomllib does). Every raw CR is followed by LF here: `checkCharacters` refused the rest.
    private func multilineText(_ range: Range<Int>) -> String {
        let raw = bytes[range]
        guard raw.contains(0x0D) else { return String(decoding: raw, as: UTF8.self) }
        return String(decoding: raw.filter { $0 != 0x0D }, as: UTF8.self)
    }

    // MARK: Lexing helpers

    private func peek() -> UInt8? { index < bytes.count ? bytes[index] : nil }
    private func byte(at position: Int) -> UInt8? { position < bytes.count ? bytes[position] : nil }
    private mutating func advance() { index += 1 }

    private func starts(with text: StaticString) -> Bool {
        let count = text.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        return text.withUTF8Buffer { Array($0) == Array(bytes[index..<(index + count)]) }
    }

    private mutating func expect(_ character: Unicode.Scalar) throws(TOMLSyntaxError) {
        guard peek() == UInt8(ascii: character) else {
            let found = peek().map(describeTOMLByte) ?? "end of file"
            throw fail("expected '\(character)', found \(found)")
        }
        advance()
    }

    private mutating func skipSpaces() {
        while let b = peek(), b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") { advance() }
    }

    private mutating func skipOneNewline() {
        if peek() == UInt8(ascii: "\r") { advance() }
        if peek() == UInt8(ascii: "\n") {
            advance()
            line += 1
        }
    }

    private mutating func skipWhitespaceAndNewlines() {
        while let b = peek(), b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") || b == UInt8(ascii: "\r") || b == 10 {
            if b == 10 { line += 1 }
            advance()
        }
    }

    private mutating func skipWhitespaceCommentsAndNewlines() {
        while true {
            skipWhitespaceAndNewlines()
            guard peek() == UInt8(ascii: "#") else { return }
            while let b = peek(), b != 10 { advance() }
        }
    }

    /// After a key/value pair or a header only a comment may follow on the same line.
    private mutating func endOfLine() throws(TOMLSyntaxError) {
        skipSpaces()
        if peek() == UInt8(ascii: "#") {
            while let b = peek(), b != 10 { advance() }
        }
        if peek() == UInt8(ascii: "\r") { advance() }
        guard let b = peek() else { return }
        guard b == 10 else { throw fail("unexpected text after the value; one key = value per line") }
    }

    private func fail(_ message: String) -> TOMLSyntaxError { TOMLSyntaxError(line: line, message: message) }
}

extension TOMLValue {
    fileprivate var isTable: Bool {
        if case .table = kind { return true }
        return false
    }
}

extension UInt8 {
    fileprivate var isBareKeyCharacter: Bool {
        (self >= 0x41 && self <= 0x5A) || (self >= 0x61 && self <= 0x7A) || (self >= 0x30 && self <= 0x39)
            || self == UInt8(ascii: "_") || self == UInt8(ascii: "-")
    }

    fileprivate var isNumberCharacter: Bool {
        isBareKeyCharacter || self == UInt8(ascii: "+") || self == UInt8(ascii: ".") || self == UInt8(ascii: ":")
    }
}

/// Reads one TOML number token exactly as TOML 1.0's grammar defines it: a sign only on decimals,
/// `0x`/`0o`/`0b` in lower case, underscores only between two digits, no leading zeros, a float
/// needs digits on both sides of the point and after the exponent.
private struct NumberScanner {
    enum Result {
        case value(TOMLValue.Kind)
        case tooLarge
        case leadingZero
        case invalid
    }

    let bytes: [UInt8]
    var index = 0

    mutating func scan() -> Result {
        var negative = false
        var signed = false
        if let first = bytes.first, first == UInt8(ascii: "+") || first == UInt8(ascii: "-") {
            negative = first == UInt8(ascii: "-")
            signed = true
            index = 1
        }
        let rest = bytes[index...]
        if rest.elementsEqual("inf".utf8) { return .value(.float(negative ? -.infinity : .infinity)) }
        if rest.elementsEqual("nan".utf8) { return .value(.float(.nan)) }
        if rest.count > 2, rest.first == UInt8(ascii: "0") {
            let radix: UInt64? =
                switch bytes[index + 1] {
                case UInt8(ascii: "x"): 16
                case UInt8(ascii: "o"): 8
                case UInt8(ascii: "b"): 2
                default: nil
                }
            if let radix {
                guard !signed else { return .invalid }
                index += 2
                guard let digits = digitRun(radix: radix), index == bytes.count else { return .invalid }
                var value: UInt64 = 0
                for digit in digits {
                    let (shifted, overflow) = value.multipliedReportingOverflow(by: radix)
                    guard !overflow, shifted + digit <= UInt64(Int64.max) else { return .tooLarge }
                    value = shifted + digit
                }
                return .value(.integer(Int64(value)))
            }
        }
        guard let integerPart = digitRun(radix: 10) else { return .invalid }
        if integerPart.count > 1, integerPart.first == 0 { return .leadingZero }
        var text = (negative ? "-" : "") + integerPart.map(String.init).joined()
        var isFloat = false
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard let fraction = digitRun(radix: 10) else { return .invalid }
            text += "." + fraction.map(String.init).joined()
            isFloat = true
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            var exponentSign = ""
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                exponentSign = bytes[index] == UInt8(ascii: "-") ? "-" : "+"
                index += 1
            }
            guard let exponent = digitRun(radix: 10) else { return .invalid }
            text += "e" + exponentSign + exponent.map(String.init).joined()
            isFloat = true
        }
        guard index == bytes.count else { return .invalid }
        if isFloat {
            guard let value = Double(text) else { return .invalid }
            return .value(.float(value))
        }
        guard let value = Int64(text) else { return .tooLarge }
        return .value(.integer(value))
    }

    /// Digits of `radix` from `index`, with single underscores between digits; nil if none or misplaced.
    private mutating func digitRun(radix: UInt64) -> [UInt64]? {
        var digits: [UInt64] = []
        while index < bytes.count {
            if let digit = bytes[index].hexDigitValue.map(UInt64.init), digit < radix {
                digits.append(digit)
                index += 1
            } else if bytes[index] == UInt8(ascii: "_"), !digits.isEmpty, index + 1 < bytes.count,
                let next = bytes[index + 1].hexDigitValue, UInt64(next) < radix
            {
                index += 1
            } else {
                break
            }
        }
        return digits.isEmpty ? nil : digits
    }
}

extension UInt8 {
    /// The value of an ASCII hex digit (lower or upper case), or nil.
    fileprivate var hexDigitValue: Int? {
        switch self {
        case 0x30...0x39: Int(self - 0x30)
        case 0x41...0x46: Int(self - 0x41 + 10)
        case 0x61...0x66: Int(self - 0x61 + 10)
        default: nil
        }
    }
}

/// A byte of a TOML document as a syntax error names it, on one line: `'x'` for a printable
/// ASCII character, `end of line` for LF, the byte in hex for anything else (control
/// characters, a byte of a multi-byte UTF-8 sequence).
func describeTOMLByte(_ byte: UInt8) -> String {
    switch byte {
    case UInt8(ascii: "\n"): return "end of line"
    case UInt8(ascii: "\r"): return "a carriage return (0x0D)"
    case UInt8(ascii: "\t"): return "a tab"
    case 0x20..<0x7F: return "'\(Character(Unicode.Scalar(byte)))'"
    default:
        let hex = String(byte, radix: 16, uppercase: true)
        return "byte 0x\(hex.count == 1 ? "0" + hex : hex)"
    }
}
