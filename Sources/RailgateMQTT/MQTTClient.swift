import CMosquitto
import Glibc

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
/// libmosquitto runs its network loop on its own thread (`mosquitto_loop_start`) and calls back
/// there, reconnecting by itself with a capped back-off (see `start`): `onEvent` runs on that
/// thread and must be `@Sendable` and quick; it may publish, never `disconnect()`. Publishing is
/// safe from any thread. QoS 1 publishes stay in libmosquitto's queue until acknowledged, across
/// reconnects, whatever the clean-session flag: their ids stay in use until `.published`.
public final class MQTTClient: @unchecked Sendable {
    private var handle: OpaquePointer?
    private let onEvent: @Sendable (MQTTEvent) -> Void
    private var loopRunning = false

    /// Creates the session (`mosquitto_new`); nothing is connected yet.
    public init(
        clientID: String, cleanSession: Bool = true, onEvent: @escaping @Sendable (MQTTEvent) -> Void
    ) throws(MQTTError) {
        MQTTLibrary.initialise()
        self.onEvent = onEvent
        guard let handle = mosquitto_new(clientID, cleanSession, nil) else {
            throw MQTTError(operation: "mosquitto_new", code: Int32(MOSQ_ERR_ERRNO.rawValue), errnoCode: errno)
        }
        self.handle = handle
        mosquitto_user_data_set(handle, Unmanaged.passUnretained(self).toOpaque())
        mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311)
        mosquitto_connect_callback_set(handle) { _, context, code in
            MQTTClient.from(context).onEvent(
                .connected(code: code, reason: String(cString: mosquitto_connack_string(code))))
        }
        mosquitto_disconnect_callback_set(handle) { _, context, code in
            // For MOSQ_ERR_ERRNO the reason is in errno (ECONNREFUSED when the broker is down):
            // read at once, before any other call can change it.
            let reason = MQTTError(operation: "", code: code, errnoCode: errno).reason
            MQTTClient.from(context).onEvent(.disconnected(code: code, reason: reason))
        }
        mosquitto_publish_callback_set(handle) { _, context, messageID in
            MQTTClient.from(context).onEvent(.published(messageID: messageID))
        }
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

    private static func from(_ context: UnsafeMutableRawPointer?) -> MQTTClient {
        Unmanaged<MQTTClient>.fromOpaque(context!).takeUnretainedValue()
    }

    deinit {
        if let handle {
            if loopRunning {
                mosquitto_disconnect(handle)
                mosquitto_loop_stop(handle, false)
            }
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

    /// Starts the network thread and connects in the background; libmosquitto keeps
    /// reconnecting until `disconnect()`, waiting 1 s, then 4 s, then `maxReconnectDelay` seconds
    /// between attempts (`mosquitto_reconnect_delay_set`, exponential, capped). A broker that is
    /// down or unreachable is not an error: the first attempt's failure arrives as a
    /// `.disconnected` event with its reason, and the thread retries. Throws for bad arguments
    /// (`MOSQ_ERR_INVAL`) and when the thread cannot start. Wraps `mosquitto_loop_start` and
    /// `mosquitto_connect_async`, in that order.
    public func start(host: String, port: Int, keepaliveSeconds: Int, maxReconnectDelay: Int = 5) throws(MQTTError) {
        try MQTTError.check(
            mosquitto_reconnect_delay_set(live, 1, UInt32(max(1, maxReconnectDelay)), true), "set the reconnect delay")
        // The thread first, then the connect. libmosquitto 2.0.11's connect_async, called with no
        // thread running, writes CONNECT at once; when that write fails (ECONNREFUSED on a down
        // broker) it puts the client back to its "new" state, and a thread started after it
        // waits for that state to change, in 10 ms steps, forever: a gateway that booted with no
        // link never connected. With the thread running, CONNECT is only queued, and any failure
        // goes through the thread's reconnect loop.
        try MQTTError.check(mosquitto_loop_start(live), "start the MQTT network thread")
        loopRunning = true
        let rc = mosquitto_connect_async(live, host, Int32(port), Int32(keepaliveSeconds))
        let failure = MQTTError(operation: "connect to \(host):\(port)", code: rc, errnoCode: errno)
        guard rc != Int32(MOSQ_ERR_SUCCESS.rawValue) else { return }
        if rc == Int32(MOSQ_ERR_INVAL.rawValue) {
            disconnect()
            throw failure
        }
        // Unreachable, refused or a name that does not resolve yet (no link at boot): the
        // thread retries after the reconnect delay.
        onEvent(.disconnected(code: rc, reason: failure.reason))
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

    /// Sends DISCONNECT (the broker then does not publish the will) and stops the network thread.
    public func disconnect() {
        guard let handle, loopRunning else { return }
        mosquitto_disconnect(handle)
        mosquitto_loop_stop(handle, false)
        loopRunning = false
    }
}

/// `mosquitto_lib_init` once per process (it is not thread-safe to call twice concurrently).
enum MQTTLibrary {
    private static let initialised: Bool = {
        mosquitto_lib_init()
        return true
    }()

    static func initialise() { _ = initialised }
}
