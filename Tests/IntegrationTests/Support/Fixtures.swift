import Foundation
import RailgateCore
import RailgateMQTT
import RailgateSystem

/// A real Mosquitto broker on a free loopback port, with no queue limit (a slow subscriber
/// must not lose messages and make the gateway look guilty).
final class Broker: @unchecked Sendable {
    let port: Int
    private let process: TestProcess

    /// A second listener with TLS (`mqtts://`), when the broker was given certificates.
    private(set) var tlsPort: Int?

    /// With `persistent`, sessions and queued messages survive a stop (SIGTERM) and restart.
    /// With `tls` (CA, certificate, key files) a second listener speaks TLS on `tlsPort`.
    /// `options` are more lines of mosquitto.conf for the first listener (`max_qos 0`,
    /// `retain_available false`, `max_packet_size 2000`, `allow_anonymous false` with a
    /// `password_file`): brokers as deployments configure them; `tlsOptions` go to the TLS
    /// listener (`require_certificate true`).
    init(
        scratch: Scratch, port: Int? = nil, persistent: Bool = false,
        tls: (ca: String, certificate: String, key: String)? = nil, options: [String] = [],
        tlsOptions: [String] = []
    ) throws {
        let port = port ?? freePort()
        self.port = port
        let config = scratch.write(
            "mosquitto-\(port).conf",
            """
            listener \(port) 127.0.0.1
            \(options.contains { $0.hasPrefix("allow_anonymous") } ? "" : "allow_anonymous true")
            max_queued_messages 0
            persistence \(persistent)
            user root
            persistence_location \(scratch.path)/
            persistence_file mosquitto-\(port).db

            """ + options.joined(separator: "\n")
                + (tls.map { files in
                    let tlsPort = freePort()
                    return
                        "\nlistener \(tlsPort) 127.0.0.1\ncafile \(files.ca)\ncertfile \(files.certificate)\nkeyfile \(files.key)\n"
                        + tlsOptions.joined(separator: "\n") + "\n"
                } ?? ""))
        process = try TestProcess("/usr/sbin/mosquitto", ["-c", config], scratch: scratch, name: "mosquitto")
        tlsPort = (try? String(contentsOfFile: config, encoding: .utf8))?.split(separator: "\n")
            .filter { $0.hasPrefix("listener ") }.dropFirst().first.flatMap { Int($0.split(separator: " ")[1]) }
        let deadline = Date().addingTimeInterval(20)
        while !isListening(port) || !(tlsPort.map(isListening) ?? true) {
            guard process.isRunning, Date() < deadline else {
                throw TimedOut(description: "mosquitto did not listen on \(port): \(process.errorOutput)")
            }
            usleep(20_000)
        }
    }

    func kill() throws {
        process.signal(SIGKILL)
        try process.waitForExit()
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is read or acknowledged,
    /// a broker slower than the polling.
    func pause() { process.signal(SIGSTOP) }

    /// Lets a paused broker go on (SIGCONT).
    func resume() { process.signal(SIGCONT) }

    /// What the broker logged so far (Mosquitto logs to stderr in the foreground).
    var log: String { process.output + process.errorOutput }

    /// A clean stop: a persistent broker saves its sessions.
    func stop() throws {
        process.signal(SIGTERM)
        try process.waitForExit()
    }
}

/// A subscriber on the broker that keeps every message, and lets a test wait for a condition
/// on them (woken by each arriving message, bounded by a deadline).
final class Subscriber: @unchecked Sendable {
    struct Message {
        var topic: String
        var payload: [UInt8]
        var retained: Bool
        /// When it arrived.
        var at = Date()
        var text: String { String(decoding: payload, as: UTF8.self) }
        /// The payload as JSON; a telemetry batch in `compact/1` (the default) as the plain batch
        /// it carries (`plainBatch`), so tests read `records` the same in either format.
        var json: JSON? { plainBatch(payload) }
    }

    private let lock = ConditionLock()
    private var received: [Message] = []
    private var client: MQTTClient?

    /// With a `clientID` and `cleanSession: false` the broker keeps the session while the
    /// subscriber is away (or the broker restarts with persistence) and queues its messages.
    init(port: Int, topic: String = "#", clientID: String? = nil, cleanSession: Bool = true) throws {
        let client = try MQTTClient(
            clientID: clientID ?? "it-\(UUID().uuidString.prefix(8))", cleanSession: cleanSession
        ) { [weak self] event in
            guard let self else { return }
            switch event {
            case .message(let topic, let payload, let retained):
                lock.withLock {
                    received.append(Message(topic: topic, payload: payload, retained: retained))
                    lock.broadcast()
                }
            case .connected(0, _):
                lock.withLock {
                    subscribed = true
                    lock.broadcast()
                }
            default: break
            }
        }
        self.client = client
        try client.start(host: "127.0.0.1", port: port, keepaliveSeconds: 30)
        try waitUntil(seconds: 20) { _ in self.subscribed }
        try client.subscribe(topic, qos: 1)
    }

    private var subscribed = false

    deinit { client?.disconnect() }

    var messages: [Message] { lock.withLock { received } }

    /// The telemetry batches so far, with their arrival times.
    var timedMessages: [Message] { messages.filter { $0.topic.hasSuffix("/telemetry") } }

