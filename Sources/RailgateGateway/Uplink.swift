import Logging
import RailgateBuffer
import RailgateCore
import RailgateMQTT

/// The uplink's state for `railgate status`.
public struct UplinkStatus: Sendable, Equatable {
    /// `connected`, `connecting`, `disconnected`, `refused`, or `disabled` (url = "none").
    public var state: String
    public var ackedSeq: UInt64
    /// Batches acknowledged by the broker since start.
    public var batches: Int
    public var inFlight: Int
    public var lastError: String?
    public var url: String
}

/// Forwards the buffer upstream over MQTT, at least once: batches of durable records are
/// published on the telemetry topic, and only the broker's PUBACK (QoS 1) moves the buffer's
/// acknowledged position, batch by batch in order. Alarms and events go first: after an
/// outage they are sent ahead of the older backlog of samples, and the acknowledged position
/// never passes one whose batch is still unacknowledged. The birth message is published
/// retained on every connect, after one `buffer_overflow` event if the buffer had to drop
/// records; the will says offline if the gateway vanishes.
///
/// Threads: a publisher thread of its own; libmosquitto's network thread delivers connection
/// events and acknowledgements into `handle(_:)`.
final class Uplink: @unchecked Sendable {
    private let settings: UpstreamSettings
    private let host: String
    private let port: Int
    private let tls: Bool
    private let topics: Topics
    private let gatewayID: String
    /// The retained birth message, published on every connect (guarded by `lock`).
    private var birth: [UInt8]
    private let builder: BatchBuilder
    /// The batch limits for the records alone (the envelope's bytes taken off).
    private let limits: BatchLimits
    private let buffer: DiskBuffer
    private let logger: Logger
    private let lock = ConditionLock()

    private var client: MQTTClient?
    private var thread: DaemonThread?
    private var state = "connecting"
    private var lastError: String?
    private var stopping = false
    /// Batches published and not yet acknowledged, in seq order.
    private var inFlight: [(messageID: Int32, lastSeq: UInt64, sentAt: MonotonicInstant, acknowledged: Bool)] = []
    /// Batches of alarms and events sent ahead of the backlog, not yet acknowledged.
    private var aheadInFlight: [Int32: (seqs: [UInt64], sentAt: MonotonicInstant)] = [:]
    /// Seqs sent ahead and not yet passed by the contiguous position: the backlog skips them.
    private var sentAhead: Set<UInt64> = []
    /// The highest seq through which every batch of the backlog was acknowledged.
    private var backlogAcknowledged: UInt64
    /// Acknowledgements that arrived before `publish` returned their message id.
    private var earlyAcknowledgements: Set<Int32> = []
    private var cursor: UInt64
    private var batchesAcknowledged = 0
    private var offlineMessageID: Int32?
    private var offlineAcknowledged = false
    /// The publisher loop's proof of life for the systemd watchdog.
    let heartbeat = Heartbeat(name: "the uplink")

    static let maxBatchesInFlight = 10
    /// A batch unacknowledged this long on a live connection is sent again.
    static let resendAfterMs = 60_000

    init(config: GatewayConfig, buffer: DiskBuffer, started: Timestamp, logger: Logger) {
        guard case .mqtt(let host, let port, let tls) = config.upstream.endpoint else {
            preconditionFailure("an uplink needs an MQTT endpoint")
        }
        settings = config.upstream
        self.host = host
        self.port = port
        self.tls = tls
        topics = Topics(prefix: config.upstream.topicPrefix, gatewayID: config.gateway.id)
        gatewayID = config.gateway.id
        birth = Array(StatusMessage.birth(config: config, started: started).serialized.utf8)
        builder = BatchBuilder(gatewayID: config.gateway.id)
        self.buffer = buffer
        self.logger = logger
        cursor = buffer.stats().ackedSeq
        backlogAcknowledged = cursor
        limits = BatchLimits(
            maxRecords: config.upstream.batchMaxRecords,
            maxBytes: max(1, config.upstream.batchMaxBytes - builder.overhead))
    }

