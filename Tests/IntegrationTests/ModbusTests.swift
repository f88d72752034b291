import Foundation
import RailgateCore
import RailgateSystem
import Testing

/// A gateway configuration with one RTU bus on `device`.
func rtuGatewayConfig(
    scratch: Scratch, brokerPort: Int, device: String, units: [Int], profile: String, pollMs: Int
) -> String {
    var text = """
        [gateway]
        id = "KZ-WAG-RTU"
        state_dir = "\(scratch.path)/state"
        control_socket = "\(scratch.path)/control.sock"
        profile_path = ["Firmware-config/profiles", "Tests/IntegrationTests/Fixtures"]

        [buffer]
        sync_interval_ms = 100

        [upstream]
        url = "mqtt://127.0.0.1:\(brokerPort)"
        batch_interval_ms = 200

        [[bus]]
        name = "wagon-rs485"
        transport = "rtu"
        device = "\(device)"
        baud = 19200
        parity = "even"
        timeout_ms = 150
        retries = 0
        max_backoff_ms = 2000

        """
    for unit in units {
        text += """
            [[device]]
            name = "unit-\(unit)"
            bus = "wagon-rs485"
            unit = \(unit)
            profile = "\(profile)"
            poll_interval_ms = \(pollMs)

            """
    }
    return scratch.write("gateway-rtu.toml", text)
}

