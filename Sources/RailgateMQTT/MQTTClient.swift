import CMosquitto
import Glibc
import RailgateCore
import RailgateSystem

/// A failed libmosquitto call, with its `MOSQ_ERR_*` code (and errno for `MOSQ_ERR_ERRNO`).
public struct MQTTError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var code: Int32
    public var errnoCode: Int32

    public var description: String { "\(operation): \(reason)" }

    /// The reason alone: `Connection refused (errno 111)`, `The client is not currently connected. (MOSQ_ERR 4)`.
    public var reason: String {
        if code == Int32(MOSQ_ERR_ERRNO.rawValue) {
            return "\(String(cString: strerror(errnoCode))) (errno \(errnoCode))"
        }
        return "\(String(cString: mosquitto_strerror(code))) (MOSQ_ERR \(code))"
    }

    /// The code of a connection the peer closed (`MOSQ_ERR_CONN_LOST`): a broker that drops a
    /// client (a packet it refuses, the same client id connecting again) shows as this.
    public static let connectionLostCode = Int32(MOSQ_ERR_CONN_LOST.rawValue)

    /// Whether a `.disconnected` event says the peer closed the connection: `MOSQ_ERR_CONN_LOST`
    /// (end of stream), or a reset (ECONNRESET: a broker that closes a socket with our packets
    /// still unread in it makes the kernel send RST, not FIN).
    public static func peerClosed(code: Int32, reason: String) -> Bool {
        code == connectionLostCode
            || (code == Int32(MOSQ_ERR_ERRNO.rawValue) && reason.hasSuffix("(errno \(ECONNRESET))"))
    }

    static func check(_ rc: Int32, _ operation: String) throws(MQTTError) {
        guard rc == Int32(MOSQ_ERR_SUCCESS.rawValue) else {
            throw MQTTError(operation: operation, code: rc, errnoCode: errno)
        }
    }
}

/// What the client reports from libmosquitto's network thread.
public enum MQTTEvent: Sendable {
    /// CONNACK received; `code` 0 is accepted, anything else is the broker's refusal.
    case connected(code: Int32, reason: String)
    /// The connection was lost (`code` != 0) or closed on request (0).
    case disconnected(code: Int32, reason: String)
    /// A publish completed: PUBACK for QoS 1, sent for QoS 0.
    case published(messageID: Int32)
    /// A message arrived on a subscription.
    case message(topic: String, payload: [UInt8], retained: Bool)
    /// libmosquitto reported an error or warning (the only word on a failed TLS handshake).
    case problem(String)
    /// MQTT 5: the broker refused a publish (PUBACK reason 0x80 and up); it is not queued any more.
    case publishRefused(messageID: Int32, reason: String)
    /// MQTT 5: the maximum packet size the broker announced in its CONNACK, in bytes.
    case brokerMaximumPacketSize(Int)
}

/// TLS material for `mqtts://` (`mosquitto_tls_set`).
public struct MQTTTLS: Sendable {
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?

    public init(caFile: String?, certFile: String?, keyFile: String?) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

/// One MQTT 3.1.1 client session over libmosquitto (`struct mosquitto`).
///
/// The client runs libmosquitto's network loop on a thread of its own and calls back there,
/// reconnecting with a capped, jittered back-off (see `start`): `onEvent` runs on that
/// thread and must be `@Sendable` and quick; it may publish, never `disconnect()`. Publishing is
/// safe from any thread. QoS 1 publishes stay in libmosquitto's queue until acknowledged, across
/// reconnects, whatever the clean-session flag: their ids stay in use until `.published`.
public final class MQTTClient: @unchecked Sendable {
    private var handle: OpaquePointer?
    private let onEvent: @Sendable (MQTTEvent) -> Void
    private var loopRunning = false
    private var thread: DaemonThread?
    /// Guards `stopping`, `connectionUp`, `acceptedAt`; wakes the back-off wait on a stop.
    private let state = ConditionLock()
    private var stopping = false
    /// A CONNACK accepted the current connection and no loss was reported since.
    private var connectionUp = false
    /// When the broker accepted the current connection (for the back-off's reset).
    private var acceptedAt: MonotonicInstant?

    private var stopRequested: Bool { state.withLock { stopping } }

