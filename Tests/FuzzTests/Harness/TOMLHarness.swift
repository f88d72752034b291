import RailgateCore

/// Any bytes through the TOML reader parse or throw `TOMLSyntaxError` (with a line within the
/// text): no crash, no stack overflow, no more than linear time.
enum TOMLHarness {
    static func check(_ bytes: [UInt8]) -> [String] {
        var violations = Violations()
        do {
            _ = try TOMLParser.parse(bytes: bytes)
        } catch {
            let lines = bytes.reduce(1) { $0 + ($1 == 10 ? 1 : 0) }
            violations.check(error.line >= 1 && error.line <= lines, "syntax error on line \(error.line) of \(lines)")
        }
        return violations.messages
    }
}

/// Any text through the JSON reader parses or throws; what parses reads back the same once
/// serialised.
enum JSONHarness {
    static func check(_ bytes: [UInt8]) -> [String] {
        var violations = Violations()
        let text = String(decoding: bytes, as: UTF8.self)
        if let value = try? JSONReader.parse(text) {
            do {
                let again = try JSONReader.parse(value.serialized)
                violations.check(again == value, "\(value.serialized) reads back as \(again.serialized)")
            } catch {
                violations.check(false, "the serialisation \(value.serialized) does not parse: \(error)")
            }
        }
        return violations.messages
    }
}
