import Foundation
import RailgateCore
import Testing

/// A gateway configuration with one gate and no Modbus devices.
func gateGatewayConfig(scratch: Scratch, brokerPort: Int?, chip: String, travelTimeoutMs: Int = 4000) -> String {
    scratch.write(
        "gateway-gate.toml",
        """
        [gateway]
        id = "TM-GATE-SERHETABAT"
        state_dir = "\(scratch.path)/state"
        control_socket = "\(scratch.path)/control.sock"

        [buffer]
        sync_interval_ms = 100

        [upstream]
        url = "\(brokerPort.map { "mqtt://127.0.0.1:\($0)" } ?? "none")"
        batch_interval_ms = 100

        [[gate]]
        name = "north-barrier"
        chip = "\(chip)"
        open_line = 17
        closed_line = 18
        debounce_ms = 20
        travel_timeout_ms = \(travelTimeoutMs)
        """)
}

func events(_ records: [JSON], from source: String) -> [JSON] {
    records.filter { $0["kind"] == .string("event") && $0["source"] == .string(source) }
}

@Suite("Gates", .serialized)
struct GateTests {
    @Test("a barrier cycle arrives upstream as closed, opening, open, closing, closed with plausible durations")
    func barrierCycle() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        let gate = try GateSimulator(scratch: scratch, scenario: projectRoot + "/Simulators/scenarios/gate-cycle.toml")
        let config = gateGatewayConfig(scratch: scratch, brokerPort: broker.port, chip: gate.chip)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { _ in events(subscriber.records, from: "north-barrier").count >= 5 }
        let cycle = events(subscriber.records, from: "north-barrier")
        #expect(cycle.map { $0["event"]?.stringValue ?? "?" } == ["closed", "opening", "open", "closing", "closed"])
        #expect(
            cycle.map { $0["previous"]?.stringValue ?? "?" } == ["unknown", "closed", "opening", "open", "closing"])
        #expect(cycle.allSatisfy { $0["priority"] == .string("normal") })
        let travelOpen = cycle[2]["travel_ms"]?.intValue ?? 0
        let travelClose = cycle[4]["travel_ms"]?.intValue ?? 0
        let openMs = cycle[4]["open_ms"]?.intValue ?? 0
        #expect((900...1400).contains(travelOpen), "travel to open: \(travelOpen) ms (the simulator's travel is 1 s)")
        #expect((900...1400).contains(travelClose), "travel to closed: \(travelClose) ms")
        #expect((3300...4200).contains(openMs), "open for \(openMs) ms (opened at 0.5 s, closed at 3 s + 1 s travel)")
        let birth = try #require(subscriber.messages.first { $0.topic.hasSuffix("/status") }?.json)
        #expect(birth["sources"]?["north-barrier"]?["kind"] == .string("gate"))

        let status = try TestProcess.run(
            Binaries.railgate, ["status", "--socket", scratch.path + "/control.sock", "--json"], scratch: scratch)
        let gates = try JSONReader.parse(status.output)["gates"]?.arrayValue
        #expect(gates?.first?["name"] == .string("north-barrier"))
        #expect(gates?.first?["state"] == .string("closed"))
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
    }

    @Test("a barrier stuck halfway arrives as a travel_timeout alarm")
    func stuckBarrier() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        let gate = try GateSimulator(scratch: scratch, scenario: projectRoot + "/Simulators/scenarios/gate-stuck.toml")
        let config = gateGatewayConfig(
            scratch: scratch, brokerPort: broker.port, chip: gate.chip, travelTimeoutMs: 1500)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { _ in
            events(subscriber.records, from: "north-barrier").contains { $0["event"] == .string("fault") }
        }
        let fault = try #require(
            events(subscriber.records, from: "north-barrier").first { $0["event"] == .string("fault") })
        #expect(fault["fault"] == .string("travel_timeout"))
        #expect(fault["previous"] == .string("opening"))
        #expect(fault["priority"] == .string("alarm"))
        #expect(gateway.errorOutput.contains("fault travel_timeout"))
        _ = gateway
    }

    @Test("a broken switch wire is a both_limits fault that clears when mended")
    func brokenSwitch() throws {
        let scratch = Scratch()
        let gate = try GateSimulator(
            scratch: scratch, scenario: projectRoot + "/Simulators/scenarios/gate-broken-switch.toml")
        let config = gateGatewayConfig(scratch: scratch, brokerPort: nil, chip: gate.chip)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let seen = try eventually("a fault, then closed, in the buffer", seconds: 60, intervalMs: 200) {
            () -> [String]? in
            let seen = try bufferedRecords(scratch.path + "/state", scratch: scratch).compactMap {
                $0["event"]?.stringValue
            }
            return seen.contains("fault") && seen.last == "closed" ? seen : nil
        }
        #expect(seen == ["closed", "fault", "closed"])
        _ = gateway
    }

    @Test("gpio watch prints the simulator's edges as they happen")
    func gpioWatch() throws {
        let scratch = Scratch()
        let gate = try GateSimulator(scratch: scratch)
        let watch = try TestProcess(
            Binaries.railgate,
            ["gpio", "watch", "--chip", gate.chip, "--line", "17", "18", "--num-events", "2"],
            scratch: scratch, name: "watch")
        // The watch is live once the simulator lists its lines as used.
        try eventually("the watch holding its lines", intervalMs: 50) {
            let info = try TestProcess.run(Binaries.railgate, ["gpio", "info", "--chip", gate.chip], scratch: scratch)
            return info.output.contains("\"railgate-watch\"") ? () : nil
        }
        for (line, value) in [(18, 0), (17, 1)] {
            let set = try TestProcess.run(
                Binaries.simulator, ["gate-set", "--socket", gate.socket, "--line", "\(line)", "--value", "\(value)"],
                scratch: scratch)
            #expect(set.status == 0, "\(set.error)")
            _ = try watch.waitForOutputLine(containing: "offset: \(line)")
        }
        #expect(try watch.waitForExit() == 0)
        let lines = watch.output.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines[0].hasPrefix("event: FALLING EDGE offset: 18 timestamp: ["))
        #expect(lines[1].hasPrefix("event: RISING EDGE  offset: 17 timestamp: ["))
    }

    @Test("a missing chip or a busy line is a clear error; the gateway keeps running and retries")
    func troubleIsReported() throws {
        let scratch = Scratch()
        let missing = try TestProcess.run(Binaries.railgate, ["gpio", "info", "--chip", "gpiochip9"], scratch: scratch)
        #expect(missing.status == 69)
        #expect(missing.error.contains("GPIO chip 'gpiochip9' not found"))

        // The daemon with a gate on a chip that is not there yet.
        let socket = scratch.path + "/gate.sock"
        let config = gateGatewayConfig(scratch: scratch, brokerPort: nil, chip: "sim:\(socket)")
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        func gateState(_ expected: String) throws -> JSON {
            try eventually("the gate \(expected) in the status", intervalMs: 200) {
                let status = try daemonStatus(scratch)
                return status["gates"]?.arrayValue?.first?["state"] == .string(expected) ? status : nil
            }
        }
        var status = try gateState("unavailable")
        #expect(status["gates"]?.arrayValue?.first?["error"]?.stringValue?.contains("not found") == true)
        #expect(gateway.errorOutput.contains("gate north-barrier: GPIO chip 'sim:\(socket)' not found"))
        #expect(gateway.isRunning)

        // The chip appears (a hotplugged expander): the retry picks it up.
        let gate = try GateSimulator(scratch: scratch)
        status = try gateState("closed")
        #expect(status["gates"]?.arrayValue?.first?["state"] == .string("closed"))

        // Now the daemon holds the lines: another user is refused, naming the holder.
        let busy = try TestProcess.run(
            Binaries.railgate, ["gpio", "watch", "--chip", gate.chip, "--line", "17", "--num-events", "1"],
            scratch: scratch)
        #expect(busy.status == 69)
        #expect(busy.error.contains("line 17 is busy, held by 'railgate-north-barrier'"))
    }

    /// Real kernel lines through libgpiod, where the kernel has gpio-sim (configfs). This
    /// machine's kernel has no GPIO support, so the test says so and skips.
    @Test(
        "libgpiod drives a gate on real kernel lines (gpio-sim)",
        .enabled(
            if: FileManager.default.fileExists(atPath: "/sys/kernel/config/gpio-sim"),
            "the kernel offers no gpio-sim (configfs /sys/kernel/config/gpio-sim): the libgpiod backend is tested only for a missing chip here"
        ))
    func kernelGPIOSim() throws {
        let scratch = Scratch()
        let base = "/sys/kernel/config/gpio-sim/railgate-test-\(getpid())"
        try FileManager.default.createDirectory(atPath: base + "/bank0", withIntermediateDirectories: true)
        defer {
            try? "0".write(toFile: base + "/live", atomically: false, encoding: .utf8)
            try? FileManager.default.removeItem(atPath: base + "/bank0")
            try? FileManager.default.removeItem(atPath: base)
        }
        try "32".write(toFile: base + "/bank0/num_lines", atomically: false, encoding: .utf8)
        try "1".write(toFile: base + "/live", atomically: false, encoding: .utf8)
        let chipName = try String(contentsOfFile: base + "/bank0/chip_name", encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        let device = try String(contentsOfFile: base + "/dev_name", encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines)
        func pull(_ line: Int, _ value: String) throws {
            try value.write(
                toFile: "/sys/devices/platform/\(device)/\(chipName)/sim_gpio\(line)/pull", atomically: false,
                encoding: .utf8)
        }
        try pull(18, "pull-up")
        let config = gateGatewayConfig(scratch: scratch, brokerPort: nil, chip: chipName)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        var step = 0
        let seen = try eventually("a barrier cycle on kernel lines") { () -> [String]? in
            let seen = try bufferedRecords(scratch.path + "/state", scratch: scratch).compactMap {
                $0["event"]?.stringValue
            }
            if seen == ["closed"], step == 0 {
                try pull(18, "pull-down")
                step = 1
            }
            if seen == ["closed", "opening"], step == 1 {
                try pull(17, "pull-up")
                step = 2
            }
            return seen.count >= 3 ? seen : nil
        }
        #expect(seen == ["closed", "opening", "open"])
        _ = gateway
    }
}
