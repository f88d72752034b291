import CModbus
import Glibc
import RailgateCore
import RailgateSystem

/// What went wrong in a Modbus call, with the C error kept for the log line.
public struct ModbusError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The kinds of failure a poller reacts to differently.
    public enum Kind: Sendable, Equatable {
        /// No (complete) answer within the response timeout.
        case timeout
        /// The slave answered with a Modbus exception (1 illegal function, 2 illegal address, ...).
        case exception(UInt8)
        /// CRC mismatch on an RTU frame.
        case crc
        /// A reply that was short, malformed or from the wrong slave.
        case badReply
        /// The TCP connection was refused, reset or closed; the serial device failed.
        case connection
        /// Opening the context or device failed (bad device path, permission, no such host).
        case setup
    }

    public var kind: Kind
    /// The errno (or libmodbus code above MODBUS_ENOBASE) that was read right after the call.
    public var code: Int32
    /// What was being done: "read 10 input registers at 0 from unit 7 on tcp 127.0.0.1:1502".
    public var operation: String
    /// What a technician does about it, when known: "add the railgate user to the dialout group".
    public var remedy: String? = nil

    public var description: String {
        "\(operation): \(String(cString: modbus_strerror(code))) (\(code))" + (remedy.map { "; \($0)" } ?? "")
    }

    /// The reason a sample's `errors` carries for this failure.
    public var readFailure: ReadFailure {
        switch kind {
        case .timeout: .timeout
        case .exception(let code): .exception(code)
        case .crc: .crc
        case .badReply, .connection, .setup: .io
        }
    }

    static func fromErrno(_ code: Int32, operation: String, remedy: String? = nil) -> ModbusError {
        let kind: Kind
        switch code {
        case ETIMEDOUT, EAGAIN: kind = .timeout
        case railgate_modbus_embbadcrc: kind = .crc
        case railgate_modbus_embbaddata, railgate_modbus_embmdata, railgate_modbus_embbadslave,
            railgate_modbus_embbadexc, railgate_modbus_embunkexc:
            kind = .badReply
        case (railgate_modbus_enobase + 1)...(railgate_modbus_enobase + 11):
            kind = .exception(UInt8(code - railgate_modbus_enobase))
        default: kind = .connection
        }
        return ModbusError(kind: kind, code: code, operation: operation, remedy: remedy)
    }
}

/// Where a Modbus master connects.
public enum ModbusEndpoint: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case rtu(device: String, baud: Int, parity: BusTransport.Parity, dataBits: Int, stopBits: Int)
    /// RTU frames inside a TCP stream (a serial device server in transparent mode).
    case rtuOverTCP(host: String, port: Int)
    /// Modbus ASCII on a serial line.
    case ascii(device: String, baud: Int, parity: BusTransport.Parity, dataBits: Int, stopBits: Int)
    /// Modbus ASCII frames inside a TCP stream.
    case asciiOverTCP(host: String, port: Int)

    public init(_ transport: BusTransport) {
        switch transport {
        case .tcp(let host, let port): self = .tcp(host: host, port: port)
        case .rtu(let device, let baud, let parity, let dataBits, let stopBits):
            self = .rtu(device: device, baud: baud, parity: parity, dataBits: dataBits, stopBits: stopBits)
        case .rtuOverTCP(let host, let port): self = .rtuOverTCP(host: host, port: port)
        case .ascii(let device, let baud, let parity, let dataBits, let stopBits):
            self = .ascii(device: device, baud: baud, parity: parity, dataBits: dataBits, stopBits: stopBits)
        case .asciiOverTCP(let host, let port): self = .asciiOverTCP(host: host, port: port)
        }
    }

    /// How frames are built and checked on this endpoint.
    public var framing: ModbusFraming {
        switch self {
        case .tcp: .tcp
        case .rtu, .rtuOverTCP: .rtu
        case .ascii, .asciiOverTCP: .ascii
        }
    }

    /// Whether the link is a TCP connection (which the peer may close, and which is reopened).
    public var isNetwork: Bool {
        switch self {
        case .tcp, .rtuOverTCP, .asciiOverTCP: true
        case .rtu, .ascii: false
        }
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): "tcp \(host):\(port)"
        case .rtuOverTCP(let host, let port): "rtu-over-tcp \(host):\(port)"
        case .asciiOverTCP(let host, let port): "ascii-over-tcp \(host):\(port)"
        case .rtu(let device, let baud, let parity, let dataBits, let stopBits):
            "rtu \(device) \(baud) \(dataBits)\(parity.rawValue.first!.uppercased())\(stopBits)"
        case .ascii(let device, let baud, let parity, let dataBits, let stopBits):
            "ascii \(device) \(baud) \(dataBits)\(parity.rawValue.first!.uppercased())\(stopBits)"
        }
    }
}

