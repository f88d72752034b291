import Foundation
import RailgateCore
import RailgateMQTT
import RailgateSystem
import Testing

/// A wagon device polled every 100 ms, sent upstream in batches of at most 20 records every 200 ms.
func brokerReturnConfig(scratch: Scratch, brokerPort: Int, wagonPort: Int) -> String {
    scratch.write(
        "gateway-broker-return.toml",
        """
        [gateway]
        id = "KZ-WAG-RETURN"
        state_dir = "\(scratch.path)/state"
        control_socket = "\(scratch.path)/control.sock"
        profile_path = ["Firmware-config/profiles", "Tests/IntegrationTests/Fixtures"]

        [buffer]
        sync_interval_ms = 100

        [upstream]
        url = "mqtt://127.0.0.1:\(brokerPort)"
        batch_interval_ms = 200
        batch_max_records = 20

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
        poll_interval_ms = 100
        """)
}

/// The longest the uplink waits between connection attempts (`MQTTClient.start`'s default cap).
let reconnectCapSeconds = 5.0
/// What a loaded 2-core machine adds on top: CONNACK, the birth message, one batch interval,
/// the subscriber's own delivery, and the scheduler's delays.
let deliverySlackSeconds = 5.0

/// The broker's telemetry for the gateway, kept across broker restarts: a persistent subscriber
/// session made before the test, on a broker with persistence, so that nothing the broker
/// accepts while the subscriber reconnects is lost to it.
func persistentSubscriber(scratch: Scratch, port: Int, clientID: String) throws -> Subscriber {
    try Subscriber(
        port: port, topic: "railgate/KZ-WAG-RETURN/telemetry", clientID: clientID, cleanSession: false)
}