    /// Waits until `condition` holds for the messages so far, re-checking as each message
    /// arrives; throws after `seconds`. The condition runs outside the lock (it may read `records`).
    func waitUntil(seconds: Double, _ condition: ([Message]) -> Bool) throws {
        let deadline = MonotonicInstant.now().adding(milliseconds: Int(seconds * 1000))
        while true {
            let snapshot = messages
            if condition(snapshot) { return }
            if MonotonicInstant.now() >= deadline {
                throw TimedOut(description: "condition not met within \(seconds) s; \(snapshot.count) messages")
            }
            lock.withLock {
                if received.count == snapshot.count {
                    lock.wait(until: min(deadline, MonotonicInstant.now().adding(milliseconds: 1000)))
                }
            }
        }
    }

    /// Every record in the telemetry batches received so far, in arrival order.
    var records: [JSON] {
        messages.filter { $0.topic.hasSuffix("/telemetry") }.flatMap { $0.json?["records"]?.arrayValue ?? [] }
    }
}

/// A running `railgate-sim wagon`.
final class WagonSimulator: @unchecked Sendable {
    let port: Int
    let process: TestProcess

    convenience init(profile: String, units: String, scratch: Scratch, port: Int = 0, extra: [String] = []) throws {
        try self.init(
            arguments: ["wagon", "--profile", profile, "--tcp", "127.0.0.1:\(port)"], units: units, scratch: scratch,
            extra: extra)
    }

    init(arguments: [String], units: String, scratch: Scratch, extra: [String]) throws {
        let unitArguments = units.contains("-") ? ["--units", units] : ["--unit", units]
        process = try TestProcess(Binaries.simulator, arguments + unitArguments + extra, scratch: scratch, name: "sim")
        let line = try process.waitForOutputLine(containing: "serving")
        port = Int(line.split(separator: ":").last!.prefix { $0.isNumber }) ?? 0
    }

    /// The requests the simulator traced (`--trace`) so far.
    var tracedRequests: [String] {
        process.output.split(separator: "\n").filter { $0.hasPrefix("request ") }.map(String.init)
    }

    func kill() throws {
        process.signal(SIGKILL)
        try process.waitForExit()
    }
}

/// The JSON of an MQTT payload (not gzip); a `compact/1` telemetry batch decoded with
/// `CompactBatch.decode` into the plain batch `{"gateway":ID,"records":[...]}` it carries. The one
/// place integration tests turn a batch into records. Nil for text that is not JSON or a
/// `compact/1` payload that does not decode (a test then sees no records and fails).
func plainBatch(_ payload: [UInt8]) -> JSON? {
    guard let json = try? JSONReader.parse(String(decoding: payload, as: UTF8.self)) else { return nil }
    guard json["format"]?.stringValue == CompactBatchEncoder.format else { return json }
    guard let plain = try? CompactBatch.decode(payload) else { return nil }
    return try? JSONReader.parse(String(decoding: plain, as: UTF8.self))
}

/// Seqs of `records`, in order.
func seqs(_ records: [JSON]) -> [Int] { records.compactMap { $0["seq"]?.intValue } }

/// Whether every seq from the first to the last is present (duplicates allowed: at-least-once).
func contiguous(_ values: [Int]) -> Bool {
    guard let low = values.min(), let high = values.max() else { return false }
    return Set(values) == Set(low...high)
}

/// A linked pair of pseudo-terminals made by socat: an RS-485 line in a test.
final class PtyPair: @unchecked Sendable {
    let slaveSide: String
    let masterSide: String
    private let process: TestProcess

    init(scratch: Scratch) throws {
        slaveSide = scratch.path + "/ttySIM"
        masterSide = scratch.path + "/ttyGW"
        process = try TestProcess(
            "/usr/bin/socat", ["pty,raw,echo=0,link=\(slaveSide)", "pty,raw,echo=0,link=\(masterSide)"],
            scratch: scratch, name: "socat")
        let deadline = Date().addingTimeInterval(20)
        while !(FileManager.default.fileExists(atPath: slaveSide) && FileManager.default.fileExists(atPath: masterSide))
        {
            guard process.isRunning, Date() < deadline else {
                throw TimedOut(description: "socat made no ptys: \(process.errorOutput)")
            }
            usleep(20_000)
        }
    }
}

extension WagonSimulator {
    /// A simulator on an RTU line (`--rtu DEVICE`).
    convenience init(profile: String, units: String, rtu device: String, scratch: Scratch, extra: [String] = []) throws
    {
        try self.init(
            arguments: ["wagon", "--profile", profile, "--rtu", device, "--baud", "19200", "--parity", "even"],
            units: units, scratch: scratch, extra: extra)
    }
}

/// A running `railgate-sim gate` on a socket in the scratch directory.
final class GateSimulator: @unchecked Sendable {
    let socket: String
    let process: TestProcess

    init(scratch: Scratch, scenario: String? = nil) throws {
        socket = scratch.path + "/gate.sock"
        process = try TestProcess(
            Binaries.simulator, ["gate", "--socket", socket] + (scenario.map { ["--scenario", $0] } ?? []),
            scratch: scratch, name: "gate")
        _ = try process.waitForOutputLine(containing: "serving")
    }

    var chip: String { "sim:\(socket)" }
}
