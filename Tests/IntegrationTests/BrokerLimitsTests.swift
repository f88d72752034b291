import Foundation
import RailgateCore
import RailgateMQTT
import Testing

/// A wagon polled every 100 ms, sent in batches of at most `maxRecords` records every
/// `intervalMs`, with more `[upstream]` lines.
func brokerLimitsConfig(
    scratch: Scratch, brokerPort: Int, wagonPort: Int, upstream: [String] = [], intervalMs: Int = 200,
    maxRecords: Int = 20
) -> String {
    scratch.write(
        "gateway-limits-\(UUID().uuidString.prefix(4)).toml",
        """
        [gateway]
        id = "KZ-WAG-LIMITS"
        state_dir = "\(scratch.path)/state"
        control_socket = "\(scratch.path)/control.sock"
        profile_path = ["Firmware-config/profiles", "Tests/IntegrationTests/Fixtures"]

        [buffer]
        sync_interval_ms = 100

        [upstream]
        url = "mqtt://127.0.0.1:\(brokerPort)"
        batch_interval_ms = \(intervalMs)
        batch_max_records = \(maxRecords)
        \(upstream.joined(separator: "\n"))

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

/// How many times `text` occurs in `log`.
func occurrences(of text: String, in log: String) -> Int { log.components(separatedBy: text).count - 1 }

/// The daemon's log lines (swift-log writes to stdout and stderr).
func daemonLog(_ process: TestProcess) -> String { process.output + process.errorOutput }

/// `railgate doctor` for `config`: its human output.
func doctorOutput(_ config: String, scratch: Scratch) throws -> String {
    let result = try TestProcess.run(Binaries.railgate, ["doctor", "--config", config], scratch: scratch)
    return result.output + result.error
}

func wagon(_ scratch: Scratch) throws -> WagonSimulator {
    try WagonSimulator(
        profile: "all-types", units: "1", scratch: scratch,
        extra: ["--profile-path", "Tests/IntegrationTests/Fixtures"])
}

@Suite("Brokers as they are", .serialized)
struct BrokerLimitsTests {
    /// A broker that refuses what the default configuration's CONNECT asks for: the reason in
    /// the log (once), `status` and `doctor`, records buffered, attempts no faster than the
    /// back-off; then, with the configuration the reason names, every record delivered.
    func refusedThenFixed(options: [String], expected: String, fix: String) throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch, options: options)
        let subscriber = try Subscriber(port: broker.port, topic: "railgate/KZ-WAG-LIMITS/#")
        let sim = try wagon(scratch)
        let refused = brokerLimitsConfig(scratch: scratch, brokerPort: broker.port, wagonPort: sim.port)
        let gateway = try TestProcess(Binaries.railgate, ["run", "--config", refused], scratch: scratch, name: "gw1")
        let reason = try eventually("last_error naming \(expected)", seconds: 30, intervalMs: 200) { () -> String? in
            let upstream = try daemonStatus(scratch)["upstream"]
            guard let text = upstream?["last_error"]?.stringValue, text.contains(expected) else { return nil }
            #expect(upstream?["state"] == .string("connecting"))
            return text
        }
        let firstAttempts = occurrences(of: "New connection from", in: broker.log)
        let watchStart = Date()
        usleep(8_000_000)
        let attempts = occurrences(of: "New connection from", in: broker.log) - firstAttempts
        let watched = Date().timeIntervalSince(watchStart)
        // 1 s, 2 s, 4 s, 5 s, each at most 20 % shorter: no more than one attempt per 0.8 s.
        #expect(attempts >= 1 && Double(attempts) <= watched / 0.8 + 1, "\(attempts) attempts in \(watched) s")
        #expect(
            occurrences(of: "before accepting it", in: daemonLog(gateway)) == 1,
            "the reason is logged once: \(daemonLog(gateway).suffix(2000))")
        let buffered = try #require(try daemonStatus(scratch)["buffer"]?["records"]?.intValue)
        #expect(buffered >= 10, "records stay buffered")
        let doctor = try doctorOutput(refused, scratch: scratch)
        #expect(doctor.contains(expected), "doctor: \(doctor)")
        #expect(subscriber.records.isEmpty)
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)

        let fixed = brokerLimitsConfig(scratch: scratch, brokerPort: broker.port, wagonPort: sim.port, upstream: [fix])
        let second = try TestProcess(Binaries.railgate, ["run", "--config", fixed], scratch: scratch, name: "gw2")
        _ = try eventually("connected with \(fix)", seconds: 30, intervalMs: 200) { () -> Void? in
            try daemonStatus(scratch)["upstream"]?["state"] == .string("connected") ? () : nil
        }
        let made = try #require(try daemonStatus(scratch)["buffer"]?["next_seq"]?.intValue) - 1
        try subscriber.waitUntil(seconds: 60) { _ in Set(seqs(subscriber.records)).isSuperset(of: Set(1...made)) }
        #expect(
            subscriber.messages.contains { $0.topic.hasSuffix("/status") && $0.json?["state"] == .string("online") })
        second.signal(SIGTERM)
        #expect(try second.waitForExit() == 0)
        print("refused by \(options): \(reason)")
    }

    @Test("a broker with max_qos 0: the will's QoS named as the reason; with qos = 0 every record arrives")
    func maxQoSZero() throws {
        try refusedThenFixed(options: ["max_qos 0"], expected: "max_qos 0", fix: "qos = 0")
    }

    @Test("a broker with retain_available false: the retained will named; with retain_status = false data flows")
    func retainUnavailable() throws {
        try refusedThenFixed(
            options: ["retain_available false"], expected: "retain_status = false", fix: "retain_status = false")
    }

    @Test(
        "a broker with max_packet_size 2000: batches halved, logged once each, every record arrives, no loop",
        arguments: ["compact", "records"])
    func maximumPacketSize(payload: String) throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch, options: ["max_packet_size 2000"])
        let subscriber = try Subscriber(port: broker.port, topic: "railgate/KZ-WAG-LIMITS/telemetry")
        let sim = try wagon(scratch)
        // Batches of up to 100 records every 3 s: about 30 records of 14 values, over 2000 bytes
        // plain (about 350 bytes a record) and compact/1 (about 100).
        let config = brokerLimitsConfig(
            scratch: scratch, brokerPort: broker.port, wagonPort: sim.port, upstream: ["payload = \"\(payload)\""],
            intervalMs: 3000, maxRecords: 100)
        let gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "gw")
        let start = Date()
        _ = try eventually("200 records delivered", seconds: 90, intervalMs: 200) { () -> Void? in
            Set(seqs(subscriber.records)).count >= 200 ? () : nil
        }
        let status = try daemonStatus(scratch)["upstream"]
        let limit = try #require(status?["batch_bytes_limit"]?.intValue)
        // The limit counts the records' stored bytes: below the packet size for plain batches;
        // compact/1 batches are smaller than the records they carry, so it stays above it there.
        #expect(
            limit < (payload == "records" ? 2000 : 262_144 / 2),
            "the batch limit came down from batch_max_bytes: \(limit)")
        let log = daemonLog(gateway)
        let halvings = occurrences(of: "taken as over its maximum packet size", in: log)
        // From 262 KB of records down to under 2000 bytes: at most log2(262144 / 1000) + 1 = 9.
        #expect(halvings >= 1 && halvings <= 9, "\(halvings) halvings: \(log.suffix(3000))")
        let connects = occurrences(of: "New client connected", in: broker.log)
        #expect(connects <= 2 * halvings + 4, "\(connects) connections for \(halvings) halvings: no reconnect loop")
        let made = try #require(try daemonStatus(scratch)["buffer"]?["next_seq"]?.intValue) - 1
        try subscriber.waitUntil(seconds: 60) { _ in Set(seqs(subscriber.records)).isSuperset(of: Set(1...made)) }
        #expect(subscriber.messages.allSatisfy { $0.payload.count < 2000 })
        #expect(try daemonStatus(scratch)["upstream"]?["undeliverable"]?.intValue == 0)
        print(
            "max_packet_size 2000, payload = \(payload): \(halvings) halvings to \(limit) bytes, \(connects) connections, "
                + "\(made) records in \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
    }

    @Test("a second client with the same client id: the takeover is named once, reconnects no faster than the back-off")
    func sessionTakeover() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port, topic: "railgate/KZ-WAG-LIMITS/telemetry")
        let sim = try wagon(scratch)
        let config = brokerLimitsConfig(scratch: scratch, brokerPort: broker.port, wagonPort: sim.port)
        let gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "gw")
        _ = try eventually("connected", seconds: 30, intervalMs: 200) { () -> Void? in
            try daemonStatus(scratch)["upstream"]?["state"] == .string("connected") ? () : nil
        }
        // The second gateway: same client id, same client code, same back-off.
        let intruder = try MQTTClient(clientID: "railgate-KZ-WAG-LIMITS") { _ in }
        let before = occurrences(of: "as railgate-KZ-WAG-LIMITS", in: broker.log)
        let start = Date()
        try intruder.start(host: "127.0.0.1", port: broker.port, keepaliveSeconds: 30)
        let reason = try eventually("last_error naming the takeover", seconds: 40, intervalMs: 200) { () -> String? in
            let text = try daemonStatus(scratch)["upstream"]?["last_error"]?.stringValue
            return text?.contains("session taken over") == true ? text : nil
        }
        #expect(reason.contains("railgate-KZ-WAG-LIMITS"))
        usleep(UInt32(max(0, 20 - Date().timeIntervalSince(start)) * 1_000_000))
        let window = Date().timeIntervalSince(start)
        let connects = occurrences(of: "as railgate-KZ-WAG-LIMITS", in: broker.log) - before
        intruder.disconnect()
        // Two clients, each waiting 1, 2, 4, then 5 s (at most 20 % less) after every loss.
        #expect(connects >= 3 && Double(connects) <= 2 * (window / 0.8 + 1), "\(connects) connects in \(window) s")
        #expect(
            occurrences(of: "session taken over", in: daemonLog(gateway)) == 1, "\(daemonLog(gateway).suffix(3000))")
        let doctor = try doctorOutput(config, scratch: scratch)
        #expect(doctor.contains("session taken over"), "doctor: \(doctor)")
        // Alone again: everything arrives.
        _ = try eventually("connected alone", seconds: 30, intervalMs: 200) { () -> Void? in
            try daemonStatus(scratch)["upstream"]?["state"] == .string("connected") ? () : nil
        }
        let made = try #require(try daemonStatus(scratch)["buffer"]?["next_seq"]?.intValue) - 1
        try subscriber.waitUntil(seconds: 60) { _ in Set(seqs(subscriber.records)).isSuperset(of: Set(1...made)) }
        print("takeover: \(connects) connects of the shared client id in \(String(format: "%.1f", window)) s")
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
    }

    @Test("a wrong password: refused once in log, status and doctor; the systemd credential connects; no secret shown")
    func credentials() throws {
        let scratch = Scratch()
        let passwords = scratch.path + "/mosquitto.passwd"
        let secret = "Corr3ct-Horse-\(UUID().uuidString.prefix(8))"
        let wrong = "Wr0ng-Battery-\(UUID().uuidString.prefix(8))"
        let made = try TestProcess.run(
            "/usr/bin/mosquitto_passwd", ["-b", "-c", passwords, "gw42", secret], scratch: scratch)
        #expect(made.status == 0, "\(made.error)")
        let broker = try Broker(
            scratch: scratch, options: ["allow_anonymous false", "password_file \(passwords)"])
        let sim = try wagon(scratch)
        let wrongFile = scratch.write("wrong.pass", wrong + "\n")
        let config = brokerLimitsConfig(
            scratch: scratch, brokerPort: broker.port, wagonPort: sim.port,
            upstream: ["username = \"gw42\"", "password_file = \"\(wrongFile)\""])
        let gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "gw1")
        let status = try eventually("refused", seconds: 30, intervalMs: 200) { () -> JSON? in
            let status = try daemonStatus(scratch)
            return status["upstream"]?["state"] == .string("refused") ? status : nil
        }
        let reason = try #require(status["upstream"]?["last_error"]?.stringValue)
        #expect(reason.contains("not authorised") || reason.contains("bad user name"), "\(reason)")
        #expect(reason.contains("password_file"), "the remedy names the password: \(reason)")
        usleep(6_000_000)
        let log = daemonLog(gateway)
        #expect(occurrences(of: "refused the connection", in: log) == 1, "\(log.suffix(2000))")
        let doctor = try doctorOutput(config, scratch: scratch)
        #expect(doctor.contains("fail") && doctor.contains("refused the connection"), "doctor: \(doctor)")
        let statusText = try TestProcess.run(
            Binaries.railgate, ["status", "--socket", scratch.path + "/control.sock"], scratch: scratch
        ).output
        for (what, text) in [("log", log), ("status", "\(status)\n\(statusText)"), ("doctor", doctor)] {
            #expect(!text.contains(wrong) && !text.contains(secret), "the password appears in the \(what)")
        }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)

        // The right password from systemd's credential directory (LoadCredential=mqtt-password:...).
        let credentials = scratch.path + "/credentials"
        mkdir(credentials, 0o700)
        _ = scratch.write("credentials/mqtt-password", secret + "\n")
        let subscriberPasswords = try TestProcess.run(
            "/usr/bin/mosquitto_passwd", ["-b", passwords, "reader", "reader"], scratch: scratch)
        #expect(subscriberPasswords.status == 0)
        let fromCredential = brokerLimitsConfig(
            scratch: scratch, brokerPort: broker.port, wagonPort: sim.port, upstream: ["username = \"gw42\""])
        let second = try TestProcess(
            Binaries.railgate, ["run", "--config", fromCredential], scratch: scratch, name: "gw2",
            environment: ["CREDENTIALS_DIRECTORY": credentials])
        let connected = try eventually("connected with the credential", seconds: 30, intervalMs: 200) { () -> JSON? in
            let status = try daemonStatus(scratch)
            return status["upstream"]?["state"] == .string("connected") ? status : nil
        }
        let doctorAfter = try doctorOutput(fromCredential, scratch: scratch)
        second.signal(SIGTERM)
        #expect(try second.waitForExit() == 0)
        for (what, text) in [("log", daemonLog(second)), ("status", "\(connected)"), ("doctor", doctorAfter)] {
            #expect(!text.contains(secret), "the password appears in the \(what)")
        }
    }

    @Test(
        "a broker that requires a client certificate the gateway lacks: the TLS failure in status and doctor, logged once",
        .enabled(if: FileManager.default.fileExists(atPath: "/usr/bin/openssl"), "needs openssl for test certificates"))
    func clientCertificateRequired() throws {
        let scratch = Scratch()
        let files = try TLSTests().certificates(scratch)
        let broker = try Broker(scratch: scratch, tls: files, tlsOptions: ["require_certificate true"])
        let tlsPort = try #require(broker.tlsPort)
        let sim = try wagon(scratch)
        var config = try String(
            contentsOfFile: brokerLimitsConfig(
                scratch: scratch, brokerPort: tlsPort, wagonPort: sim.port, upstream: ["ca_file = \"\(files.ca)\""]),
            encoding: .utf8)
        config = config.replacingOccurrences(of: "mqtt://127.0.0.1:", with: "mqtts://127.0.0.1:")
        let file = scratch.write("client-certificate.toml", config)
        let gateway = try TestProcess(Binaries.railgate, ["run", "--config", file], scratch: scratch, name: "gw")
        let upstream = try eventually("the refused handshake in the status", seconds: 30, intervalMs: 200) {
            () -> JSON? in
            let upstream = try daemonStatus(scratch)["upstream"] ?? .null
            return upstream["last_error"]?.stringValue != nil ? upstream : nil
        }
        #expect(upstream["state"] != .string("connected"), "\(upstream.serialized)")
        usleep(7_000_000)
        let after = try daemonStatus(scratch)
        #expect(after["upstream"]?["state"] != .string("connected"))
        #expect((after["buffer"]?["records"]?.intValue ?? 0) >= 10, "records stay buffered")
        let doctor = try doctorOutput(file, scratch: scratch)
        let reason = try #require(after["upstream"]?["last_error"]?.stringValue)
        #expect(reason.contains("client certificate") || reason.contains("TLS") || reason.contains("SSL"), "\(reason)")
        #expect(doctor.contains(reason), "doctor: \(doctor)")
        let log = daemonLog(gateway)
        // Several handshakes failed by now (1 s, 2 s, 4 s apart): each reason is logged once.
        let lines = log.split(separator: "\n").filter { $0.contains("uplink") && !$0.contains("connecting to") }
        #expect(Set(lines).count == lines.count, "a reason logged twice: \(lines)")
        print("client certificate required: \(reason)")
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
    }

    @Test("protocol = 5: the broker's maximum packet size is used from the first batch, and a takeover is named by it")
    func mqtt5() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch, options: ["max_packet_size 2000"])
        let subscriber = try Subscriber(port: broker.port, topic: "railgate/KZ-WAG-LIMITS/telemetry")
        let sim = try wagon(scratch)
        let config = brokerLimitsConfig(
            scratch: scratch, brokerPort: broker.port, wagonPort: sim.port, upstream: ["protocol = 5"],
            intervalMs: 3000, maxRecords: 100)
        let gateway = try TestProcess(Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "gw")
        _ = try eventually("150 records delivered", seconds: 90, intervalMs: 200) { () -> Void? in
            Set(seqs(subscriber.records)).count >= 150 ? () : nil
        }
        #expect(occurrences(of: "as railgate-KZ-WAG-LIMITS", in: broker.log) == 1, "no connection was dropped")
        #expect(daemonLog(gateway).contains("maximum packet size is 2000 bytes"), "\(daemonLog(gateway).suffix(2000))")
        #expect(subscriber.messages.allSatisfy { $0.payload.count < 2000 })
        let limit = try #require(try daemonStatus(scratch)["upstream"]?["batch_bytes_limit"]?.intValue)
        #expect(limit < 2000)
        // Another client with the same id: the broker's DISCONNECT says why.
        let intruder = try MQTTClient(clientID: "railgate-KZ-WAG-LIMITS", protocolVersion: 5) { _ in }
        try intruder.start(host: "127.0.0.1", port: broker.port, keepaliveSeconds: 30)
        let reason = try eventually("the takeover named", seconds: 30, intervalMs: 200) { () -> String? in
            let log = daemonLog(gateway)
            return log.contains("taken over") ? log : nil
        }
        intruder.disconnect()
        #expect(reason.contains("taken over"))
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        print("MQTT 5: batches limited to \(limit) bytes from the broker's CONNACK, one connection")
    }
}