@Suite("Broker return", .serialized)
struct BrokerReturnTests {
    @Test("started with the broker down, the gateway says why, connects once it appears, and delivers every record")
    func brokerDownAtStart() throws {
        let scratch = Scratch()
        // The subscriber's session is made first, then the broker goes away before the gateway starts.
        var broker = try Broker(scratch: scratch, persistent: true)
        let port = broker.port
        let subscriber = try persistentSubscriber(scratch: scratch, port: port, clientID: "down-at-start")
        // The simulator takes its port (0: the kernel's choice) while the broker still holds its
        // own, so that it cannot be handed the broker's port once the broker is gone.
        let wagon = try WagonSimulator(
            profile: "all-types", units: "1", scratch: scratch,
            extra: ["--profile-path", "Tests/IntegrationTests/Fixtures"])
        try broker.stop()
        let config = brokerReturnConfig(scratch: scratch, brokerPort: port, wagonPort: wagon.port)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")

        // While the broker is down: connecting, with the reason, and records pile up.
        let reason = try eventually("last_error naming the refused connection", seconds: 30, intervalMs: 200) {
            () -> String? in
            let upstream = try daemonStatus(scratch)["upstream"]
            guard upstream?["state"] == .string("connecting"),
                let text = upstream?["last_error"]?.stringValue, text.contains("refused")
            else { return nil }
            return text
        }
        #expect(reason.contains("127.0.0.1:\(port)"), "\(reason)")
        _ = try eventually("30 records buffered", seconds: 60, intervalMs: 200) { () -> Void? in
            (try daemonStatus(scratch)["buffer"]?["records"]?.intValue ?? 0) >= 30 ? () : nil
        }
        // Several attempts have failed by now, so the back-off is at its cap.
        usleep(6_000_000)

        broker = try Broker(scratch: scratch, port: port, persistent: true)
        let appeared = Date()
        _ = try eventually("the gateway connected", seconds: reconnectCapSeconds + 30, intervalMs: 100) { () -> Void? in
            try daemonStatus(scratch)["upstream"]?["state"] == .string("connected") ? () : nil
        }
        let connectedAfter = Date().timeIntervalSince(appeared)
        #expect(
            connectedAfter <= reconnectCapSeconds + deliverySlackSeconds,
            "connected \(connectedAfter) s after the broker appeared")
        try subscriber.waitUntil(seconds: reconnectCapSeconds + deliverySlackSeconds + 20) { _ in
            !subscriber.records.isEmpty
        }
        let firstDelivery = Date().timeIntervalSince(appeared)
        print(
            "broker down at start: connected \(String(format: "%.1f", connectedAfter)) s and first record "
                + "\(String(format: "%.1f", firstDelivery)) s after the broker appeared")
        #expect(
            firstDelivery <= reconnectCapSeconds + deliverySlackSeconds,
            "first record \(firstDelivery) s after the broker appeared")
        let connected = try daemonStatus(scratch)["upstream"]
        #expect(connected?["state"] == .string("connected") && connected?["last_error"] == .null)

        // Every record made so far arrives: the buffer's acknowledged position passes them all.
        let made = try #require(try daemonStatus(scratch)["buffer"]?["next_seq"]?.intValue) - 1
        try subscriber.waitUntil(seconds: 60) { _ in Set(seqs(subscriber.records)).isSuperset(of: Set(1...made)) }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        let received = seqs(subscriber.records)
        #expect(contiguous(received) && received.min() == 1, "no seq missing")
        #expect(received.count == Set(received).count, "no record twice: nothing was in flight to lose")
    }

    @Test("after a broker restart data resumes within the back-off, every seq arrives, no batch twice unless in flight")
    func brokerRestart() throws {
        let scratch = Scratch()
        var broker = try Broker(scratch: scratch, persistent: true)
        let port = broker.port
        let subscriber = try persistentSubscriber(scratch: scratch, port: port, clientID: "restart-watcher")
        let wagon = try WagonSimulator(
            profile: "all-types", units: "1", scratch: scratch,
            extra: ["--profile-path", "Tests/IntegrationTests/Fixtures"])
        let config = brokerReturnConfig(scratch: scratch, brokerPort: port, wagonPort: wagon.port)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { _ in subscriber.records.count >= 40 }

        // A restart of a few seconds: long enough for several reconnect attempts.
        try broker.stop()
        let stopped = WallClock.now()
        _ = try eventually("the gateway noticing the broker is gone", seconds: 30, intervalMs: 100) { () -> Void? in
            try daemonStatus(scratch)["upstream"]?["state"] == .string("connected") ? nil : ()
        }
        usleep(8_000_000)
        let beforeRestart = Set(seqs(subscriber.records))
        broker = try Broker(scratch: scratch, port: port, persistent: true)
        let restarted = Date()
        let restartedWall = WallClock.now()
        // Resumed: a record made after the broker came back reaches the subscriber.
        try subscriber.waitUntil(seconds: reconnectCapSeconds + deliverySlackSeconds + 20) { _ in
            subscriber.records.contains {
                (Timestamp(parsing: $0["ts"]?.stringValue ?? "").map { $0 > restartedWall } ?? false)
            }
        }
        let resumed = Date().timeIntervalSince(restarted)
        print("broker restart: data resumed \(String(format: "%.1f", resumed)) s after the broker came back")
        #expect(resumed <= reconnectCapSeconds + deliverySlackSeconds, "resumed \(resumed) s after the restart")

        let made = try #require(try daemonStatus(scratch)["buffer"]?["next_seq"]?.intValue) - 1
        try subscriber.waitUntil(seconds: 60) { _ in Set(seqs(subscriber.records)).isSuperset(of: Set(1...made)) }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)

        let records = subscriber.records
        #expect(contiguous(seqs(records)) && seqs(records).min() == 1, "every seq arrived")
        // Duplicates are allowed only for batches in flight when the broker went down (made
        // before it stopped, unacknowledged, sent again by the session after reconnecting): at
        // most the 10 batches of 20 the uplink keeps in flight. Nothing made later comes twice.
        var count: [Int: Int] = [:]
        for seq in seqs(records) { count[seq, default: 0] += 1 }
        let twice = records.filter { count[$0["seq"]?.intValue ?? 0, default: 0] > 1 }
        let madeLater = twice.filter {
            Timestamp(parsing: $0["ts"]?.stringValue ?? "").map { $0 > stopped } ?? true
        }
        #expect(madeLater.isEmpty, "records made after the broker stopped arrived twice: \(seqs(madeLater))")
        #expect(Set(seqs(twice)).count <= 10 * 20, "duplicates beyond what was in flight")
        print(
            "broker restart: \(Set(seqs(twice)).count) records arrived twice (in flight at the stop), "
                + "\(beforeRestart.count) before the restart, \(Set(seqs(records)).count) in all")
    }

    @Test("a broker name that does not resolve yet (no link at boot) is reported; the uplink keeps trying")
    func unresolvedBrokerName() throws {
        let scratch = Scratch()
        let wagon = try WagonSimulator(
            profile: "all-types", units: "1", scratch: scratch,
            extra: ["--profile-path", "Tests/IntegrationTests/Fixtures"])
        let config = brokerReturnConfig(scratch: scratch, brokerPort: 1883, wagonPort: wagon.port)
        let unresolved = scratch.write(
            "gateway-unresolved.toml",
            (try String(contentsOfFile: config, encoding: .utf8)).replacingOccurrences(
                of: "mqtt://127.0.0.1:1883", with: "mqtt://railgate-no-such-host.invalid:1883"))
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", unresolved], scratch: scratch, name: "railgate")
        let upstream = try eventually("the uplink connecting, with the lookup failure", seconds: 30, intervalMs: 200) {
            () -> JSON? in
            let upstream = try daemonStatus(scratch)["upstream"]
            return upstream?["last_error"]?.stringValue?.contains("Lookup error") == true ? upstream : nil
        }
        #expect(upstream["state"] == .string("connecting"))
        #expect(upstream["url"] == .string("mqtt://railgate-no-such-host.invalid:1883"))
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
    }

    /// The libmosquitto behaviour the uplink's bookkeeping rests on, checked on the real library.
    @Test(
        "a QoS 1 publish while the broker is down returns its id, is sent after the reconnect, and is acknowledged once"
    )
    func publishWhileDown() throws {
        final class Events: @unchecked Sendable {
            let lock = ConditionLock()
            var published: [Int32] = []
            var disconnects = 0
            var connects = 0
        }
        let scratch = Scratch()
        var broker = try Broker(scratch: scratch, persistent: true)
        let port = broker.port
        let subscriber = try Subscriber(
            port: port, topic: "it/queued", clientID: "queued-watcher", cleanSession: false)
        let events = Events()
        let client = try MQTTClient(clientID: "queued-publisher") { event in
            events.lock.withLock {
                switch event {
                case .published(let id): events.published.append(id)
                case .disconnected: events.disconnects += 1
                case .connected(0, _): events.connects += 1
                default: break
                }
                events.lock.broadcast()
            }
        }
        try client.start(host: "127.0.0.1", port: port, keepaliveSeconds: 30)
        func wait(_ what: String, _ condition: () -> Bool) throws {
            let deadline = MonotonicInstant.now().adding(milliseconds: 30_000)
            try events.lock.withLock {
                while !condition() {
                    guard MonotonicInstant.now() < deadline else { throw TimedOut(description: what) }
                    events.lock.wait(until: deadline)
                }
            }
        }
        try wait("connected") { events.connects == 1 }
        try broker.stop()
        try wait("the loss noticed") { events.disconnects >= 1 }
        // mosquitto_publish says MOSQ_ERR_NO_CONN here, after queueing the message.
        let id = try client.publish(topic: "it/queued", payload: Array("while down".utf8), qos: 1)
        #expect(id != 0)
        broker = try Broker(scratch: scratch, port: port, persistent: true)
        try wait("the PUBACK after the reconnect") { events.published.contains(id) }
        try subscriber.waitUntil(seconds: 30) { messages in messages.contains { $0.text == "while down" } }
        usleep(500_000)
        #expect(events.lock.withLock { events.published } == [id], "one .published, for the queued message")
        #expect(subscriber.messages.filter { $0.text == "while down" }.count == 1)
        client.disconnect()
    }
}
