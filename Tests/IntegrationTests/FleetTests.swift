import Foundation
import RailgateCore
import Testing

/// What every fleet test starts from: a broker and a subscriber, `fleet-config` for `devices`
/// devices of `points` f32 on `buses` TCP buses (batches every 200 ms), one `wagon` serving all
/// their units, and the gateway running on the generated configuration.
struct FleetRig {
    let scratch = Scratch()
    let broker: Broker
    let subscriber: Subscriber
    /// Where `fleet-config` wrote railgate.toml and profiles/.
    let directory: String
    /// The profile every device shares.
    let profile: String
    let simulator: WagonSimulator
    let gateway: TestProcess

    init(devices: Int, points: Int, buses: Int, pollIntervalMs: Int, simulatorOptions: [String] = []) throws {
        broker = try Broker(scratch: scratch)
        subscriber = try Subscriber(port: broker.port)
        let simulatorPort = freePort()
        directory = scratch.path + "/fleet"
        let generator = try TestProcess(
            Binaries.simulator,
            [
                "fleet-config", "--out", directory, "--devices", "\(devices)", "--points", "\(points)", "--buses",
                "\(buses)", "--poll-interval-ms", "\(pollIntervalMs)", "--batch-interval-ms", "200", "--port",
                "\(simulatorPort)", "--upstream", "mqtt://127.0.0.1:\(broker.port)",
            ], scratch: scratch, name: "fleet-config")
        #expect(try generator.waitForExit() == 0)
        profile = directory + "/profiles/f32-block-\(points).toml"
        simulator = try WagonSimulator(
            profile: profile, units: "1-\(devices)", scratch: scratch, port: simulatorPort, extra: simulatorOptions)
        gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", directory + "/railgate.toml"], scratch: scratch, name: "railgate")
    }
}

