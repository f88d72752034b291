import Testing

@testable import RailgateCore

@Suite("TOML and JSON readers bounded")
struct TOMLBoundsTests {
    @Test("7,000 nested arrays are a syntax error on their line, not a stack overflow")
    func deepArrays() {
        let text = "x = 1\na = " + String(repeating: "[", count: 7000) + String(repeating: "]", count: 7000) + "\n"
        #expect(syntaxErrorLine(text) == 2)
        let inline = "a = " + String(repeating: "{ b = ", count: 7000) + "1" + String(repeating: " }", count: 7000)
        #expect(syntaxErrorLine(inline) == 1)
        let dotted = "a" + String(repeating: ".a", count: 7000) + " = 1\n"
        #expect(syntaxErrorLine(dotted) == 1)
        let header = "[a" + String(repeating: ".a", count: 7000) + "]\n"
        #expect(syntaxErrorLine(header) == 1)
        let allowed = "a = " + String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        #expect(syntaxErrorLine(allowed) == nil)
    }

    @Test("a config past a limit is a FILE:LINE problem")
    func configProblem() {
        let text = "[gateway]\nid = \"x\"\nnested = " + String(repeating: "[", count: 7000) + "\n"
        do {
            _ = try TOMLParser.parse(text, file: "/etc/railgate/railgate.toml")
            Issue.record("accepted")
        } catch {
            #expect(error.problems.first?.description.hasPrefix("/etc/railgate/railgate.toml:3:") == true)
        }
    }

    @Test("line length, key count and total size are bounded")
    func sizeLimits() {
        var limits = TOMLLimits()
        limits.maxLineBytes = 100
        #expect(syntaxErrorLine("a = 1\nb = \"" + String(repeating: "x", count: 200) + "\"\n", limits) == 2)
        #expect(syntaxErrorLine("b = \"" + String(repeating: "x", count: 90) + "\"\n", limits) == nil)
        limits = TOMLLimits()
        limits.maxKeys = 10
        #expect(syntaxErrorLine((1...11).map { "k\($0) = 1\n" }.joined(), limits) == 11)
        #expect(syntaxErrorLine((1...11).map { _ in "[[t]]\n" }.joined(), limits) == 11)
        limits = TOMLLimits()
        limits.maxBytes = 50
        #expect(syntaxErrorLine(String(repeating: "# comment\n", count: 6), limits) == 1)
    }

    @Test("[[x]] headers take linear time: 16,000 cost less than 8 times 4,000")
    func arrayOfTablesScaling() throws {
        func seconds(_ count: Int) throws -> Double {
            let text = String(repeating: "[[x]]\nv = 1\n", count: count)
            var best = Double.infinity
            for _ in 0..<3 {
                let start = ContinuousClock.now
                let root = try TOMLParser.parse(text)
                let elapsed = ContinuousClock.now - start
                guard case .array(let elements)? = root["x"]?.kind else { throw TOMLSyntaxError(line: 0, message: "x") }
                #expect(elements.count == count)
                best = min(best, Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))
            }
            return best
        }
        let small = try seconds(4000)
        let large = try seconds(16000)
        // Linear is 4; quadratic (the old copy of the array per header) is 16.
        #expect(large / small < 8, "4,000: \(small) s, 16,000: \(large) s")
    }

    @Test("JSON nested 100,000 deep is a syntax error, 200 deep is read")
    func deepJSON() throws {
        #expect(throws: JSONReader.SyntaxError.self) {
            try JSONReader.parse(String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000))
        }
        #expect(throws: JSONReader.SyntaxError.self) {
            try JSONReader.parse(String(repeating: "{\"a\":", count: 100_000))
        }
        let ok = String(repeating: "[", count: 200) + "1" + String(repeating: "]", count: 200)
        #expect(try JSONReader.parse(ok) != .null)
    }

    private func syntaxErrorLine(_ text: String, _ limits: TOMLLimits = TOMLLimits()) -> Int? {
        do {
            _ = try TOMLParser.parse(text, limits: limits)
            return nil
        } catch {
            return error.line
        }
    }
}
