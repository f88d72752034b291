import Glibc
import Logging
import RailgateBuffer
import RailgateCore
import RailgateMQTT
import RailgateSystem
import Testing

@testable import RailgateGateway

/// A small deterministic generator (SplitMix64), so a failing run can be replayed from its seed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func chance(_ probability: Double) -> Bool {
        probability > 0 && Double.random(in: 0..<1, using: &self) < probability
    }
}

/// How a scripted session misbehaves, in probabilities per step of its network thread.
struct SessionScript: Sendable {
    /// How message ids are handed out.
    enum IDs: Sendable {
        /// libmosquitto's way: a 16-bit counter from `first`, wrapping from 65535 to 1.
        case sequential(first: Int32)
        /// The lowest id no queued publish holds: an id comes back at once after its PUBACK
        /// (MQTT allows it), so stale ids meet new batches as often as can be.
        case lowestFree
    }
    var ids: IDs = .lowestFree
    /// The PUBACK is handled before `publish` has returned the id.
    var ackBeforeReturn = 0.0
    /// The connection drops (the session reconnects later, sending its queue again).
    var drop = 0.0
    /// The broker gets a publish but its PUBACK is lost (until a reconnect sends it again).
    var pubackLost = 0.0
    /// The broker never gets a publish on this connection (a stuck batch).
    var silentLoss = 0.0
    /// A PUBACK for an id no queued publish holds (a stale or stray id).
    var strayAck = 0.0
    /// `publish` hands out an id that a queued publish still holds (a wrap-around collision).
    var collision = 0.0
    /// When closed, the session first delivers PUBACKs for everything still queued, late.
    var lateAcksOnClose = false
    /// How long a dropped connection stays down before the session reconnects.
    var outageMs = 5
    /// The connection drops just as `publish` is called: the publish is queued while down (what
    /// libmosquitto does when `mosquitto_publish` answers `MOSQ_ERR_NO_CONN`).
    var dropAtPublish = 0.0
    /// The broker's maximum packet size: a publish larger than this makes it drop the
    /// connection (Mosquitto's `max_packet_size`); the publish stays queued and is sent again.
    var maxPacket: Int?
}

/// The broker the scripted sessions deliver to, shared by every session of a test: which seqs
/// it received, and a check, after every acknowledgement, that the buffer's acknowledged
/// position never passed a seq the broker did not receive.
final class ScriptedBroker: @unchecked Sendable {
    let lock = ConditionLock()
    let buffer: DiskBuffer
    private(set) var received: Set<UInt64> = []
    /// How often each seq reached the broker.
    private(set) var receipts: [UInt64: Int] = [:]
    var telemetryMessages = 0
    var statusMessages = 0
    private(set) var violations: [String] = []
    /// Seqs the uplink may acknowledge without delivery (set aside as undeliverable).
    var exempt: Set<UInt64> = []
    var oversizeDrops = 0
    var publishes = 0
    var sessions = 0
    var connects = 0
    var strayAcks = 0
    var lateAcks = 0
    var collisions = 0
    var earlyAcks = 0
    var offlinePublishes = 0
    /// The uplink's status as the run ended (`runScripted`).
    var finalStatus: UplinkStatus?
    private var checkedThrough: UInt64 = 0

    init(buffer: DiskBuffer) {
        self.buffer = buffer
        checkedThrough = buffer.stats().ackedSeq
    }

    func receive(topic: String, payload: [UInt8]) {
        let seqs: [UInt64] =
            topic.hasSuffix("/telemetry")
            ? (Self.plainBatch(payload)?["records"]?.arrayValue ?? [])
                .compactMap { $0["seq"]?.intValue }.map { UInt64($0) } : []
        lock.withLock {
            if topic.hasSuffix("/telemetry") {
                telemetryMessages += 1
                received.formUnion(seqs)
                for seq in seqs { receipts[seq, default: 0] += 1 }
            } else {
                statusMessages += 1
            }
            lock.broadcast()
        }
    }