    /// Sets up the session and starts connecting and publishing in the background.
    /// - Throws: `MQTTError` if libmosquitto refuses the settings, `ThreadError` if the publisher
    ///   thread cannot be created.
    func start() throws {
        let client = try MQTTClient(clientID: settings.clientID) { [weak self] event in self?.handle(event) }
        try client.setWill(
            topic: topics.status, payload: Array(StatusMessage.offline.serialized.utf8), qos: 1, retain: true)
        if let username = settings.username {
            let password = settings.passwordFile.flatMap { LocalFiles().read($0) }.map {
                String($0.prefix { $0 != "\n" && $0 != "\r" })
            }
            if settings.passwordFile != nil, password == nil {
                logger.error("cannot read password_file \(settings.passwordFile!); connecting without a password")
            }
            try client.setCredentials(username: username, password: password)
        }
        if tls {
            try client.setTLS(MQTTTLS(caFile: settings.caFile, certFile: settings.certFile, keyFile: settings.keyFile))
        }
        self.client = client
        logger.info("uplink connecting to \(tls ? "mqtts" : "mqtt")://\(host):\(port) as \(settings.clientID)")
        try client.start(host: host, port: port, keepaliveSeconds: settings.keepaliveSeconds)
        do {
            thread = try DaemonThread(name: "uplink") { [self] in publishLoop() }
        } catch {
            client.disconnect()
            self.client = nil
            throw error
        }
    }

    /// Stops publishing, waits up to `graceMs` for batches in flight to be acknowledged, marks
    /// the gateway offline (retained) and disconnects.
    func stop(graceMs: Int = 3000) {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
        thread?.join()
        guard let client else { return }
        let deadline = MonotonicInstant.now().adding(milliseconds: graceMs)
        lock.withLock {
            while state == "connected", inFlight.contains(where: { !$0.acknowledged }),
                MonotonicInstant.now() < deadline
            {
                lock.wait(until: deadline)
            }
        }
        if let id = try? client.publish(
            topic: topics.status, payload: Array(StatusMessage.offline.serialized.utf8), qos: 1, retain: true)
        {
            lock.withLock {
                offlineMessageID = id
                while state == "connected", !offlineAcknowledged, MonotonicInstant.now() < deadline {
                    lock.wait(until: deadline)
                }
            }
        }
        client.disconnect()
        self.client = nil
    }

    /// A new birth message (the sources changed on a reload): kept for the next connects and
    /// published now if connected.
    func announce(_ message: JSON) {
        let connected: Bool = lock.withLock {
            birth = message.bytes
            return state == "connected"
        }
        guard connected, let client else { return }
        do {
            try client.publish(topic: topics.status, payload: message.bytes, qos: 1, retain: true)
        } catch {
            logger.warning("could not publish the new birth message: \(error)")
        }
    }

    func status() -> UplinkStatus {
        let acked = buffer.stats().ackedSeq
        return lock.withLock {
            UplinkStatus(
                state: state, ackedSeq: acked, batches: batchesAcknowledged,
                inFlight: inFlight.count + aheadInFlight.count, lastError: lastError,
                url: "\(tls ? "mqtts" : "mqtt")://\(host):\(port)")
        }
    }

    // MARK: libmosquitto's thread