    /// Creates the session (`mosquitto_new`); nothing is connected yet.
    /// `protocolVersion`: 3 (MQTT 3.1.1) or 5 (MQTT 5: reason codes, the broker's limits).
    public init(
        clientID: String, cleanSession: Bool = true, protocolVersion: Int = 3,
        onEvent: @escaping @Sendable (MQTTEvent) -> Void
    ) throws(MQTTError) {
        MQTTLibrary.initialise()
        self.onEvent = onEvent
        guard let handle = mosquitto_new(clientID, cleanSession, nil) else {
            throw MQTTError(operation: "mosquitto_new", code: Int32(MOSQ_ERR_ERRNO.rawValue), errnoCode: errno)
        }
        self.handle = handle
        mosquitto_user_data_set(handle, Unmanaged.passUnretained(self).toOpaque())
        mosquitto_int_option(
            handle, MOSQ_OPT_PROTOCOL_VERSION, protocolVersion == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311)
        if protocolVersion == 5 { setVersion5Callbacks(handle) } else { setVersion3Callbacks(handle) }
        mosquitto_log_callback_set(handle) { _, context, level, text in
            guard level & (railgate_mosq_log_err | railgate_mosq_log_warning) != 0, let text else { return }
            MQTTClient.from(context).onEvent(.problem(String(cString: text)))
        }
        mosquitto_message_callback_set(handle) { _, context, message in
            guard let message = message?.pointee else { return }
            let payload =
                message.payloadlen > 0
                ? Array(UnsafeRawBufferPointer(start: message.payload, count: Int(message.payloadlen)))
                : []
            MQTTClient.from(context).onEvent(
                .message(topic: String(cString: message.topic), payload: payload, retained: message.retain))
        }
    }

    /// MQTT 5: CONNACK, PUBACK and DISCONNECT carry reason codes (0x80 and up: failure) and
    /// the CONNACK the broker's maximum packet size. A PUBACK with a failure reason is
    /// `.publishRefused`, never `.published`: the broker did not take the message.
    private func setVersion5Callbacks(_ handle: OpaquePointer) {
        mosquitto_connect_v5_callback_set(handle) { _, context, code, _, properties in
            let client = MQTTClient.from(context)
            var maximum: UInt32 = 0
            if code == 0,
                mosquitto_property_read_int32(
                    properties, Int32(MQTT_PROP_MAXIMUM_PACKET_SIZE.rawValue), &maximum, false) != nil
            {
                client.onEvent(.brokerMaximumPacketSize(Int(maximum)))
            }
            client.state.withLock {
                client.connectionUp = code == 0
                client.acceptedAt = code == 0 ? MonotonicInstant.now() : nil
            }
            client.onEvent(.connected(code: code, reason: String(cString: mosquitto_reason_string(code))))
        }
        mosquitto_disconnect_v5_callback_set(handle) { _, context, code, _ in
            // A broker's DISCONNECT reason (0x80 and up, e.g. 0x8E session taken over) or a
            // MOSQ_ERR_* code with errno: read at once.
            let errnoCode = errno
            let reason =
                code >= 0x80
                ? String(cString: mosquitto_reason_string(code))
                : MQTTError(operation: "", code: code, errnoCode: errnoCode).reason
            let client = MQTTClient.from(context)
            client.state.withLock { client.connectionUp = false }
            client.onEvent(.disconnected(code: code, reason: reason))
        }
        mosquitto_publish_v5_callback_set(handle) { _, context, messageID, code, _ in
            let client = MQTTClient.from(context)
            if code >= 0x80 {
                client.onEvent(
                    .publishRefused(
                        messageID: messageID, reason: "\(String(cString: mosquitto_reason_string(code))) (\(code))"))
            } else {
                client.onEvent(.published(messageID: messageID))
            }
        }
    }

    private func setVersion3Callbacks(_ handle: OpaquePointer) {
        mosquitto_connect_callback_set(handle) { _, context, code in
            let client = MQTTClient.from(context)
            client.state.withLock {
                client.connectionUp = code == 0
                client.acceptedAt = code == 0 ? MonotonicInstant.now() : nil
            }
            client.onEvent(
                .connected(code: code, reason: String(cString: mosquitto_connack_string(code))))
        }
        mosquitto_disconnect_callback_set(handle) { _, context, code in
            // For MOSQ_ERR_ERRNO the reason is in errno (ECONNREFUSED when the broker is down):
            // read at once, before any other call can change it.
            let reason = MQTTError(operation: "", code: code, errnoCode: errno).reason
            let client = MQTTClient.from(context)
            client.state.withLock { client.connectionUp = false }
            client.onEvent(.disconnected(code: code, reason: reason))
        }
        mosquitto_publish_callback_set(handle) { _, context, messageID in
            MQTTClient.from(context).onEvent(.published(messageID: messageID))
        }
    }

    private static func from(_ context: UnsafeMutableRawPointer?) -> MQTTClient {
        Unmanaged<MQTTClient>.fromOpaque(context!).takeUnretainedValue()
    }

    deinit {
        if let handle {
            disconnect()
            mosquitto_destroy(handle)
        }
    }

