import Foundation
import Testing

@testable import RailgateCore

/// railgate's TOML reader against Python's `tomllib` (strict TOML 1.0) on generated and mutated
/// documents: the same verdict and the same values. The generator and the comparison are
/// Tests/Differential/toml_differential.py; this test parses each document and writes its result.
@Suite("TOML reader agrees with tomllib")
struct TOMLDifferentialTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Differential/toml_differential.py").path

    @Test(
        "seeded generated and mutated documents: same verdict and values",
        arguments: [(seed: 15, count: 3000), (seed: 2026, count: 3000)])
    func differential(seed: Int, count: Int) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("toml-diff-\(getpid())-\(seed)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let generated = try python(["generate", directory.path, String(seed), String(count)])
        #expect(generated.status == 0, "\(generated.output)")
        for number in 0..<count {
            let name = String(format: "%05d", number)
            let bytes = try [UInt8](Data(contentsOf: directory.appendingPathComponent("\(name).toml")))
            let result: JSON
            do {
                let root = try TOMLParser.parse(bytes: bytes)
                result = .object([("ok", .bool(true)), ("value", tagged(root))])
            } catch {
                result = .object([("ok", .bool(false)), ("error", .string("line \(error.line): \(error.message)"))])
            }
            try Data(result.bytes).write(to: directory.appendingPathComponent("\(name).railgate.json"))
        }
        let compared = try python(["compare", directory.path])
        #expect(compared.status == 0, "\(compared.output)")
        #expect(compared.output.contains("\"documents\": \(count)"), "\(compared.output)")
    }

    private func tagged(_ table: TOMLTable) -> JSON {
        .object(table.keys.map { ($0, tagged(table[$0]!)) })
    }

    private func tagged(_ value: TOMLValue) -> JSON {
        func scalar(_ type: String, _ text: String) -> JSON {
            .object([("type", .string(type)), ("value", .string(text))])
        }
        switch value.kind {
        case .string(let text): return scalar("string", text)
        case .integer(let number): return scalar("integer", String(number))
        case .float(let number): return scalar("float", number.isNaN ? "nan" : "\(number)")
        case .bool(let flag): return scalar("bool", flag ? "true" : "false")
        case .array(let elements): return .array(elements.map(tagged))
        case .table(let table): return tagged(table)
        }
    }

    private func python(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", Self.script] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}
