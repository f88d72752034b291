import Foundation
import RailgateCore
import Testing

/// A gateway with one AX-4 axle sensor (unit `unit`) on the wagon simulator and one barrier on
/// the simulated GPIO chip, buffering only.
func toolkitConfig(
    scratch: Scratch, wagonPort: Int, chip: String, unit: Int = 7, name: String = "toolkit.toml"
)
    -> String
{
    scratch.write(
        name,
        """
        [gateway]
        id = "KZ-WAG-TOOLKIT"
        state_dir = "\(scratch.path)/state"
        control_socket = "\(scratch.path)/control.sock"
        profile_path = ["Firmware-config/profiles"]

        [buffer]
        sync_interval_ms = 100

        [upstream]
        url = "none"

        [[bus]]
        name = "line"
        transport = "tcp"
        host = "127.0.0.1"
        port = \(wagonPort)

        [[device]]
        name = "axlebox-1"
        bus = "line"
        unit = \(unit)
        profile = "axle-bearing-sensor"
        poll_interval_ms = 500

        [[gate]]
        name = "north-barrier"
        chip = "\(chip)"
        open_line = 17
        closed_line = 18
        debounce_ms = 20
        travel_timeout_ms = 20000
        """)
}

/// A tmux server of the test's own (its own socket), killed when dropped.
final class Tmux {
    let socketName: String
    private let scratch: Scratch