/// Owns one libmodbus context (`modbus_t`): frees it in `deinit`, refuses use after `close()`.
/// libmodbus opens TCP connections and serial ports (an ASCII line too: opening the port and
/// setting its termios is the same as for RTU; railgate frames every byte itself).
/// Not thread-safe: one bus poller owns it and calls it from its own thread (the calls block).
final class ModbusContext {
    private var context: OpaquePointer?

    init(_ endpoint: ModbusEndpoint) throws(ModbusError) {
        switch endpoint {
        case .tcp(let host, let port):
            context = modbus_new_tcp_pi(host, String(port))
        case .rtu(let device, let baud, let parity, let dataBits, let stopBits),
            .ascii(let device, let baud, let parity, let dataBits, let stopBits):
            let parityCode: UInt8 =
                switch parity {
                case .none: UInt8(ascii: "N")
                case .even: UInt8(ascii: "E")
                case .odd: UInt8(ascii: "O")
                }
            context = modbus_new_rtu(
                device, Int32(baud), CChar(bitPattern: parityCode), Int32(dataBits), Int32(stopBits))
        case .rtuOverTCP, .asciiOverTCP:
            preconditionFailure("libmodbus has no context for \(endpoint); StreamSocket opens it")
        }
        guard context != nil else {
            throw ModbusError(kind: .setup, code: errno, operation: "create a Modbus context for \(endpoint)")
        }
    }

    deinit {
        if let context {
            modbus_close(context)
            modbus_free(context)
        }
    }

    /// The live C handle; traps on use after `close()` (a programming error).
    var handle: OpaquePointer {
        guard let context else { preconditionFailure("Modbus context used after close") }
        return context
    }

    func close() {
        guard let context else { return }
        modbus_close(context)
        modbus_free(context)
        self.context = nil
    }
}

/// Owns the TCP socket of an RTU-over-TCP or ASCII-over-TCP link (libmodbus can only put MBAP
/// frames on a TCP socket): opens it with a bounded connect, closes it in `close()` and `deinit`.
/// Not thread-safe; the C functions are `getaddrinfo`, `socket`, `connect`, `poll`, `close`.
final class StreamSocket {
    let host: String
    let port: Int
    /// The open descriptor, or -1.
    private(set) var descriptor: Int32 = -1

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    deinit { close() }