    private func handle(_ event: MQTTEvent) {
        switch event {
        case .connected(let code, let reason):
            guard code == 0 else {
                lock.withLock {
                    state = "refused"
                    lastError = "broker refused the connection: \(reason)"
                }
                logger.error("broker \(host):\(port) refused the connection: \(reason) (CONNACK \(code))")
                return
            }
            if let drops = buffer.takeUnreportedDrops() {
                let event = Record(
                    timestamp: WallClock.now(), source: gatewayID,
                    body: .event(
                        name: "buffer_overflow",
                        fields: [
                            ("dropped_normal", .unsigned(drops.normal)), ("dropped_alarm", .unsigned(drops.alarm)),
                        ]),
                    priority: .alarm)
                do {
                    try buffer.append(event)
                    logger.warning(
                        "the buffer dropped \(drops.normal) normal and \(drops.alarm) alarm records while full; reporting upstream"
                    )
                } catch {
                    logger.error("could not record the buffer_overflow event: \(error)")
                }
            }
            do {
                try client?.publish(topic: topics.status, payload: lock.withLock { birth }, qos: 1, retain: true)
            } catch {
                logger.warning("could not publish the birth message: \(error)")
            }
            lock.withLock {
                state = "connected"
                lastError = nil
                lock.broadcast()
            }
            logger.notice("uplink connected to \(host):\(port)")
        case .disconnected(let code, let reason):
            let wasConnected: Bool = lock.withLock {
                let was = state == "connected"
                state = code == 0 ? "disconnected" : "connecting"
                if code != 0 { lastError = "connection lost: \(reason)" }
                lock.broadcast()
                return was
            }
            if wasConnected, code != 0 {
                logger.warning("uplink lost the broker (\(reason)); reconnecting, records stay buffered")
            }
        case .published(let messageID):
            acknowledge(messageID)
        case .problem(let text):
            let isNew: Bool = lock.withLock {
                guard state != "connected", lastError != text else { return false }
                lastError = text
                return true
            }
            if isNew { logger.error("uplink: \(text)") }
        case .message:
            break
        }
    }

    private func acknowledge(_ messageID: Int32) {
        lock.withLock {
            if messageID == offlineMessageID {
                offlineAcknowledged = true
                lock.broadcast()
                return
            }
            if let ahead = aheadInFlight.removeValue(forKey: messageID) {
                buffer.acknowledge(seqs: ahead.seqs)
                batchesAcknowledged += 1
                advanceAcknowledged()
                return
            }
            guard let index = inFlight.firstIndex(where: { $0.messageID == messageID }) else {
                earlyAcknowledgements.insert(messageID)
                return
            }
            inFlight[index].acknowledged = true
            while let first = inFlight.first, first.acknowledged {
                backlogAcknowledged = first.lastSeq
                inFlight.removeFirst()
                batchesAcknowledged += 1
            }
            advanceAcknowledged()
        }
    }

    /// With the lock held: moves the buffer's acknowledged position as far as the backlog's
    /// acknowledgements go, but never past a record sent ahead whose batch is unacknowledged.
    private func advanceAcknowledged() {
        let unacknowledgedAhead = aheadInFlight.values.lazy.flatMap(\.seqs).min()
        let through = unacknowledgedAhead.map { min(backlogAcknowledged, $0 - 1) } ?? backlogAcknowledged
        buffer.acknowledge(through: through)
        sentAhead = sentAhead.filter { $0 > through }
        lock.broadcast()
    }

    // MARK: Publisher thread

    private func publishLoop() {
        defer { heartbeat.ended() }
        var lastSend = MonotonicInstant(nanoseconds: 0)
        var nextAllowed = MonotonicInstant(nanoseconds: 0)
        while true {
            heartbeat.expect(within: Heartbeat.sliceMs)
            let ready: Bool = lock.withLock {
                resendIfStuck()
                while !stopping, state != "connected" || inFlight.count >= Self.maxBatchesInFlight {
                    resendIfStuck()
                    heartbeat.expect(within: Heartbeat.sliceMs)
                    lock.wait(until: MonotonicInstant.now().adding(milliseconds: Heartbeat.sliceMs))
                }
                return !stopping
            }
            guard ready else {
                drain()
                return
            }
            let (from, skipping) = lock.withLock { (cursor, sentAhead) }
            guard buffer.waitForRecords(after: from, until: MonotonicInstant.now().adding(milliseconds: 500)) else {
                continue
            }
            let urgent = buffer.urgentRecords(after: from, excluding: skipping, limit: limits.maxRecords)
            if !urgent.isEmpty {
                _ = publish(urgent, ahead: true)
                continue
            }
            var records = buffer.records(after: from, limits: limits, excluding: skipping)
            if records.isEmpty {
                // Everything newer is in flight ahead: wait for an acknowledgement.
                lock.withLock { _ = lock.wait(until: MonotonicInstant.now().adding(milliseconds: 200)) }
                continue
            }
            let now = MonotonicInstant.now()
            // Small batches wait out the interval; full ones go at once. A rate cap spaces batches.
            let intervalEnd = lastSend.adding(milliseconds: settings.batchIntervalMs)
            let holdUntil = max(records.count < settings.batchMaxRecords ? intervalEnd : now, nextAllowed)
            if holdUntil > now {
                lock.withLock {
                    while !stopping, MonotonicInstant.now() < holdUntil {
                        heartbeat.expect(within: Heartbeat.sliceMs)
                        lock.wait(until: min(holdUntil, MonotonicInstant.now().adding(milliseconds: Heartbeat.sliceMs)))
                    }
                }
                records = buffer.records(after: from, limits: limits, excluding: lock.withLock { sentAhead })
            }
            guard let sent = publish(records, ahead: false) else { continue }
            lastSend = MonotonicInstant.now()
            if settings.maxBytesPerSecond > 0 {
                nextAllowed = lastSend.adding(milliseconds: sent * 1000 / settings.maxBytesPerSecond)
            }
        }
    }