    private var live: OpaquePointer {
        guard let handle else { preconditionFailure("MQTT client used after close") }
        return handle
    }

    /// The message the broker publishes if this client vanishes (`mosquitto_will_set`).
    public func setWill(topic: String, payload: [UInt8], qos: Int, retain: Bool) throws(MQTTError) {
        let rc = payload.withUnsafeBytes {
            mosquitto_will_set(live, topic, Int32($0.count), $0.baseAddress, Int32(qos), retain)
        }
        try MQTTError.check(rc, "set the will on \(topic)")
    }

    public func setCredentials(username: String, password: String?) throws(MQTTError) {
        try MQTTError.check(mosquitto_username_pw_set(live, username, password), "set username and password")
    }

    /// Enables TLS; without a CA file the system's certificate directory is trusted.
    public func setTLS(_ tls: MQTTTLS) throws(MQTTError) {
        let rc = mosquitto_tls_set(
            live, tls.caFile, tls.caFile == nil ? "/etc/ssl/certs" : nil, tls.certFile, tls.keyFile, nil)
        try MQTTError.check(rc, "set up TLS")
    }

    /// How long to wait before connection attempt number `attempt` (0 = the first retry after
    /// a failure or a loss): `minimumMs` doubled per attempt up to `maximumMs`, then less a random
    /// part of up to `jitter` (0...1) of it, so that gateways that lost the same broker do not
    /// come back in step. Pure; `random` is a number in 0..<1.
    public struct Backoff: Sendable, Equatable {
        public var minimumMs: Int
        public var maximumMs: Int
        public var jitter: Double

        public init(minimumMs: Int = 1000, maximumMs: Int = 5000, jitter: Double = 0.2) {
            self.minimumMs = max(1, minimumMs)
            self.maximumMs = max(self.minimumMs, maximumMs)
            self.jitter = min(1, max(0, jitter))
        }

        public func delayMs(attempt: Int, random: Double) -> Int {
            let doubled = minimumMs << min(attempt, 20)
            let capped = min(maximumMs, doubled > 0 ? doubled : maximumMs)
            return capped - Int(Double(capped) * jitter * random)
        }
    }

    /// Starts the client's own network thread, which connects in the background and keeps
    /// reconnecting until `disconnect()`: after every failed attempt and every lost connection it
    /// waits `backoff` (1 s, 2 s, 4 s, then 5 s, each up to 20 % shorter); the count starts again
    /// only after a connection the broker accepted stayed up for `stableMs`, so a broker that
    /// accepts and then drops the client at once (a second client with the same id, a packet it
    /// refuses) is not hammered. A broker that is down or unreachable is not an error: each
    /// failure arrives as a `.disconnected` event with its reason. Throws for bad arguments
    /// (`MOSQ_ERR_INVAL`) and when the thread cannot start.
    ///
    /// libmosquitto's own thread (`mosquitto_loop_start`) is not used: it reconnects a lost
    /// connection at once (2.0.11 resets its back-off as soon as a socket is up), which made two
    /// gateways with the same client id knock each other off in a tight loop. Wraps
    /// `mosquitto_threaded_set`, `mosquitto_connect_async`, `mosquitto_reconnect_async` and
    /// `mosquitto_loop` (on the client's thread; publishes from other threads are only queued).
    public func start(
        host: String, port: Int, keepaliveSeconds: Int, backoff: Backoff = Backoff(), stableMs: Int = 10_000
    ) throws(MQTTError) {
        guard !host.isEmpty, (1...65535).contains(port), keepaliveSeconds >= 5 else {
            throw MQTTError(
                operation: "connect to \(host):\(port)", code: Int32(MOSQ_ERR_INVAL.rawValue), errnoCode: 0)
        }
        try MQTTError.check(mosquitto_threaded_set(live, true), "tell libmosquitto it runs on the client's thread")
        do {
            thread = try DaemonThread(name: "mqtt network") { [self] in
                networkLoop(
                    host: host, port: port, keepaliveSeconds: keepaliveSeconds, backoff: backoff, stableMs: stableMs)
            }
        } catch {
            throw MQTTError(
                operation: "start the MQTT network thread", code: Int32(MOSQ_ERR_ERRNO.rawValue),
                errnoCode: error.code)
        }
        loopRunning = true
    }