    /// Resolves `host` and connects to the first address that answers within `timeoutMs`
    /// (each), with TCP_NODELAY. Throws `.connection` with the errno of the last attempt, or
    /// `.setup` when the name does not resolve.
    func connect(timeoutMs: Int) throws(ModbusError) {
        close()
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(host, String(port), &hints, &list)
        guard resolved == 0, let list else {
            throw ModbusError(
                kind: .setup, code: EHOSTUNREACH,
                operation: "resolve \(host): \(String(cString: gai_strerror(resolved)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = ECONNREFUSED
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let address = entry {
            entry = address.pointee.ai_next
            let fd = socket(
                address.pointee.ai_family, address.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue),
                address.pointee.ai_protocol)
            guard fd >= 0 else {
                lastError = errno
                continue
            }
            if let code = Self.connect(fd, to: address.pointee, timeoutMs: timeoutMs) {
                lastError = code
                Glibc.close(fd)
                continue
            }
            var on: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
            descriptor = fd
            return
        }
        throw ModbusError.fromErrno(lastError, operation: "connect to \(host):\(port)")
    }

    /// A non-blocking connect bounded by `timeoutMs`, then back to blocking; nil on success, else
    /// the errno.
    private static func connect(_ fd: Int32, to address: addrinfo, timeoutMs: Int) -> Int32? {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        defer { _ = fcntl(fd, F_SETFL, flags) }
        if Glibc.connect(fd, address.ai_addr, address.ai_addrlen) == 0 { return nil }
        guard errno == EINPROGRESS || errno == EINTR else { return errno }
        var waiting = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let deadline = MonotonicInstant.now().adding(milliseconds: timeoutMs)
        while true {
            let remaining = Int(deadline.nanoseconds - MonotonicInstant.now().nanoseconds) / 1_000_000
            let ready = Glibc.poll(&waiting, 1, Int32(max(0, remaining)))
            if ready < 0, errno == EINTR { continue }
            if ready < 0 { return errno }
            if ready == 0 { return ETIMEDOUT }
            break
        }
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length) == 0 else { return errno }
        return code == 0 ? nil : code
    }

    func close() {
        guard descriptor >= 0 else { return }
        Glibc.close(descriptor)
        descriptor = -1
    }
}

/// A Modbus master connection over TCP, RTU, RTU over TCP, ASCII or ASCII over TCP.
///
/// libmodbus opens the link (`modbus_connect`: the TCP connect, the serial line's termios and
/// RS-485 mode); railgate frames requests and matches replies itself (`ModbusReadFrame`), because
/// libmodbus 3.1.6 takes the next bytes on the line as the answer, cannot address TCP units
/// 248-254, and restarts its timeout for every byte. Here a reply is used only when it is provably
/// the answer to the request: on TCP transaction id, protocol id, length, unit id and function code
/// match (frames of other transactions are skipped); on RTU slave address, function code, byte
/// count and CRC match. Bytes waiting before a request are discarded; the whole reply must arrive
/// within the response timeout; after an RTU timeout or bad frame the line is drained until it has
/// been silent for a response timeout, and the next reply is used only once the line has stayed
/// silent for a response timeout after it (an answer later than the drain, taken for the next
/// request's, is refused when the real one arrives behind it: the line never stays out of step).
///
/// Pacing: `interRequestDelayMs` separates the end of one exchange from the next request, whatever
/// unit it is for; `connectDelayMs` follows every (re)connect. Both wait through `pause`, which the
/// owner makes interruptible.
///
/// Every call blocks up to the response timeout (and the delays): use it from a dedicated thread,
/// never from Swift's cooperative pool. Not thread-safe. Errors are `ModbusError` with the C code kept.
public final class ModbusConnection {
    public let endpoint: ModbusEndpoint
    /// libmodbus's context for TCP and serial lines; nil for RTU/ASCII over TCP.
    private let context: ModbusContext?
    /// The TCP socket of RTU/ASCII over TCP.
    private let stream: StreamSocket?
    private let framing: ModbusFraming
    /// The whole reply must arrive within this many milliseconds of the request.
    public let responseTimeoutMs: Int
    public private(set) var isConnected = false
    /// How many times the link was opened: a change tells the owner it reconnected (static
    /// points are read again then).
    public private(set) var connects = 0
    /// Whether the serial port took RS-485 mode (`modbus_rtu_set_serial_mode`) at the last connect;
    /// false for TCP, ptys and adapters that switch direction by themselves.
    public private(set) var isRS485 = false
    /// The least time between the end of one exchange and the next request, in milliseconds.
    public var interRequestDelayMs = 0
    /// How long to wait after each (re)connect before the first request, in milliseconds.
    public var connectDelayMs = 0
    /// The unit id a TCP gateway answers with instead of the unit asked (`reply_unit`), by unit.
    public var replyUnits: [Int: Int] = [:]
    /// Waits until the given instant; returns false to abandon the request (the owner is stopping),
    /// which throws a `.connection` error with ECANCELED. By default it sleeps.
    public var pause: (MonotonicInstant) -> Bool = MonotonicInstant.sleep
    private var transactionId: UInt16 = 0
    /// RTU: set after a timeout or a bad frame, cleared by the first reply followed by a response
    /// timeout of silence. While set, a reply is used only if no byte follows it within that time:
    /// an answer later than the drain, taken for the next request's, is betrayed by the real
    /// answer arriving behind it, and the line does not stay one reply out of step.
    private var rtuLineSuspect = false
    private var lastExchangeEnd: MonotonicInstant?
    private var receiveBuffer = [UInt8](repeating: 0, count: 512)

