import Foundation
import RailgateCore
import Testing

/// The values pinned in the simulator for the all-types fixture, and what they must read as.
let pinnedValues: [(String, String, JSON)] = [
    ("temp_i16", "-18.3", .number(-18.3)),
    ("load_u16", "48.03", .number(48.03)),
    ("f32_abcd", "123.456", .number(123.456)),
    ("f32_cdab", "123.456", .number(123.456)),
    ("f32_badc", "-0.5", .number(-0.5)),
    ("f32_dcba", "1e-05", .number(1e-05)),
    ("i32_badc", "-2", .integer(-2)),
    ("u32_cdab", "4000000000", .integer(4_000_000_000)),
    ("f64_dcba", "-123.456", .number(-123.456)),
    ("u64_abcd", "18446744073709551615", .unsigned(.max)),
    ("i64_cdab", "-9223372036854775808", .integer(.min)),
    ("model_code", "AX-4", .string("AX-4")),
    ("door_open", "true", .bool(true)),
    ("fault", "false", .bool(false)),
]

/// A gateway configuration for tests: one TCP bus per simulator port, fast polls.
func gatewayConfig(
    scratch: Scratch, brokerPort: Int?, devices: [(name: String, port: Int, unit: Int, profile: String)],
    pollMs: Int = 200, extraUpstream: String = "", extraBus: String = "", metricsPort: Int? = nil
) -> String {
    var text = """
        [gateway]
        id = "KZ-WAG-TEST"
        state_dir = "\(scratch.path)/state"
        control_socket = "\(scratch.path)/control.sock"
        log_level = "debug"
        profile_path = ["Firmware-config/profiles", "Tests/IntegrationTests/Fixtures"]

        [buffer]
        sync_interval_ms = 100

        [upstream]
        url = "\(brokerPort.map { "mqtt://127.0.0.1:\($0)" } ?? "none")"
        batch_interval_ms = 200
        \(extraUpstream)

        """
    for port in Set(devices.map(\.port)).sorted() {
        text += """
            [[bus]]
            name = "bus-\(port)"
            transport = "tcp"
            host = "127.0.0.1"
            port = \(port)
            timeout_ms = 300
            retries = 0
            max_backoff_ms = 500
            \(extraBus)

            """
    }
    for device in devices {
        text += """
            [[device]]
            name = "\(device.name)"
            bus = "bus-\(device.port)"
            unit = \(device.unit)
            profile = "\(device.profile)"
            poll_interval_ms = \(pollMs)

            """
    }
    if let metricsPort { text += "[metrics]\nlisten = \"127.0.0.1:\(metricsPort)\"\n" }
    return scratch.write("gateway.toml", text)
}

@Suite("Pipeline: simulator to broker", .serialized)
struct PipelineTests {
    @Test("records arrive decoded as the profile says, seq contiguous, with the birth message's units")
    func endToEnd() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        let pins = pinnedValues.flatMap { ["--set", "\($0.0)=\($0.1)"] }
        let simulator = try WagonSimulator(
            profile: "all-types", units: "1-2", scratch: scratch,
            extra: ["--profile-path", "Tests/IntegrationTests/Fixtures"] + pins)
        let config = gatewayConfig(
            scratch: scratch, brokerPort: broker.port,
            devices: [
                ("testbox-1", simulator.port, 1, "all-types"), ("axle-7", simulator.port, 2, "all-types"),
            ])
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")

        try subscriber.waitUntil(seconds: 60) { _ in subscriber.records.count >= 12 }
        let records = subscriber.records
        #expect(contiguous(seqs(records)), "seq: \(seqs(records))")
        #expect(seqs(records).min() == 1)
        #expect(Set(records.compactMap { $0["source"]?.stringValue }) == ["testbox-1", "axle-7"])
        for record in records {
            #expect(record["kind"] == .string("sample"))
            #expect(record["errors"] == nil, "\(record.serialized)")
            #expect(Timestamp(parsing: record["ts"]?.stringValue ?? "") != nil)
            for (name, _, expected) in pinnedValues {
                #expect(record["values"]?[name] == expected, "\(name) in \(record.serialized)")
            }
        }

        let birth = try #require(subscriber.messages.first { $0.topic == "railgate/KZ-WAG-TEST/status" }?.json)
        #expect(birth["state"] == .string("online"))
        #expect(birth["gateway"] == .string("KZ-WAG-TEST"))
        let source = birth["sources"]?["testbox-1"]
        #expect(source?["kind"] == .string("modbus"))
        #expect(source?["model"] == .string("railgate test device: every type and order"))
        #expect(source?["points"]?["temp_i16"]?["unit"] == .string("degC"))
        #expect(source?["points"]?["temp_i16"]?["type"] == .string("i16"))
        #expect(source?["points"]?["load_u16"]?["unit"] == .string("t"))
        #expect(source?["points"]?["model_code"]?["type"] == .string("string:4"))
        #expect(source?["points"]?["door_open"]?["type"] == .string("bool"))

        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        try subscriber.waitUntil(seconds: 20) { messages in
            messages.last { $0.topic.hasSuffix("/status") }?.json?["state"] == .string("offline")
        }
        _ = simulator
    }

    @Test("a restarted gateway continues seq where it left off")
    func restartContinuesSeq() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let config = gatewayConfig(
            scratch: scratch, brokerPort: broker.port,
            devices: [("axlebox-1", simulator.port, 7, "axle-bearing-sensor")])

        var gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { _ in subscriber.records.count >= 5 }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        let firstRun = seqs(subscriber.records)
        let lastOfFirstRun = try #require(firstRun.max())

        gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { _ in (seqs(subscriber.records).max() ?? 0) >= lastOfFirstRun + 5 }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        let all = seqs(subscriber.records)
        let secondRun = all.dropFirst(firstRun.count)
        #expect(secondRun.min() == lastOfFirstRun + 1, "the second run starts right after the first: \(all)")
        #expect(contiguous(all), "no seq missing across the restart: \(all)")
        _ = simulator
    }

    @Test("a killed simulator gives timeout or io errors, and values again when it is back")
    func deadDeviceRecovers() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        var simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let port = simulator.port
        let config = gatewayConfig(
            scratch: scratch, brokerPort: broker.port, devices: [("axlebox-1", port, 7, "axle-bearing-sensor")])
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { _ in subscriber.records.contains { $0["values"] != nil } }

        try simulator.kill()
        let failed: (JSON) -> Bool = { record in
            record["values"] == nil
                && (record["errors"]?["bearing_temp_1"] == .string("timeout")
                    || record["errors"]?["bearing_temp_1"] == .string("io"))
        }
        try subscriber.waitUntil(seconds: 60) { _ in subscriber.records.contains(where: failed) }
        let failedRecord = try #require(subscriber.records.first(where: failed))
        if case .object(let errors) = failedRecord["errors"] { #expect(errors.count == 8, "every point is reported") }

        let countBeforeReturn = subscriber.records.count
        simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch, port: port)
        try subscriber.waitUntil(seconds: 60) { _ in
            subscriber.records.dropFirst(countBeforeReturn).contains { $0["values"] != nil }
        }
        #expect(gateway.isRunning, "the gateway kept running")
        #expect(contiguous(seqs(subscriber.records)))
        #expect(gateway.errorOutput.contains("is not answering"))
        #expect(gateway.errorOutput.contains("answers again"))
    }
}