    /// The client's network thread: connect, run the connection, wait out the back-off, again.
    private func networkLoop(host: String, port: Int, keepaliveSeconds: Int, backoff: Backoff, stableMs: Int) {
        var attempt = 0
        var first = true
        var generator = SystemRandomNumberGenerator()
        while !stopRequested {
            let rc =
                first
                ? mosquitto_connect_async(live, host, Int32(port), Int32(keepaliveSeconds))
                : mosquitto_reconnect_async(live)
            first = false
            if rc == Int32(MOSQ_ERR_SUCCESS.rawValue) {
                var deadline: MonotonicInstant?
                while true {
                    let rc = mosquitto_loop(live, 1000, 1)
                    let errnoCode = errno
                    if rc != Int32(MOSQ_ERR_SUCCESS.rawValue) {
                        if state.withLock({ connectionUp }) {
                            // Lost without libmosquitto's disconnect callback: report it here.
                            reportLoss(code: rc, errnoCode: errnoCode)
                        }
                        break
                    }
                    if stopRequested {
                        // DISCONNECT is queued: give the loop up to a second to write it.
                        let end = deadline ?? MonotonicInstant.now().adding(milliseconds: 1000)
                        deadline = end
                        if MonotonicInstant.now() >= end { break }
                    }
                }
            } else {
                let failure = MQTTError(operation: "connect to \(host):\(port)", code: rc, errnoCode: errno)
                // An attempt refused at once (no thread callback): report it here.
                onEvent(.disconnected(code: rc, reason: failure.reason))
            }
            if stopRequested { break }
            let stable = state.withLock {
                acceptedAt.map { MonotonicInstant.now().milliseconds(since: $0) >= stableMs }
            }
            if stable == true { attempt = 0 }
            state.withLock { acceptedAt = nil }
            let delay = backoff.delayMs(attempt: attempt, random: Double.random(in: 0..<1, using: &generator))
            attempt += 1
            let until = MonotonicInstant.now().adding(milliseconds: delay)
            state.withLock {
                while !stopping, MonotonicInstant.now() < until { state.wait(until: until) }
            }
        }
    }

    private func reportLoss(code: Int32, errnoCode: Int32) {
        state.withLock { connectionUp = false }
        onEvent(.disconnected(code: code, reason: MQTTError(operation: "", code: code, errnoCode: errnoCode).reason))
    }

    /// Queues a publish; returns its message id, which the `.published` event for it carries.
    ///
    /// With QoS 1 or 2 the message stays in libmosquitto's queue until the broker acknowledges
    /// it, across reconnects (sent again, same id, after each CONNACK), and `.published` comes
    /// once for it. So a QoS 1 publish while the connection is down is queued, not failed:
    /// `mosquitto_publish` returns `MOSQ_ERR_NO_CONN` after queueing it, and this returns the id.
    /// A QoS 0 publish while down is lost and throws. Callable from any thread, including from
    /// an event handler. Wraps `mosquitto_publish`.
    @discardableResult
    public func publish(topic: String, payload: [UInt8], qos: Int, retain: Bool = false) throws(MQTTError) -> Int32 {
        var messageID: Int32 = 0
        let rc = payload.withUnsafeBytes {
            mosquitto_publish(live, &messageID, topic, Int32($0.count), $0.baseAddress, Int32(qos), retain)
        }
        if rc == Int32(MOSQ_ERR_NO_CONN.rawValue), qos > 0, messageID != 0 { return messageID }
        try MQTTError.check(rc, "publish \(payload.count) bytes to \(topic)")
        return messageID
    }

    public func subscribe(_ pattern: String, qos: Int) throws(MQTTError) {
        try MQTTError.check(mosquitto_subscribe(live, nil, pattern, Int32(qos)), "subscribe to \(pattern)")
    }

    /// Sends DISCONNECT (the broker then does not publish the will) and stops the network
    /// thread, waiting for it (at most about a second longer than its current `mosquitto_loop`
    /// call). Never call it from an event handler (that runs on the thread it waits for).
    public func disconnect() {
        guard let handle, loopRunning else { return }
        state.withLock {
            stopping = true
            state.broadcast()
        }
        mosquitto_disconnect(handle)
        thread?.join()
        loopRunning = false
    }
}
/// `mosquitto_lib_init` once per process (it is not thread-safe to call twice concurrently).
///
/// Also ignores SIGPIPE for the process, unless somebody installed a handler: libmosquitto sends
/// with plain `write(2)` (and OpenSSL's socket BIO likewise), so a broker that closes the
/// connection while a packet is being written would kill the process with SIGPIPE instead of
/// failing the write with EPIPE, which the client reports and reconnects from. The daemon ignores
/// SIGPIPE anyway (`Gateway.blockSignals`); this covers every other process with a client (tests,
/// the bench).
enum MQTTLibrary {
    private static let initialised: Bool = {
        mosquitto_lib_init()
        var current = sigaction()
        if sigaction(SIGPIPE, nil, &current) == 0, current.__sigaction_handler.sa_handler == nil {  // SIG_DFL
            signal(SIGPIPE, SIG_IGN)
        }
        return true
    }()

    static func initialise() { _ = initialised }
}
