import Glibc
import Logging
import RailgateBuffer
import RailgateCore
import RailgateMQTT
import RailgateSystem

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

/// What the uplink needs of an MQTT session, and what its tests script: one session of
/// libmosquitto (`MQTTClient`) in the daemon.
///
/// The uplink's acknowledgement bookkeeping rests on the contract of libmosquitto's queue: a
/// QoS 1 publish stays queued, and is sent again with the same message id after every
/// reconnect, until the broker's PUBACK; the `.published` event for an id comes once per queued
/// publish; ids come from a 16-bit counter that wraps. Events arrive on the session's own
/// thread through the handler given to the factory that made the session.
protocol UplinkSession: AnyObject, Sendable {
    /// Starts connecting in the background (and reconnecting after losses, with a bounded
    /// back-off). Throws only for what retrying cannot mend (bad arguments, no thread).
    func connect() throws(MQTTError)
    /// Queues a publish and returns its message id; QoS 1 publishes while the connection is
    /// down are queued too. Safe from any thread and from inside the event handler.
    func publish(topic: String, payload: [UInt8], qos: Int, retain: Bool) throws(MQTTError) -> Int32
    /// Sends DISCONNECT (no will) and stops; no event is delivered once it returns. Never call
    /// it from the event handler.
    func disconnect()
}

/// Makes an unconnected session whose events go to the given handler.
typealias UplinkSessionFactory = (@escaping @Sendable (MQTTEvent) -> Void) throws(MQTTError) -> any UplinkSession

/// The daemon's session: libmosquitto with the will, credentials and TLS of `[upstream]`.
final class LibmosquittoSession: UplinkSession {
    private let client: MQTTClient
    private let host: String
    private let port: Int
    private let keepaliveSeconds: Int

    init(
        settings: UpstreamSettings, host: String, port: Int, tls: Bool, topics: Topics, logger: Logger,
        onEvent: @escaping @Sendable (MQTTEvent) -> Void
    ) throws(MQTTError) {
        client = try MQTTClient(clientID: settings.clientID, onEvent: onEvent)
        self.host = host
        self.port = port
        keepaliveSeconds = settings.keepaliveSeconds
        try client.setWill(
            topic: topics.status, payload: Array(StatusMessage.offline.serialized.utf8), qos: 1, retain: true)
        if let username = settings.username {
            let password = settings.passwordFile.flatMap { LocalFiles().read($0) }.map {
                String($0.prefix { $0 != "\n" && $0 != "\r" })
            }
            if let file = settings.passwordFile, password == nil {
                let descriptor = open(file, O_RDONLY | O_CLOEXEC)
                let reason = descriptor < 0 ? String(cString: strerror(errno)) : "not a readable regular file"
                if descriptor >= 0 { close(descriptor) }
                logger.error("cannot read password_file \(file) (\(reason)); connecting without a password")
            }
            try client.setCredentials(username: username, password: password)
        }
        if tls {
            try client.setTLS(MQTTTLS(caFile: settings.caFile, certFile: settings.certFile, keyFile: settings.keyFile))
        }
    }

    func connect() throws(MQTTError) {
        try client.start(host: host, port: port, keepaliveSeconds: keepaliveSeconds)
    }

    func publish(topic: String, payload: [UInt8], qos: Int, retain: Bool) throws(MQTTError) -> Int32 {
        try client.publish(topic: topic, payload: payload, qos: qos, retain: retain)
    }

    func disconnect() { client.disconnect() }
}

/// Forwards the buffer upstream over MQTT, at least once: batches of durable records are
/// published on the telemetry topic, and only the broker's PUBACK (QoS 1) moves the buffer's
/// acknowledged position, batch by batch in order. Alarms and events go first: after an
/// outage they are sent ahead of the older backlog of samples, and the acknowledged position
/// never passes one whose batch is still unacknowledged. The birth message is published
/// retained on every connect, after one `buffer_overflow` event if the buffer had to drop
/// records; the will says offline if the gateway vanishes.
///
/// Acknowledgements: every publish of the session (batches, birth and offline messages) is
/// recorded by message id, under the lock held across the publish call itself, so a PUBACK
/// handled on the session's thread always finds the publish it answers, even when it arrives
/// before `publish` returns; an id nothing is waiting for is ignored (logged at debug). A
/// batch in flight when the connection drops stays in flight: the session sends it again, same
/// id, after reconnecting. When the session cannot be trusted (a batch unacknowledged for
/// `resendAfterMs` on a live connection, or an id handed out while still in use), it is closed
/// and replaced: everything it reports from then on is ignored, and every unacknowledged record
/// is sent again in the new one.
///
/// Threads: a publisher thread of its own; the session's thread delivers connection events
/// and acknowledgements into `handle(_:generation:)`.
final class Uplink: @unchecked Sendable {
    /// One publish of the current session awaiting its PUBACK.
    private enum Pending {
        /// A batch of the backlog (in `inFlight`).
        case backlog
        /// A batch of alarms and events sent ahead of the backlog.
        case ahead(seqs: [UInt64], sentAt: MonotonicInstant)
        /// A status message (birth, or offline when stopping).
        case status(offline: Bool)
    }