@Suite("Modbus in depth", .serialized)
struct ModbusTests {
    @Test("three units on one RTU line: a dead one is reported, the others keep their rate, it recovers")
    func rtuLineWithDeadUnit() throws {
        let scratch = Scratch()
        let line = try PtyPair(scratch: scratch)
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        let scenario = scratch.write(
            "dead.toml",
            """
            [[fault]]
            units = [2]
            kind = "dead"
            after_s = 3.0
            for_s = 5.0
            """)
        let simulator = try WagonSimulator(
            profile: "all-types", units: "1-3", rtu: line.slaveSide, scratch: scratch,
            extra: [
                "--profile-path", "Tests/IntegrationTests/Fixtures", "--scenario", scenario, "--set", "temp_i16=21.5",
            ])
        let config = rtuGatewayConfig(
            scratch: scratch, brokerPort: broker.port, device: line.masterSide, units: [1, 2, 3], profile: "all-types",
            pollMs: 200)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")

        func records(_ unit: Int) -> [JSON] { subscriber.records.filter { $0["source"] == .string("unit-\(unit)") } }
        let isDead: (JSON) -> Bool = { $0["values"] == nil && $0["errors"]?["temp_i16"] == .string("timeout") }
        try subscriber.waitUntil(seconds: 60) { _ in records(2).contains(where: isDead) }
        let deadSince = try #require(
            records(2).first(where: isDead).flatMap { Timestamp(parsing: $0["ts"]?.stringValue ?? "") })
        try subscriber.waitUntil(seconds: 60) { _ in
            records(2).contains { record in
                record["values"]?["temp_i16"] == .number(21.5)
                    && (Timestamp(parsing: record["ts"]?.stringValue ?? "").map { $0 > deadSince } ?? false)
            }
        }
        let backSince = try #require(
            records(2).last { $0["values"] != nil }.flatMap { Timestamp(parsing: $0["ts"]?.stringValue ?? "") })

        // While unit 2 was dead, units 1 and 3 kept (most of) their 5 polls a second.
        let deadSeconds = Double(backSince.millisecondsSinceEpoch - deadSince.millisecondsSinceEpoch) / 1000
        #expect(deadSeconds > 2)
        for unit in [1, 3] {
            let during = records(unit).filter { record in
                guard let time = Timestamp(parsing: record["ts"]?.stringValue ?? "") else { return false }
                return time > deadSince && time < backSince
            }
            #expect(
                Double(during.count) >= deadSeconds * 5 * 0.6, "unit \(unit): \(during.count) polls in \(deadSeconds) s"
            )
            #expect(during.allSatisfy { $0["errors"] == nil && $0["values"]?["temp_i16"] == .number(21.5) })
        }
        // The dead unit was backed off rather than polled every 200 ms at 150 ms timeouts each.
        let deadPolls = records(2).filter(isDead).count
        #expect(Double(deadPolls) < deadSeconds * 5 * 0.6, "\(deadPolls) polls of the dead unit in \(deadSeconds) s")
        #expect(contiguous(seqs(subscriber.records)))
        #expect(gateway.isRunning)
        _ = simulator
    }

    @Test("40 points in three clusters take three requests a poll; a bad address is isolated")
    func coalescing() throws {
        let scratch = Scratch()
        for faulty in [false, true] {
            let simulator = try WagonSimulator(
                profile: "three-clusters", units: "1", scratch: scratch,
                extra: ["--profile-path", "Tests/IntegrationTests/Fixtures", "--trace"]
                    + (faulty ? ["--scenario", projectRoot + "/Simulators/scenarios/bad-address.toml"] : []))
            let config = gatewayConfig(
                scratch: scratch, brokerPort: nil, devices: [("clusters", simulator.port, 1, "three-clusters")])
            let result = try TestProcess.run(
                Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
            let record = try JSONReader.parse(result.output.trimmingCharacters(in: .whitespacesAndNewlines))
            guard case .object(let values)? = record["values"] else {
                Issue.record("no values: \(result.output) \(result.error)")
                continue
            }
            let requests = simulator.tracedRequests
            if faulty {
                #expect(result.status == 0)
                #expect(record["errors"] == .object([("hold_5", .string("exception:2"))]))
                #expect(values.count == 39, "every other point of the cluster is still read")
                // The failing cluster (200...214, bad 205) is halved: 200x15, 200x7, 200x3, 203x4, 203x2,
                // 205x2, 205x1, 206x1, 207x8; not one read per point.
                #expect(requests.count == 2 + 9, "the failing cluster is halved down to the bad address: \(requests)")
            } else {
                #expect(values.count == 40)
                #expect(
                    requests == [
                        "request unit=1 fc=4 address=0 count=15",
                        "request unit=1 fc=3 address=200 count=15",
                        "request unit=1 fc=3 address=1000 count=20",
                    ])
            }
            try simulator.kill()
        }
    }

    @Test("railgate modbus read agrees with mbpoll on the same registers, every type and order")
    func agreesWithMbpoll() throws {
        let scratch = Scratch()
        let pins = pinnedValues.flatMap { ["--set", "\($0.0)=\($0.1)"] }
        let simulator = try WagonSimulator(
            profile: "all-types", units: "4", scratch: scratch,
            extra: ["--profile-path", "Tests/IntegrationTests/Fixtures"] + pins)
        let profile = try ProfileLocator(
            files: LocalFiles(), searchPath: [projectRoot + "/Tests/IntegrationTests/Fixtures"], besideFile: nil
        )
        .load("all-types")
        for point in profile.points {
            let table = point.table
            let count = point.count
            // mbpoll: -t 0 coils, 1 discrete, 3 input, 4 holding; -r is 1-based.
            let mbpollTable = [RegisterTable.coil: "0", .discrete: "1", .input: "3:hex", .holding: "4:hex"][table]!
            let mbpoll = try TestProcess.run(
                "/usr/bin/mbpoll",
                [
                    "-m", "tcp", "-p", "\(simulator.port)", "-a", "4", "-t", mbpollTable, "-r", "\(point.address + 1)",
                    "-c", "\(count)", "-1",
                    "127.0.0.1",
                ], scratch: scratch)
            #expect(mbpoll.status == 0, "\(point.name): \(mbpoll.error)")
            let mbpollRegisters: [UInt16] = mbpoll.output.split(separator: "\n").compactMap { line in
                guard line.hasPrefix("["),
                    let value = line.split(separator: "\t").last?.trimmingCharacters(in: .whitespaces)
                else { return nil }
                return value.hasPrefix("0x") ? UInt16(value.dropFirst(2), radix: 16) : UInt16(value)
            }
            let flag = ["coil": "--coils", "discrete": "--discrete", "input": "--input", "holding": "--holding"][
                table.rawValue]!
            let ours = try TestProcess.run(
                Binaries.railgate,
                [
                    "modbus", "read", "--tcp", "127.0.0.1:\(simulator.port)", "--unit", "4", flag, "--address",
                    "\(point.address)",
                    "--type", table.holdsBits ? "bool" : point.type.description, "--order", point.order.rawValue,
                    "--json",
                ], scratch: scratch)
            #expect(ours.status == 0, "\(point.name): \(ours.error)")
            let document = try JSONReader.parse(ours.output)
            let ourRegisters = document["registers"]?.arrayValue?.compactMap { $0.intValue.map(UInt16.init) } ?? []
            #expect(ourRegisters == mbpollRegisters, "\(point.name): registers")
            // The decoded value from mbpoll's registers, scaled as the profile says, is the pinned one.
            let expected = pinnedValues.first { $0.0 == point.name }!.2
            #expect(
                point.decode(mbpollRegisters).jsonValue == expected,
                "\(point.name): mbpoll's registers decode to the pinned value")
            if point.scale == 1, point.offset == 0 {
                #expect(
                    document["values"]?.arrayValue?.first?["value"] == expected, "\(point.name): railgate's decoding")
            }
        }
    }
}

