import Foundation
import RailgateCore
import RailgateSystem
import Testing

/// A wagon device polled every 100 ms and a gate whose barrier cycles once, 4 s after the
/// gateway starts watching: the gate's events happen during the outage.
func outageConfig(
    scratch: Scratch, brokerPort: Int, wagonPort: Int, gateChip: String, maxBytes: Int, travelTimeoutMs: Int = 8000
) -> String {
    scratch.write(
        "gateway-outage.toml",
        """
        [gateway]
        id = "KZ-WAG-OUTAGE"
        state_dir = "\(scratch.path)/state"
        control_socket = "\(scratch.path)/control.sock"
        profile_path = ["Firmware-config/profiles", "Tests/IntegrationTests/Fixtures"]

        [buffer]
        max_bytes = \(maxBytes)
        sync_interval_ms = 100
        when_full = "drop_oldest"

        [upstream]
        url = "mqtt://127.0.0.1:\(brokerPort)"
        batch_interval_ms = 200
        batch_max_records = 50

        [[bus]]
        name = "line"
        transport = "tcp"
        host = "127.0.0.1"
        port = \(wagonPort)

        [[device]]
        name = "testbox"
        bus = "line"
        unit = 1
        profile = "all-types"
        poll_interval_ms = 50

        [[gate]]
        name = "north-barrier"
        chip = "\(gateChip)"
        open_line = 17
        closed_line = 18
        travel_timeout_ms = \(travelTimeoutMs)
        """)
}

@Suite("Outage", .serialized)
struct OutageTests {
    /// During the outage the barrier jams while opening (a travel_timeout alarm) and is freed
    /// back to closed: an alarm and events, newer than a backlog of samples.
    @Test("after an outage, alarms and events arrive before the older backlog, and no seq is missing")
    func eventsFirst() throws {
        let scratch = Scratch()
        var broker = try Broker(scratch: scratch, persistent: true)
        let port = broker.port
        let subscriber = try Subscriber(
            port: port, topic: "railgate/KZ-WAG-OUTAGE/telemetry", clientID: "outage-watcher", cleanSession: false)
        let wagon = try WagonSimulator(
            profile: "all-types", units: "1", scratch: scratch,
            extra: ["--profile-path", "Tests/IntegrationTests/Fixtures"])
        let scenario = scratch.write(
            "late-jam.toml",
            """
            [[step]]
            at_s = 4.0
            action = "stick_opening"
            [[step]]
            at_s = 6.0
            action = "set"
            line = 18
            value = 1
            """)
        let gate = try GateSimulator(scratch: scratch, scenario: scenario)
        let config = outageConfig(
            scratch: scratch, brokerPort: port, wagonPort: wagon.port, gateChip: gate.chip, maxBytes: 16 << 20,
            travelTimeoutMs: 1000)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")

        try subscriber.waitUntil(seconds: 60) { _ in subscriber.records.count >= 5 }
        try broker.stop()  // the link goes down
        // Anything made a second after this was never in flight before the outage (batches in
        // flight when the broker vanished are resent first by libmosquitto, rightly).
        let backlogSince = Timestamp(millisecondsSinceEpoch: WallClock.now().millisecondsSinceEpoch + 1000)
        let beforeOutage = Set(seqs(subscriber.records))
        // The barrier cycles during the outage, with samples buffered before and after it.
        try eventually("the barrier's cycle and 40 samples in the buffer", seconds: 60, intervalMs: 200) {
            () -> Void? in
            let records = try bufferedRecords(scratch.path + "/state", scratch: scratch)
            let cycled = records.contains { $0["event"] == .string("closed") && $0["previous"] == .string("fault") }
            return cycled && records.filter { $0["kind"] == .string("sample") }.count >= 40 ? () : nil
        }
        broker = try Broker(scratch: scratch, port: port, persistent: true)  // the link returns
        try subscriber.waitUntil(seconds: 60) { _ in
            subscriber.records.contains { $0["event"] == .string("closed") && $0["previous"] == .string("fault") }
                && subscriber.records.filter {
                    $0["kind"] == .string("sample") && !beforeOutage.contains($0["seq"]?.intValue ?? 0)
                }.count >= 40
        }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)

        let afterOutage = subscriber.records.filter { !beforeOutage.contains($0["seq"]?.intValue ?? 0) }
        let alarm = try #require(afterOutage.firstIndex { $0["event"] == .string("fault") })
        #expect(
            afterOutage[alarm]["priority"] == .string("alarm")
                && afterOutage[alarm]["fault"] == .string("travel_timeout"))
        let firstEvent = try #require(afterOutage.firstIndex { $0["event"] == .string("opening") })
        #expect(
            firstEvent < alarm && afterOutage[firstEvent + 1]["event"] == .string("fault"),
            "events in their order, together")
        let eventSeq = try #require(afterOutage[firstEvent]["seq"]?.intValue)
        let olderSamples = afterOutage.enumerated().filter { entry in
            entry.element["kind"] == .string("sample") && (entry.element["seq"]?.intValue ?? 0) < eventSeq
                && (Timestamp(parsing: entry.element["ts"]?.stringValue ?? "").map { $0 > backlogSince } ?? false)
        }
        #expect(
            olderSamples.count >= 10, "there was a backlog, made during the outage, older than the barrier's events")
        #expect(olderSamples.allSatisfy { $0.offset > firstEvent }, "the events came before the older samples")
        #expect(contiguous(seqs(subscriber.records)), "no seq missing")
        #expect(seqs(subscriber.records).min() == 1)
    }

    @Test("a buffer that overflowed during an outage reports one buffer_overflow event when the link returns")
    func overflowReported() throws {
        let scratch = Scratch()
        var broker = try Broker(scratch: scratch, persistent: true)
        let port = broker.port
        let subscriber = try Subscriber(
            port: port, topic: "railgate/KZ-WAG-OUTAGE/telemetry", clientID: "overflow-watcher", cleanSession: false)
        let wagon = try WagonSimulator(
            profile: "all-types", units: "1", scratch: scratch,
            extra: ["--profile-path", "Tests/IntegrationTests/Fixtures"])
        let gate = try GateSimulator(scratch: scratch)
        let config = outageConfig(
            scratch: scratch, brokerPort: port, wagonPort: wagon.port, gateChip: gate.chip, maxBytes: 65536)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { _ in subscriber.records.count >= 3 }
        try broker.stop()
        // Fill more than the 64 KiB buffer holds.
        let dropped = try eventually("the buffer overflowing", seconds: 90, intervalMs: 200) { () -> Int? in
            let dropped = try daemonStatus(scratch)["buffer"]?["dropped_normal"]?.intValue ?? 0
            return dropped > 0 ? dropped : nil
        }
        broker = try Broker(scratch: scratch, port: port, persistent: true)
        try subscriber.waitUntil(seconds: 60) { _ in
            subscriber.records.contains { $0["event"] == .string("buffer_overflow") }
        }
        let overflow = try #require(subscriber.records.first { $0["event"] == .string("buffer_overflow") })
        #expect((overflow["dropped_normal"]?.intValue ?? 0) >= dropped)
        #expect(overflow["dropped_alarm"] == .integer(0))
        #expect(overflow["source"] == .string("KZ-WAG-OUTAGE") && overflow["priority"] == .string("alarm"))
        #expect(subscriber.records.filter { $0["event"] == .string("buffer_overflow") }.count == 1)
        // The gate's first event (precious) was kept through the overflow.
        #expect(
            subscriber.records.contains { $0["source"] == .string("north-barrier") && $0["event"] == .string("closed") }
        )
        _ = gateway
    }
}