    static var path: String? {
        ["/usr/bin/tmux", "/bin/tmux", "/usr/local/bin/tmux"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// A detached session running `/bin/sh` on a `width` x `height` pane.
    init(scratch: Scratch, width: Int = 80, height: Int = 24) throws {
        self.scratch = scratch
        socketName = "railgate-it-\(getpid())-\(UUID().uuidString.prefix(6))"
        let result = try run(["new-session", "-d", "-s", "top", "-x", "\(width)", "-y", "\(height)", "/bin/sh"])
        guard result.status == 0 else { throw TimedOut(description: "tmux new-session failed: \(result.error)") }
    }

    deinit { _ = try? run(["kill-server"]) }

    @discardableResult
    func run(_ arguments: [String]) throws -> (status: Int32, output: String, error: String) {
        try TestProcess.run(Tmux.path ?? "tmux", ["-L", socketName] + arguments, scratch: scratch, seconds: 30)
    }

    /// Types `text` (literally) into the pane.
    func type(_ text: String) throws { try sendKeys(["-l", text]) }

    /// Presses a key by tmux's name for it (`Enter`, `q`, `C-c`).
    func press(_ key: String) throws { try sendKeys([key]) }

    private func sendKeys(_ arguments: [String]) throws {
        let result = try run(["send-keys", "-t", "top"] + arguments)
        guard result.status == 0 else { throw TimedOut(description: "tmux send-keys failed: \(result.error)") }
    }

    /// The pane's text now; with `attributes`, with the escape sequences of its colours.
    func screen(attributes: Bool = false) throws -> String {
        try run(["capture-pane", "-p", "-t", "top"] + (attributes ? ["-e"] : [])).output
    }

    /// Waits (bounded) until the pane shows every one of `texts`; returns the pane.
    func waitForScreen(showing texts: [String], seconds: Double = 60) throws -> String {
        var last = ""
        do {
            return try eventually("the pane showing \(texts)", seconds: seconds, intervalMs: 200) { () -> String? in
                last = try screen()
                return texts.allSatisfy { last.contains($0) } ? last : nil
            }
        } catch {
            throw TimedOut(description: "\(error); the pane:\n\(last)")
        }
    }
}

extension TestProcess {
    /// Waits (bounded) until the process's standard output has a line containing each of `texts`, in that order.
    func waitForLines(inOrder texts: [String], seconds: Double = 60) throws -> [String] {
        try eventually("lines \(texts) in order from \(name)", seconds: seconds, intervalMs: 50) { () -> [String]? in
            var found: [String] = []
            var rest = output.split(separator: "\n").map(String.init)[...]
            for text in texts {
                guard let index = rest.firstIndex(where: { $0.contains(text) }) else { return nil }
                found.append(rest[index])
                rest = rest[(index + 1)...]
            }
            return found
        }
    }
}

/// Sets a line of the simulated chip, as a switch would.
func setGateLine(_ gate: GateSimulator, _ line: Int, _ value: Int, scratch: Scratch) throws {
    let set = try TestProcess.run(
        Binaries.simulator, ["gate-set", "--socket", gate.socket, "--line", "\(line)", "--value", "\(value)"],
        scratch: scratch)
    guard set.status == 0 else { throw TimedOut(description: "gate-set failed: \(set.error)") }
}

/// Waits until the daemon in `scratch` polled its device, and its gate is in `gateState`.
@discardableResult
func waitForDaemon(_ scratch: Scratch, gateState: String = "closed", alarm: Bool = false) throws -> JSON {
    try eventually("the daemon polling, its gate \(gateState)", seconds: 60, intervalMs: 200) { () -> JSON? in
        let status = try daemonStatus(scratch)
        let polled = (status["devices"]?.arrayValue?.first?["polls"]?.intValue ?? 0) >= 1
        let gate = status["gates"]?.arrayValue?.first?["state"] == .string(gateState)
        let alarmed = !(status["alarms"]?.arrayValue ?? []).isEmpty
        return polled && gate && (!alarm || alarmed) ? status : nil
    }
}

@Suite("Technician's toolkit: top, events, held lines", .serialized)
struct ToolkitTests {
    @Test(
        "top on an 80x24 tmux pane shows devices, values with units, an active alarm and the gate state, in colour unless NO_COLOR; q and Ctrl-C quit and restore the terminal",
        .enabled(if: Tmux.path != nil, "needs tmux (make deps installs it)"))
    func topInTmux() throws {
        let scratch = Scratch()
        let wagon = try WagonSimulator(
            profile: "axle-bearing-sensor", units: "7", scratch: scratch, extra: ["--set", "bearing_temp_3=96"])
        let gate = try GateSimulator(scratch: scratch)
        let config = toolkitConfig(scratch: scratch, wagonPort: wagon.port, chip: gate.chip)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let status = try waitForDaemon(scratch, alarm: true)
        #expect(
            status["devices"]?.arrayValue?.first?["points"]?.arrayValue?.contains {
                $0["name"] == .string("bearing_temp_3") && $0["unit"] == .string("degC") && $0["value"] == .number(96)
            } == true)
        #expect(status["alarms"]?.arrayValue?.first?["point"] == .string("bearing_temp_3"))

        let tmux = try Tmux(scratch: scratch)
        let before = scratch.path + "/stty-before"
        let after = scratch.path + "/stty-after"
        try tmux.type(
            "unset NO_COLOR; stty -g > \(before); \(Binaries.railgate) top --config \(config) --interval 0.5; echo top-exit=$?; stty -g > \(after)"
        )
        try tmux.press("Enter")
        var screen = try tmux.waitForScreen(showing: [
            "railgate top  KZ-WAG-TOOLKIT", "axlebox-1", "bearing_temp_3 96 degC", "bearing_temp_1 ", " degC",
            "ALARMS  1 active", "axlebox-1 bearing_temp_3 96 degC, above 90", "gates   north-barrier CLOSED",
            "buffer  ", " records  ", " oldest ", "link    disabled  sent ", " lat ", " err 0% ", "q quits",
        ])
        let lines = screen.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.allSatisfy { $0.count <= 80 }, "a line wider than the pane:\n\(screen)")
        #expect(lines.first?.hasPrefix("railgate top") == true, "the title on the first row:\n\(screen)")

        // Colour on a terminal: the active alarm in red.
        let colours = try tmux.screen(attributes: true)
        #expect(colours.contains("\u{1B}[31m"), "no red on the pane:\n\(colours.debugDescription)")

        // The barrier opens: the live view follows.
        try setGateLine(gate, 18, 0, scratch: scratch)
        try setGateLine(gate, 17, 1, scratch: scratch)
        screen = try tmux.waitForScreen(showing: ["gates   north-barrier OPEN", "gate OPEN (was opening)"])

        try tmux.press("q")
        screen = try tmux.waitForScreen(showing: ["top-exit=0"])
        let restored = try eventually("the shell writing the terminal settings after top", intervalMs: 100) {
            () -> (String, String)? in
            guard let old = try? String(contentsOfFile: before, encoding: .utf8),
                let new = try? String(contentsOfFile: after, encoding: .utf8), !new.isEmpty
            else { return nil }
            return (old, new)
        }
        #expect(restored.0 == restored.1, "top left the terminal changed")
        #expect(
            !screen.contains("ALARMS"), "top left its screen behind (the alternate screen was not left):\n\(screen)")