    /// A batch of the backlog in flight, in seq order.
    private struct BacklogBatch {
        var messageID: Int32
        var seqs: [UInt64]
        var sentAt: MonotonicInstant
        var acknowledged = false
    }

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
    private let makeSession: UplinkSessionFactory
    /// A batch unacknowledged this long on a live connection makes the session be replaced.
    private let resendAfterMs: Int

    private var session: (any UplinkSession)?
    /// Which session events come from: bumped when a session is closed, so that whatever a
    /// closed or distrusted session still reports is ignored.
    private var generation = 0
    private var thread: DaemonThread?
    private var state = "connecting"
    private var connectedAt: MonotonicInstant?
    private var lastError: String?
    private var stopping = false
    /// Why the session must be replaced, set where that is found (possibly on its thread).
    private var distrust: String?
    /// Every publish of the current session not yet acknowledged, by message id.
    private var pending: [Int32: Pending] = [:]
    /// Batches of the backlog published and not yet acknowledged, in seq order.
    private var inFlight: [BacklogBatch] = []
    /// Seqs sent ahead and not yet passed by the contiguous position: the backlog skips them.
    private var sentAhead: Set<UInt64> = []
    /// The highest seq through which every batch of the backlog was acknowledged.
    private var backlogAcknowledged: UInt64
    private var cursor: UInt64
    private var batchesAcknowledged = 0
    private var offlineAcknowledged = false

    static let maxBatchesInFlight = 10

    /// `makeSession` replaces libmosquitto (tests); `resendAfterMs` is how long a batch may stay
    /// unacknowledged on a live connection before the session is replaced.
    init(
        config: GatewayConfig, buffer: DiskBuffer, started: Timestamp, logger: Logger,
        makeSession: UplinkSessionFactory? = nil, resendAfterMs: Int = 60_000
    ) {
        guard case .mqtt(let host, let port, let tls) = config.upstream.endpoint else {
            preconditionFailure("an uplink needs an MQTT endpoint")
        }
        settings = config.upstream
        self.host = host
        self.port = port
        self.tls = tls
        let topics = Topics(prefix: config.upstream.topicPrefix, gatewayID: config.gateway.id)
        self.topics = topics
        gatewayID = config.gateway.id
        birth = Array(StatusMessage.birth(config: config, started: started).serialized.utf8)
        builder = BatchBuilder(gatewayID: config.gateway.id)
        self.buffer = buffer
        self.logger = logger
        self.resendAfterMs = resendAfterMs
        cursor = buffer.stats().ackedSeq
        backlogAcknowledged = cursor
        limits = BatchLimits(
            maxRecords: config.upstream.batchMaxRecords,
            maxBytes: max(1, config.upstream.batchMaxBytes - builder.overhead))
        if let makeSession {
            self.makeSession = makeSession
        } else {
            let settings = config.upstream
            self.makeSession = { (onEvent) throws(MQTTError) -> any UplinkSession in
                try LibmosquittoSession(
                    settings: settings, host: host, port: port, tls: tls, topics: topics, logger: logger,
                    onEvent: onEvent)
            }
        }
    }

    /// Sets up the session and starts connecting and publishing in the background.
    /// - Throws: `MQTTError` if libmosquitto refuses the settings, `ThreadError` if the publisher
    ///   thread cannot be created.
    func start() throws {
        logger.info("uplink connecting to \(tls ? "mqtts" : "mqtt")://\(host):\(port) as \(settings.clientID)")
        try openSession()
        do {
            thread = try DaemonThread(name: "uplink") { [self] in publishLoop() }
        } catch {
            lock.withLock { session }?.disconnect()
            lock.withLock { session = nil }
            throw error
        }
    }

