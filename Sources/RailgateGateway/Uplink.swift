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
    /// Records that can never be delivered (bigger alone than the broker accepts), set aside.
    public var undeliverable: Int = 0
    /// The bytes of records a batch may carry on this link now (`batch_max_bytes` less the
    /// envelope, halved each time the broker dropped the connection on a batch too large).
    public var batchBytesLimit: Int = 0
    /// Records in the acknowledged batches (a count, unlike `ackedSeq`, which jumps over the seqs
    /// a crash left unused): what the send rate is measured on.
    public var records: Int = 0
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
    private let backoff: MQTTClient.Backoff

    init(
        settings: UpstreamSettings, host: String, port: Int, tls: Bool, topics: Topics, logger: Logger,
        onEvent: @escaping @Sendable (MQTTEvent) -> Void
    ) throws(MQTTError) {
        client = try MQTTClient(
            clientID: settings.clientID, protocolVersion: settings.protocolVersion, onEvent: onEvent)
        self.host = host
        self.port = port
        keepaliveSeconds = settings.keepaliveSeconds
        backoff = MQTTClient.Backoff(minimumMs: settings.reconnectMinMs, maximumMs: settings.reconnectMaxMs)
        // The will as the birth message goes: a broker with max_qos 0 or retain_available false
        // closes a CONNECT whose will asks for more, before any CONNACK.
        try client.setWill(
            topic: topics.status, payload: Array(StatusMessage.offline.serialized.utf8), qos: settings.qos,
            retain: settings.retainStatus)
        if let username = settings.username {
            let password = UpstreamPassword.read(settings: settings, environment: ProcessEnvironment.current)
            if let problem = password.problem {
                logger.error("\(problem); connecting without a password")
            }
            try client.setCredentials(username: username, password: password.secret)
        }
        if tls {
            try client.setTLS(MQTTTLS(caFile: settings.caFile, certFile: settings.certFile, keyFile: settings.keyFile))
        }
    }

    func connect() throws(MQTTError) {
        try client.start(host: host, port: port, keepaliveSeconds: keepaliveSeconds, backoff: backoff)
    }

    func publish(topic: String, payload: [UInt8], qos: Int, retain: Bool) throws(MQTTError) -> Int32 {
        try client.publish(topic: topic, payload: payload, qos: qos, retain: retain)
    }

    func disconnect() { client.disconnect() }
}

/// The environment variables the daemon was started with (`getenv`).
enum ProcessEnvironment {
    static func current(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }
}

/// Where the MQTT password comes from: `password_file`, or else systemd's credential directory
/// (`$CREDENTIALS_DIRECTORY/mqtt-password`, from `LoadCredential=mqtt-password:...` in the
/// unit). The first line of the file is the password. The secret itself is never put in a
/// message: `problem` names the file and the reason only.
struct UpstreamPassword {
    var secret: String?
    var problem: String?

    static let credentialName = "mqtt-password"