    /// Creates the context; does not connect yet.
    /// - Parameters:
    ///   - responseTimeoutMs: how long the whole reply may take (one deadline per reply, no byte
    ///     timeout), and the TCP connect (`modbus_set_response_timeout`).
    public init(endpoint: ModbusEndpoint, responseTimeoutMs: Int) throws(ModbusError) {
        self.endpoint = endpoint
        self.responseTimeoutMs = responseTimeoutMs
        framing = endpoint.framing
        switch endpoint {
        case .rtuOverTCP(let host, let port), .asciiOverTCP(let host, let port):
            context = nil
            stream = StreamSocket(host: host, port: port)
            return
        case .tcp, .rtu, .ascii:
            context = try ModbusContext(endpoint)
            stream = nil
        }
        let handle = context!.handle
        if modbus_set_response_timeout(
            handle, UInt32(responseTimeoutMs / 1000), UInt32(responseTimeoutMs % 1000 * 1000)) == -1
        {
            throw ModbusError(kind: .setup, code: errno, operation: "set a response timeout of \(responseTimeoutMs) ms")
        }
        // No automatic recovery inside libmodbus: it would sleep and flush on its own schedule.
        if modbus_set_error_recovery(handle, MODBUS_ERROR_RECOVERY_NONE) == -1 {
            throw ModbusError(kind: .setup, code: errno, operation: "turn libmodbus error recovery off")
        }
    }

    /// Opens the TCP connection or the serial device (`modbus_connect`, or railgate's own socket
    /// for RTU/ASCII over TCP), then waits `connectDelayMs`.
    public func connect() throws(ModbusError) {
        guard !isConnected else { return }
        if let stream {
            do throws(ModbusError) {
                try stream.connect(timeoutMs: responseTimeoutMs)
            } catch {
                throw ModbusError(
                    kind: error.kind, code: error.code, operation: "connect to \(endpoint)",
                    remedy: remedy(for: error.code))
            }
            isConnected = true
            connects += 1
            try waitAfterConnect()
            return
        }
        let handle = context!.handle
        if modbus_connect(handle) == -1 {
            let code = errno
            modbus_close(handle)
            // libmodbus reports a host name that does not resolve as ECONNREFUSED: say what it was.
            if case .tcp(let host, let port) = endpoint, code == ECONNREFUSED,
                let reason = Self.resolutionFailure(host: host, port: port)
            {
                throw ModbusError(
                    kind: .setup, code: EHOSTUNREACH, operation: "connect to \(endpoint): resolve \(host): \(reason)",
                    remedy: "check the host name and DNS (getent hosts \(host)), or give the device's IP address")
            }
            throw ModbusError.fromErrno(code, operation: "connect to \(endpoint)", remedy: remedy(for: code))
        }
        guard modbus_get_socket(handle) >= 0 else {
            modbus_close(handle)
            throw ModbusError(kind: .setup, code: EBADF, operation: "connect to \(endpoint): no descriptor")
        }
        if !endpoint.isNetwork {
            // RS-485 mode (the kernel drives RTS) where the port has it; a pty, a USB adapter that
            // switches by itself, or an RS-232 port refuses with ENOTTY/EINVAL: that is fine.
            isRS485 = modbus_rtu_set_serial_mode(handle, Int32(MODBUS_RTU_RS485)) == 0
        }
        isConnected = true
        connects += 1
        try waitAfterConnect()
    }