        // Ctrl-C quits just as cleanly.
        try tmux.type("\(Binaries.railgate) top --socket \(scratch.path)/control.sock; echo top-exit=$?")
        try tmux.press("Enter")
        _ = try tmux.waitForScreen(showing: ["ALARMS  1 active"])
        try tmux.press("C-c")
        screen = try tmux.waitForScreen(showing: ["top-exit=0"])
        #expect(!screen.contains("ALARMS"), "\(screen)")

        // NO_COLOR: the same screen without any colour or attribute.
        try tmux.type("NO_COLOR=1 \(Binaries.railgate) top --config \(config); echo top-exit=$?")
        try tmux.press("Enter")
        _ = try tmux.waitForScreen(showing: ["ALARMS  1 active"])
        #expect(!(try tmux.screen(attributes: true).contains("\u{1B}[")), "attributes despite NO_COLOR")
        try tmux.press("q")
        _ = try eventually("top quitting", intervalMs: 100) {
            try tmux.screen().components(separatedBy: "top-exit=0").count == 4 ? () : nil
        }

        // Not a terminal: plain frames, no escape sequence at all.
        let plain = try TestProcess.run(
            Binaries.railgate, ["top", "--config", config, "--iterations", "2", "--interval", "0.2"], scratch: scratch)
        #expect(plain.status == 0, "\(plain.error)")
        #expect(!plain.output.contains("\u{1B}"), "escape sequences in piped output")
        #expect(plain.output.components(separatedBy: "railgate top  KZ-WAG-TOOLKIT").count == 3, "two frames")
        #expect(!plain.output.contains("q quits"), "no key help in printed frames:\n\(plain.output)")
        let blank = plain.output.split(separator: "\n", omittingEmptySubsequences: false).dropLast().filter(\.isEmpty)
        #expect(blank.count <= 2, "no blank rows filling a screen, one between frames:\n\(plain.output)")
        _ = gateway
    }

    @Test("events --follow shows the barrier's whole cycle and samples with units while the daemon holds the lines")
    func followBarrier() throws {
        let scratch = Scratch()
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let gate = try GateSimulator(scratch: scratch)
        let config = toolkitConfig(scratch: scratch, wagonPort: wagon.port, chip: gate.chip)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try waitForDaemon(scratch)
        let human = try TestProcess(
            Binaries.railgate, ["events", "--config", config, "--follow"], scratch: scratch, name: "events")
        let json = try TestProcess(
            Binaries.railgate, ["events", "--socket", scratch.path + "/control.sock", "--follow", "--json"],
            scratch: scratch, name: "events-json")
        try eventually("both followers streaming", intervalMs: 100) {
            try daemonStatus(scratch)["followers"] == .integer(2) ? () : nil
        }
        #expect(human.errorOutput.contains("following gateway KZ-WAG-TOOLKIT"))

        // The barrier's cycle, switch by switch, as the limit switches would report it.
        for (line, value, state) in [(18, 0, "OPENING"), (17, 1, "OPEN"), (17, 0, "CLOSING"), (18, 1, "CLOSED")] {
            try setGateLine(gate, line, value, scratch: scratch)
            // Each switch settles (debounced) before the next moves, as on a real barrier.
            _ = try human.waitForLines(inOrder: ["gate \(state) (was"])
        }
        let cycle = try human.waitForLines(inOrder: [
            "north-barrier  gate OPENING (was closed)", "north-barrier  gate OPEN (was opening), travel ",
            "north-barrier  gate CLOSING (was open)", "north-barrier  gate CLOSED (was closing), travel ",
        ])
        #expect(cycle.last?.contains(", open for ") == true, "\(cycle)")
        // Samples as stored (deadbands applied: the steady temperatures are not sent again).
        let sample = try human.waitForLines(inOrder: ["axlebox-1      "])
        #expect(sample.first?.contains("revolution_count ") == true, "\(sample)")
        #expect(sample.first?.contains(" rev") == true, "values with their units: \(sample)")

        let events = try eventually("the cycle in the JSON stream", intervalMs: 100) { () -> [JSON]? in
            let documents = json.output.split(separator: "\n").compactMap { try? JSONReader.parse(String($0)) }
            let events = documents.filter { $0["kind"] == .string("event") && $0["source"] == .string("north-barrier") }
            return events.count >= 4 ? events : nil
        }
        #expect(events.map { $0["event"]?.stringValue ?? "?" } == ["opening", "open", "closing", "closed"])
        let seqs = events.compactMap { $0["seq"]?.intValue }
        #expect(seqs.count == 4 && seqs == seqs.sorted(), "stored records with their seqs: \(seqs)")
        let samples = json.output.split(separator: "\n").compactMap { try? JSONReader.parse(String($0)) }
            .filter { $0["kind"] == .string("sample") }
        #expect(samples.contains { $0["units"]?["revolution_count"] == .string("rev") })

        // The daemon stops without waiting for its followers; they are told the stream ended.
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        #expect(try human.waitForExit() == 69)
        #expect(human.errorOutput.contains("the daemon closed the stream"))
        _ = wagon
    }

    @Test("after a SIGKILL and a restart, the send rate counts records, not the seqs the crash left unused")
    func sendRateAfterCrash() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let config = scratch.write(
            "rate.toml",
            """
            [gateway]
            id = "KZ-WAG-RATE"
            state_dir = "\(scratch.path)/state"
            control_socket = "\(scratch.path)/control.sock"
            profile_path = ["Firmware-config/profiles"]
            [upstream]
            url = "mqtt://127.0.0.1:\(broker.port)"
            batch_interval_ms = 100
            [[bus]]
            name = "line"
            transport = "tcp"
            host = "127.0.0.1"
            port = \(wagon.port)
            [[device]]
            name = "axlebox-1"
            bus = "line"
            unit = 7
            profile = "axle-bearing-sensor"
            poll_interval_ms = 100
            """)
        func ackedSeq() throws -> UInt64? {
            (try? daemonStatus(scratch))?["upstream"]?["acked_seq"]?.doubleValue.map { UInt64($0) }
        }
        var gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let before = try eventually("records acknowledged", seconds: 60, intervalMs: 200) { () -> UInt64? in
            try ackedSeq().flatMap { $0 > 5 ? $0 : nil }
        }
        gateway.signal(SIGKILL)
        _ = try gateway.waitForExit()
        gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate-2")
        // Status every 0.6 s until a rate spans records acknowledged past the crash's gap: about
        // 10 records a second (polls every 100 ms), never the tens of thousands of seqs skipped.
        var rates: [Double] = []
        _ = try eventually("a send rate after the gap", seconds: 60, intervalMs: 600) { () -> Bool? in
            guard let status = try? daemonStatus(scratch) else { return nil }
            if let rate = status["upstream"]?["sent_per_s"]?.doubleValue { rates.append(rate) }
            let acked = status["upstream"]?["acked_seq"]?.doubleValue.map { UInt64($0) } ?? 0
            return acked > before + 1000 && rates.count >= 3 ? true : nil
        }
        #expect(!rates.isEmpty && rates.allSatisfy { $0 < 200 }, "sent_per_s: \(rates)")
        #expect(rates.contains { $0 > 0 }, "sent_per_s: \(rates)")
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        _ = wagon
    }

    @Test(
        "run --once skips the gate whose lines the daemon holds (exit 0 when the devices answer); gpio watch on a held line points to events --follow"
    )
    func heldLines() throws {
        let scratch = Scratch()
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let gate = try GateSimulator(scratch: scratch)
        let config = toolkitConfig(scratch: scratch, wagonPort: wagon.port, chip: gate.chip)

        // Without the daemon, run --once reads the gate itself.
        var once = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        #expect(once.status == 0, "\(once.error)")
        #expect(once.output.split(separator: "\n").count == 2, "a sample and the gate's state: \(once.output)")

        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try waitForDaemon(scratch)
        // Item 4: status finds the daemon through its configuration.
        let status = try TestProcess.run(Binaries.railgate, ["status", "--config", config, "--json"], scratch: scratch)
        #expect(status.status == 0, "\(status.error)")
        #expect(try JSONReader.parse(status.output)["gateway"] == .string("KZ-WAG-TOOLKIT"))
        // The figures top shows: a store rate once two status requests are far enough apart,
        // nothing sent (url = "none"), the oldest record's age, the device's latency and error rate.
        let figures = try eventually("a store rate in the status", intervalMs: 300) { () -> JSON? in
            let status = try daemonStatus(scratch)
            return (status["buffer"]?["stored_per_s"]?.doubleValue ?? 0) > 0 ? status : nil
        }
        #expect(figures["upstream"]?["sent_per_s"]?.doubleValue == 0)
        #expect((figures["buffer"]?["oldest_age_s"]?.doubleValue ?? -1) >= 0)
        #expect(figures["buffer"]?["oldest_ts"]?.stringValue != nil)
        let device = figures["devices"]?.arrayValue?.first
        #expect((device?["latency_ms"]?.doubleValue ?? -1) >= 0)
        #expect(device?["error_rate"] == .number(0))
        #expect(device?["last_poll_ts"]?.stringValue != nil)

        once = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        #expect(once.status == 0, "every device answered: \(once.error)")
        #expect(
            once.error.contains(
                "gate north-barrier: skipped: the running railgate daemon holds its lines; watch it with `railgate events --follow`"
            ), "\(once.error)")
        let records = once.output.split(separator: "\n").compactMap { try? JSONReader.parse(String($0)) }
        #expect(records.map { $0["source"] } == [.string("axlebox-1")])
        #expect(records.first?["values"]?["bearing_temp_1"] != nil)

        // A real failure still counts while the gate is skipped.
        let silent = toolkitConfig(
            scratch: scratch, wagonPort: wagon.port, chip: gate.chip, unit: 9, name: "silent.toml")
        once = try TestProcess.run(Binaries.railgate, ["run", "--config", silent, "--once"], scratch: scratch)
        #expect(once.status == 69, "unit 9 does not answer: \(once.error)")
        #expect(once.error.contains("gate north-barrier: skipped"))

        let watch = try TestProcess.run(
            Binaries.railgate, ["gpio", "watch", "--chip", gate.chip, "--line", "18", "--num-events", "1"],
            scratch: scratch)
        #expect(watch.status == 69)
        #expect(watch.error.contains("line 18 is busy, held by 'railgate-north-barrier'"), "\(watch.error)")
        #expect(watch.error.contains("the running railgate daemon watches it"), "\(watch.error)")
        #expect(watch.error.contains("railgate events --follow"), "\(watch.error)")
        #expect(!watch.error.contains("gpiomon?"), "the holder is railgate, not another program: \(watch.error)")

        // Unreachable daemon: status, top and events say so, exit 69.
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        for command in [["status"], ["top", "--iterations", "1"], ["events", "--follow"]] {
            let result = try TestProcess.run(Binaries.railgate, command + ["--config", config], scratch: scratch)
            #expect(result.status == 69, "\(command[0]): \(result.error)")
            #expect(result.error.contains("cannot reach the daemon at \(scratch.path)/control.sock"), "\(result.error)")
        }
    }
}