    /// Makes and connects a session for the current generation.
    private func openSession() throws(MQTTError) {
        let generation = lock.withLock { self.generation }
        let session = try makeSession { [weak self] event in self?.handle(event, generation: generation) }
        lock.withLock { self.session = session }
        try session.connect()
    }

    /// Stops publishing, waits up to `graceMs` for batches in flight to be acknowledged, marks
    /// the gateway offline (retained) and disconnects.
    func stop(graceMs: Int = 3000) {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
        thread?.join()
        guard let session = lock.withLock({ self.session }) else { return }
        let deadline = MonotonicInstant.now().adding(milliseconds: graceMs)
        lock.withLock {
            while state == "connected", !pending.isEmpty, MonotonicInstant.now() < deadline {
                lock.wait(until: deadline)
            }
            do {
                let offline = Array(StatusMessage.offline.serialized.utf8)
                if try publishLocked(
                    topic: topics.status, payload: offline, qos: 1, retain: true, as: .status(offline: true))
                    != nil
                {
                    while state == "connected", !offlineAcknowledged, MonotonicInstant.now() < deadline {
                        lock.wait(until: deadline)
                    }
                }
            } catch {
                logger.warning("could not publish the offline status: \(error)")
            }
        }
        session.disconnect()
        lock.withLock {
            generation += 1
            self.session = nil
        }
    }

    /// A new birth message (the sources changed on a reload): kept for the next connects and
    /// published now if connected.
    func announce(_ message: JSON) {
        lock.withLock {
            birth = message.bytes
            guard state == "connected" else { return }
            do {
                _ = try publishLocked(
                    topic: topics.status, payload: message.bytes, qos: 1, retain: true, as: .status(offline: false))
            } catch {
                logger.warning("could not publish the new birth message: \(error)")
            }
        }
    }

    func status() -> UplinkStatus {
        let acked = buffer.stats().ackedSeq
        return lock.withLock {
            let ahead = pending.values.filter {
                if case .ahead = $0 { return true }
                return false
            }
            return UplinkStatus(
                state: state, ackedSeq: acked, batches: batchesAcknowledged,
                inFlight: inFlight.count + ahead.count, lastError: lastError,
                url: "\(tls ? "mqtts" : "mqtt")://\(host):\(port)")
        }
    }

    /// With the lock held: publishes and records the message id before releasing the lock, so
    /// that a PUBACK, which `handle` takes only with the lock, always finds what it answers.
    /// This cannot deadlock with libmosquitto's thread: with the thread running,
    /// `mosquitto_publish` only queues (msgs_out, out_packet and mid mutexes), and none of those
    /// is held while libmosquitto calls back (2.0.11: callback_mutex, current_out_packet_mutex).
    /// An id still awaiting its own PUBACK makes the session distrusted (which publish a PUBACK
    /// answers can no longer be told): its events are ignored from now on and the publisher
    /// replaces it. Returns nil without a session.
    private func publishLocked(
        topic: String, payload: [UInt8], qos: Int, retain: Bool, as kind: Pending
    ) throws(MQTTError) -> Int32? {
        guard let session else { return nil }
        let messageID = try session.publish(topic: topic, payload: payload, qos: qos, retain: retain)
        if pending[messageID] != nil {
            generation += 1
            distrust = "the MQTT session handed out message id \(messageID) while a publish with it was unacknowledged"
            lock.broadcast()
        }
        pending[messageID] = kind
        return messageID
    }

    // MARK: The session's thread