/// `railgate-sim fleet-config` and one `wagon` serving the whole fleet: what the scale benchmark
/// runs (at 100 devices x 100 points), small enough for the test suite.
@Suite("Fleet: fleet-config and one simulator for many units", .serialized)
struct FleetTests {
    @Test("6 devices x 20 f32 on 2 TCP buses: every device's samples carry all 20 values, every seq arrives")
    func smallFleet() throws {
        let rig = try FleetRig(
            devices: 6, points: 20, buses: 2, pollIntervalMs: 200, simulatorOptions: ["--tick-ms", "200"])
        let (subscriber, gateway) = (rig.subscriber, rig.gateway)
        let config = try String(contentsOfFile: rig.directory + "/railgate.toml", encoding: .utf8)
        #expect(config.components(separatedBy: "[[bus]]").count - 1 == 2)
        #expect(config.components(separatedBy: "[[device]]").count - 1 == 6)
        #expect(config.components(separatedBy: #"bus = "fleet-1""#).count - 1 == 3)
        #expect(config.components(separatedBy: #"bus = "fleet-2""#).count - 1 == 3)

        let sources = Set((1...6).map { "dev-\($0)" })
        try subscriber.waitUntil(seconds: 60) { _ in
            let records = subscriber.records
            return sources.allSatisfy { source in records.filter { $0["source"]?.stringValue == source }.count >= 3 }
        }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        let records = subscriber.records
        let received = Set(seqs(records))
        #expect(received.min() == 1)
        #expect(
            received.count == (received.max() ?? 0),
            "missing seqs: \((1...(received.max() ?? 1)).filter { !received.contains($0) })")
        for record in records where record["kind"] == .string("sample") {
            #expect(record["errors"] == nil, "\(record.serialized)")
            guard case .object(let values)? = record["values"] else {
                Issue.record("no values: \(record.serialized)")
                continue
            }
            #expect(values.map(\.0) == (0..<20).map { "v\($0)" }, "\(record.serialized)")
            #expect(values.allSatisfy { $0.1.doubleValue?.isFinite == true }, "\(record.serialized)")
        }
        _ = rig  // the simulator and the broker live to the end
    }

    @Test("devices of one interval on one bus are polled in cycles: one after the other, then a sleep")
    func pollCycles() throws {
        let rig = try FleetRig(devices: 3, points: 4, buses: 1, pollIntervalMs: 3000)
        let (subscriber, gateway) = (rig.subscriber, rig.gateway)
        let sources = (1...3).map { "dev-\($0)" }
        func samples(of source: String) -> [Int64] {
            subscriber.records.filter { $0["kind"] == .string("sample") && $0["source"]?.stringValue == source }
                .compactMap { CompactBatch.timestamp(ofRecord: Array($0.serialized.utf8))?.millisecondsSinceEpoch }
        }
        try subscriber.waitUntil(seconds: 60) { _ in sources.allSatisfy { samples(of: $0).count >= 2 } }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        // Spread across the interval, the three would be 1 s apart; in a cycle, milliseconds.
        for cycle in 0..<2 {
            let times = sources.map { samples(of: $0)[cycle] }
            #expect(times == times.sorted(), "cycle \(cycle): devices in configuration order: \(times)")
            #expect(times.max()! - times.min()! < 900, "cycle \(cycle): one after the other: \(times)")
        }
        let first = sources.map { samples(of: $0)[0] }
        let second = sources.map { samples(of: $0)[1] }
        #expect(zip(first, second).allSatisfy { $1 - $0 >= 2000 }, "a sleep between cycles: \(first) then \(second)")
        _ = rig  // the simulator and the broker live to the end
    }

    @Test("a reload that reorders a profile's points: batches stay compact/1, in the new slot order")
    func reloadReorderedProfile() throws {
        let rig = try FleetRig(devices: 2, points: 3, buses: 1, pollIntervalMs: 200)
        let (subscriber, gateway, profile) = (rig.subscriber, rig.gateway, rig.profile)
        func telemetry() -> [String] { subscriber.timedMessages.map(\.text) }
        try subscriber.waitUntil(seconds: 60) { _ in telemetry().count >= 3 }
        #expect(telemetry().allSatisfy { $0.contains(#""format":"compact/1""#) }, "\(telemetry())")
        // v0 and v2 swap names: records now list v2, v1, v0 (profile order is address order).
        let text = try String(contentsOfFile: profile, encoding: .utf8)
        try text.replacingOccurrences(of: #"name = "v0""#, with: #"name = "vX""#)
            .replacingOccurrences(of: #"name = "v2""#, with: #"name = "v0""#)
            .replacingOccurrences(of: #"name = "vX""#, with: #"name = "v2""#)
            .write(toFile: profile, atomically: true, encoding: .utf8)
        gateway.signal(SIGHUP)
        try eventually("the reload") { gateway.errorOutput.contains("reloading the configuration") ? () : nil }
        let before = telemetry().count
        try subscriber.waitUntil(seconds: 60) { _ in telemetry().count >= before + 6 }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        let after = telemetry().dropFirst(before + 2)
        #expect(!after.isEmpty)
        for payload in after {
            #expect(payload.contains(#""format":"compact/1""#), "a batch after the reload went plain: \(payload)")
            #expect(payload.contains(#"["dev-1","v2","v1","v0"]"#), "slots in the new order: \(payload)")
        }
        _ = rig  // the simulator and the broker live to the end
    }

    @Test("fleet-config refuses a fleet that cannot be addressed")
    func refusesImpossibleFleets() throws {
        let scratch = Scratch()
        for arguments in [
            ["--devices", "248", "--port", "1502"],  // unit ids beyond 247
            ["--devices", "2", "--buses", "3", "--port", "1502"],  // more buses than devices
            ["--devices", "2", "--port", "1502,x"],
        ] {
            let process = try TestProcess(
                Binaries.simulator, ["fleet-config", "--out", scratch.path + "/f"] + arguments, scratch: scratch,
                name: "fleet-config")
            #expect(try process.waitForExit() == 64, "\(arguments)")
        }
        #expect(!FileManager.default.fileExists(atPath: scratch.path + "/f/railgate.toml"))
    }
}
