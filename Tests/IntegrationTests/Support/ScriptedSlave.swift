import Foundation
import RailgateCore
import RailgateSystem

/// A Modbus slave that misbehaves on demand, over a raw TCP socket or the slave end of a socat pty
/// pair: it answers late, with another unit id, with a second frame appended, byte by byte,
/// ignores the first milliseconds of a connection, closes idle connections. libmodbus's own
/// server will not do any of that. It serves read requests (functions 1-4) only, one connection
/// at a time, from its own thread, and notes when each request arrived and each reply was sent.
final class ScriptedSlave: @unchecked Sendable {
    /// One read request as the slave parsed it.
    struct Request: Sendable {
        /// 0-based, counted over the slave's life.
        var index: Int
        var unit: UInt8
        var function: UInt8
        var address: Int
        var count: Int
        /// TCP only.
        var transactionId: UInt16
        /// The connection it came on (1-based; always 1 on RTU).
        var connection: Int
        var arrived: MonotonicInstant
        /// Milliseconds since its connection was opened.
        var sinceConnectMs: Int
    }

    /// What the slave does with one request.
    enum Step: Sendable {
        case wait(ms: Int)
        case send([UInt8])
        /// Sends the bytes one at a time, `everyMs` apart.
        case trickle([UInt8], everyMs: Int)
        /// Closes the TCP connection.
        case close
    }

    /// How requests are answered: by default, at once with the served values.
    typealias Script = @Sendable (Request, ScriptedSlave) -> [Step]

    /// The values a slave serves, by unit and address (a struct, so that a trailing closure is the script).
    struct Served: Sendable {
        let value: @Sendable (UInt8, Int) -> UInt16
        /// `unit * 256 + address` (wrapping) for registers; for bits, the low bit of that.
        static let standard = Served { unit, address in UInt16(truncatingIfNeeded: Int(unit) * 256 + address) }
        /// Holding 0 = 100, anything else 200.
        static let hundredTwoHundred = Served { _, address in address == 0 ? 100 : 200 }
    }

    let served: Served
    private let script: Script
    private let lock = ConditionLock()
    private var requestLog: [Request] = []
    private var replyLog: [(index: Int, sent: MonotonicInstant)] = []
    private var connections = 0
    private var stopping = false
    private var thread: Thread?
    private var listener: Int32 = -1
    /// TCP only: the listening port.
    private(set) var port = 0
    /// TCP only: connections idle this long are closed by the slave.
    let closeIdleAfterMs: Int?
    let isTCP: Bool

