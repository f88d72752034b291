import Foundation
import RailgateCore
import Testing

/// Two device types whose records differ tenfold in size: one holding register, and thirty
/// with long names.
func writeMixedProfiles(_ scratch: Scratch) {
    _ = scratch.write(
        "tiny.toml",
        """
        model = "one-register test device"
        [[point]]
        name = "t"
        table = "holding"
        address = 0
        type = "u16"
        """)
    _ = scratch.write(
        "wide.toml",
        "model = \"thirty-register test device\"\n"
            + (0..<30).map {
                "[[point]]\nname = \"channel_with_a_rather_long_name_\($0)\"\ntable = \"holding\"\naddress = \($0)\ntype = \"u16\"\n"
            }.joined())
}

/// A gateway on the tiny and wide test devices (profiles from `writeMixedProfiles`), with 64 KiB
/// segments; `url` "none" buffers only.
func mixedGatewayConfig(
    scratch: Scratch, brokerPort: Int?, tinyPort: Int, widePort: Int, pollMs: (tiny: Int, wide: Int),
    upstream: String = ""
) -> String {
    var text = """
        [gateway]
        id = "KZ-WAG-BUF"
        state_dir = "\(scratch.path)/state"
        control_socket = "\(scratch.path)/control.sock"
        profile_path = ["\(scratch.path)"]

        [buffer]
        max_bytes = 1048576
        sync_interval_ms = 50
        when_full = "drop_oldest"

        [upstream]
        url = "\(brokerPort.map { "mqtt://127.0.0.1:\($0)" } ?? "none")"
        \(upstream)

        """
    for (bus, port) in [("tiny", tinyPort), ("wide", widePort)] {
        text += "[[bus]]\nname = \"\(bus)\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = \(port)\n\n"
    }
    for (bus, units, interval) in [("tiny", 1...3, pollMs.tiny), ("wide", 1...2, pollMs.wide)] {
        for unit in units {
            text += """
                [[device]]
                name = "\(bus)-\(unit)"
                bus = "\(bus)"
                unit = \(unit)
                profile = "\(bus)"
                poll_interval_ms = \(interval)


                """
        }
    }
    return scratch.write("gateway-buffer.toml", text)
}

@Suite("Buffer end to end", .serialized)
struct BufferEndToEndTests {
    /// Issue 8: with records of two sizes, small segments, byte-bound batches and a broker
    /// slower than the polling, whole runs of seqs were acknowledged without ever reaching the
    /// broker: a batch full by bytes in an older segment went on to the next segment.
    @Test("every acknowledged seq reached the broker: mixed sizes, small segments, byte-bound batches, a slow broker")
    func nothingAcknowledgedUnsent() throws {
        let scratch = Scratch()
        writeMixedProfiles(scratch)
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port, topic: "railgate/KZ-WAG-BUF/telemetry")
        let tiny = try WagonSimulator(
            profile: "tiny", units: "1-3", scratch: scratch, extra: ["--profile-path", scratch.path])
        let wide = try WagonSimulator(
            profile: "wide", units: "1-2", scratch: scratch, extra: ["--profile-path", scratch.path])
        var text = """
            [gateway]
            id = "KZ-WAG-BUF"
            state_dir = "\(scratch.path)/state"
            control_socket = "\(scratch.path)/control.sock"
            profile_path = ["\(scratch.path)"]

            [buffer]
            max_bytes = 1048576
            sync_interval_ms = 50
            when_full = "drop_oldest"

            [upstream]
            url = "mqtt://127.0.0.1:\(broker.port)"
            batch_interval_ms = 20
            batch_max_records = 50
            batch_max_bytes = 4000

            """
        for (bus, port) in [("tiny", tiny.port), ("wide", wide.port)] {
            text += "[[bus]]\nname = \"\(bus)\"\ntransport = \"tcp\"\nhost = \"127.0.0.1\"\nport = \(port)\n\n"
        }
        // Many small records and a big one now and then: runs of small records fill a segment's
        // end as often as big ones, so segments start with either.
        for (bus, units, pollMs) in [("tiny", 1...3, 20), ("wide", 1...2, 200)] {
            for unit in units {
                text +=
                    "[[device]]\nname = \"\(bus)-\(unit)\"\nbus = \"\(bus)\"\nunit = \(unit)\nprofile = \"\(bus)\"\npoll_interval_ms = \(pollMs)\n\n"
            }
        }
        let config = scratch.write("gateway-buffer.toml", text)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")

