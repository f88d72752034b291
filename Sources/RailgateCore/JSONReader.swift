/// Reads JSON text into `JSON` (objects keep their key order). For the technician's tools that
/// turn the daemon's documents into text; strict enough to reject garbage with a message.
/// Bounded: nesting deeper than `maxDepth` (arrays and objects) or text longer than `maxBytes`
/// is a `SyntaxError`, never a stack overflow.
public struct JSONReader {
    /// Deepest nesting of arrays and objects accepted (railgate's own documents nest 4 deep).
    public static let maxDepth = 256
    /// Largest text accepted, in bytes (64 MiB).
    public static let maxBytes = 64 << 20

    private let bytes: [UInt8]
    private var index = 0
    private var depth = 0

    /// A description of where and why the text is not JSON.
    public struct SyntaxError: Error, CustomStringConvertible {
        public var offset: Int
        public var message: String
        public var description: String { "invalid JSON at byte \(offset): \(message)" }
    }

    public static func parse(_ text: String) throws(SyntaxError) -> JSON {
        var reader = JSONReader(bytes: Array(text.utf8))
        guard reader.bytes.count <= maxBytes else { throw reader.fail("more than \(maxBytes) bytes") }
        let value = try reader.value()
        reader.skipSpace()
        guard reader.index == reader.bytes.count else { throw reader.fail("trailing characters") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private mutating func value() throws(SyntaxError) -> JSON {
        skipSpace()
        guard index < bytes.count else { throw fail("unexpected end") }
        switch bytes[index] {
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            depth += 1
            defer { depth -= 1 }
            guard depth <= Self.maxDepth else { throw fail("nested deeper than \(Self.maxDepth)") }
            return try bytes[index] == UInt8(ascii: "{") ? object() : array()
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .null)
        default:
            return try number()
        }
    }

    private mutating func object() throws(SyntaxError) -> JSON {
        index += 1
        var members: [(String, JSON)] = []
        skipSpace()
        if peek(UInt8(ascii: "}")) { return .object(members) }
        while true {
            skipSpace()
            guard peek(UInt8(ascii: "\""), consume: false) else { throw fail("expected a key") }
            let key = try string()
            skipSpace()
            guard peek(UInt8(ascii: ":")) else { throw fail("expected ':'") }
            members.append((key, try value()))
            skipSpace()
            if peek(UInt8(ascii: ",")) { continue }
            guard peek(UInt8(ascii: "}")) else { throw fail("expected ',' or '}'") }
            return .object(members)
        }
    }

    private mutating func array() throws(SyntaxError) -> JSON {
        index += 1
        var elements: [JSON] = []
        skipSpace()
        if peek(UInt8(ascii: "]")) { return .array(elements) }
        while true {
            elements.append(try value())
            skipSpace()
            if peek(UInt8(ascii: ",")) { continue }
            guard peek(UInt8(ascii: "]")) else { throw fail("expected ',' or ']'") }
            return .array(elements)
        }
    }

    private mutating func literal(_ word: String, _ value: JSON) throws(SyntaxError) -> JSON {
        let expected = Array(word.utf8)
        guard index + expected.count <= bytes.count, Array(bytes[index..<(index + expected.count)]) == expected else {
            throw fail("unexpected character")
        }
        index += expected.count
        return value
    }

    /// A number as RFC 8259 writes it: `-? (0 | [1-9][0-9]*) (.[0-9]+)? ([eE][+-]?[0-9]+)?`; no
    /// leading `+` or zeros, no bare `.5` or `1.`, nothing beyond a Double's range.
    private mutating func number() throws(SyntaxError) -> JSON {
        let start = index
        func digits() -> Int {
            let first = index
            while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 { index += 1 }
            return index - first
        }
        _ = peek(UInt8(ascii: "-"))
        guard index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 else {
            throw index == start ? fail("unexpected character") : fail("a digit must follow '-'")
        }
        if peek(UInt8(ascii: "0")) {
            guard index >= bytes.count || bytes[index] < 0x30 || bytes[index] > 0x39 else {
                throw fail("a number must not start with 0")
            }
        } else {
            _ = digits()
        }
        var integral = true
        if peek(UInt8(ascii: ".")) {
            integral = false
            guard digits() > 0 else { throw fail("a digit must follow '.'") }
        }
        if peek(UInt8(ascii: "e")) || peek(UInt8(ascii: "E")) {
            integral = false
            if !peek(UInt8(ascii: "+")) { _ = peek(UInt8(ascii: "-")) }
            guard digits() > 0 else { throw fail("a digit must follow the exponent's 'e'") }
        }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        if integral, let integer = Int64(text) { return .integer(integer) }
        if integral, let unsigned = UInt64(text) { return .unsigned(unsigned) }
        guard let double = Double(text), double.isFinite else {
            throw SyntaxError(offset: start, message: "number \(text) is out of range")
        }
        return .number(double)
    }

    /// A string; escapes are those of RFC 8259 only (`\" \\ \/ \b \f \n \r \t` and `\u` with
    /// four hex digits, a surrogate pair for characters beyond U+FFFF). Another escape (`\x41`,
    /// `\'`), a `\u` with fewer digits, a lone surrogate or a raw control character is an error
    /// at its byte.
    private mutating func string() throws(SyntaxError) -> String {
        index += 1
        var scalars = String.UnicodeScalarView()
        var run = index
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                scalars.append(contentsOf: String(decoding: bytes[run..<index], as: UTF8.self).unicodeScalars)
                index += 1
                return String(scalars)
            }
            if byte < 0x20 {
                throw fail("control character U+00\(Self.hex(byte)) in a string (JSON writes it escaped)")
            }
            if byte == UInt8(ascii: "\\") {
                scalars.append(contentsOf: String(decoding: bytes[run..<index], as: UTF8.self).unicodeScalars)
                scalars.append(try escape())
                run = index
                continue
            }
            index += 1
        }
        throw fail("unterminated string")
    }

    /// The escape at `index` (a backslash), consumed.
    private mutating func escape() throws(SyntaxError) -> Unicode.Scalar {
        let start = index
        guard index + 1 < bytes.count else { throw fail("unterminated escape") }
        let escaped = bytes[index + 1]
        index += 2
        switch escaped {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): return Unicode.Scalar(escaped)
        case UInt8(ascii: "n"): return "\n"
        case UInt8(ascii: "t"): return "\t"
        case UInt8(ascii: "r"): return "\r"
        case UInt8(ascii: "b"): return "\u{08}"
        case UInt8(ascii: "f"): return "\u{0C}"
        case UInt8(ascii: "u"):
            let unit = try hexQuad(escapeAt: start)
            switch unit {
            case 0xD800...0xDBFF:
                let low = index
                guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
                else {
                    throw SyntaxError(
                        offset: start, message: "lone surrogate \\u\(Self.hex(unit)) (no low surrogate after it)")
                }
                index += 2
                let second = try hexQuad(escapeAt: low)
                guard (0xDC00...0xDFFF).contains(second) else {
                    throw SyntaxError(
                        offset: start,
                        message: "lone surrogate \\u\(Self.hex(unit)) (followed by \\u\(Self.hex(second)))")
                }
                return Unicode.Scalar(0x10000 + (UInt32(unit) - 0xD800) << 10 + (UInt32(second) - 0xDC00))!
            case 0xDC00...0xDFFF:
                throw SyntaxError(
                    offset: start, message: "lone surrogate \\u\(Self.hex(unit)) (no high surrogate before it)")
            default:
                return Unicode.Scalar(unit)!
            }
        default:
            let shown = escaped >= 0x20 && escaped < 0x7F ? String(UnicodeScalar(escaped)) : "\\u{\(Self.hex(escaped))}"
            throw SyntaxError(
                offset: start,
                message: "invalid escape \\\(shown) (JSON has \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)")
        }
    }

    /// Four hex digits at `index` (after `\u`), consumed.
    private mutating func hexQuad(escapeAt start: Int) throws(SyntaxError) -> UInt16 {
        var value: UInt16 = 0
        for offset in 0..<4 {
            guard index + offset < bytes.count, let digit = ModbusASCII.value(ofHexDigit: bytes[index + offset]) else {
                throw SyntaxError(offset: start, message: "\\u needs four hex digits")
            }
            value = value << 4 | UInt16(digit)
        }
        index += 4
        return value
    }

    private static func hex<T: BinaryInteger>(_ value: T) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, (value.bitWidth > 8 ? 4 : 2) - digits.count)) + digits
    }

    private mutating func skipSpace() {
        while index < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[index]) { index += 1 }
    }

    private mutating func peek(_ byte: UInt8, consume: Bool = true) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        if consume { index += 1 }
        return true
    }

    private func fail(_ message: String) -> SyntaxError { SyntaxError(offset: index, message: message) }
}