    /// On the way out: sends everything durable that is not in flight yet, while connected.
    private func drain() {
        while lock.withLock({ state == "connected" }) {
            heartbeat.expect(within: Heartbeat.sliceMs)
            let (from, skipping) = lock.withLock { (cursor, sentAhead) }
            let urgent = buffer.urgentRecords(after: from, excluding: skipping, limit: limits.maxRecords)
            let records = urgent.isEmpty ? buffer.records(after: from, limits: limits, excluding: skipping) : urgent
            guard !records.isEmpty, publish(records, ahead: !urgent.isEmpty) != nil else { return }
        }
    }

    /// Publishes one batch of `records` and tracks it in flight (`ahead`: alarms and events sent
    /// before the backlog); returns the payload size, or nil if nothing was sent.
    private func publish(_ records: [(seq: UInt64, bytes: [UInt8])], ahead: Bool) -> Int? {
        guard let last = records.last, let client else { return nil }
        let batch = builder.batch(of: records)
        let payload = settings.gzip ? (Gzip.compress(batch.payload) ?? batch.payload) : batch.payload
        do {
            let messageID = try client.publish(topic: topics.telemetry, payload: payload, qos: settings.qos)
            lock.withLock {
                if ahead {
                    aheadInFlight[messageID] = (records.map(\.seq), MonotonicInstant.now())
                    sentAhead.formUnion(records.map(\.seq))
                } else {
                    inFlight.append((messageID, last.seq, MonotonicInstant.now(), false))
                    cursor = last.seq
                }
            }
            if earlyAcknowledgementsContains(messageID) { acknowledge(messageID) }
            return payload.count
        } catch {
            // One line per distinct failure, not one per attempt (one a second while it lasts).
            let isNew: Bool = lock.withLock {
                let isNew = lastError != error.description
                lastError = error.description
                _ = lock.wait(until: MonotonicInstant.now().adding(milliseconds: 1000))
                return isNew
            }
            if isNew { logger.warning("publish failed: \(error)") }
            return nil
        }
    }

    private func earlyAcknowledgementsContains(_ messageID: Int32) -> Bool {
        lock.withLock { earlyAcknowledgements.remove(messageID) != nil }
    }

    /// Called with the lock held: if a batch waited too long on a live connection, forget what
    /// is in flight and send everything unacknowledged again (at-least-once).
    private func resendIfStuck() {
        let oldest = (inFlight.map(\.sentAt) + aheadInFlight.values.map(\.sentAt)).min()
        guard state == "connected", let oldest,
            MonotonicInstant.now().milliseconds(since: oldest) > Int64(Self.resendAfterMs)
        else { return }
        logger.warning(
            "a batch stayed unacknowledged for \(Self.resendAfterMs / 1000) s; resending everything unacknowledged")
        inFlight.removeAll()
        aheadInFlight.removeAll()
        sentAhead.removeAll()
        cursor = buffer.stats().ackedSeq
        backlogAcknowledged = cursor
    }
}
