import Foundation
import RailgateCore
import Testing

@Suite("Compact payload on the wire", .serialized)
struct CompactPayloadTests {
    /// The Python decoder CONTRACT.md gives consumers, as written there.
    static func contractDecoder() throws -> String {
        let contract = try String(contentsOfFile: "CONTRACT.md", encoding: .utf8)
        let start = try #require(contract.range(of: "A complete decoder"))
        let code = try #require(contract.range(of: "```python\n", range: start.upperBound..<contract.endIndex))
        let end = try #require(contract.range(of: "```", range: code.upperBound..<contract.endIndex))
        return String(contract[code.upperBound..<end.lowerBound])
    }

    @Test(
        "compact/1 by default: every batch decodes (railgate's decoder and the contract's Python one agree), seqs contiguous, every type"
    )
    func compactOverMosquitto() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port, topic: "railgate/KZ-WAG-LIMITS/telemetry")
        let sim = try wagon(scratch)
        let config = brokerLimitsConfig(
            scratch: scratch, brokerPort: broker.port, wagonPort: sim.port, intervalMs: 500, maxRecords: 50)
        let gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "gw")
        try subscriber.waitUntil(seconds: 60) { _ in subscriber.timedMessages.count >= 6 }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)

        let payloads = subscriber.timedMessages.map(\.payload)
        var decoded: [JSON] = []
        var files: [String] = []
        var compactBytes = 0
        var plainBytes = 0
        for (index, payload) in payloads.enumerated() {
            let text = String(decoding: payload, as: UTF8.self)
            #expect(
                text.hasPrefix(#"{"gateway":"KZ-WAG-LIMITS","format":"compact/1","sources":[["testbox","#), "\(text)")
            let plain = try CompactBatch.decode(payload)
            compactBytes += payload.count
            plainBytes += plain.count
            decoded.append(try JSONReader.parse(String(decoding: plain, as: UTF8.self)))
            let file = scratch.path + "/batch-\(index).bin"
            #expect(FileManager.default.createFile(atPath: file, contents: Data(payload)))
            files.append(file)
        }
        let records = decoded.flatMap { $0["records"]?.arrayValue ?? [] }
        let sequence = seqs(records)
        #expect(sequence.first == 1 && contiguous(sequence), "\(sequence)")
        #expect(records.allSatisfy { $0["kind"] == .string("sample") && $0["source"] == .string("testbox") })
        // Numbers, booleans and text (the all-types profile) come through as values.
        let values = records.compactMap { $0["values"] }
        let first = try #require(values.first)
        #expect(first["door_open"] == .bool(true) || first["door_open"] == .bool(false), "\(first.serialized)")
        #expect(first["model_code"]?.stringValue != nil, "\(first.serialized)")
        #expect(first["f32_cdab"]?.serialized.contains(".") == true, "\(first.serialized)")
        #expect(first["u64_abcd"] != nil, "\(first.serialized)")
        print("compact: \(compactBytes) bytes for \(records.count) records that take \(plainBytes) bytes plain")
        // Batches of about 5 polls of 14 points here (compact gains more with larger batches).
        #expect(compactBytes * 10 < plainBytes * 7)

        // The contract's decoder, run by Python on the same bytes, gives the same records.
        let script = scratch.write(
            "decode.py",
            try Self.contractDecoder() + """

                import sys
                for path in sys.argv[1:]:
                    print(json.dumps(decode_batch(open(path, "rb").read()), separators=(",", ":")))

                """)
        let python = try TestProcess.run("/usr/bin/python3", [script] + files, scratch: scratch)
        #expect(python.status == 0, "\(python.error)")
        let lines = python.output.split(separator: "\n").map(String.init)
        #expect(lines.count == decoded.count)
        for (line, swift) in zip(lines, decoded) {
            #expect(try JSONReader.parse(line) == swift, "python: \(line)\nrailgate: \(swift.serialized)")
        }
    }
}