    /// Why `host` does not resolve (`getaddrinfo`'s `gai_strerror`), or nil when it does.
    private static func resolutionFailure(host: String, port: Int) -> String? {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(host, String(port), &hints, &list)
        if let list { freeaddrinfo(list) }
        return resolved == 0 ? nil : String(cString: gai_strerror(resolved))
    }

    private func waitAfterConnect() throws(ModbusError) {
        if connectDelayMs > 0 {
            guard pause(MonotonicInstant.now().adding(milliseconds: connectDelayMs)) else {
                throw ModbusError(kind: .connection, code: ECANCELED, operation: "connect to \(endpoint): stopping")
            }
        }
    }

    /// Closes the socket or device; the next read reconnects.
    public func disconnect() {
        guard isConnected else { return }
        if let context { modbus_close(context.handle) }
        stream?.close()
        isConnected = false
    }

    /// Reads `count` registers or bits of `table` at `address` from `unit`, connecting first if
    /// needed. Bits come back as 0 or 1, one per element. Unit ids: 0...255 on TCP, 0...247 on RTU
    /// (0 is broadcast there: no slave answers). A TCP connection the peer closed while idle is
    /// reopened and the request sent again, once, without an error. A connection-level failure
    /// closes the connection so that the next call reconnects.
    public func read(_ table: RegisterTable, unit: Int, address: Int, count: Int) throws(ModbusError) -> [UInt16] {
        let operation = "read \(count) \(table.rawValue) at \(address) from unit \(unit) on \(endpoint)"
        let unitLimit = framing.isLineFraming ? 247 : 255
        guard (0...unitLimit).contains(unit) else {
            throw ModbusError(kind: .setup, code: EINVAL, operation: "\(operation): unit ids are 0...\(unitLimit)")
        }
        guard (1...table.maxItemsPerRequest).contains(count), (0...65535).contains(address) else {
            throw ModbusError(kind: .badReply, code: railgate_modbus_embmdata, operation: operation)
        }
        if let last = lastExchangeEnd, interRequestDelayMs > 0 {
            guard pause(last.adding(milliseconds: interRequestDelayMs)) else {
                throw ModbusError(kind: .connection, code: ECANCELED, operation: "\(operation): stopping")
            }
        }
        defer { lastExchangeEnd = MonotonicInstant.now() }
        var retriedAfterPeerClose = false
        while true {
            try connect()
            let descriptor = stream?.descriptor ?? modbus_get_socket(context!.handle)
            transactionId &+= 1
            let frame = ModbusReadFrame(
                framing: framing, table: table, unit: UInt8(unit), replyUnit: replyUnits[unit].map(UInt8.init),
                address: UInt16(address), count: UInt16(count), transactionId: transactionId)
            let outcome: Outcome
            if discardStaleBytes(descriptor) {
                outcome = exchange(frame, descriptor: descriptor)
            } else {
                outcome = .peerClosed(ECONNRESET)
            }
            switch outcome {
            case .values(let values):
                return values
            case .exception(let code):
                throw ModbusError(
                    kind: .exception(code), code: railgate_modbus_enobase + Int32(code), operation: operation)
            case .timeout(let partial):
                // TCP: a late answer carries an old transaction id and is skipped; only a partial frame
                // leaves the stream out of step. RTU: wait until a late answer has passed.
                if framing.isLineFraming {
                    drain(descriptor)
                    rtuLineSuspect = true
                } else if partial {
                    disconnect()
                }
                throw ModbusError(kind: .timeout, code: ETIMEDOUT, operation: operation)
            case .fault(let fault, let inStep):
                if framing.isLineFraming {
                    drain(descriptor)
                    rtuLineSuspect = true
                } else if !inStep {
                    disconnect()
                }
                let code: Int32 =
                    switch fault {
                    case .crc, .lrc: railgate_modbus_embbadcrc
                    case .unit: railgate_modbus_embbadslave
                    default: railgate_modbus_embbaddata
                    }
                throw ModbusError(
                    kind: fault == .crc || fault == .lrc ? .crc : .badReply, code: code,
                    operation: "\(operation): \(fault)")
            case .peerClosed(let code):
                disconnect()
                // A TCP device (or device server) that closes idle connections: reopen and ask
                // again, once.
                if endpoint.isNetwork, !retriedAfterPeerClose {
                    retriedAfterPeerClose = true
                    continue
                }
                throw ModbusError(kind: .connection, code: code, operation: operation)
            case .failed(let code):
                disconnect()
                throw ModbusError(kind: .connection, code: code, operation: operation, remedy: remedy(for: code))
            }
        }
    }