    private func handle(_ event: MQTTEvent, generation: Int) {
        switch event {
        case .connected(let code, let reason):
            guard code == 0 else {
                let current: Bool = lock.withLock {
                    guard generation == self.generation else { return false }
                    state = "refused"
                    lastError = "broker refused the connection: \(reason)"
                    return true
                }
                if current {
                    logger.error("broker \(host):\(port) refused the connection: \(reason) (CONNACK \(code))")
                }
                return
            }
            guard lock.withLock({ generation == self.generation }) else { return }
            // The buffer_overflow event goes into the buffer and the drops are marked reported in
            // one step: a failed append leaves them for the next connect.
            do {
                if let drops = try buffer.appendOverflowReport(source: gatewayID) {
                    logger.warning(
                        "the buffer dropped \(drops.normal) normal and \(drops.alarm) alarm records while full; reporting upstream"
                    )
                }
            } catch {
                logger.error("could not record the buffer_overflow event: \(error); reported at the next connect")
            }
            let current: Bool = lock.withLock {
                guard generation == self.generation else { return false }
                do {
                    _ = try publishLocked(
                        topic: topics.status, payload: birth, qos: 1, retain: true, as: .status(offline: false))
                } catch {
                    logger.warning("could not publish the birth message: \(error)")
                }
                state = "connected"
                connectedAt = MonotonicInstant.now()
                lastError = nil
                lock.broadcast()
                return true
            }
            if current { logger.notice("uplink connected to \(host):\(port)") }
        case .disconnected(let code, let reason):
            let (current, wasConnected, newError): (Bool, Bool, Bool) = lock.withLock {
                guard generation == self.generation else { return (false, false, false) }
                let was = state == "connected"
                connectedAt = nil
                lock.broadcast()
                // A refusal stays the reason until a connect succeeds.
                if state == "refused", code != 0 { return (true, false, false) }
                state = code == 0 ? "disconnected" : "connecting"
                guard code != 0 else { return (true, was, false) }
                let text = was ? "connection lost: \(reason)" : "cannot connect to \(host):\(port): \(reason)"
                defer { lastError = text }
                return (true, was, lastError != text)
            }
            guard current, code != 0 else { return }
            if wasConnected {
                logger.warning("uplink lost the broker (\(reason)); reconnecting, records stay buffered")
            } else if newError {
                logger.warning("uplink cannot connect to \(host):\(port): \(reason); retrying, records stay buffered")
            }
        case .published(let messageID):
            acknowledge(messageID, generation: generation)
        case .problem(let text):
            let isNew: Bool = lock.withLock {
                guard generation == self.generation, state != "connected", lastError != text else { return false }
                lastError = text
                return true
            }
            if isNew { logger.error("uplink: \(text)") }
        case .message:
            break
        }
    }

    private func acknowledge(_ messageID: Int32, generation: Int) {
        lock.withLock {
            guard generation == self.generation else {
                logger.debug("PUBACK for message id \(messageID) from a closed MQTT session: ignored")
                return
            }
            guard let publish = pending.removeValue(forKey: messageID) else {
                logger.debug("PUBACK for message id \(messageID), which no publish is waiting for: ignored")
                return
            }
            switch publish {
            case .status(let offline):
                if offline { offlineAcknowledged = true }
                lock.broadcast()
            case .ahead(let seqs, _):
                buffer.acknowledge(seqs: seqs)
                batchesAcknowledged += 1
                advanceAcknowledged()
            case .backlog:
                guard let index = inFlight.firstIndex(where: { $0.messageID == messageID && !$0.acknowledged })
                else { return }
                inFlight[index].acknowledged = true
                while let first = inFlight.first, first.acknowledged {
                    backlogAcknowledged = first.seqs.last ?? backlogAcknowledged
                    inFlight.removeFirst()
                    batchesAcknowledged += 1
                }
                advanceAcknowledged()
            }
        }
    }

    /// With the lock held: moves the buffer's acknowledged position as far as the backlog's
    /// acknowledgements go, but never past a record sent ahead whose batch is unacknowledged.
    private func advanceAcknowledged() {
        var unacknowledgedAhead: UInt64?
        for case .ahead(let seqs, _) in pending.values {
            if let low = seqs.min() { unacknowledgedAhead = min(unacknowledgedAhead ?? low, low) }
        }
        let through = unacknowledgedAhead.map { min(backlogAcknowledged, $0 - 1) } ?? backlogAcknowledged
        buffer.acknowledge(through: through)
        sentAhead = sentAhead.filter { $0 > through }
        lock.broadcast()
    }

    // MARK: Publisher thread

    private enum Step {
        case publish
        case replace(String)
        case stop
    }