    /// A telemetry payload as the plain batch: `compact/1` (the default) decoded with
    /// `CompactBatch.decode`, the plain batch (`payload = "records"`) as it is; nil if neither.
    static func plainBatch(_ payload: [UInt8]) -> JSON? {
        guard let json = try? JSONReader.parse(String(decoding: payload, as: UTF8.self)) else { return nil }
        guard json["format"]?.stringValue == CompactBatchEncoder.format else { return json }
        guard let plain = try? CompactBatch.decode(payload) else { return nil }
        return try? JSONReader.parse(String(decoding: plain, as: UTF8.self))
    }

    /// After the uplink handled an event: the acknowledged position must cover received seqs only.
    func check(after what: String) {
        let acked = buffer.stats().ackedSeq
        lock.withLock {
            while checkedThrough < acked {
                checkedThrough += 1
                if !received.contains(checkedThrough), !exempt.contains(checkedThrough), violations.count < 20 {
                    violations.append("seq \(checkedThrough) acknowledged after \(what), never received")
                }
            }
            lock.broadcast()
        }
    }

    func count(_ path: ReferenceWritableKeyPath<ScriptedBroker, Int>) {
        lock.withLock { self[keyPath: path] += 1 }
    }

    /// Waits until `condition` holds (re-checked on every delivery), at most `seconds`.
    func wait(seconds: Int, until condition: (ScriptedBroker) -> Bool) -> Bool {
        let deadline = MonotonicInstant.now().adding(milliseconds: seconds * 1000)
        return lock.withLock {
            while !condition(self) {
                guard MonotonicInstant.now() < deadline else { return false }
                lock.wait(until: min(deadline, MonotonicInstant.now().adding(milliseconds: 100)))
            }
            return true
        }
    }
}

/// An MQTT session scripted like libmosquitto's queue: a QoS 1 publish stays queued until its
/// PUBACK, is sent again after every reconnect, and `.published` comes once for it; publishes
/// while down are queued. Its own network thread delivers events, as libmosquitto's does, and
/// misbehaves as `script` says.
final class ScriptedSession: UplinkSession, @unchecked Sendable {
    private struct Queued {
        var id: Int32
        var topic: String
        var payload: [UInt8]
        /// Not to be delivered or acknowledged again on this connection (lost, or PUBACK lost).
        var held = false
    }

    private let lock = ConditionLock()
    private let broker: ScriptedBroker
    private let script: SessionScript
    private let onEvent: @Sendable (MQTTEvent) -> Void
    private var random: SeededGenerator
    private var queue: [Queued] = []
    private var connected = false
    private var downSince: MonotonicInstant? = MonotonicInstant(nanoseconds: 0)
    private var dropToReport = false
    private var running = true
    private var inCallback = false
    private var lastID: Int32 = 0
    private var immediate: [Int32] = []
    private var taken: Set<Int32> = []
    private var thread: DaemonThread?

    init(broker: ScriptedBroker, script: SessionScript, seed: UInt64, onEvent: @escaping @Sendable (MQTTEvent) -> Void)
    {
        self.broker = broker
        self.script = script
        self.onEvent = onEvent
        random = SeededGenerator(state: seed)
        if case .sequential(let first) = script.ids { lastID = first - 1 }
        broker.count(\.sessions)
    }

    func connect() throws(MQTTError) {
        thread = try! DaemonThread(name: "scripted broker") { [self] in networkLoop() }
    }

    func publish(topic: String, payload: [UInt8], qos: Int, retain: Bool) throws(MQTTError) -> Int32 {
        broker.count(\.publishes)
        return lock.withLock {
            let id = nextID()
            if connected, !inCallback, random.chance(script.dropAtPublish) {
                connected = false
                downSince = MonotonicInstant.now()
                dropToReport = true
            }
            queue.append(Queued(id: id, topic: topic, payload: payload))
            if !connected { broker.count(\.offlinePublishes) }
            if connected, !inCallback, random.chance(script.ackBeforeReturn) {
                // The PUBACK is on its way into the uplink before this returns the id.
                immediate.append(id)
                lock.broadcast()
                let deadline = MonotonicInstant.now().adding(milliseconds: 2000)
                while !taken.contains(id), running, MonotonicInstant.now() < deadline { lock.wait(until: deadline) }
                taken.remove(id)
            }
            lock.broadcast()
            return id
        }
    }

