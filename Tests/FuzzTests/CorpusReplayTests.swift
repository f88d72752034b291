import Foundation
import Testing

/// The fuzz targets by name: `Fuzz/corpus/NAME` (seeds) and `Fuzz/regressions/NAME` (every input
/// a fuzzer crashed on, kept once fixed) hold their inputs.
enum FuzzHarnesses {
    static let all: [String: @Sendable ([UInt8]) -> [String]] = [
        "toml": TOMLHarness.check,
        "json": JSONHarness.check,
        "config": ConfigHarness.check,
        "registers": RegisterHarness.check,
        "modbus": ModbusReplyHarness.check,
        "buffer": BufferRecoveryHarness.check,
        "simchip": SimulatedChipHarness.check,
    ]
}

/// Every committed fuzz input through its harness, without libFuzzer: `make test` holds what the
/// fuzzers found (the regressions) and what they start from (the seeds).
@Suite("Fuzz inputs replayed")
struct CorpusReplayTests {
    static let fuzzDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fuzz")

    @Test(
        "every committed input holds its harness's invariants",
        arguments: ["toml", "json", "config", "registers", "modbus", "buffer", "simchip"])
    func replay(target: String) throws {
        let check = try #require(FuzzHarnesses.all[target])
        var replayed = 0
        for folder in ["corpus", "regressions"] {
            let directory = Self.fuzzDirectory.appendingPathComponent(folder).appendingPathComponent(target)
            let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
            for name in names.sorted() {
                let bytes = try Data(contentsOf: directory.appendingPathComponent(name))
                let violations = check(Array(bytes))
                #expect(violations.isEmpty, "\(folder)/\(target)/\(name): \(violations.joined(separator: "; "))")
                replayed += 1
            }
        }
        #expect(replayed > 0, "no inputs for \(target) in \(Self.fuzzDirectory.path)")
    }
}