    private func publishLoop() {
        var lastSend = MonotonicInstant(nanoseconds: 0)
        var nextAllowed = MonotonicInstant(nanoseconds: 0)
        while true {
            let step: Step = lock.withLock {
                while true {
                    if stopping { return .stop }
                    if let reason = replacementReason() { return .replace(reason) }
                    if state == "connected", inFlight.count < Self.maxBatchesInFlight { return .publish }
                    let second = MonotonicInstant.now().adding(milliseconds: 1000)
                    lock.wait(until: stuckDeadline().map { min($0, second) } ?? second)
                }
            }
            switch step {
            case .stop:
                drain()
                return
            case .replace(let reason):
                replaceSession(because: reason)
                continue
            case .publish:
                break
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
                    while !stopping, MonotonicInstant.now() < holdUntil { lock.wait(until: holdUntil) }
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
        while lock.withLock({ state == "connected" && distrust == nil }) {
            let (from, skipping) = lock.withLock { (cursor, sentAhead) }
            let urgent = buffer.urgentRecords(after: from, excluding: skipping, limit: limits.maxRecords)
            let records = urgent.isEmpty ? buffer.records(after: from, limits: limits, excluding: skipping) : urgent
            guard !records.isEmpty, publish(records, ahead: !urgent.isEmpty) != nil else { return }
        }
    }

    /// Publishes one batch of `records` and tracks it in flight (`ahead`: alarms and events sent
    /// before the backlog); returns the payload size, or nil if nothing was sent.
    private func publish(_ records: [(seq: UInt64, bytes: [UInt8])], ahead: Bool) -> Int? {
        guard let last = records.last else { return nil }
        var payload = builder.batch(of: records).payload
        if settings.gzip {
            do {
                payload = try Gzip.compress(payload)
            } catch {
                logger.error("\(error); sending seqs \(records[0].seq)-\(last.seq) uncompressed")
            }
        }
        do {
            let published: Bool = try lock.withLock { () throws(MQTTError) -> Bool in
                let now = MonotonicInstant.now()
                let seqs = records.map(\.seq)
                let kind: Pending = ahead ? .ahead(seqs: seqs, sentAt: now) : .backlog
                guard
                    let messageID = try publishLocked(
                        topic: topics.telemetry, payload: payload, qos: settings.qos, retain: false, as: kind)
                else { return false }
                if ahead {
                    sentAhead.formUnion(seqs)
                } else {
                    inFlight.append(BacklogBatch(messageID: messageID, seqs: seqs, sentAt: now))
                    cursor = last.seq
                }
                return true
            }
            return published ? payload.count : nil
        } catch {
            lock.withLock {
                lastError = error.description
                _ = lock.wait(until: MonotonicInstant.now().adding(milliseconds: 1000))
            }
            logger.warning("publish failed: \(error)")
            return nil
        }
    }

    /// With the lock held: why the session must be replaced now, if it must: it was distrusted,
    /// or a batch stayed unacknowledged `resendAfterMs` on a connection live all that time
    /// (after a reconnect the session sent it again, so the time counts from the reconnect).
    private func replacementReason() -> String? {
        if let reason = distrust {
            distrust = nil
            return reason
        }
        guard let deadline = stuckDeadline(), MonotonicInstant.now() >= deadline else { return nil }
        return "a batch stayed unacknowledged for \(resendAfterMs) ms on a live connection"
    }

    /// With the lock held: when the oldest unacknowledged batch counts as stuck, if connected.
    private func stuckDeadline() -> MonotonicInstant? {
        guard state == "connected", let connectedAt else { return nil }
        var oldest = inFlight.lazy.filter { !$0.acknowledged }.map(\.sentAt).min()
        for case .ahead(_, let sentAt) in pending.values { oldest = min(oldest ?? sentAt, sentAt) }
        return oldest.map { max($0, connectedAt).adding(milliseconds: resendAfterMs) }
    }

    /// Closes the session and opens a new one, sending every unacknowledged record again.
    /// Whatever the old session still reports is ignored (its generation is over); batches it
    /// acknowledged out of order stay acknowledged.
    private func replaceSession(because reason: String) {
        logger.warning("\(reason): reconnecting with a new MQTT session and sending every unacknowledged record again")
        let old: (any UplinkSession)? = lock.withLock {
            generation += 1
            let old = session
            session = nil
            state = "connecting"
            connectedAt = nil
            for batch in inFlight where batch.acknowledged { buffer.acknowledge(seqs: batch.seqs) }
            inFlight.removeAll()
            pending.removeAll()
            sentAhead.removeAll()
            cursor = buffer.stats().ackedSeq
            backlogAcknowledged = cursor
            lock.broadcast()
            return old
        }
        // Without the lock: the old session's thread may be waiting for it in `handle`.
        old?.disconnect()
        do {
            try openSession()
        } catch {
            lock.withLock { lastError = "cannot open a new MQTT session: \(error)" }
            logger.error("uplink cannot open a new MQTT session: \(error); records stay buffered")
        }
    }
}