        // The broker falls behind four times for 3 s: the backlog spans several 64 KiB segments
        // and is drained in batches of at most 4000 bytes.
        for _ in 0..<4 {
            _ = try eventually("the gateway did not get going", seconds: 30, intervalMs: 100) {
                (try daemonStatus(scratch)["upstream"]?["acked_seq"]?.intValue ?? 0) > 0 ? true : nil
            }
            Thread.sleep(forTimeInterval: 1)  // the workload itself: records accumulate while it runs
            broker.pause()
            Thread.sleep(forTimeInterval: 3)
            broker.resume()
            let backlog = try daemonStatus(scratch)["buffer"]?["next_seq"]?.intValue ?? 0
            _ = try eventually("the backlog was not drained", seconds: 60, intervalMs: 200) {
                (try daemonStatus(scratch)["upstream"]?["acked_seq"]?.intValue ?? 0) >= backlog ? true : nil
            }
        }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        let stats = try JSONReader.parse(
            try TestProcess.run(
                Binaries.railgate, ["buffer", "stats", "--json", "--state-dir", scratch.path + "/state"],
                scratch: scratch
            ).output)
        let acked = try #require(stats["acked_seq"]?.intValue)
        #expect(stats["dropped"]?.intValue == 0, "nothing was dropped: every seq must be at the broker")
        #expect(acked > 1000, "a workload big enough to span many segments")
        // Every acknowledged seq is at the broker (the subscriber may still be receiving the last ones).
        var missing: Set<Int> = []
        do {
            try subscriber.waitUntil(seconds: 30) { _ in
                missing = Set(1...acked).subtracting(seqs(subscriber.records))
                return missing.isEmpty
            }
        } catch {
            Issue.record(
                "\(missing.count) acknowledged seqs never reached the broker, from \(missing.min() ?? 0) to \(missing.max() ?? 0)"
            )
        }
        let big = subscriber.records.prefix(1000).map { $0.serialized.utf8.count > 500 }
        #expect(Set(big).count == 2, "records of two sizes")
        _ = tiny
        _ = wide
    }
    /// Issue 8: a seq is never reused whatever is lost, and the loss is reported upstream;
    /// damaged state never stops the daemon or the technician's tools.
    @Test(
        "after a SIGKILL and on each kind of damaged state: tools answer, the daemon starts, no seq reused, the loss reported"
    )
    func damagedStates() throws {
        let scratch = Scratch()
        writeMixedProfiles(scratch)
        let tiny = try WagonSimulator(
            profile: "tiny", units: "1-3", scratch: scratch, extra: ["--profile-path", scratch.path])
        let wide = try WagonSimulator(
            profile: "wide", units: "1-2", scratch: scratch, extra: ["--profile-path", scratch.path])
        let state = scratch.path + "/state"
        var config = mixedGatewayConfig(
            scratch: scratch, brokerPort: nil, tinyPort: tiny.port, widePort: wide.port, pollMs: (20, 20))
        var gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let before = try eventually("the buffer did not fill several segments", seconds: 60, intervalMs: 200) {
            let status = try daemonStatus(scratch)
            return (status["buffer"]?["bytes"]?.intValue ?? 0) > 300_000 ? status : nil
        }
        // Killed like a power cut: what status showed handed out must never be handed out again.
        gateway.signal(SIGKILL)
        _ = try gateway.waitForExit()
        let handedOut = try #require(before["buffer"]?["next_seq"]?.intValue) - 1

        func tools(_ what: String) throws {
            for arguments in [["stats"], ["stats", "--json"], ["dump", "--limit", "5"]] {
                let result = try TestProcess.run(
                    Binaries.railgate, ["buffer"] + arguments + ["--state-dir", state], scratch: scratch)
                #expect(result.status == 0, "\(what): buffer \(arguments.joined(separator: " ")): \(result.error)")
                if arguments.contains("--json") {
                    #expect(
                        (try? JSONReader.parse(result.output))?["next_seq"]?.intValue != nil,
                        "\(what): \(result.output.prefix(300))")
                }
            }
        }
        try tools("after the kill")
        let stats = try JSONReader.parse(
            try TestProcess.run(
                Binaries.railgate, ["buffer", "stats", "--json", "--state-dir", state], scratch: scratch
            ).output)
        #expect((stats["next_seq"]?.intValue ?? 0) > handedOut, "the reservation is above every seq handed out")

        // Back with a broker: the gap goes upstream as a records_lost event, before new records.
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port, topic: "railgate/KZ-WAG-BUF/telemetry")
        config = mixedGatewayConfig(
            scratch: scratch, brokerPort: broker.port, tinyPort: tiny.port, widePort: wide.port, pollMs: (20, 20))
        gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { _ in
            subscriber.records.contains { $0["event"]?.stringValue == "records_lost" }
        }
        let report = try #require(subscriber.records.first { $0["event"]?.stringValue == "records_lost" })
        #expect(report["source"]?.stringValue == "KZ-WAG-BUF" && report["priority"]?.stringValue == "alarm")
        #expect((report["to_seq"]?.intValue ?? 0) >= handedOut)
        #expect((report["seq"]?.intValue ?? 0) > handedOut, "the report's own seq is new")
        let status = try daemonStatus(scratch)
        #expect((status["buffer"]?["lost_seqs"]?.intValue ?? 0) > 0)
        #expect(status["buffer"]?["last_loss"]?["to_seq"] == report["to_seq"])
        #expect(gateway.errorOutput.contains("will never arrive"))
        // The broker goes away: a backlog over several segments stays for the damage below.
        try broker.kill()
        let acked = status["upstream"]?["acked_seq"]?.intValue ?? 0
        _ = try eventually("no backlog built up", seconds: 60, intervalMs: 200) {
            let status = try daemonStatus(scratch)
            return (status["buffer"]?["bytes"]?.intValue ?? 0) > 300_000
                && (status["upstream"]?["acked_seq"]?.intValue ?? 0) >= acked ? true : nil
        }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        let pristine = scratch.path + "/pristine"
        #expect(system("cp -a '\(state)' '\(pristine)'") == 0)

        // Each kind of damage on a copy: the tools answer, the daemon starts, seqs go on above.
        let segmentNames = try FileManager.default.contentsOfDirectory(atPath: pristine + "/buffer")
            .filter { $0.hasPrefix("segment-") }.sorted()
        try #require(segmentNames.count >= 3)
        // Each kind, and whether seqs are lost (nil: it depends on what was acknowledged).
        let damages: [(String, String, Bool?)] = [
            ("last segment truncated", "truncate -s -7 buffer/\(segmentNames.last!)", true),
            ("last segment emptied", "truncate -s 0 buffer/\(segmentNames.last!)", true),
            ("last segment deleted", "rm buffer/\(segmentNames.last!)", true),
            ("all segments deleted", "rm buffer/segment-*", true),
            ("ack file garbage", "head -c 16 /dev/urandom > buffer/acked", nil),
            ("ack file a directory", "rm buffer/acked && mkdir buffer/acked", nil),
            ("lock a directory", "rm buffer/lock && mkdir buffer/lock", false),
            ("reservation garbage", "printf xyz > buffer/reserved", true),
            ("limits emptied", ": > buffer/limits", false),
            (
                "segment named with the largest seq",
                "head -c 100 /dev/urandom > buffer/segment-18446744073709551615.rgb", false
            ),
            ("middle segment a directory", "rm buffer/\(segmentNames[1]) && mkdir buffer/\(segmentNames[1])", true),
        ]
        let last =
            try JSONReader.parse(
                try TestProcess.run(
                    Binaries.railgate, ["buffer", "stats", "--json", "--state-dir", pristine], scratch: scratch
                ).output)["next_seq"]?.intValue ?? 0
        for (what, command, lossExpected) in damages {
            _ = system("rm -rf '\(state)' && cp -a '\(pristine)' '\(state)'")
            #expect(system("cd '\(state)' && \(command)") == 0, "\(what): \(command)")
            try tools(what)
            let daemon = try TestProcess(
                Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
            let running = try eventually("\(what): the daemon did not start", seconds: 60, intervalMs: 200) {
                let status = try daemonStatus(scratch)
                return (status["buffer"]?["next_seq"]?.intValue ?? 0) >= last ? status : nil
            }
            #expect(daemon.isRunning, "\(what)")
            if let lossExpected {
                #expect(
                    ((running["buffer"]?["lost_seqs"]?.intValue ?? 0) > 0) == lossExpected,
                    "\(what): \(running["buffer"]?.serialized ?? "")")
            }
            daemon.signal(SIGTERM)
            #expect(try daemon.waitForExit() == 0, "\(what): \(daemon.errorOutput.suffix(500))")
            #expect(!daemon.errorOutput.contains("Fatal error"), "\(what)")
            _ = running
        }
        _ = (tiny, wide, broker)
    }
}
