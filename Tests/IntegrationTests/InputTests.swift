import Foundation
import RailgateCore
import Testing

@Suite("Digital inputs on the simulated chip", .serialized)
struct DigitalInputTests {
    @Test("a door contact on the simulated chip: an event on each debounced change, with its priority")
    func doorContact() throws {
        let scratch = Scratch()
        let gate = try GateSimulator(scratch: scratch)
        let config = scratch.write(
            "inputs.toml",
            """
            [gateway]
            id = "TM-GATE-INPUTS"
            state_dir = "\(scratch.path)/state"
            control_socket = "\(scratch.path)/control.sock"
            [buffer]
            sync_interval_ms = 50
            [upstream]
            url = "none"
            [[input]]
            name = "cabinet-door"
            chip = "\(gate.chip)"
            line = 5
            active_low = true
            debounce_ms = 1500
            priority = "alarm"
            [[input]]
            name = "tamper"
            chip = "\(gate.chip)"
            line = 6
            """)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        func set(_ line: Int, _ value: Int) throws {
            let result = try TestProcess.run(
                Binaries.simulator, ["gate-set", "--socket", gate.socket, "--line", "\(line)", "--value", "\(value)"],
                scratch: scratch)
            #expect(result.status == 0, "gate-set: \(result.error)")
        }
        func inputEvents(_ name: String, count: Int) throws -> [JSON] {
            try eventually("\(count) events of \(name)") {
                let found = events(try bufferedRecords(scratch.path + "/state", scratch: scratch), from: name)
                return found.count >= count ? found : nil
            }
        }
        // The simulator's lines start low: the active-low door contact is active (door closed on
        // a normally-closed contact wired to ground), the tamper switch inactive.
        let first = try inputEvents("cabinet-door", count: 1)
        #expect(first[0]["event"] == .string("active") && first[0]["previous"] == .string("unknown"))
        #expect(first[0]["priority"] == .string("alarm"))
        #expect(try inputEvents("tamper", count: 1)[0]["event"] == .string("inactive"))

        // A bounce (two gate-set runs, well under the 1.5 s debounce_ms), then a real change.
        try set(5, 1)
        try set(5, 0)
        try set(5, 1)
        let door = try inputEvents("cabinet-door", count: 2)
        #expect(door.map { $0["event"]?.stringValue ?? "?" } == ["active", "inactive"])
        #expect(door[1]["previous"] == .string("active") && door[1]["held_ms"]?.intValue != nil)
        try set(6, 1)
        let tamper = try inputEvents("tamper", count: 2)
        #expect(tamper.map { $0["event"]?.stringValue ?? "?" } == ["inactive", "active"])
        #expect(tamper[1]["priority"] == .string("normal"))

        let status = try eventually("the inputs in the status") { () -> [JSON]? in
            let inputs = try daemonStatus(scratch)["inputs"]?.arrayValue ?? []
            return inputs.count == 2 && inputs[1]["state"] == .string("active") ? inputs : nil
        }
        #expect(status[0]["name"] == .string("cabinet-door") && status[0]["state"] == .string("inactive"))
        #expect(status[0]["line"]?.intValue == 5 && status[0]["error"] == .null)
        // Nothing more: the bounce left no extra events.
        #expect(events(try bufferedRecords(scratch.path + "/state", scratch: scratch), from: "cabinet-door").count == 2)
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit(seconds: 30) == 0)
    }

    @Test("run --once prints each input's level as its first event")
    func runOnce() throws {
        let scratch = Scratch()
        let gate = try GateSimulator(scratch: scratch)
        let config = scratch.write(
            "inputs.toml",
            """
            [gateway]
            id = "TM-GATE-INPUTS"
            state_dir = "\(scratch.path)/state"
            [upstream]
            url = "none"
            [[input]]
            name = "tamper"
            chip = "\(gate.chip)"
            line = 18
            priority = "alarm"
            """)
        let once = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        #expect(once.status == 0, "run --once: \(once.error)")
        let records = once.output.split(separator: "\n").compactMap { try? JSONReader.parse(String($0)) }
        #expect(records.count == 1)
        #expect(records.first?["source"] == .string("tamper") && records.first?["event"] == .string("active"))
        #expect(records.first?["previous"] == .string("unknown") && records.first?["priority"] == .string("alarm"))
    }

    @Test("an input on a chip that is not there: unavailable with the reason, the daemon runs on")
    func missingChip() throws {
        let scratch = Scratch()
        let config = scratch.write(
            "inputs.toml",
            """
            [gateway]
            id = "TM-GATE-INPUTS"
            state_dir = "\(scratch.path)/state"
            control_socket = "\(scratch.path)/control.sock"
            [upstream]
            url = "none"
            [[input]]
            name = "tamper"
            chip = "sim:\(scratch.path)/absent.sock"
            line = 3
            """)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let input = try eventually("the input unavailable in the status") { () -> JSON? in
            let input = try daemonStatus(scratch)["inputs"]?.arrayValue?.first
            return input?["state"] == .string("unavailable") ? input : nil
        }
        #expect(input["error"]?.stringValue?.contains("not found") == true)
        #expect(gateway.isRunning)
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit(seconds: 30) == 0)
    }
}