    func disconnect() {
        lock.withLock {
            running = false
            lock.broadcast()
        }
        thread?.join()
    }

    /// With the lock held.
    private func nextID() -> Int32 {
        let held = Set(queue.map(\.id))
        if !queue.isEmpty, random.chance(script.collision) {
            broker.count(\.collisions)
            return queue[Int.random(in: 0..<queue.count, using: &random)].id
        }
        switch script.ids {
        case .sequential:
            lastID = lastID >= 65535 ? 1 : lastID + 1
            return lastID
        case .lowestFree:
            var id: Int32 = 1
            while held.contains(id) { id += 1 }
            return id
        }
    }

    private enum Action {
        case connect
        case drop
        case acknowledge(Int32, early: Bool)
        case stray(Int32)
        case idle
        case stop
    }

    private func networkLoop() {
        while true {
            let action: Action = lock.withLock {
                let action = decide()
                // From here until the event is delivered, `publish` must not wait for this thread.
                switch action {
                case .idle, .stop: break
                default: inCallback = true
                }
                return action
            }
            switch action {
            case .stop:
                return
            case .idle:
                continue
            case .connect:
                broker.count(\.connects)
                deliver(.connected(code: 0, reason: "Connection Accepted."))
            case .drop:
                deliver(.disconnected(code: 7, reason: "The connection was lost. (MOSQ_ERR 7)"))
            case .acknowledge(let id, let early):
                if early { broker.count(\.earlyAcks) }
                deliver(.published(messageID: id))
                broker.check(after: "PUBACK \(id)")
            case .stray(let id):
                broker.count(\.strayAcks)
                deliver(.published(messageID: id))
                broker.check(after: "stray PUBACK \(id)")
            }
        }
    }

    private func deliver(_ event: MQTTEvent) {
        onEvent(event)
        lock.withLock { inCallback = false }
    }

    /// With the lock held: the next step of the network.
    private func decide() -> Action {
        guard running else {
            if script.lateAcksOnClose, let late = queue.first {
                // A PUBACK arriving while the session closes: the broker got it after all.
                queue.removeFirst()
                broker.receive(topic: late.topic, payload: late.payload)
                broker.count(\.lateAcks)
                return .acknowledge(late.id, early: false)
            }
            return .stop
        }
        if !immediate.isEmpty {
            let id = immediate.removeFirst()
            taken.insert(id)
            lock.broadcast()
            guard let index = queue.firstIndex(where: { $0.id == id }) else { return .idle }
            let message = queue.remove(at: index)
            broker.receive(topic: message.topic, payload: message.payload)
            return .acknowledge(id, early: true)
        }
        if dropToReport {
            dropToReport = false
            return .drop
        }
        if !connected {
            // Reconnect after the outage; the queue is sent again after the CONNACK.
            guard let downSince, MonotonicInstant.now() >= downSince.adding(milliseconds: script.outageMs) else {
                lock.wait(until: MonotonicInstant.now().adding(milliseconds: 1))
                return .idle
            }
            connected = true
            for index in queue.indices { queue[index].held = false }
            return .connect
        }
        if random.chance(script.drop) {
            connected = false
            downSince = MonotonicInstant.now()
            return .drop
        }
        if random.chance(script.strayAck) {
            let held = Set(queue.map(\.id))
            var id = Int32.random(in: 1...65535, using: &random)
            while held.contains(id) { id = Int32.random(in: 1...65535, using: &random) }
            return .stray(id)
        }
        let ready = queue.indices.filter { !queue[$0].held }
        guard !ready.isEmpty else {
            lock.wait(until: MonotonicInstant.now().adding(milliseconds: 2))
            return .idle
        }
        // Mostly in order, sometimes one of the next few: a broker answers in any order.
        if let limit = script.maxPacket, let first = ready.first, queue[first].payload.count > limit {
            // In order, as on a TCP connection: the broker reads the packet too large and drops.
            broker.count(\.oversizeDrops)
            connected = false
            downSince = MonotonicInstant.now()
            return .drop
        }
        let index =
            script.maxPacket != nil
            ? ready[0] : ready[random.chance(0.3) ? Int.random(in: 0..<min(3, ready.count), using: &random) : 0]
        if random.chance(script.silentLoss) {
            queue[index].held = true
            return .idle
        }
        broker.receive(topic: queue[index].topic, payload: queue[index].payload)
        if random.chance(script.pubackLost) {
            queue[index].held = true
            return .idle
        }
        let id = queue.remove(at: index).id
        return .acknowledge(id, early: false)
    }
}

