import Testing

@testable import RailgateCore

@Suite("TOML reader")
struct TOMLTests {
    @Test("tables, arrays of tables, dotted keys and every value type")
    func parsesDocument() throws {
        let root = try TOMLParser.parse(
            """
            # comment
            title = "railgate" # trailing comment
            literal = 'C:\\path'
            hex = 0xFF
            big = 1_000_000
            negative = -17
            ratio = 6.02e2
            off = false
            list = [1, 2,
              3, # comment inside
            ]
            inline = { a = 1, b = "two" }
            site.name = "Altynkol"

            [gateway]
            id = "KZ-WAG-00042"

            [[device]]
            name = "a"
            [[device]]
            name = "b"
            text = \"\"\"
            two
            lines\"\"\"
            escaped = "tab\\tquote\\" \\u00e9"
            """)
        #expect(value(root["title"]) == "railgate")
        #expect(value(root["literal"]) == "C:\\path")
        #expect(integer(root["hex"]) == 255)
        #expect(integer(root["big"]) == 1_000_000)
        #expect(integer(root["negative"]) == -17)
        if case .float(let ratio) = root["ratio"]?.kind { #expect(ratio == 602) } else { Issue.record("ratio") }
        if case .bool(let off) = root["off"]?.kind { #expect(!off) } else { Issue.record("off") }
        if case .array(let list) = root["list"]?.kind { #expect(list.count == 3) } else { Issue.record("list") }
        guard case .table(let site) = root["site"]?.kind, case .table(let gateway) = root["gateway"]?.kind,
            case .array(let devices) = root["device"]?.kind, case .table(let second) = devices.last?.kind,
            case .table(let inline) = root["inline"]?.kind
        else {
            Issue.record("structure")
            return
        }
        #expect(value(inline["b"]) == "two")
        #expect(value(site["name"]) == "Altynkol")
        #expect(value(gateway["id"]) == "KZ-WAG-00042")
        #expect(devices.count == 2)
        #expect(value(second["text"]) == "two\nlines")
        #expect(value(second["escaped"]) == "tab\tquote\" é")
        #expect(gateway["id"]?.line == 16)
        #expect(second["name"]?.line == 21)
    }

    @Test(
        "syntax errors name their line",
        arguments: [
            ("a = 1\nb = \n", 2),
            ("a = 1\na = 2\n", 2),
            ("[x]\n[x]\n", 2),
            ("a = \"open\n", 1),
            ("ok = true\nx = yes\n", 2),
            ("a = 1 b = 2\n", 1),
            ("a = 01\n", 1),
            ("when = 2026-11-29\n", 1),
            ("n = 1__0\n", 1),
            ("[a]\nb = 1\n[a.b]\n", 3),
        ])
    func syntaxErrors(_ text: String, _ line: Int) {
        #expect(throws: TOMLSyntaxError.self) { try TOMLParser.parse(text) }
        do {
            _ = try TOMLParser.parse(text)
        } catch {
            #expect(error.line == line, "\(error.message)")
        }
    }

    @Test(
        "arrays and inline tables nested 10,000 deep are a syntax error, not a stack overflow (check died there)",
        arguments: ["[", "{x="])
    func deepNesting(_ opening: String) {
        let text = "ok = 1\na = " + String(repeating: opening, count: 10_000) + "\n"
        do {
            _ = try TOMLParser.parse(text)
            Issue.record("parsed")
        } catch {
            #expect(error.line == 2 && error.message.contains("nested deeper than"), "\(error.message)")
        }
    }

    private func value(_ v: TOMLValue?) -> String? {
        if case .string(let s) = v?.kind { return s }
        return nil
    }

    private func integer(_ v: TOMLValue?) -> Int64? {
        if case .integer(let i) = v?.kind { return i }
        return nil
    }
}