    static func read(settings: UpstreamSettings, environment: (String) -> String?) -> UpstreamPassword {
        let file: String
        if let configured = settings.passwordFile {
            file = configured
        } else if let directory = environment("CREDENTIALS_DIRECTORY"), !directory.isEmpty {
            file = directory + "/" + credentialName
            // No credential of that name: connect without a password, as without password_file.
            guard access(file, F_OK) == 0 else { return UpstreamPassword() }
        } else {
            return UpstreamPassword()
        }
        guard let text = LocalFiles().read(file) else {
            let descriptor = open(file, O_RDONLY | O_CLOEXEC)
            let reason = descriptor < 0 ? String(cString: strerror(errno)) : "not a readable regular file"
            if descriptor >= 0 { close(descriptor) }
            return UpstreamPassword(problem: "cannot read the MQTT password from \(file) (\(reason))")
        }
        return UpstreamPassword(secret: String(text.prefix { $0 != "\n" && $0 != "\r" }))
    }
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
        /// A batch of alarms and events sent ahead of the backlog (`size`: its bytes).
        case ahead(seqs: [UInt64], sentAt: MonotonicInstant, size: BatchSize)
        /// A status message (birth, or offline when stopping).
        case status(offline: Bool)
    }

    /// How big a batch is: its payload on the wire, and its records joined by commas (what
    /// `BatchLimits.maxBytes` bounds).
    struct BatchSize: Equatable {
        var payload: Int
        var records: Int
    }

    /// A batch of the backlog in flight, in seq order.
    private struct BacklogBatch {
        var messageID: Int32
        var seqs: [UInt64]
        var sentAt: MonotonicInstant
        var size: BatchSize
        var acknowledged = false
    }

    private let settings: UpstreamSettings
    private let host: String
    private let port: Int
    private let tls: Bool
    private let topics: Topics
    private let gatewayID: String
    /// The retained birth message, published on every connect with the buffer's depth then
    /// (guarded by `lock`).
    private var birth: JSON
    /// The size of the birth message last published (guarded by `lock`).
    private var birthSize = 0
    private let builder: BatchBuilder
    /// With `payload = "compact"`: the `compact/1` encoder (publish loop thread only).
    private var compact: CompactBatchEncoder?
    /// The encoder for a reloaded configuration's point order, taken by the publish loop before
    /// its next batch (guarded by `lock`).
    private var nextCompact: CompactBatchEncoder?
    /// The batch limits for the records alone (the envelope's bytes taken off); `maxBytes` is
    /// halved when the broker drops the connection on a batch too large (guarded by `lock`).
    private var limits: BatchLimits
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
    private var recordsAcknowledged = 0
    private var offlineAcknowledged = false
    /// The publisher loop's proof of life for the systemd watchdog.
    let heartbeat = Heartbeat(name: "the uplink")
    /// The largest telemetry payload the broker acknowledged (QoS 1) on this link: a batch no
    /// larger cannot be what makes it drop the connection.
    private var largestAcknowledged = 0
    /// The first seq of the largest batch unacknowledged when the broker last dropped the
    /// connection: dropped again with it, before any other telemetry was acknowledged, the
    /// batch is too large (a flaky link drops connections too, but not twice on one packet).
    private var oversizeSuspect: UInt64?
    /// Telemetry acknowledged on the current connection.
    private var telemetryAcknowledgedThisConnection = false
    private var undeliverable = 0
    /// The smallest payload of a record alone the broker refused: a record as large or larger
    /// is set aside without being sent (it would cost two dropped connections each).
    private var refusedSize: Int?
    /// Telemetry or birth acknowledged on the current connection.
    private var acknowledgedThisConnection = false
    /// Accepted connections in a row the broker closed with nothing suspect pending.
    private var brokerCloses = 0
    /// A standing reason about the link (a taken-over client id, a record set aside): kept in
    /// `last_error` across reconnects until a connection stays up `stableLinkMs`.
    private var linkWarning: String?
    /// Reasons already logged since the link was last stable: each is logged once.
    private var logged: Set<String> = []
    static let stableLinkMs = 60_000
    /// The newest durable seq when the connection came up, while a backlog up to it remains.
    private var drainEnd: UInt64?
    /// When fresh records last went ahead of a capped backlog (publisher thread only).
    private var lastFreshSend = MonotonicInstant(nanoseconds: 0)

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
        birth = StatusMessage.birth(config: config, started: started)
        builder = BatchBuilder(gatewayID: config.gateway.id)
        compact =
            config.upstream.compactPayload
            ? CompactBatchEncoder(gatewayID: config.gateway.id, pointOrder: Self.pointOrder(config)) : nil
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

    /// A reload kept this uplink (same upstream): batches from now on follow the new
    /// configuration's point order. With the old one, a profile whose points were reordered would
    /// make no row fit its slots and every batch would go plain, larger, until a restart.
    func reconfigure(_ config: GatewayConfig) {
        guard config.upstream.compactPayload else { return }
        let encoder = CompactBatchEncoder(gatewayID: config.gateway.id, pointOrder: Self.pointOrder(config))
        lock.withLock { nextCompact = encoder }
    }

    /// Each device's point names in profile order (the order its samples list them in).
    static func pointOrder(_ config: GatewayConfig) -> [String: [String]] {
        var order: [String: [String]] = [:]
        for device in config.devices { order[device.name] = device.profile.points.map(\.name) }
        return order
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
                    topic: topics.status, payload: offline, qos: settings.qos, retain: settings.retainStatus,
                    as: .status(offline: true))
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
        let depth = bufferDepth()
        lock.withLock {
            birth = message
            guard state == "connected" else { return }
            do {
                let payload = StatusMessage.withBuffer(message, depth).bytes
                birthSize = payload.count
                _ = try publishLocked(
                    topic: topics.status, payload: payload, qos: settings.qos, retain: settings.retainStatus,
                    as: .status(offline: false))
            } catch {
                logger.warning("could not publish the new birth message: \(error)")
            }
        }
    }

    /// The records waiting in the buffer and the age of the oldest, for the birth message.
    private func bufferDepth() -> StatusMessage.BufferDepth {
        let stats = buffer.stats()
        let oldest = buffer.records(after: stats.ackedSeq, limits: BatchLimits(maxRecords: 1, maxBytes: .max)).first
        let age = oldest.flatMap { CompactBatch.timestamp(ofRecord: $0.bytes) }.map {
            max(0, WallClock.now().millisecondsSinceEpoch - $0.millisecondsSinceEpoch) / 1000
        }
        return StatusMessage.BufferDepth(records: stats.records, oldestAgeSeconds: age)
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
                url: "\(tls ? "mqtts" : "mqtt")://\(host):\(port)", undeliverable: undeliverable,
                batchBytesLimit: limits.maxBytes, records: recordsAcknowledged)
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
                let text = "broker refused the connection: \(reason) (CONNACK \(code))\(Self.remedy(connack: code))"
                let isNew: Bool = lock.withLock {
                    guard generation == self.generation else { return false }
                    state = "refused"
                    lastError = text
                    return logged.insert(text).inserted
                }
                if isNew { logger.error("uplink \(host):\(port): \(text); retrying, records stay buffered") }
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
            let depth = bufferDepth()
            let current: Bool = lock.withLock {
                guard generation == self.generation else { return false }
                do {
                    let payload = StatusMessage.withBuffer(birth, depth).bytes
                    birthSize = payload.count
                    _ = try publishLocked(
                        topic: topics.status, payload: payload, qos: settings.qos, retain: settings.retainStatus,
                        as: .status(offline: false))
                } catch {
                    logger.warning("could not publish the birth message: \(error)")
                }
                state = "connected"
                connectedAt = MonotonicInstant.now()
                acknowledgedThisConnection = false
                telemetryAcknowledgedThisConnection = false
                // What is buffered now is the backlog a rate cap drains; newer records are fresh.
                let durable = buffer.stats().durableSeq
                drainEnd = durable > cursor ? durable : nil
                lastError = linkWarning
                lock.broadcast()
                return true
            }
            if current { logger.notice("uplink connected to \(host):\(port)") }
        case .disconnected(let code, let reason):
            let (current, wasConnected, message): (Bool, Bool, (text: String, error: Bool)?) = lock.withLock {
                guard generation == self.generation else { return (false, false, nil) }
                let was = state == "connected"
                let upFor = connectedAt.map { MonotonicInstant.now().milliseconds(since: $0) } ?? 0
                connectedAt = nil
                lock.broadcast()
                // A refusal stays the reason until a connect succeeds.
                if state == "refused", code != 0 { return (true, false, nil) }
                state = code == 0 ? "disconnected" : "connecting"
                guard code != 0 else { return (true, was, nil) }
                if upFor >= Self.stableLinkMs {
                    logged.removeAll()
                    linkWarning = nil
                    brokerCloses = 0
                }
                var diagnosis: (text: String, error: Bool)
                if was {
                    diagnosis =
                        diagnoseLoss(
                            peerClosed: MQTTError.peerClosed(code: code, reason: reason), upForMs: upFor)
                        ?? ("connection lost: \(reason)", false)
                } else if code == MQTTError.connectionLostCode {
                    let certificate =
                        tls
                        ? (settings.certFile == nil
                            ? "the TLS client certificate it requires (cert_file and key_file), "
                            : "the TLS client certificate \(settings.certFile ?? "") (its CA, validity), ") : ""
                    diagnosis = (
                        "the broker \(host):\(port) closed the connection before accepting it (no CONNACK): it "
                            + "refuses something in CONNECT: \(certificate)the will's QoS \(settings.qos) (a broker "
                            + "with max_qos 0 needs qos = 0), its retain flag (retain_available false needs "
                            + "retain_status = false), the client id or the protocol version; the broker's log says "
                            + "which", false
                    )
                } else {
                    diagnosis = ("cannot connect to \(host):\(port): \(reason)", false)
                }
                lastError = diagnosis.text
                return (true, was, logged.insert(diagnosis.text).inserted ? diagnosis : nil)
            }
            guard current, code != 0, let message else { return }
            let line =
                wasConnected
                ? "uplink lost the broker: \(message.text); reconnecting, records stay buffered"
                : "uplink: \(message.text); retrying, records stay buffered"
            if message.error { logger.error("\(line)") } else { logger.warning("\(line)") }
        case .published(let messageID):
            acknowledge(messageID, generation: generation)
        case .problem(let text):
            let isNew: Bool = lock.withLock {
                guard generation == self.generation, state != "connected" else { return false }
                lastError = text
                return logged.insert(text).inserted
            }
            if isNew { logger.error("uplink: \(text)") }
        case .publishRefused(let messageID, let reason):
            // MQTT 5: the broker said no to this publish. Its records stay unacknowledged: the
            // batch counts as stuck, and after `resendAfterMs` the session is replaced and they
            // are sent again (no tight loop on a refusal that lasts, no record lost).
            let text: String? = lock.withLock {
                guard generation == self.generation, let kind = pending[messageID] else { return nil }
                let what: String
                switch kind {
                case .status: what = "the status message"
                case .ahead(let seqs, _, _): what = "a batch of seqs \(seqs.first ?? 0)-\(seqs.last ?? 0)"
                case .backlog:
                    let seqs = inFlight.first { $0.messageID == messageID }?.seqs ?? []
                    what = "a batch of seqs \(seqs.first ?? 0)-\(seqs.last ?? 0)"
                }
                let text =
                    "the broker refused \(what): \(reason); kept buffered and sent again in \(resendAfterMs / 1000) s"
                lastError = text
                return logged.insert("publish refused: \(reason)").inserted ? text : nil
            }
            if let text { logger.error("uplink: \(text)") }
        case .brokerMaximumPacketSize(let maximum):
            // MQTT 5: what the broker announces is what a batch may be (its PUBLISH header and
            // the topic taken off; gzip only shrinks it).
            lock.withLock {
                let fits = max(1, maximum - builder.overhead - topics.telemetry.utf8.count - 16)
                if fits < limits.maxBytes {
                    limits.maxBytes = fits
                    logger.notice("broker's maximum packet size is \(maximum) bytes: batches carry at most \(fits)")
                }
            }
        case .message:
            break
        }
    }

    /// What to do about a refused CONNACK (MQTT 3.1.1 return codes 1-5), after its reason.
    static func remedy(connack code: Int32) -> String {
        switch code {
        case 1: return "; the broker does not speak this MQTT version"
        case 2: return "; the broker rejects the client id: check client_id (length, characters)"
        case 3: return "; the broker is unavailable: it will be tried again"
        case 4:
            return
                "; check username and the password (password_file or $CREDENTIALS_DIRECTORY/\(UpstreamPassword.credentialName))"
        case 0x85: return "; the broker rejects the client id: check client_id"
        case 0x86, 0x87:
            return "; check username and the password (password_file or $CREDENTIALS_DIRECTORY/"
                + "\(UpstreamPassword.credentialName)), the broker's ACL or the client certificate"
        case 0x9A: return "; the broker refuses retained messages: set retain_status = false"
        case 0x9B: return "; the broker refuses the will's QoS: set qos = 0"
        case 5:
            return "; the broker does not authorise this client: check username and the password (password_file or "
                + "$CREDENTIALS_DIRECTORY/\(UpstreamPassword.credentialName)), the broker's ACL or the client certificate"
        default: return ""
        }
    }

    /// With the lock held, when an accepted connection was lost (`code` != 0): why, if it can
    /// be told, and what was done about it (`error`: logged at error level).
    ///
    /// - The birth message unacknowledged (QoS 1): the broker refused it (retain, QoS, size).
    /// - A batch unacknowledged that is larger than any the broker acknowledged on this link:
    ///   taken as over the broker's maximum packet size. The batch limit is halved and the
    ///   session replaced (libmosquitto would send the same packet again after reconnecting);
    ///   a record alone that makes the broker drop the connection twice in a row, on a link
    ///   that delivers smaller batches, can never be delivered: it is set aside (acknowledged
    ///   without delivery), counted in `undeliverable`, and reported upstream by a
    ///   `record_undeliverable` event, so the loss is known where the data was expected.
    /// - Otherwise, the broker closing the connection twice in a row, each within 30 s of
    ///   accepting it, with nothing suspect pending: another client connected with the same
    ///   client id took the session over.
    private func diagnoseLoss(peerClosed: Bool, upForMs: Int64) -> (text: String, error: Bool)? {
        let birthPending = pending.values.contains {
            if case .status(offline: false) = $0 { return true }
            return false
        }
        // The broker reads in order: the packet it dropped the connection on is the oldest
        // unacknowledged one larger than any it acknowledged.
        var oldest: (seqs: [UInt64], size: BatchSize, sentAt: MonotonicInstant)?
        for batch in inFlight where !batch.acknowledged && batch.size.payload > largestAcknowledged {
            if batch.sentAt < oldest?.sentAt ?? .init(nanoseconds: .max) {
                oldest = (batch.seqs, batch.size, batch.sentAt)
            }
        }
        for case .ahead(let seqs, let sentAt, let size) in pending.values where size.payload > largestAcknowledged {
            if sentAt < oldest?.sentAt ?? .init(nanoseconds: .max) { oldest = (seqs, size, sentAt) }
        }
        let biggest = oldest.map { (seqs: $0.seqs, size: $0.size) }
        if birthPending, !acknowledgedThisConnection, birthSize >= biggest?.size.payload ?? 0 {
            // The birth goes first on every connection, and is the largest packet pending.
            brokerCloses = 0
            return (
                "the broker closed the connection while the birth message (\(birthSize) bytes, QoS \(settings.qos), "
                    + "retained \(settings.retainStatus)) was unacknowledged: it may refuse retained messages "
                    + "(retain_available false needs retain_status = false), QoS 1 (max_qos 0 needs qos = 0) or a "
                    + "packet that large (max_packet_size)", false
            )
        }
        let confirmed = biggest.map { batch in
            // Once is a lost connection; the same packet again is the broker refusing it.
            defer { oversizeSuspect = batch.seqs[0] }
            return oversizeSuspect == batch.seqs[0] && !telemetryAcknowledgedThisConnection
        }
        if let batch = biggest, confirmed == true, batch.size.payload > largestAcknowledged, settings.qos > 0 {
            brokerCloses = 0
            let first = batch.seqs[0]
            oversizeSuspect = nil
            if batch.seqs.count > 1 {
                // The old session would send the same packet again: ignore it from now on.
                generation += 1
                limits.maxBytes = max(1, min(limits.maxBytes, batch.size.records / 2))
                distrust = "batch limit halved to \(limits.maxBytes) bytes of records"
                return (
                    "the broker dropped the connection with a batch of \(batch.size.payload) bytes "
                        + "(\(batch.seqs.count) records) unacknowledged, larger than any it acknowledged "
                        + "(\(largestAcknowledged) bytes): taken as over its maximum packet size; batches carry at "
                        + "most \(limits.maxBytes) bytes of records from now on", false
                )
            }
            let seq = first
            guard largestAcknowledged > 0 else {
                // Nothing was ever acknowledged: the record's size cannot be told from the rest
                // of what the broker may refuse. The session keeps it and retries on its back-off.
                oversizeSuspect = seq
                return (
                    "the broker drops the connection on record seq \(seq) alone (\(batch.size.payload) bytes) and "
                        + "has acknowledged no telemetry on this link: check its max_packet_size, max_qos and ACL",
                    false
                )
            }
            generation += 1
            refusedSize = min(refusedSize ?? .max, batch.size.payload)
            let reported = setAside(seq: seq, bytes: batch.size.payload)
            distrust = "record seq \(seq) set aside"
            let text =
                "record seq \(seq) (\(batch.size.payload) bytes) set aside as undeliverable: the broker dropped the "
                + "connection twice on it alone, and accepts batches up to \(largestAcknowledged) bytes; "
                + "\(undeliverable) set aside since start, \(reported); records that large or larger are set aside "
                + "unsent from now on; raise the broker's max_packet_size"
            linkWarning = text
            return (text, true)
        }
        // Soon after: a client taking the id over reconnects on its own back-off (seconds).
        guard peerClosed, upForMs < 30_000 else {
            brokerCloses = 0
            return nil
        }
        brokerCloses += 1
        guard brokerCloses >= 2 else { return nil }
        let text =
            "session taken over: the broker keeps closing the connection soon after accepting it, with nothing it "
            + "refused pending: another client is probably connected with client id \"\(settings.clientID)\" (a "
            + "broker drops the older connection of a client id); give every gateway its own client_id"
        linkWarning = text
        return (text, false)
    }

    /// With the lock held: sets record `seq` aside as undeliverable (acknowledged without
    /// delivery, counted) and reports it upstream by a `record_undeliverable` event; returns how
    /// it was reported.
    private func setAside(seq: UInt64, bytes: Int) -> String {
        undeliverable += 1
        buffer.acknowledge(seqs: [seq])
        let event = Record(
            timestamp: WallClock.now(), source: gatewayID,
            body: .event(
                name: "record_undeliverable",
                fields: [
                    ("seq", .unsigned(seq)), ("bytes", .unsigned(UInt64(bytes))),
                    ("largest_accepted", .unsigned(UInt64(largestAcknowledged))),
                ]),
            priority: .alarm)
        do {
            try buffer.append(event)
            return "reported upstream by a record_undeliverable event"
        } catch {
            return "the record_undeliverable event could not be buffered: \(error)"
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
                acknowledgedThisConnection = true
                lock.broadcast()
            case .ahead(let seqs, _, let size):
                noteAcknowledged(size)
                buffer.acknowledge(seqs: seqs)
                batchesAcknowledged += 1
                recordsAcknowledged += seqs.count
                advanceAcknowledged()
            case .backlog:
                guard let index = inFlight.firstIndex(where: { $0.messageID == messageID && !$0.acknowledged })
                else { return }
                inFlight[index].acknowledged = true
                noteAcknowledged(inFlight[index].size)
                while let first = inFlight.first, first.acknowledged {
                    backlogAcknowledged = first.seqs.last ?? backlogAcknowledged
                    inFlight.removeFirst()
                    batchesAcknowledged += 1
                    recordsAcknowledged += first.seqs.count
                }
                advanceAcknowledged()
            }
        }
    }

    /// With the lock held: a telemetry batch of `size` was acknowledged (QoS 1: the broker took it).
    private func noteAcknowledged(_ size: BatchSize) {
        acknowledgedThisConnection = true
        telemetryAcknowledgedThisConnection = true
        if settings.qos > 0 { largestAcknowledged = max(largestAcknowledged, size.payload) }
    }

    /// With the lock held: moves the buffer's acknowledged position as far as the backlog's
    /// acknowledgements go, but never past a record sent ahead whose batch is unacknowledged.
    private func advanceAcknowledged() {
        var unacknowledgedAhead: UInt64?
        for case .ahead(let seqs, _, _) in pending.values {
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
        defer { heartbeat.ended() }
        var lastSend = MonotonicInstant(nanoseconds: 0)
        // The first 10 s: the first record goes as soon as it exists (see `firstRecordDurable`).
        let eagerUntil = MonotonicInstant.now().adding(milliseconds: 10_000)
        var nextAllowed = MonotonicInstant(nanoseconds: 0)
        while true {
            heartbeat.expect(within: Heartbeat.sliceMs)
            let step: Step = lock.withLock {
                while true {
                    if stopping { return .stop }
                    if let reason = replacementReason() { return .replace(reason) }
                    if state == "connected", inFlight.count < Self.maxBatchesInFlight { return .publish }
                    heartbeat.expect(within: Heartbeat.sliceMs)
                    let slice = MonotonicInstant.now().adding(milliseconds: Heartbeat.sliceMs)
                    lock.wait(until: stuckDeadline().map { min($0, slice) } ?? slice)
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
            let (from, skipping, limits) = lock.withLock { (cursor, sentAhead, self.limits) }
            if lastSend.nanoseconds == 0, MonotonicInstant.now() < eagerUntil, !firstRecordDurable(after: from) {
                continue
            }
            guard buffer.waitForRecords(after: from, until: MonotonicInstant.now().adding(milliseconds: 500)) else {
                continue
            }
            let urgent = Self.fitting(
                buffer.urgentRecords(after: from, excluding: skipping, limit: limits.maxRecords), limits.maxBytes)
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
            // A batch with more records waiting behind it goes at once; the last, smaller one
            // waits out the interval. A rate cap spaces the backlog's batches; alarms and events
            // (and, while the cap holds back a backlog, fresh records) go ahead meanwhile.
            let newest = buffer.stats().durableSeq
            let more = records.count >= limits.maxRecords || (records.last?.seq ?? newest) < newest
            let intervalEnd = lastSend.adding(milliseconds: settings.batchIntervalMs)
            let holdUntil = max(more ? now : intervalEnd, nextAllowed)
            if holdUntil > now {
                guard hold(until: holdUntil, from: from, newest: newest, capped: nextAllowed > now) else { continue }
                records = buffer.records(
                    after: from, limits: lock.withLock { self.limits }, excluding: lock.withLock { sentAhead })
            }
            let sendStarted = MonotonicInstant.now()
            guard let sent = publish(records, ahead: false) else { continue }
            lastSend = MonotonicInstant.now()
            if settings.maxBytesPerSecond > 0 {
                // Paced on the schedule, not on when this thread got to send: on a loaded box each
                // wake-up is late, and pacing from the send time added every delay to the next
                // gap (4,872 B/s for a cap of 6,000 on a loaded CI machine). The schedule catches
                // up at most `paceCatchUpMs` (an idle link saves up no allowance beyond that).
                let floor = sendStarted.adding(milliseconds: -Self.paceCatchUpMs)
                nextAllowed = max(nextAllowed, floor).adding(milliseconds: sent * 1000 / settings.maxBytesPerSecond)
            }
        }
    }

    /// How far the `max_bytes_per_s` schedule may be behind the clock and still be kept (the
    /// burst it allows after a late wake-up or an idle link: this long at the capped rate).
    static let paceCatchUpMs = 500

    /// Before the first batch since start: whether a record after `from` is durable, making the
    /// first ones durable at once (`DiskBuffer.sync`) rather than at the next group commit, so
    /// the first record reaches the broker within milliseconds of its poll. Waits 10 ms when
    /// there is none yet.
    private func firstRecordDurable(after from: UInt64) -> Bool {
        let stats = buffer.stats()
        if stats.durableSeq > from { return true }
        if stats.nextSeq - 1 > from {
            do {
                try buffer.sync()
                return true
            } catch {
                logger.warning("could not make the first records durable at once: \(error)")
                return true
            }
        }
        lock.withLock { _ = lock.wait(until: MonotonicInstant.now().adding(milliseconds: 10)) }
        return false
    }

    /// The longest prefix of `records` within `maxBytes` joined by commas (at least one).
    static func fitting(_ records: [(seq: UInt64, bytes: [UInt8])], _ maxBytes: Int) -> [(seq: UInt64, bytes: [UInt8])]
    {
        var size = -1
        var count = 0
        for record in records {
            size += record.bytes.count + 1
            if count > 0, size > maxBytes { break }
            count += 1
        }
        return Array(records.prefix(count))
    }

    /// Holds the next batch of the backlog until `until`; returns false to give up the batch
    /// (stopping, the session to be replaced, or an alarm or event arrived: it goes first).
    /// While a rate cap (`capped`) holds back a backlog that ends at `drainEnd`, records newer
    /// than it (fresh data) are sent ahead every `batch_interval_ms`, outside the cap.
    private func hold(until: MonotonicInstant, from: UInt64, newest: UInt64, capped: Bool) -> Bool {
        var seen = newest
        while true {
            heartbeat.expect(within: Heartbeat.sliceMs)
            let now = MonotonicInstant.now()
            let (stop, skipping, limits, drainEnd) = lock.withLock {
                (stopping || distrust != nil || state != "connected", sentAhead, self.limits, self.drainEnd)
            }
            if stop { return false }
            if now >= until { return true }
            if capped, let drainEnd, from < drainEnd,
                now >= lastFreshSend.adding(milliseconds: settings.batchIntervalMs)
            {
                let fresh = buffer.records(after: drainEnd, limits: limits, excluding: skipping)
                if !fresh.isEmpty, publish(fresh, ahead: true) != nil {
                    lastFreshSend = MonotonicInstant.now()
                    continue
                }
            }
            let slice = min(until, now.adding(milliseconds: 100))
            if buffer.waitForRecords(after: seen, until: slice) {
                seen = buffer.stats().durableSeq
                if !buffer.urgentRecords(after: from, excluding: skipping, limit: 1).isEmpty { return false }
            } else {
                // Nothing new (the buffer's wait does not see a stop): wait out the slice.
                lock.withLock {
                    if !stopping, distrust == nil { _ = lock.wait(until: slice) }
                }
            }
        }
    }

    /// On the way out: sends everything durable that is not in flight yet, while connected.
    private func drain() {
        while lock.withLock({ state == "connected" && distrust == nil }) {
            heartbeat.expect(within: Heartbeat.sliceMs)
            let (from, skipping) = lock.withLock { (cursor, sentAhead) }
            let limits = lock.withLock { self.limits }
            let urgent = Self.fitting(
                buffer.urgentRecords(after: from, excluding: skipping, limit: limits.maxRecords), limits.maxBytes)
            let records = urgent.isEmpty ? buffer.records(after: from, limits: limits, excluding: skipping) : urgent
            guard !records.isEmpty, publish(records, ahead: !urgent.isEmpty) != nil else { return }
        }
    }

    /// Publishes one batch of `records` and tracks it in flight (`ahead`: alarms and events sent
    /// before the backlog); returns the payload size, or nil if nothing was sent.
    private func publish(_ records: [(seq: UInt64, bytes: [UInt8])], ahead: Bool) -> Int? {
        guard let last = records.last else { return nil }
        let recordBytes = records.reduce(records.count - 1) { $0 + $1.bytes.count }
        if let reloaded = lock.withLock({ () -> CompactBatchEncoder? in
            defer { nextCompact = nil }
            return nextCompact
        }) {
            compact = reloaded
        }
        var payload = compact?.payload(of: records) ?? []
        // A compact batch larger than the plain one (rare: rows of few points among many) goes
        // plain, so no batch is larger than its limit allows; consumers tell them by "format".
        if compact == nil || payload.count > builder.overhead + recordBytes {
            payload = builder.batch(of: records).payload
        }
        if settings.gzip {
            do {
                payload = try Gzip.compress(payload)
            } catch {
                logger.error("\(error); sending seqs \(records[0].seq)-\(last.seq) uncompressed")
            }
        }
        if records.count == 1, let text = setAsideUnsent(records[0].seq, payload.count) {
            if let text { logger.error("uplink: \(text)") }
            return 0
        }
        do {
            let published: Bool = try lock.withLock { () throws(MQTTError) -> Bool in
                let now = MonotonicInstant.now()
                let seqs = records.map(\.seq)
                let size = BatchSize(payload: payload.count, records: recordBytes)
                let kind: Pending = ahead ? .ahead(seqs: seqs, sentAt: now, size: size) : .backlog
                guard
                    let messageID = try publishLocked(
                        topic: topics.telemetry, payload: payload, qos: settings.qos, retain: false, as: kind)
                else { return false }
                if ahead {
                    sentAhead.formUnion(seqs)
                } else {
                    inFlight.append(BacklogBatch(messageID: messageID, seqs: seqs, sentAt: now, size: size))
                    cursor = last.seq
                }
                return true
            }
            return published ? payload.count : nil
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

    /// A record alone of `bytes` on the wire as large as one the broker refused: sets it aside
    /// unsent and returns the text to log (nil when logged already since the link was stable);
    /// returns nil (outer) when it may be sent.
    private func setAsideUnsent(_ seq: UInt64, _ bytes: Int) -> String?? {
        lock.withLock {
            guard let refused = refusedSize, bytes >= refused else { return nil }
            let reported = setAside(seq: seq, bytes: bytes)
            let text =
                "records of \(refused) bytes or more alone are set aside unsent as undeliverable (the broker refused "
                + "one that large); \(reported) for each; raise the broker's max_packet_size"
            linkWarning = text
            lastError = text
            return .some(logged.insert(text).inserted ? text : nil)
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
        for case .ahead(_, let sentAt, _) in pending.values { oldest = min(oldest ?? sentAt, sentAt) }
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
