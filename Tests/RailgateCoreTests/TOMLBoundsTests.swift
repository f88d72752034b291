import Glibc
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

    @Test("[[x]] headers take linear time: 32,000 cost less than 64 times 2,000 (CPU time of this thread)")
    func arrayOfTablesScaling() throws {
        // The thread's own CPU time (CLOCK_THREAD_CPUTIME_ID), not the wall clock: other processes
        // on a loaded machine do not count. 16 times the headers: linear is 16, quadratic (the old
        // copy of the array per header) 256; the limit, 64, leaves a factor 4 for cache effects.
        func cpuSeconds(_ count: Int) throws -> Double {
            let text = String(repeating: "[[x]]\nv = 1\n", count: count)
            var best = Double.infinity
            for _ in 0..<3 {
                let start = threadCPUSeconds()
                let root = try TOMLParser.parse(text)
                let elapsed = threadCPUSeconds() - start
                guard case .array(let elements)? = root["x"]?.kind else { throw TOMLSyntaxError(line: 0, message: "x") }
                #expect(elements.count == count)
                best = min(best, elapsed)
            }
            return best
        }
        let small = try cpuSeconds(2000)
        let large = try cpuSeconds(32000)
        #expect(large / small < 64, "2,000: \(small) s, 32,000: \(large) s")
    }

    private func threadCPUSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
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

@Suite("TOML reader strict as TOML 1.0")
struct TOMLStrictnessTests {
    @Test(
        "inputs tomllib refuses are refused, on their line",
        arguments: [
            ("a = \"x\u{0}y\"\n", 1),
            ("a = 1\nb = \"x\u{7F}\"\n", 2),
            ("a = 1 # x\u{7F}\n", 1),
            ("# \u{0}\n", 1),
            ("a = \"x\ry\"\n", 1),
            ("a = 1\r", 1),
            ("a = '''x\u{1F}'''\n", 1),
            ("scale = 0X10\n", 1),
            ("a = 0x-1\n", 1),
            ("a = +0x1\n", 1),
            ("a = 03.14\n", 1),
            ("a = 1e_23\n", 1),
            ("a = 1_e2\n", 1),
            ("a = 1._5\n", 1),
            ("a = 0x_1\n", 1),
            ("a = 1.\n", 1),
            ("a = .5\n", 1),
            ("a = 0b2\n", 1),
            ("[a]\nb.c = 1\n[a.b]\n", 3),
            ("a.b = 1\n[a]\n", 2),
            ("[a]\nb.c.d = 1\n[a.b.c]\n", 3),
            ("[a.b.c]\nz = 9\n[a]\nb.c.t = 1\n", 4),
            ("a = [{}]\n[[a]]\n", 2),
            ("a = \"\"\"x\\  y\"\"\"\n", 1),
            ("a = \"\"\"x\\q\"\"\"\n", 1),
            ("a = \"\\u+123\"\n", 1),
            ("a = \"\\uD800\"\n", 1),
        ])
    func refused(_ text: String, _ line: Int) {
        do {
            let root = try TOMLParser.parse(text)
            Issue.record("accepted \(text.debugDescription): \(root.keys)")
        } catch {
            #expect(error.line == line, "\(error.message)")
        }
    }

    @Test("invalid UTF-8 is refused on its line, not replaced")
    func invalidUTF8() {
        for bytes: [UInt8] in [[0xFF], [0xC3], [0xED, 0xA0, 0x80], [0xC0, 0xAF], [0xF4, 0x90, 0x80, 0x80]] {
            do {
                _ = try TOMLParser.parse(bytes: Array("a = 1\nb = \"".utf8) + bytes + Array("\"\n".utf8))
                Issue.record("accepted \(bytes)")
            } catch {
                #expect(error.line == 2)
            }
        }
    }

    @Test("a leading byte-order mark, CR-LF and TOML 1.0 numbers are read")
    func accepted() throws {
        let root = try TOMLParser.parse(
            bytes: [0xEF, 0xBB, 0xBF]
                + Array(
                    "a = 0x1F\r\nb = 1_000\r\nc = 6.02e+23\r\nd = -0.5E-1_0\r\ne = \"\"\"x\r\ny\"\"\"\r\n[t]\r\nf.g = 1\r\nf.h = 2\r\n"
                        .utf8))
        #expect(root.keys == ["a", "b", "c", "d", "e", "t"])
        if case .integer(let a)? = root["a"]?.kind { #expect(a == 31) } else { Issue.record("a") }
        if case .float(let c)? = root["c"]?.kind { #expect(c == 6.02e23) } else { Issue.record("c") }
        if case .float(let d)? = root["d"]?.kind { #expect(d == -0.5e-10) } else { Issue.record("d") }
        #expect(root.string("e") == "x\ny")
        guard case .table(let t)? = root["t"]?.kind, case .table(let f)? = t["f"]?.kind else {
            Issue.record("t.f")
            return
        }
        #expect(f.keys == ["g", "h"])
    }
}

@Suite("Configuration files read as bytes")
struct ConfigBytesTests {
    struct RawFiles: ConfigFileSource {
        var bytes: [UInt8]
        func read(_ path: String) -> String? { String(decoding: bytes, as: UTF8.self) }
        func readBytes(_ path: String) -> [UInt8]? { bytes }
    }

    @Test("invalid UTF-8 in a config is FILE:LINE, not replaced; a byte-order mark is fine")
    func invalidUTF8Config() {
        let loader = ConfigLoader(
            files: RawFiles(bytes: Array("[gateway]\nid = \"".utf8) + [0xFF] + Array("\"\n".utf8)))
        do {
            _ = try loader.load("/etc/railgate/railgate.toml")
            Issue.record("accepted")
        } catch {
            #expect(error.problems.map(\.description) == ["/etc/railgate/railgate.toml:2: invalid UTF-8 at byte 16"])
        }
        let bom = ConfigLoader(files: RawFiles(bytes: [0xEF, 0xBB, 0xBF] + Array("[gateway]\nscale = 0X10\n".utf8)))
        do {
            _ = try bom.load("/etc/railgate/railgate.toml")
            Issue.record("accepted")
        } catch {
            #expect(
                error.problems.first?.description == "/etc/railgate/railgate.toml:2: '0X10' is not a valid TOML number")
        }
    }

    struct ByteFiles: ConfigFileSource {
        var files: [String: [UInt8]]
        func read(_ path: String) -> String? { files[path].map { String(decoding: $0, as: UTF8.self) } }
        func readBytes(_ path: String) -> [UInt8]? { files[path] }
    }

    @Test("invalid UTF-8 and 0X10 in a profile are reported against the profile's line")
    func invalidProfile() {
        let profile =
            Array("model = \"AX-4\"\n[[point]]\nname = \"t\"\nunit = \"deg".utf8) + [0xC3] + Array("\"\n".utf8)
        let config = """
            [gateway]
            id = "KZ-WAG-00042"
            state_dir = "/tmp/rg"
            profile_path = ["profiles"]
            [upstream]
            url = "mqtt://127.0.0.1:1883"
            [[bus]]
            name = "line"
            transport = "tcp"
            host = "127.0.0.1"
            [[device]]
            name = "axlebox-1"
            bus = "line"
            unit = 7
            profile = "axle"
            """
        let loader = ConfigLoader(files: ByteFiles(files: ["profiles/axle.toml": profile]))
        do {
            _ = try loader.parse(config, file: "gw.toml")
            Issue.record("accepted")
        } catch {
            #expect(
                error.problems.contains { $0.description.hasPrefix("profiles/axle.toml:4: invalid UTF-8") }, "\(error)")
        }
    }
}