    /// A TCP slave on a free loopback port.
    init(
        tcpClosingIdleAfterMs closeIdleAfterMs: Int? = nil,
        served: Served = .standard,
        script: @escaping Script = { request, slave in [.send(slave.reply(to: request))] }
    ) throws {
        self.served = served
        self.script = script
        self.closeIdleAfterMs = closeIdleAfterMs
        isTCP = true
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard bind(listener, pointer, length) == 0 else { return -1 }
                return getsockname(listener, pointer, &length)
            }
        }
        guard bound == 0, listen(listener, 8) == 0 else { throw TimedOut(description: "cannot listen: \(errno)") }
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in serveTCP() }
        self.thread = thread
        thread.start()
    }

    /// An RTU slave on `device` (the slave end of a `PtyPair`).
    init(
        rtu device: String, served: Served = .standard,
        script: @escaping Script = { request, slave in [.send(slave.reply(to: request))] }
    ) throws {
        self.served = served
        self.script = script
        closeIdleAfterMs = nil
        isTCP = false
        let descriptor = open(device, O_RDWR | O_NOCTTY)
        guard descriptor >= 0 else { throw TimedOut(description: "cannot open \(device): \(errno)") }
        var settings = termios()
        tcgetattr(descriptor, &settings)
        cfmakeraw(&settings)
        tcsetattr(descriptor, TCSANOW, &settings)
        let thread = Thread { [self] in serveRTU(descriptor) }
        self.thread = thread
        thread.start()
    }

    deinit { stop() }

    func stop() {
        let wasRunning = lock.withLock {
            let was = !stopping
            stopping = true
            return was
        }
        guard wasRunning else { return }
        while thread?.isFinished == false { usleep(10_000) }
        if listener >= 0 { close(listener) }
    }

    /// Every request received so far.
    var requests: [Request] { lock.withLock { requestLog } }
    /// When each reply was written (just before the write of its last part), by request index.
    var replies: [(index: Int, sent: MonotonicInstant)] { lock.withLock { replyLog } }
    /// TCP connections accepted so far.
    var connectionCount: Int { lock.withLock { connections } }

    private var isStopping: Bool { lock.withLock { stopping } }

    /// The correct reply to `request` (of `unit`, by default the one asked), with the served values,
    /// or `values` given. On TCP with the request's transaction id unless `transactionId` is given.
    func reply(
        to request: Request, unit: UInt8? = nil, values: [UInt16]? = nil, transactionId: UInt16? = nil
    )
        -> [UInt8]
    {
        let bits = request.function <= 2
        let items = values ?? (0..<request.count).map { served.value(request.unit, request.address + $0) }
        var data: [UInt8] = []
        if bits {
            data = [UInt8](repeating: 0, count: (items.count + 7) / 8)
            for (index, bit) in items.enumerated() where bit & 1 != 0 { data[index / 8] |= 1 << UInt8(index % 8) }
        } else {
            for value in items { data += [UInt8(value >> 8), UInt8(value & 0xFF)] }
        }
        return frame(
            request, unit: unit ?? request.unit, pdu: [request.function, UInt8(data.count)] + data,
            transactionId: transactionId)
    }

    /// `pdu` framed as a reply to `request`: MBAP header on TCP, address and CRC on RTU.
    func frame(_ request: Request, unit: UInt8, pdu: [UInt8], transactionId: UInt16? = nil) -> [UInt8] {
        if isTCP {
            let tid = transactionId ?? request.transactionId
            return [UInt8(tid >> 8), UInt8(tid & 0xFF), 0, 0, 0, UInt8(pdu.count + 1), unit] + pdu
        }
        let body = [unit] + pdu
        let crc = ModbusCRC16.checksum(body)
        return body + [UInt8(crc & 0xFF), UInt8(crc >> 8)]
    }

    private func serveTCP() {
        while !isStopping {
            guard readable(listener, ms: 50) else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            var one: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let number = lock.withLock {
                connections += 1
                return connections
            }
            serveConnection(client, number: number, headerLength: 7) { header in
                (Int(header[4]) << 8 | Int(header[5])) - 1
            }
            close(client)
        }
    }

    private func serveRTU(_ descriptor: Int32) {
        serveConnection(descriptor, number: 1, headerLength: 2) { _ in 6 }
        close(descriptor)
    }

    /// Reads requests (a header, then `rest(header)` bytes) until the peer closes, the slave closes
    /// an idle connection, or the slave stops.
    private func serveConnection(_ descriptor: Int32, number: Int, headerLength: Int, rest: ([UInt8]) -> Int) {
        let opened = MonotonicInstant.now()
        var lastActivity = opened
        while !isStopping {
            if let idle = closeIdleAfterMs, MonotonicInstant.now().milliseconds(since: lastActivity) >= idle { return }
            guard readable(descriptor, ms: 10) else { continue }
            guard let header = readExactly(descriptor, headerLength) else { return }
            let arrived = MonotonicInstant.now()
            guard let body = readExactly(descriptor, rest(header)) else { return }
            let bytes = header + body
            let pdu = headerLength == 7 ? Array(bytes[7...]) : Array(bytes[1..<(bytes.count - 2)])
            guard pdu.count >= 5 else { return }
            let request = lock.withLock {
                let request = Request(
                    index: requestLog.count, unit: headerLength == 7 ? bytes[6] : bytes[0], function: pdu[0],
                    address: Int(pdu[1]) << 8 | Int(pdu[2]), count: Int(pdu[3]) << 8 | Int(pdu[4]),
                    transactionId: headerLength == 7 ? UInt16(bytes[0]) << 8 | UInt16(bytes[1]) : 0,
                    connection: number, arrived: arrived, sinceConnectMs: Int(arrived.milliseconds(since: opened)))
                requestLog.append(request)
                return request
            }
            var sent: MonotonicInstant?
            for step in script(request, self) {
                switch step {
                case .wait(let ms): usleep(UInt32(ms) * 1000)
                case .send(let bytes):
                    // Noted before the write: the master cannot have the reply earlier than this.
                    sent = MonotonicInstant.now()
                    guard writeAll(descriptor, bytes) else { return }
                case .trickle(let bytes, let everyMs):
                    for byte in bytes {
                        guard writeAll(descriptor, [byte]) else { return }
                        usleep(UInt32(everyMs) * 1000)
                    }
                    sent = MonotonicInstant.now()
                case .close: return
                }
            }
            lastActivity = MonotonicInstant.now()
            if let sent { lock.withLock { replyLog.append((request.index, sent)) } }
        }
    }

    private func readable(_ descriptor: Int32, ms: Int32) -> Bool {
        var waiting = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&waiting, 1, ms) == 1
    }

    private func readExactly(_ descriptor: Int32, _ count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            guard readable(descriptor, ms: 1000) else { return nil }
            let got = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + done, count - done) }
            guard got > 0 else { return nil }
            done += got
        }
        return bytes
    }

    /// Writes every byte (`send` without SIGPIPE on TCP); false once the peer has gone.
    private func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let wrote = bytes.withUnsafeBytes { buffer in
                isTCP
                    ? send(descriptor, buffer.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
                    : write(descriptor, buffer.baseAddress! + done, bytes.count - done)
            }
            guard wrote > 0 else { return false }
            done += wrote
        }
        return true
    }
}