/// A log handler that keeps nothing (the uplink's warnings are expected here).
struct QuietLogHandler: LogHandler {
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .critical
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {}
}

struct NoFiles: ConfigFileSource {
    func read(_ path: String) -> String? { nil }
}

/// A temporary state directory with a buffer holding `records` samples and every `alarmEvery`th
/// an alarm, durable.
func filledBuffer(records: Int, alarmEvery: Int = 0) throws -> (DiskBuffer, String) {
    var template = Array("/dev/shm/railgate-uplink-XXXXXX".utf8CString)
    let directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    let buffer = try DiskBuffer(
        stateDirectory: directory, settings: BufferSettings(maxBytes: 256 << 20, syncIntervalMs: 0, whenFull: .thin))
    for index in 1...records {
        let alarm = alarmEvery > 0 && index % alarmEvery == 0
        let body: Record.Body =
            alarm
            ? .event(name: "alarm_above", fields: [("point", .string("t"))])
            : .sample(values: [("t", .integer(Int64(index)))], errors: [])
        _ = try buffer.append(
            Record(
                timestamp: Timestamp(millisecondsSinceEpoch: 1_700_000_000_000 + Int64(index)), source: "box",
                body: body, priority: alarm ? .alarm : .normal))
    }
    try buffer.sync()
    return (buffer, directory)
}

func uplinkConfig(batchMaxRecords: Int, payload: String = "compact") throws -> GatewayConfig {
    try ConfigLoader(files: NoFiles()).parse(
        """
        [gateway]
        id = "UT-1"
        state_dir = "/tmp/unused"

        [upstream]
        url = "mqtt://127.0.0.1:1"
        payload = "\(payload)"
        batch_max_records = \(batchMaxRecords)
        batch_interval_ms = 0

        [[gate]]
        name = "g"
        chip = "sim:/nonexistent"
        open_line = 1
        closed_line = 2
        """, file: "ut.toml")
}