extension JSON {
    /// The member `key` of an object, or nil.
    public subscript(key: String) -> JSON? {
        guard case .object(let members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }

    public var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    public var doubleValue: Double? {
        switch self {
        case .integer(let i): Double(i)
        case .unsigned(let u): Double(u)
        case .number(let d): d
        default: nil
        }
    }

    /// The value as an Int, for whole numbers.
    public var intValue: Int? {
        switch self {
        case .integer(let i): Int(exactly: i)
        case .unsigned(let u): Int(exactly: u)
        case .number(let d): Int(exactly: d)
        default: nil
        }
    }

    public var arrayValue: [JSON]? {
        if case .array(let elements) = self { return elements }
        return nil
    }

    /// The value as it would print in a table: strings bare, everything else as JSON.
    public var plainText: String { stringValue ?? serialized }
}

extension Timestamp {
    /// Parses the RFC 3339 UTC form records carry: `2026-11-29T02:40:00.123Z` (or without millis).
    public init?(parsing text: String) {
        let digits = Array(text.utf8)
        func number(_ range: Range<Int>) -> Int64? {
            guard range.upperBound <= digits.count else { return nil }
            var value: Int64 = 0
            for byte in digits[range] {
                guard byte >= 0x30, byte <= 0x39 else { return nil }
                value = value * 10 + Int64(byte - 0x30)
            }
            return value
        }
        guard digits.count >= 20, digits.last == UInt8(ascii: "Z"), let year = number(0..<4), let month = number(5..<7),
            let day = number(8..<10), let hour = number(11..<13), let minute = number(14..<16),
            let second = number(17..<19)
        else { return nil }
        var millis: Int64 = 0
        if digits.count == 24 {
            guard let fraction = number(20..<23) else { return nil }
            millis = fraction
        }
        // days_from_civil (H. Hinnant)
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        self.init(millisecondsSinceEpoch: ((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + millis)
    }
}