@Suite("Faulty slaves on an RTU line", .serialized)
struct FaultySlaveTests {
    /// A truncated reply leaves libmodbus waiting for the rest of the frame: a timeout.
    @Test(
        "bad CRCs, exceptions, silence and short replies reach errors with their reasons",
        arguments: [
            ("kind = \"crc\"", "crc"), ("kind = \"exception\"\ncode = 4", "exception:4"),
            ("kind = \"dead\"", "timeout"),
            ("kind = \"short\"", "timeout"),
        ])
    func faults(_ fault: String, _ reason: String) throws {
        let scratch = Scratch()
        let line = try PtyPair(scratch: scratch)
        let scenario = scratch.write("fault.toml", "[[fault]]\nunits = [5]\n\(fault)\n")
        let simulator = try WagonSimulator(
            profile: "brake-load-sensor", units: "5-6", rtu: line.slaveSide, scratch: scratch,
            extra: ["--scenario", scenario])
        let config = rtuGatewayConfig(
            scratch: scratch, brokerPort: 1, device: line.masterSide, units: [5, 6], profile: "brake-load-sensor",
            pollMs: 1000)
        let result = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        #expect(result.status == 69, "unit 5 did not answer")
        let records = try result.output.split(separator: "\n").map { try JSONReader.parse(String($0)) }
        let faulty = try #require(records.first { $0["source"] == .string("unit-5") })
        let healthy = try #require(records.first { $0["source"] == .string("unit-6") })
        #expect(faulty["errors"]?["load"] == .string(reason), "\(faulty.serialized)")
        #expect(faulty["values"] == nil)
        #expect(healthy["errors"] == nil && healthy["values"]?["load"] != nil)
        _ = simulator
    }
}

@Suite("Alarms end to end", .serialized)
struct AlarmTests {
    @Test("a bearing heating past alarm_above raises one alarm, and one alarm_clear when it cools")
    func hotBox() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        let scenario = scratch.write(
            "hot.toml",
            """
            [[ramp]]
            point = "bearing_temp_3"
            to = 95.0
            after_s = 0.5
            over_s = 1.5
            [[ramp]]
            point = "bearing_temp_3"
            to = 40.0
            after_s = 3.0
            over_s = 1.5
            """)
        let simulator = try WagonSimulator(
            profile: "axle-bearing-sensor", units: "2", scratch: scratch, extra: ["--scenario", scenario])
        let config = gatewayConfig(
            scratch: scratch, brokerPort: broker.port,
            devices: [("axlebox-2", simulator.port, 2, "axle-bearing-sensor")], pollMs: 50)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { _ in
            subscriber.records.contains { $0["event"] == .string("alarm_clear") }
        }
        // Twenty more polls after the clear: time enough for a flood to show itself.
        let clearedAt = try #require(
            subscriber.records.first { $0["event"] == .string("alarm_clear") }?["seq"]?.intValue)
        try subscriber.waitUntil(seconds: 60) { _ in
            subscriber.records.filter { ($0["seq"]?.intValue ?? 0) > clearedAt }.count >= 20
        }
        let alarms = subscriber.records.filter { $0["kind"] == .string("event") }
        #expect(alarms.map { $0["event"]?.stringValue ?? "?" } == ["alarm_above", "alarm_clear"])
        let raised = alarms[0]
        #expect(raised["point"] == .string("bearing_temp_3") && raised["priority"] == .string("alarm"))
        #expect((raised["value"]?.doubleValue ?? 0) > 90 && raised["threshold"] == .number(90))
        #expect((alarms[1]["value"]?.doubleValue ?? 99) < 89.5, "cleared only past the hysteresis (the 0.5 deadband)")
        // The alarming poll's sample carries the value whatever the deadband.
        let sample = subscriber.records.first { $0["seq"]?.intValue == (raised["seq"]?.intValue ?? 0) + 1 }
        #expect(sample?["values"]?["bearing_temp_3"] == raised["value"])
        _ = gateway
    }
}