/// Runs an uplink over scripted sessions until the broker holds every record and the buffer
/// acknowledged them all; returns the broker for the test's own checks.
func runScripted(
    records: Int, batchMaxRecords: Int, alarmEvery: Int = 0, script: SessionScript, seed: UInt64,
    resendAfterMs: Int = 300, seconds: Int = 120
) throws -> ScriptedBroker {
    let (buffer, directory) = try filledBuffer(records: records, alarmEvery: alarmEvery)
    defer {
        buffer.close()
        _ = system("rm -rf '\(directory)'")
    }
    let broker = ScriptedBroker(buffer: buffer)
    let seeds = ConditionLock()
    nonisolated(unsafe) var nextSeed = seed
    let uplink = Uplink(
        config: try uplinkConfig(batchMaxRecords: batchMaxRecords), buffer: buffer,
        started: Timestamp(millisecondsSinceEpoch: 0), logger: Logger(label: "test") { _ in QuietLogHandler() },
        makeSession: { (onEvent) throws(MQTTError) -> any UplinkSession in
            let seed: UInt64 = seeds.withLock {
                nextSeed &+= 1
                return nextSeed
            }
            return ScriptedSession(broker: broker, script: script, seed: seed, onEvent: onEvent)
        }, resendAfterMs: resendAfterMs)
    try uplink.start()
    let last = UInt64(records)
    // Done when the broker has every record and the buffer holds none unacknowledged (batches
    // acknowledged out of order before a session was given up count as acknowledged ahead).
    let done = broker.wait(seconds: seconds) { $0.received.count == records && $0.buffer.stats().records == 0 }
    if !done {
        print(
            "DEBUG \(uplink.status()) received \(broker.received.count) acked \(buffer.stats().ackedSeq) "
                + "sessions \(broker.sessions) connects \(broker.connects) publishes \(broker.publishes)")
    }
    broker.finalStatus = uplink.status()
    uplink.stop(graceMs: 100)
    broker.check(after: "the end")
    #expect(done, "every record received and acknowledged within \(seconds) s (seed \(seed))")
    #expect(broker.violations.isEmpty, "seed \(seed): \(broker.violations)")
    let missing = Set(1...last).subtracting(broker.received)
    #expect(missing.isEmpty, "seed \(seed): never received: \(missing.sorted().prefix(20))")
    return broker
}

@Suite("Uplink acknowledgements (scripted MQTT session)", .serialized)
struct UplinkAcknowledgementTests {
    @Test("PUBACKs of the birth message never acknowledge a batch, even when its id comes back at once")
    func birthMessageIDs() throws {
        // Every connect publishes the birth message; ids are reused as soon as they are free, and
        // the PUBACK often comes before publish returns: the old early-acknowledgement set kept
        // the birth's id and acknowledged the next batch given it.
        let broker = try runScripted(
            records: 400, batchMaxRecords: 5,
            script: SessionScript(ids: .lowestFree, ackBeforeReturn: 0.5, drop: 0.02), seed: 11)
        #expect(broker.connects > 3 && broker.statusMessages > 3, "birth messages were published")
        #expect(broker.earlyAcks > 0, "PUBACKs came before publish returned")
    }

    @Test("ids from a dead connection: publishes while down, PUBACKs lost, stray PUBACKs")
    func deadConnectionIDs() throws {
        let script = SessionScript(
            ids: .lowestFree, ackBeforeReturn: 0.2, drop: 0.05, pubackLost: 0.1, strayAck: 0.05, dropAtPublish: 0.05)
        var broker = try runScripted(records: 600, batchMaxRecords: 4, alarmEvery: 7, script: script, seed: 22)
        // The scripted faults land where the threads' timing puts them: on a loaded machine one
        // seed may publish nothing while down, so the next seeds run too (each checked in full).
        for seed: UInt64 in 23...25 where broker.offlinePublishes == 0 {
            broker = try runScripted(records: 600, batchMaxRecords: 4, alarmEvery: 7, script: script, seed: seed)
        }
        #expect(broker.connects > 10)
        #expect(broker.strayAcks > 5, "stray PUBACKs were delivered and ignored")
        #expect(broker.offlinePublishes > 0, "batches were published while the connection was down")
        #expect(broker.telemetryMessages > 150, "some batches went twice (their PUBACK was lost): allowed")
    }

    @Test("a batch given up and re-sent: the old session's late PUBACKs and reused ids acknowledge nothing else")
    func resentBatchIDs() throws {
        // Batches silently lost on a live connection stay unacknowledged until the uplink gives
        // the session up (300 ms here); the closing session still delivers PUBACKs late, and the
        // new session hands out the same ids again.
        let broker = try runScripted(
            records: 300, batchMaxRecords: 3,
            script: SessionScript(ids: .lowestFree, ackBeforeReturn: 0.2, silentLoss: 0.03, lateAcksOnClose: true),
            seed: 33, resendAfterMs: 150)
        #expect(broker.sessions > 2, "sessions were given up and replaced")
        #expect(broker.lateAcks > 0, "late PUBACKs arrived from closed sessions")
    }

