import Foundation
import Glibc
import RailgateCore
import Testing

/// The small inputs against the real binaries: a clean error or a bounded wait, and the
/// daemon polling on throughout.
@Suite("Hostile inputs: a clean error or a bounded wait", .serialized)
struct HostileInputTests {
    @Test(
        "railgate check: 7,000 nested arrays are FILE:LINE (exit 78, not SIGSEGV); 16,000 [[x]] headers check in seconds"
    )
    func hostileConfigs() throws {
        let scratch = Scratch()
        let nested = scratch.write(
            "nested.toml",
            "[gateway]\nid = \"x\"\na = " + String(repeating: "[", count: 7000) + String(repeating: "]", count: 7000)
                + "\n")
        let deep = try TestProcess.run(Binaries.railgate, ["check", "--config", nested], scratch: scratch)
        #expect(deep.status == 78, "\(deep.error)")
        #expect(deep.error.hasPrefix("\(nested):3: "), "\(deep.error)")

        let headers = scratch.write(
            "headers.toml",
            "[gateway]\nid = \"x\"\n" + String(repeating: "[[x]]\nv = 1\n", count: 16_000)
                + "[upstream]\nurl = \"none\"\n")
        let start = ContinuousClock.now
        let many = try TestProcess.run(Binaries.railgate, ["check", "--config", headers], scratch: scratch)
        let elapsed = ContinuousClock.now - start
        #expect(many.status == 78, "\(many.error)")
        #expect(many.error.contains("\(headers):3: unknown section [[x]]"), "\(many.error.prefix(500))")
        // 44 s before the fix; linear now (well under a second unloaded, a few on a loaded machine).
        #expect(elapsed < .seconds(15), "check took \(elapsed)")
    }

    @Test(
        "railgate-sim scenarios with huge, infinite or fractional numbers: FILE:LINE and exit 78, never a trap",
        arguments: [
            ("gate", "bounce_ms = 1e300\n", 1), ("gate", "travel_s = inf\n", 1), ("gate", "repeat_s = nan\n", 1),
            ("gate", "[[step]]\nat_s = 1e300\naction = \"open\"\n", 2),
            ("gate", "[[step]]\naction = \"set\"\nline = 1e300\nvalue = 1\n", 3),
            ("wagon", "[[fault]]\nkind = \"slow\"\ndelay_ms = 1e300\n", 3),
            ("wagon", "[[fault]]\nkind = \"exception\"\ncode = 2.5\n", 3),
            ("wagon", "[[fault]]\nkind = \"dead\"\naddress = -1e300\n", 3),
            ("wagon", "[[ramp]]\npoint = \"load\"\nto = 1\nover_s = inf\n", 4),
        ])
    func hostileScenarios(command: String, text: String, line: Int) throws {
        let scratch = Scratch()
        let scenario = scratch.write("scenario.toml", text)
        let arguments =
            command == "gate"
            ? ["gate", "--socket", scratch.path + "/gate.sock", "--scenario", scenario]
            : [
                "wagon", "--profile", "brake-load-sensor", "--unit", "1", "--tcp", "127.0.0.1:\(freePort())",
                "--scenario", scenario,
            ]
        let result = try TestProcess.run(Binaries.simulator, arguments, scratch: scratch)
        #expect(result.status == 78, "\(result.error)")
        #expect(result.error.contains("\(scenario):\(line): "), "\(result.error)")
        #expect(result.error.contains("must be"), "\(result.error)")
    }

    @Test(
        "a simulated chip that sends an edge on a line no gate watches, a timestamp of Int64.min and a line with no newline: the daemon keeps polling its device, memory stays bounded"
    )
    func hostileChipWhilePolling() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let startedAt = Timestamp(millisecondsSinceEpoch: Int64(Date().timeIntervalSince1970 * 1000) - 1000)
        let now = MonotonicInstant.now().nanoseconds
        let script =
            Array("edge 5 1 \(now)\nedge 1 1 -9223372036854775808\nedge 2 1 9223372036854775807\n".utf8)
            + [UInt8](repeating: UInt8(ascii: "x"), count: 4 << 20)
        let chip = try SimulatedChipInputTests.FakeSimulator(script: script)
        let base = gatewayConfig(
            scratch: scratch, brokerPort: broker.port, devices: [("axle-7", simulator.port, 7, "axle-bearing-sensor")])
        let text = try String(contentsOfFile: base, encoding: .utf8)
        let config = scratch.write(
            "hostile.toml",
            text + """

                [[gate]]
                name = "north-barrier"
                chip = "sim:\(chip.path)"
                open_line = 1
                closed_line = 2
                debounce_ms = 20
                travel_timeout_ms = 4000

                """)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        // The endless line is refused (EMSGSIZE), logged, and the watcher retries; meanwhile the device is polled.
        _ = try eventually("the endless line refused", seconds: 60, intervalMs: 200) {
            gateway.errorOutput.contains("Message too long") ? true : nil
        }
        let before = subscriber.records.filter { $0["source"] == .string("axle-7") }.count
        try subscriber.waitUntil(seconds: 60) { _ in
            subscriber.records.filter { $0["source"] == .string("axle-7") }.count >= before + 15
        }
        let records = subscriber.records
        let samples = records.filter { $0["source"] == .string("axle-7") }
        #expect(contiguous(seqs(records)), "seqs: \(seqs(records))")
        #expect(samples.allSatisfy { $0["kind"] == .string("sample") && $0["errors"] == nil })
        // Gate events, if any: dated now (not 1734), travel never negative.
        for event in events(records, from: "north-barrier") {
            let stamp = Timestamp(parsing: event["ts"]?.stringValue ?? "")
            #expect(
                stamp.map { $0.millisecondsSinceEpoch >= startedAt.millisecondsSinceEpoch } == true,
                "\(event.serialized)")
            #expect((event["travel_ms"]?.intValue ?? 0) >= 0, "\(event.serialized)")
        }
        // 4 MiB arrived without a newline: at most 64 KiB of it was ever held.
        let status = try String(contentsOfFile: "/proc/\(gateway.pid)/status", encoding: .utf8)
        let rssKiB = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }.flatMap {
            Int($0.split(separator: " ").dropFirst().first ?? "")
        }
        #expect((rssKiB ?? .max) < 200 * 1024, "VmRSS \(rssKiB ?? -1) KiB")
        #expect(gateway.isRunning)
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
    }
}
