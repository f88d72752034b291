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
}
