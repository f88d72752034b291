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
/// acknowledged position, batch by batch in order. The birth message is published retained on
/// every connect; the will says offline if the gateway vanishes.
///
/// Threads: a publisher thread of its own; libmosquitto's network thread delivers connection
/// events and acknowledgements into `handle(_:)`.
final class Uplink: @unchecked Sendable {
    private let settings: UpstreamSettings
    private let host: String
    private let port: Int
    private let tls: Bool
    private let topics: Topics
    private let birth: [UInt8]
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
    /// Acknowledgements that arrived before `publish` returned their message id.
    private var earlyAcknowledgements: Set<Int32> = []
    private var cursor: UInt64
    private var batchesAcknowledged = 0
    private var offlineMessageID: Int32?
    private var offlineAcknowledged = false

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
        birth = Array(StatusMessage.birth(config: config, started: started).serialized.utf8)
        builder = BatchBuilder(gatewayID: config.gateway.id)
        self.buffer = buffer
        self.logger = logger
        cursor = buffer.stats().ackedSeq
        limits = BatchLimits(
            maxRecords: config.upstream.batchMaxRecords, maxBytes: max(1, config.upstream.batchMaxBytes - builder.overhead))
    }

    /// Sets up the session and starts connecting and publishing in the background.
    func start() throws(MQTTError) {
        let client = try MQTTClient(clientID: settings.clientID) { [weak self] event in self?.handle(event) }
        try client.setWill(topic: topics.status, payload: Array(StatusMessage.offline.serialized.utf8), qos: 1, retain: true)
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
        try client.start(host: host, port: port, keepaliveSeconds: settings.keepaliveSeconds)
        logger.info("uplink connecting to \(tls ? "mqtts" : "mqtt")://\(host):\(port) as \(settings.clientID)")
        thread = DaemonThread { [self] in publishLoop() }
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
            while state == "connected", inFlight.contains(where: { !$0.acknowledged }), MonotonicInstant.now() < deadline {
                lock.wait(until: deadline)
            }
        }
        if let id = try? client.publish(topic: topics.status, payload: Array(StatusMessage.offline.serialized.utf8), qos: 1, retain: true) {
            lock.withLock {
                offlineMessageID = id
                while state == "connected", !offlineAcknowledged, MonotonicInstant.now() < deadline { lock.wait(until: deadline) }
            }
        }
        client.disconnect()
        self.client = nil
    }

    func status() -> UplinkStatus {
        let acked = buffer.stats().ackedSeq
        return lock.withLock {
            UplinkStatus(
                state: state, ackedSeq: acked, batches: batchesAcknowledged,
                inFlight: inFlight.count, lastError: lastError, url: "\(tls ? "mqtts" : "mqtt")://\(host):\(port)")
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
            do {
                try client?.publish(topic: topics.status, payload: birth, qos: 1, retain: true)
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
            if wasConnected, code != 0 { logger.warning("uplink lost the broker (\(reason)); reconnecting, records stay buffered") }
        case .published(let messageID):
            acknowledge(messageID)
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
            guard let index = inFlight.firstIndex(where: { $0.messageID == messageID }) else {
                earlyAcknowledgements.insert(messageID)
                return
            }
            inFlight[index].acknowledged = true
            var through: UInt64?
            while let first = inFlight.first, first.acknowledged {
                through = first.lastSeq
                inFlight.removeFirst()
                batchesAcknowledged += 1
            }
            if let through { buffer.acknowledge(through: through) }
            lock.broadcast()
        }
    }

    // MARK: Publisher thread

    private func publishLoop() {
        var lastSend = MonotonicInstant(nanoseconds: 0)
        var nextAllowed = MonotonicInstant(nanoseconds: 0)
        while true {
            let ready: Bool = lock.withLock {
                resendIfStuck()
                while !stopping, state != "connected" || inFlight.count >= Self.maxBatchesInFlight {
                    resendIfStuck()
                    lock.wait(until: MonotonicInstant.now().adding(milliseconds: 1000))
                }
                return !stopping
            }
            guard ready else {
                drain()
                return
            }
            let from = lock.withLock { cursor }
            guard buffer.waitForRecords(after: from, until: MonotonicInstant.now().adding(milliseconds: 500)) else { continue }
            var records = buffer.records(after: from, limits: limits)
            let now = MonotonicInstant.now()
            // Small batches wait out the interval; full ones go at once. A rate cap spaces batches.
            let intervalEnd = lastSend.adding(milliseconds: settings.batchIntervalMs)
            let holdUntil = max(records.count < settings.batchMaxRecords ? intervalEnd : now, nextAllowed)
            if holdUntil > now {
                lock.withLock {
                    while !stopping, MonotonicInstant.now() < holdUntil { lock.wait(until: holdUntil) }
                }
                records = buffer.records(after: from, limits: limits)
            }
            guard let sent = publish(records) else { continue }
            lastSend = MonotonicInstant.now()
            if settings.maxBytesPerSecond > 0 {
                nextAllowed = lastSend.adding(milliseconds: sent * 1000 / settings.maxBytesPerSecond)
            }
        }
    }

    /// On the way out: sends everything durable that is not in flight yet, while connected.
    private func drain() {
        while lock.withLock({ state == "connected" }) {
            let records = buffer.records(after: lock.withLock { cursor }, limits: limits)
            guard !records.isEmpty, publish(records) != nil else { return }
        }
    }

    /// Publishes one batch of `records` and tracks it in flight; returns the payload size, or
    /// nil if there was nothing to send or the publish failed.
    private func publish(_ records: [(seq: UInt64, bytes: [UInt8])]) -> Int? {
        guard let last = records.last, let client else { return nil }
        let batch = builder.batch(of: records)
        let payload = settings.gzip ? (Gzip.compress(batch.payload) ?? batch.payload) : batch.payload
        do {
            let messageID = try client.publish(topic: topics.telemetry, payload: payload, qos: settings.qos)
            lock.withLock {
                inFlight.append((messageID, last.seq, MonotonicInstant.now(), false))
                cursor = last.seq
            }
            if earlyAcknowledgementsContains(messageID) { acknowledge(messageID) }
            return payload.count
        } catch {
            lock.withLock {
                lastError = error.description
                _ = lock.wait(until: MonotonicInstant.now().adding(milliseconds: 1000))
            }
            logger.warning("publish failed: \(error)")
            return nil
        }
    }

    private func earlyAcknowledgementsContains(_ messageID: Int32) -> Bool {
        lock.withLock { earlyAcknowledgements.remove(messageID) != nil }
    }

    /// Called with the lock held: if the oldest batch waited too long on a live connection,
    /// forget what is in flight and send everything unacknowledged again (at-least-once).
    private func resendIfStuck() {
        guard state == "connected", let oldest = inFlight.first,
            MonotonicInstant.now().milliseconds(since: oldest.sentAt) > Int64(Self.resendAfterMs)
        else { return }
        logger.warning("batch up to seq \(oldest.lastSeq) unacknowledged for \(Self.resendAfterMs / 1000) s; resending")
        inFlight.removeAll()
        cursor = buffer.stats().ackedSeq
    }
}
