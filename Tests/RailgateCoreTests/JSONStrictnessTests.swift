import Testing

@testable import RailgateCore

@Suite("JSON reader strict as RFC 8259")
struct JSONStrictnessTests {
    @Test(
        "escapes, numbers and characters JSON does not have are refused at their byte",
        arguments: [
            (#""\x41""#, 1, "invalid escape \\x"),
            (#""\'""#, 1, "invalid escape \\'"),
            (#"["ok", "a\qb"]"#, 9, "invalid escape \\q"),
            (#""\u41""#, 1, "\\u needs four hex digits"),
            (#""\u004""#, 1, "\\u needs four hex digits"),
            (#""\u+041""#, 1, "\\u needs four hex digits"),
            (#""\u00g1""#, 1, "\\u needs four hex digits"),
            (#""\uD83D""#, 1, "lone surrogate \\uD83D"),
            (#""\uD83Dx""#, 1, "lone surrogate \\uD83D"),
            (#""\uD83D\u0041""#, 1, "lone surrogate \\uD83D"),
            (#""\uDE00""#, 1, "lone surrogate \\uDE00"),
            ("\"a\u{1}b\"", 2, "control character U+0001"),
            ("\"a\nb\"", 2, "control character U+000A"),
            ("+1", 0, "unexpected character"),
            ("01", 1, "must not start with 0"),
            ("-", 1, "a digit must follow '-'"),
            ("1.", 2, "a digit must follow '.'"),
            (".5", 0, "unexpected character"),
            ("1e", 2, "exponent"),
            ("[1e400]", 1, "out of range"),
            ("1-2", 1, "trailing characters"),
        ])
    func refused(_ text: String, _ offset: Int, _ message: String) {
        do {
            let value = try JSONReader.parse(text)
            Issue.record("accepted \(text.debugDescription) as \(value.serialized)")
        } catch {
            #expect(error.offset == offset, "\(error)")
            #expect(error.message.contains(message), "\(error)")
            #expect(error.description.hasPrefix("invalid JSON at byte \(offset): "))
        }
    }

    @Test("every escape JSON has is read; a surrogate pair is one character")
    func escapes() throws {
        let value = try JSONReader.parse(#""\" \\ \/ \b \f \n \r \t \u0041 \u00e9 \uD83D\uDE00 \u20AC""#)
        #expect(value.stringValue == "\" \\ / \u{8} \u{C} \n \r \t A é 😀 €")
        // What the writer escapes reads back.
        let text = "tab\t nul\u{0} quote\" backslash\\ emoji 😀"
        #expect(try JSONReader.parse(JSON.string(text).serialized).stringValue == text)
    }

    @Test("numbers as RFC 8259 writes them", arguments: ["0", "-0", "12", "-12.5e3", "1E+2", "0.001", "1e-7"])
    func numbers(_ text: String) throws {
        let value = try JSONReader.parse(text)
        #expect(value.doubleValue == Double(text))
    }

    @Test("integers keep their exactness: 2^63 and beyond up to 2^64-1 are unsigned")
    func integers() throws {
        #expect(try JSONReader.parse("9223372036854775807") == .integer(.max))
        #expect(try JSONReader.parse("-9223372036854775808") == .integer(.min))
        #expect(try JSONReader.parse("18446744073709551615") == .unsigned(.max))
        #expect(try JSONReader.parse("18446744073709551616") == .number(18_446_744_073_709_551_616))
    }
}