    @Test("batches in flight through a long outage, or published while down, reach the broker once")
    func outageLongerThanResendTime() throws {
        // The session sends its queue again after reconnecting; the uplink must not send the
        // same records once more under new ids because the batch is older than the resend time.
        let broker = try runScripted(
            records: 400, batchMaxRecords: 5,
            script: SessionScript(ids: .sequential(first: 1), drop: 0.1, outageMs: 400, dropAtPublish: 0.05),
            seed: 55,
            resendAfterMs: 150, seconds: 120)
        #expect(broker.connects > 3, "outages happened")
        #expect(broker.offlinePublishes > 0, "batches were published while the connection was down")
        let twice = broker.receipts.filter { $0.value > 1 }.keys.sorted()
        #expect(twice.isEmpty, "records sent twice though every PUBACK came: \(twice.prefix(20))")
        // A session is replaced only when the link dropped twice in a row right after sending the
        // same batch, taken as a broker refusing its size (batches halved): never for the resend time.
        let halved = (broker.finalStatus?.batchBytesLimit ?? 0) < 262_144 - 64
        #expect(broker.sessions == 1 || halved, "no session was given up for the resend time")
    }

    @Test("an id handed out while still in use (wrap-around collision) makes the session be replaced")
    func collidingIDs() throws {
        // The scripted faults land where the threads' timing puts them: on a loaded machine one
        // seed may see no collision, so the next seeds run too (each checked in full).
        var broker = try runScripted(
            records: 300, batchMaxRecords: 3,
            script: SessionScript(ids: .sequential(first: 65_500), ackBeforeReturn: 0.2, drop: 0.01, collision: 0.3),
            seed: 44)
        for seed: UInt64 in 45...63 where broker.collisions == 0 {
            broker = try runScripted(
                records: 300, batchMaxRecords: 3,
                script: SessionScript(
                    ids: .sequential(first: 65_500), ackBeforeReturn: 0.2, drop: 0.01, collision: 0.3),
                seed: seed)
        }
        #expect(broker.collisions > 0 && broker.sessions > 1)
    }

    @Test("70,000 publishes across reconnects and the 16-bit wrap: no batch acknowledged by an id not its own")
    func seventyThousandPublishes() throws {
        let broker = try runScripted(
            records: 70_000, batchMaxRecords: 1, alarmEvery: 97,
            script: SessionScript(
                ids: .sequential(first: 60_000), ackBeforeReturn: 0.05, drop: 0.002, pubackLost: 0.0005,
                silentLoss: 0.00005, strayAck: 0.001, collision: 0.00002, lateAcksOnClose: true),
            seed: 70_000, resendAfterMs: 200, seconds: 900)
        #expect(broker.publishes >= 70_000)
        #expect(broker.connects > 10)
    }
}