    private enum Outcome {
        case values([UInt16])
        case exception(UInt8)
        /// No complete answer in time; `partial` when some bytes of a frame had arrived.
        case timeout(partial: Bool)
        case fault(ModbusReplyFault, inStep: Bool)
        /// EOF or reset before any byte of the reply: the peer closed the connection.
        case peerClosed(Int32)
        case failed(Int32)
    }

    /// Reads and drops whatever is waiting (a late answer, a duplicate frame). Returns false if the
    /// peer has closed the connection (EOF or reset).
    private func discardStaleBytes(_ descriptor: Int32) -> Bool {
        while true {
            switch receive(descriptor, timeoutMs: 0) {
            case .bytes: continue
            case .nothing: return true
            case .closed, .error: return false
            }
        }
    }

    /// Sends the request and reads until its reply is complete, judged by `frame`, within one
    /// deadline of `responseTimeoutMs` for the whole reply.
    private func exchange(_ frame: ModbusReadFrame, descriptor: Int32) -> Outcome {
        let request = frame.bytes
        var sent = 0
        while sent < request.count {
            let result = request[sent...].withUnsafeBytes { buffer in
                endpoint.isNetwork
                    ? Glibc.send(descriptor, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL))
                    : Glibc.write(descriptor, buffer.baseAddress, buffer.count)
            }
            if result < 0 {
                let code = errno
                if code == EINTR || code == EAGAIN { continue }
                return code == EPIPE || code == ECONNRESET ? .peerClosed(code) : .failed(code)
            }
            sent += result
        }
        let deadline = MonotonicInstant.now().adding(milliseconds: responseTimeoutMs)
        var reply: [UInt8] = []
        var start = 0
        while true {
            switch frame.examine(reply[start...]) {
            case .values(let values, _): return objectionToReply(descriptor) ?? .values(values)
            case .exception(let code, _): return objectionToReply(descriptor) ?? .exception(code)
            case .foreign(let length):
                start += length
                continue
            case .reject(let fault, let length): return .fault(fault, inStep: length != nil)
            case .needMore:
                break
            }
            let remaining = Int(deadline.nanoseconds - MonotonicInstant.now().nanoseconds) / 1_000_000
            switch receive(descriptor, timeoutMs: max(0, remaining)) {
            case .bytes(let bytes): reply += bytes
            case .nothing:
                if MonotonicInstant.now() >= deadline { return .timeout(partial: reply.count > start) }
            case .closed: return reply.isEmpty ? .peerClosed(ECONNRESET) : .failed(ECONNRESET)
            case .error(let code):
                return reply.isEmpty && (code == ECONNRESET || code == EPIPE) ? .peerClosed(code) : .failed(code)
            }
        }
    }

    /// A line framing (RTU, ASCII, either over TCP), while `rtuLineSuspect`: waits a response timeout after a complete reply; a byte in it
    /// means the reply may be a late answer to an earlier request (the real one arriving behind
    /// it), so the reply is refused. Nil when the reply may be used (and the line is in step).
    private func objectionToReply(_ descriptor: Int32) -> Outcome? {
        guard framing.isLineFraming, rtuLineSuspect else { return nil }
        switch receive(descriptor, timeoutMs: responseTimeoutMs) {
        case .nothing:
            rtuLineSuspect = false
            return nil
        case .bytes(let bytes): return .fault(.trailingBytes(bytes.count), inStep: false)
        case .closed: return .failed(ECONNRESET)
        case .error(let code): return .failed(code)
        }
    }

    /// After an RTU timeout or bad frame: reads and drops bytes until the line has been silent for
    /// one response timeout (each byte restarts the silence), at most ten response timeouts in all,
    /// so that a late answer to this request cannot be read as the answer to the next one.
    private func drain(_ descriptor: Int32) {
        let limit = MonotonicInstant.now().adding(milliseconds: responseTimeoutMs * 10)
        while MonotonicInstant.now() < limit {
            let remaining = Int(limit.nanoseconds - MonotonicInstant.now().nanoseconds) / 1_000_000
            switch receive(descriptor, timeoutMs: min(responseTimeoutMs, max(0, remaining))) {
            case .bytes: continue
            case .nothing, .closed, .error: return
            }
        }
    }

    private enum Received {
        case bytes([UInt8])
        case nothing
        case closed
        case error(Int32)
    }

    /// Waits up to `timeoutMs` for the descriptor to be readable (`poll`), then reads what is there
    /// (`read`). A signal (EINTR) does not end the wait: `.nothing` always means `timeoutMs` of
    /// silence, which the drain and the check for a late answer rely on.
    private func receive(_ descriptor: Int32, timeoutMs: Int) -> Received {
        var waiting = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        let deadline = MonotonicInstant.now().adding(milliseconds: timeoutMs)
        while true {
            let ready = Glibc.poll(&waiting, 1, Int32(clamping: remainingMs(until: deadline)))
            if ready > 0 { break }
            if ready == 0 { return .nothing }
            guard errno == EINTR else { return .error(errno) }
        }
        while true {
            let count = receiveBuffer.withUnsafeMutableBytes { buffer in
                Glibc.read(descriptor, buffer.baseAddress, buffer.count)
            }
            if count > 0 { return .bytes(Array(receiveBuffer[0..<count])) }
            if count == 0 { return .closed }
            let code = errno
            if code == EINTR { continue }
            return code == EAGAIN ? receive(descriptor, timeoutMs: remainingMs(until: deadline)) : .error(code)
        }
    }

    private func remainingMs(until deadline: MonotonicInstant) -> Int {
        max(0, Int(deadline.nanoseconds - MonotonicInstant.now().nanoseconds) / 1_000_000)
    }

    /// What a technician does about a failure to open the link.
    private func remedy(for code: Int32) -> String? {
        switch (endpoint, code) {
        case (_, ENOENT) where !endpoint.isNetwork, (_, ENODEV) where !endpoint.isNetwork,
            (_, ENXIO) where !endpoint.isNetwork:
            "check the RS-485 adapter is plugged in (dmesg | grep tty) and the device name"
        case (_, EACCES) where !endpoint.isNetwork, (_, EPERM) where !endpoint.isNetwork:
            "add the railgate user to the dialout group"
        case (_, EBUSY) where !endpoint.isNetwork: "another program holds the serial device (fuser -v DEVICE)"
        case (_, ECONNREFUSED) where endpoint.isNetwork:
            "check the host and port, and that the device or gateway (device server) listens"
        case (_, EHOSTUNREACH) where endpoint.isNetwork, (_, ENETUNREACH) where endpoint.isNetwork,
            (_, ETIMEDOUT) where endpoint.isNetwork:
            "check the network path to the device (cable, switch, address)"
        default: nil
        }
    }
}
