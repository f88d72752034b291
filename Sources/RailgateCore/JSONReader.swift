/// Reads JSON text into `JSON` (objects keep their key order). For the technician's tools that
/// turn the daemon's documents into text; strict enough to reject garbage with a message.
public struct JSONReader {
    private let bytes: [UInt8]
    private var index = 0
    /// Objects and arrays open around the current position.
    private var depth = 0
    /// The deepest nesting read: railgate's documents are a few levels deep, and a damaged file
    /// of brackets must be a syntax error, not a stack overflow (one stack frame per level).
    public static let maxDepth = 64

    /// A description of where and why the text is not JSON.
    public struct SyntaxError: Error, CustomStringConvertible {
        public var offset: Int
        public var message: String
        public var description: String { "invalid JSON at byte \(offset): \(message)" }
    }

    public static func parse(_ text: String) throws(SyntaxError) -> JSON {
        var reader = JSONReader(bytes: Array(text.utf8))
        let value = try reader.value()
        reader.skipSpace()
        guard reader.index == reader.bytes.count else { throw reader.fail("trailing characters") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private mutating func value() throws(SyntaxError) -> JSON {
        skipSpace()
        guard index < bytes.count else { throw fail("unexpected end") }
        let opens = bytes[index] == UInt8(ascii: "{") || bytes[index] == UInt8(ascii: "[")
        if opens {
            guard depth < Self.maxDepth else { throw fail("nested deeper than \(Self.maxDepth) levels") }
            depth += 1
        }
        defer { if opens { depth -= 1 } }
        switch bytes[index] {
        case UInt8(ascii: "{"):
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
        case UInt8(ascii: "["):
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
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "n"): return try literal("null", .null)
        default:
            return try number()
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

    private mutating func number() throws(SyntaxError) -> JSON {
        let start = index
        while index < bytes.count, "+-.eE0123456789".utf8.contains(bytes[index]) { index += 1 }
        let text = String(decoding: bytes[start..<index], as: UTF8.self)
        if let integer = Int64(text) { return .integer(integer) }
        if let unsigned = UInt64(text) { return .unsigned(unsigned) }
        guard !text.isEmpty, let double = Double(text) else { throw fail("unexpected character") }
        return .number(double)
    }

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
            if byte == UInt8(ascii: "\\") {
                scalars.append(contentsOf: String(decoding: bytes[run..<index], as: UTF8.self).unicodeScalars)
                guard index + 1 < bytes.count else { throw fail("unterminated escape") }
                let escaped = bytes[index + 1]
                index += 2
                switch escaped {
                case UInt8(ascii: "n"): scalars.append("\n")
                case UInt8(ascii: "t"): scalars.append("\t")
                case UInt8(ascii: "r"): scalars.append("\r")
                case UInt8(ascii: "b"): scalars.append("\u{08}")
                case UInt8(ascii: "f"): scalars.append("\u{0C}")
                case UInt8(ascii: "u"):
                    guard index + 4 <= bytes.count,
                        let code = UInt32(String(decoding: bytes[index..<(index + 4)], as: UTF8.self), radix: 16)
                    else { throw fail("bad \\u escape") }
                    index += 4
                    scalars.append(Unicode.Scalar(code) ?? "\u{FFFD}")
                default: scalars.append(Unicode.Scalar(escaped))
                }
                run = index
                continue
            }
            index += 1
        }
        throw fail("unterminated string")
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