@Suite("Uplink on a broker with a maximum packet size (scripted)", .serialized)
struct UplinkPacketSizeTests {
    @Test(
        "batches halve until they fit; records alone too large are set aside, counted and reported upstream",
        arguments: ["compact", "records"])
    func halvingAndUndeliverable(payload: String) throws {
        let (buffer, directory) = try filledBuffer(records: 300)
        defer {
            buffer.close()
            _ = system("rm -rf '\(directory)'")
        }
        // Record 301 is one sample bigger than the broker accepts (350 and 351 too); the others fit.
        let huge = try buffer.append(
            Record(
                timestamp: Timestamp(millisecondsSinceEpoch: 1_700_000_001_000), source: "box",
                body: .sample(values: [("text", .text(String(repeating: "x", count: 3000)))], errors: []),
                priority: .normal))
        var huges = [huge]
        for index in 302...400 {
            if index == 350 || index == 351 {
                // Two more as large: set aside unsent, without dropping the connection again.
                huges.append(
                    try buffer.append(
                        Record(
                            timestamp: Timestamp(millisecondsSinceEpoch: 1_700_000_001_000), source: "box",
                            body: .sample(values: [("text", .text(String(repeating: "y", count: 3000)))], errors: []),
                            priority: .normal)))
                continue
            }
            _ = try buffer.append(
                Record(
                    timestamp: Timestamp(millisecondsSinceEpoch: 1_700_000_000_000 + Int64(index)), source: "box",
                    body: .sample(values: [("t", .integer(Int64(index)))], errors: []), priority: .normal))
        }
        try buffer.sync()
        let broker = ScriptedBroker(buffer: buffer)
        broker.exempt = Set(huges)
        let uplink = Uplink(
            config: try uplinkConfig(batchMaxRecords: 100, payload: payload), buffer: buffer,
            started: Timestamp(millisecondsSinceEpoch: 0), logger: Logger(label: "test") { _ in QuietLogHandler() },
            makeSession: { (onEvent) throws(MQTTError) -> any UplinkSession in
                ScriptedSession(
                    broker: broker, script: SessionScript(ids: .sequential(first: 1), outageMs: 200, maxPacket: 1500),
                    seed: 5,
                    onEvent: onEvent)
            }, resendAfterMs: 60_000)
        try uplink.start()
        // Done when all but the huge record arrived, the record_undeliverable event too, and
        // nothing is left unacknowledged.
        let done = broker.wait(seconds: 120) {
            $0.received.count == 400 && $0.buffer.stats().records == 0
        }
        let status = uplink.status()
        uplink.stop(graceMs: 100)
        broker.check(after: "the end")
        #expect(done, "delivered: \(broker.received.count), status \(status)")
        #expect(broker.violations.isEmpty, "\(broker.violations)")
        #expect(!broker.received.contains(huge), "the huge record never got through")
        #expect(Set(1...400).subtracting(broker.received) == Set(huges), "\(huges)")
        #expect(
            broker.received.isSuperset(of: [401, 402, 403]), "the record_undeliverable events (seqs 401-403) arrived")
        #expect(status.undeliverable == 3)
        // The limit counts the records' stored bytes: plain batches carry those (plus the
        // envelope), so it ends below the packet size; compact/1 batches are smaller than the
        // records they carry, so it ends where the records of a batch compact below it (halved
        // from the 262144 default in any case).
        let ceiling = payload == "records" ? 1500 : 262_144 / 16
        #expect(status.batchBytesLimit < ceiling && status.batchBytesLimit > 100, "\(status.batchBytesLimit)")
        // Each halving costs two drops of the same packet; the first huge record alone two more,
        // the next ones (as large) none. A session given up may drop once more (every 200 ms
        // here, as libmosquitto's back-off would) until the publisher thread replaces it.
        #expect(broker.oversizeDrops <= 2 * 6 + 2 + 10, "\(broker.oversizeDrops) drops: no loop")
        #expect(broker.sessions <= 8, "\(broker.sessions) sessions")
        print(
            "packet size: \(broker.oversizeDrops) drops, \(broker.sessions) sessions, limit \(status.batchBytesLimit) bytes"
        )
    }
}

@Suite("gzip")
struct GzipTests {
    @Test("a batch compresses to a gzip member; a failure throws zlib's code and says why")
    func compressAndFail() throws {
        let payload = Array(String(repeating: "{\"seq\":1,\"kind\":\"sample\"},", count: 200).utf8)
        let compressed = try Gzip.compress(payload)
        #expect(compressed.starts(with: [0x1f, 0x8b]) && compressed.count < payload.count / 4)
        let error = #expect(throws: GzipError.self) { try Gzip.compress(payload, level: 42) }
        #expect(error?.code == -2 && error?.description == "gzip deflateInit2: invalid stream or level (zlib -2)")
    }
}
