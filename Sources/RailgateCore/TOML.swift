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
}

/// A syntax error in a TOML document.
public struct TOMLSyntaxError: Error, Equatable {
    public var line: Int
    public var message: String
}

/// Reads TOML 1.0 documents: tables, arrays of tables, dotted and quoted keys, basic and literal
/// strings (multi-line too), integers (decimal, hex, octal, binary), floats, booleans, arrays and
/// inline tables. Dates and times are refused with a clear message: no railgate key takes one.
public struct TOMLParser {
    private let bytes: [UInt8]
    private var index = 0
    private var line = 1
    /// Arrays and inline tables open around the current position.
    private var depth = 0
    /// The deepest nesting of arrays and inline tables read: a file of brackets is a syntax error,
    /// not a stack overflow (one stack frame per level).
    public static let maxDepth = 64

    /// Parses `text` into its root table or throws the first `TOMLSyntaxError`.
    public static func parse(_ text: String) throws(TOMLSyntaxError) -> TOMLTable {
        var parser = TOMLParser(bytes: Array(text.utf8))
        return try parser.document()
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

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
        advance()
        let isArray = peek() == UInt8(ascii: "[")
        if isArray { advance() }
        skipSpaces()
        let path = try key()
        skipSpaces()
        try expect("]")
        if isArray { try expect("]") }

        var table = root
        for component in path.dropLast() {
            table = try descend(table, component, line: headerLine)
        }
        let last = path[path.count - 1]
        if isArray {
            let element = TOMLTable(line: headerLine)
            element.isExplicitlyDefined = true
            if let existing = table[last] {
                guard case .array(var elements) = existing.kind, elements.allSatisfy(\.isTable) else {
                    throw fail("'\(last)' is already defined as \(existing.typeName) on line \(existing.line)")
                }
                elements.append(TOMLValue(kind: .table(element), line: headerLine))
                table.set(last, TOMLValue(kind: .array(elements), line: existing.line))
            } else {
                table.set(
                    last,
                    TOMLValue(kind: .array([TOMLValue(kind: .table(element), line: headerLine)]), line: headerLine))
            }
            return element
        }
        if let existing = table[last] {
            guard case .table(let existingTable) = existing.kind, !existingTable.isExplicitlyDefined,
                !existingTable.isSealed
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
        case .array(let elements):
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
        let value = try self.value(line: keyLine)
        var target = table
        for component in path.dropLast() {
            if let existing = target[component] {
                // Dotted keys may extend a table made by other dotted keys, never a [header] or inline one.
                guard case .table(let child) = existing.kind, !child.isExplicitlyDefined, !child.isSealed else {
                    throw fail("'\(component)' is already defined as \(existing.typeName) on line \(existing.line)")
                }
                target = child
            } else {
                let created = TOMLTable(line: keyLine)
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
                guard index > start else { throw fail("expected a key, found '\(Character(Unicode.Scalar(byte)))'") }
                components.append(String(decoding: bytes[start..<index], as: UTF8.self))
            }
            skipSpaces()
            guard peek() == UInt8(ascii: ".") else { return components }
            advance()
        }
    }

    // MARK: Values

    private mutating func value(line valueLine: Int) throws(TOMLSyntaxError) -> TOMLValue {
        guard let byte = peek() else { throw fail("expected a value") }
        let opens = byte == UInt8(ascii: "[") || byte == UInt8(ascii: "{")
        if opens {
            guard depth < Self.maxDepth else {
                throw fail("arrays and inline tables nested deeper than \(Self.maxDepth)")
            }
            depth += 1
        }
        defer { if opens { depth -= 1 } }
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
            let found = peek().map { String(Character(Unicode.Scalar($0))) } ?? "end of file"
            throw fail("expected a value, found '\(found)'; strings must be quoted")
        }
        if token.contains(":") || (token.count >= 10 && token.dropFirst(4).first == "-" && token.first != "-") {
            throw fail("dates and times are not used by railgate; quote the value if it is text")
        }
        let hasSign = token.first == "+" || token.first == "-"
        let unsigned = hasSign ? String(token.dropFirst()) : token
        let negative = token.first == "-"
        switch unsigned {
        case "inf": return .float(negative ? -.infinity : .infinity)
        case "nan": return .float(.nan)
        default: break
        }
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] where unsigned.hasPrefix(prefix) {
            guard !hasSign, let value = Int64(try digits(String(unsigned.dropFirst(2)), token), radix: radix) else {
                throw fail("'\(token)' is not a valid integer")
            }
            return .integer(value)
        }
        let cleaned = try digits(unsigned, token)
        if cleaned.count > 1, cleaned.first == "0", cleaned.allSatisfy(\.isNumber) {
            throw fail("'\(token)': leading zeros are not allowed in TOML integers")
        }
        if cleaned.allSatisfy(\.isNumber) {
            guard let value = Int64((negative ? "-" : "") + cleaned) else {
                throw fail("'\(token)' does not fit in a 64-bit integer")
            }
            return .integer(value)
        }
        guard let value = Double((negative ? "-" : "") + cleaned), cleaned.first?.isNumber == true,
            cleaned.last?.isNumber == true, !cleaned.contains(".e"), !cleaned.contains(".E")
        else {
            throw fail("'\(token)' is not a valid number")
        }
        return .float(value)
    }

    /// Removes TOML's digit-group underscores, which must sit between two digits.
    private func digits(_ text: String, _ token: String) throws(TOMLSyntaxError) -> String {
        let characters = Array(text)
        for (offset, character) in characters.enumerated() where character == "_" {
            let before = offset > 0 ? characters[offset - 1] : " "
            let after = offset + 1 < characters.count ? characters[offset + 1] : " "
            guard before.isHexDigit, after.isHexDigit else { throw fail("'\(token)': misplaced underscore") }
        }
        return characters.filter { $0 != "_" }.map(String.init).joined()
    }

    private mutating func array() throws(TOMLSyntaxError) -> [TOMLValue] {
        advance()  // [
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
                scalars.append(contentsOf: String(decoding: bytes[run..<(end - 3)], as: UTF8.self).unicodeScalars)
                index = end
                return String(scalars)
            }
            if byte == UInt8(ascii: "\\") {
                scalars.append(contentsOf: String(decoding: bytes[run..<index], as: UTF8.self).unicodeScalars)
                if let next = self.byte(at: index + 1),
                    next == UInt8(ascii: "\n") || next == UInt8(ascii: " ")
                        || next == UInt8(ascii: "\t") || next == UInt8(ascii: "\r")
                {
                    advance()
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
                let text = String(decoding: bytes[start..<(end - 3)], as: UTF8.self)
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
                let code = UInt32(String(decoding: bytes[index..<(index + length)], as: UTF8.self), radix: 16),
                let scalar = Unicode.Scalar(code)
            else { throw fail("invalid unicode escape") }
            index += length
            return scalar
        default:
            throw fail("invalid escape '\\\(Character(Unicode.Scalar(byte)))'")
        }
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
            let found = peek().map { "'\(Character(Unicode.Scalar($0)))'" } ?? "end of file"
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
