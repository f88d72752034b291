import Foundation
import RailgateCore
import Testing

/// Issue 9, the value side, end to end: the real simulator over Modbus TCP, `railgate run`, and
/// for the daemon a real Mosquitto.
@Suite("Never a wrong value, end to end", .serialized)
struct ValueTests {
    @Test(
        "run --once: NaN, infinities and sentinels land in errors; text sent low byte first reads clean",
        arguments: [
            ("nan", "-inf", "0x7FFF", "nan", "inf"), ("inf", "nan", "0x8000", "inf", "nan"),
            ("-inf", "inf", "0x7FFF", "inf", "inf"),
        ])
    func noReading(_ temp: String, _ flow: String, _ level: String, _ tempReason: String, _ flowReason: String) throws {
        let scratch = Scratch()
        let simulator = try WagonSimulator(
            profile: "no-reading", units: "3", scratch: scratch,
            extra: [
                "--profile-path", "Tests/IntegrationTests/Fixtures", "--set", "temp=\(temp)", "--set", "flow=\(flow)",
                "--set", "good=21.5", "--raw", "input:0=\(level)",
                // "AX-4-K" low byte first, padded with 0xFF: what the issue saw as scrambled text and U+FFFD.
                "--raw", "holding:10=0x5841,0x342D,0x4B2D,0xFFFF",
            ])
        let config = gatewayConfig(
            scratch: scratch, brokerPort: nil, devices: [("meter", simulator.port, 3, "no-reading")])
        let result = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        #expect(result.status == 0, "\(result.error)")
        let line = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!line.contains("null") && !line.contains("\u{FFFD}"), "\(line)")
        let record = try JSONReader.parse(line)
        #expect(
            record["errors"]
                == .object([
                    ("temp", .string(tempReason)), ("flow", .string(flowReason)), ("level", .string("invalid")),
                ]), "\(line)")
        #expect(record["values"] == .object([("serial", .string("AX-4-K")), ("good", .number(21.5))]), "\(line)")
        try simulator.kill()
    }

    @Test("railgate check: an order a type cannot have, a sentinel out of range, a limit too small, with file:line")
    func check() throws {
        let scratch = Scratch()
        let profile = scratch.write(
            "meter.toml",
            """
            model = "m"
            max_registers_per_request = 2
            [[point]]
            name = "count"
            table = "holding"
            address = 0
            type = "u16"
            order = "CDAB"
            invalid = [0x1FFFF]
            [[point]]
            name = "serial"
            table = "holding"
            address = 10
            type = "string:4"
            order = "DCBA"
            """)
        let config = gatewayConfig(scratch: scratch, brokerPort: nil, devices: [("meter", 1502, 1, profile)])
        let result = try TestProcess.run(Binaries.railgate, ["check", "--config", config], scratch: scratch)
        #expect(result.status == 78)
        let lines = result.error.split(separator: "\n").map(String.init)
        #expect(lines.contains("\(profile):8: order = \"CDAB\" has no meaning for u16 (it takes ABCD, BADC, DCBA)"))
        #expect(lines.contains("\(profile):9: invalid value 131071 does not fit u16's raw 16 bits (0...0xFFFF)"))
        #expect(
            lines.contains(
                "\(profile):2: max_registers_per_request = 2 is less than point 'serial' needs (string:4: 4 registers in one read)"
            ))
        #expect(lines.count == 4, "the three, and the device line naming the profile: \(result.error)")
    }

    @Test("daemon: 21.4, NaN for 3 s, then 21.5 with deadband 0.5: 21.5 goes out on the next poll")
    func deadbandAfterNaN() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        let scenario = scratch.write(
            "dropout.toml",
            """
            [[ramp]]
            point = "temp"
            to = nan
            after_s = 8.0
            [[ramp]]
            point = "temp"
            to = 21.5
            after_s = 11.0
            """)
        let simulator = try WagonSimulator(
            profile: "no-reading", units: "3", scratch: scratch,
            extra: [
                "--profile-path", "Tests/IntegrationTests/Fixtures", "--scenario", scenario, "--set", "temp=21.4",
                "--set", "flow=1.5", "--set", "good=3", "--raw", "input:0=215",
            ])
        let config = gatewayConfig(
            scratch: scratch, brokerPort: broker.port, devices: [("meter", simulator.port, 3, "no-reading")],
            pollMs: 200)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        func samples() -> [JSON] {
            subscriber.records.filter { $0["source"] == .string("meter") && $0["kind"] == .string("sample") }
                .sorted { ($0["seq"]?.intValue ?? 0) < ($1["seq"]?.intValue ?? 0) }
        }
        let isNaN: (JSON) -> Bool = { $0["errors"]?["temp"] == .string("nan") }
        // Ten polls after the last NaN: time enough for a withheld 21.5 to show itself.
        try subscriber.waitUntil(seconds: 90) { _ in
            let all = samples()
            guard let last = all.lastIndex(where: isNaN) else { return false }
            return all.count - last > 10
        }
        let all = samples()
        let firstNaN = try #require(all.firstIndex(where: isNaN))
        let lastNaN = try #require(all.lastIndex(where: isNaN))
        #expect(
            all[..<firstNaN].contains { $0["values"]?["temp"] == .number(21.4) },
            "21.4 was sent before the dropout (the gateway started in time)")
        #expect(all[firstNaN...lastNaN].allSatisfy { isNaN($0) && $0["values"]?["temp"] == nil })
        #expect(all[lastNaN + 1]["values"]?["temp"] == .number(21.5), "the first good value goes out at once")
        #expect(
            all[(lastNaN + 2)...].allSatisfy { $0["values"]?["temp"] == nil }, "then the deadband holds again")
        #expect(all.allSatisfy { $0["values"]?["temp"] != .null && $0["errors"]?["temp"] != .null })
        #expect(all.allSatisfy { $0["values"]?["level"] == .number(21.5) })
        _ = gateway
    }

    @Test("daemon: 60 holding registers on a device refusing reads over 50 with exception 3: 2 requests a poll")
    func longReadsRefused() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        var profileText = "model = \"meter with 60 registers\"\n"
        for address in 0..<60 {
            profileText +=
                "[[point]]\nname = \"r\(address)\"\ntable = \"holding\"\naddress = \(address)\ntype = \"u16\"\n"
        }
        let profile = scratch.write("sixty.toml", profileText)
        let words = (0..<60).map { "\(1000 + $0)" }.joined(separator: ",")
        let simulator = try WagonSimulator(
            profile: profile, units: "1", scratch: scratch,
            extra: [
                "--scenario", projectRoot + "/Simulators/scenarios/long-reads-refused.toml", "--trace", "--raw",
                "holding:0=\(words)",
            ])
        let config = gatewayConfig(
            scratch: scratch, brokerPort: broker.port, devices: [("meter", simulator.port, 1, profile)], pollMs: 100)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { _ in
            subscriber.records.filter { $0["source"] == .string("meter") }.count >= 6
        }
        let requests = simulator.tracedRequests
        #expect(
            Array(requests.prefix(3)) == [
                "request unit=1 fc=3 address=0 count=60", "request unit=1 fc=3 address=0 count=30",
                "request unit=1 fc=3 address=30 count=30",
            ], "the first poll halves the refused read")
        let later = requests.dropFirst(3)
        #expect(later.count >= 10)
        for (offset, request) in later.enumerated() {
            let expected = offset % 2 == 0 ? "address=0 count=30" : "address=30 count=30"
            #expect(request == "request unit=1 fc=3 \(expected)", "later polls ask for the learnt parts only")
        }
        let samples = subscriber.records.filter { $0["source"] == .string("meter") }
        #expect(samples.allSatisfy { $0["errors"] == nil })
        for sample in samples {
            let values = (0..<60).map { sample["values"]?["r\($0)"]?.intValue }
            #expect(values == (0..<60).map { 1000 + $0 })
        }
        let told = gateway.errorOutput.split(separator: "\n").filter { $0.contains("refused") }
        #expect(
            told == [
                "NOTICE railgate: device meter (unit 1) refused holding 0-59: reading holding 0-29, holding 30-59 from now on"
            ], "the technician is told once")
        _ = gateway
    }
}
