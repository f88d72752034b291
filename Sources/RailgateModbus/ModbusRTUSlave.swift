import Glibc
import RailgateCore
import RailgateSystem

/// Modbus RTU or ASCII slaves on a serial line (or one end of a pty pair), or behind a TCP
/// listener (RTU over TCP, ASCII over TCP: a serial device server's view), answering for many
/// unit ids.
///
/// libmodbus's RTU receive filters on one slave id and builds replies itself, and libmodbus has
/// no ASCII at all, so this slave frames requests itself (RTU by line silence and CRC, ASCII from
/// ':' to CR LF and LRC) and builds the reply PDUs directly: that lets one process play several
/// slaves on a line and inject faults into the bytes on the wire (bad CRC or LRC, short replies).
/// Over TCP it serves one connection at a time and takes the next when it closes. Blocking: run
/// it on its own thread or process.
public final class ModbusRTUSlave {
    /// The serial descriptor, or the connection being served (-1 while none).
    private var fd: Int32
    /// The TCP listener (RTU or ASCII over TCP), or -1.
    private var listener: Int32 = -1
    public let device: String
    /// The TCP port listened on (the kernel's choice when asked for 0), or 0 on a serial line.
    public private(set) var port = 0
    /// `.rtu` or `.ascii`.
    public let framing: ModbusFraming
    /// Silence that ends a frame: 3.5 characters at the baud rate, at least 2 ms.
    private let frameGapMs: Int32

    /// Opens `device` raw at the given line settings; `framing` is `.rtu` or `.ascii`.
    public init(
        device: String, baud: Int, parity: BusTransport.Parity, dataBits: Int = 8, stopBits: Int = 1,
        framing: ModbusFraming = .rtu
    ) throws(ModbusError) {
        let fd = open(device, O_RDWR | O_NOCTTY | O_CLOEXEC)
        guard fd >= 0 else { throw ModbusError(kind: .setup, code: errno, operation: "open \(device)") }
        var settings = termios()
        tcgetattr(fd, &settings)
        cfmakeraw(&settings)
        let speed = Self.speed(baud)
        cfsetispeed(&settings, speed)
        cfsetospeed(&settings, speed)
        settings.c_cflag &= ~tcflag_t(CSIZE | PARENB | PARODD | CSTOPB)
        settings.c_cflag |= tcflag_t([5: CS5, 6: CS6, 7: CS7][dataBits] ?? CS8) | tcflag_t(CREAD | CLOCAL)
        if parity != .none { settings.c_cflag |= tcflag_t(PARENB) }
        if parity == .odd { settings.c_cflag |= tcflag_t(PARODD) }
        if stopBits == 2 { settings.c_cflag |= tcflag_t(CSTOPB) }
        tcsetattr(fd, TCSANOW, &settings)
        self.fd = fd
        self.device = device
        self.framing = framing
        let bitsPerCharacter = 1 + dataBits + (parity == .none ? 0 : 1) + stopBits
        frameGapMs = Int32(max(2, (35 * bitsPerCharacter * 1000 / 10 + baud - 1) / baud))
    }

    /// Listens on `host:port` (0: any free port, see `port`) for RTU-over-TCP or ASCII-over-TCP
    /// masters.
    public init(listeningOn host: String, port: Int, framing: ModbusFraming) throws(ModbusError) {
        self.framing = framing
        device = "\(framing == .ascii ? "ascii" : "rtu")-over-tcp \(host):\(port)"
        frameGapMs = 2
        fd = -1
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard listener >= 0 else { throw ModbusError(kind: .setup, code: errno, operation: "socket for \(device)") }
        var on: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(listener)
            throw ModbusError(kind: .setup, code: EINVAL, operation: "\(device): not an IPv4 address")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, listen(listener, 4) == 0 else {
            let code = errno
            close(listener)
            throw ModbusError(kind: .setup, code: code, operation: "listen on \(device)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        self.port = Int(UInt16(bigEndian: actual.sin_port))
    }

    deinit {
        if fd >= 0 { close(fd) }
        if listener >= 0 { close(listener) }
    }

    /// Serves requests until `shouldStop` returns true, calling `tick` about every `tickMs`.
    /// `respond` decides what each well-formed request (right CRC or LRC) gets.
    public func serve(
        tickMs: Int, tick: () -> Void, shouldStop: () -> Bool, respond: (ModbusIndication) -> ModbusResponse
    ) {
        var frame: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while !shouldStop() {
            if fd < 0 {
                var waiting = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
                if poll(&waiting, 1, Int32(tickMs)) > 0 {
                    fd = accept(listener, nil, nil)
                    frame.removeAll()
                } else {
                    tick()
                }
                continue
            }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            // ASCII frames end with CR LF, not with silence; a partial one is dropped after a second.
            let wait = frame.isEmpty ? Int32(tickMs) : framing == .ascii ? 1000 : frameGapMs
            let ready = poll(&descriptor, 1, wait)
            if ready > 0 {
                let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count > 0 {
                    frame += chunk[0..<count]
                } else if listener >= 0, count == 0 || (errno != EINTR && errno != EAGAIN) {
                    close(fd)  // the master closed the connection: take the next one
                    fd = -1
                    continue
                }
                if framing == .ascii {
                    while let newline = frame.firstIndex(of: 0x0A) {
                        let line = Array(frame[...newline])
                        frame.removeSubrange(...newline)
                        if let start = line.firstIndex(of: UInt8(ascii: ":")) {
                            answerASCII(Array(line[start...]), respond: respond)
                        }
                    }
                    if frame.count > 600 { frame.removeAll() }  // noise: no ASCII frame is longer
                } else if frame.count > 256 {
                    frame.removeAll()  // noise: no RTU frame is longer
                } else if listener >= 0, frame.count >= 4, ModbusCRC16.check(frame), let request = RTURequest(frame) {
                    // Inside TCP a whole request arrives at once and silence means nothing: answer
                    // a complete frame with a good CRC now.
                    frame.removeAll()
                    let response = respond(request.indication)
                    if request.indication.unit != 0, let reply = request.reply(response) { write(reply) }
                }
                continue
            }
            tick()
            guard !frame.isEmpty else { continue }
            defer { frame.removeAll() }
            guard framing == .rtu, frame.count >= 4, ModbusCRC16.check(frame), let request = RTURequest(frame) else {
                continue
            }
            let response = respond(request.indication)
            guard request.indication.unit != 0 else { continue }  // broadcast: no reply
            guard let reply = request.reply(response) else { continue }
            write(reply)
        }
    }

    /// One ASCII request ':' ... CR LF: checked (hex digits, LRC), answered in ASCII.
    private func answerASCII(_ line: [UInt8], respond: (ModbusIndication) -> ModbusResponse) {
        guard let bytes = ModbusASCII.bytes(of: line), bytes.count >= 3,
            ModbusASCII.lrc(bytes.dropLast()) == bytes.last!
        else { return }
        var rtu = Array(bytes.dropLast())
        ModbusCRC16.append(to: &rtu)
        guard let request = RTURequest(rtu) else { return }
        let response = respond(request.indication)
        guard request.indication.unit != 0, let reply = request.reply(response) else { return }
        var ascii = ModbusASCII.frame(Array(reply.dropLast(2)))
        if case .damaged(_, .badCRC) = response {
            ascii[ascii.count - 3] = ascii[ascii.count - 3] == UInt8(ascii: "0") ? UInt8(ascii: "1") : UInt8(ascii: "0")
        } else if case .damaged(_, .truncated) = response {
            ascii = Array(ascii.prefix(ascii.count / 2))
        }
        write(ascii)
    }

    /// Writes a reply: on the serial line, drained to the wire; on a TCP connection with
    /// `MSG_NOSIGNAL`, so a client that has gone is no SIGPIPE for the simulator or the bench.
    private func write(_ bytes: [UInt8]) {
        if listener >= 0 {
            ConnectedSocket.send(fd: fd, bytes: bytes)
        } else {
            StandardStreams.write(fd: fd, bytes: bytes)
            tcdrain(fd)
        }
    }

    static func speed(_ baud: Int) -> speed_t {
        let speeds: [Int: Int32] = [
            1200: B1200, 2400: B2400, 4800: B4800, 9600: B9600, 19200: B19200, 38400: B38400, 57600: B57600,
            115200: B115200, 230400: B230400,
        ]
        return speed_t(speeds[baud] ?? B19200)
    }
}

/// A request frame as it arrived, and the reply it gets.
struct RTURequest {
    let indication: ModbusIndication
    /// For writes: the values to store.
    let writeValues: [UInt16]

    init?(_ frame: [UInt8]) {
        let unit = Int(frame[0])
        let function = frame[1]
        func word(_ at: Int) -> Int { Int(frame[at]) << 8 | Int(frame[at + 1]) }
        switch function {
        case 1, 2, 3, 4, 5, 6:
            guard frame.count == 8 else { return nil }
            indication = ModbusIndication(
                unit: unit, functionCode: function, address: word(2), count: function >= 5 ? 1 : word(4))
            writeValues = function == 5 ? [word(4) == 0xFF00 ? 1 : 0] : function == 6 ? [UInt16(word(4))] : []
        case 15, 16:
            guard frame.count >= 9, frame.count == 9 + Int(frame[6]) else { return nil }
            let count = word(4)
            indication = ModbusIndication(unit: unit, functionCode: function, address: word(2), count: count)
            if function == 16 {
                writeValues = (0..<min(count, Int(frame[6]) / 2)).map { UInt16(word(7 + $0 * 2)) }
            } else {
                writeValues = (0..<count).map { UInt16(frame[7 + $0 / 8] >> ($0 % 8) & 1) }
            }
        default:
            guard frame.count >= 4 else { return nil }
            indication = ModbusIndication(unit: unit, functionCode: function, address: 0, count: 0)
            writeValues = []
        }
    }

    /// The reply frame for `response` (with CRC), or nil for silence.
    func reply(_ response: ModbusResponse) -> [UInt8]? {
        let unit = UInt8(indication.unit)
        let function = indication.functionCode
        func exception(_ code: UInt8) -> [UInt8] {
            var frame = [unit, function | 0x80, code]
            ModbusCRC16.append(to: &frame)
            return frame
        }
        switch response {
        case .silence: return nil
        case .exception(let code): return exception(code)
        case .damaged(let bank, let damage):
            guard var frame = reply(.reply(bank)) else { return nil }
            switch damage {
            case .badCRC: frame[frame.count - 1] ^= 0x5A
            case .truncated: frame = Array(frame.prefix(max(3, frame.count / 2)))
            }
            return frame
        case .reply(let bank):
            let address = indication.address
            let count = indication.count
            let table: RegisterTable
            switch function {
            case 1, 5, 15: table = .coil
            case 2: table = .discrete
            case 3, 6, 16: table = .holding
            case 4: table = .input
            default: return exception(1)
            }
            let limit = table.holdsBits ? 2000 : 125
            guard count >= 1, count <= limit else { return exception(3) }
            guard address + count <= 65536 else { return exception(2) }
            var frame: [UInt8] = [unit, function]
            switch function {
            case 1, 2:
                let bits = bank.get(table, address: address, count: count)
                var packed = [UInt8](repeating: 0, count: (count + 7) / 8)
                for (index, bit) in bits.enumerated() where bit != 0 { packed[index / 8] |= 1 << (index % 8) }
                frame += [UInt8(packed.count)] + packed
            case 3, 4:
                let registers = bank.get(table, address: address, count: count)
                frame.append(UInt8(count * 2))
                for register in registers { frame += [UInt8(register >> 8), UInt8(register & 0xFF)] }
            case 5, 6:
                bank.set(table, address: address, writeValues)
                let value = function == 5 ? (writeValues[0] != 0 ? 0xFF00 : 0) : Int(writeValues[0])
                frame += [UInt8(address >> 8), UInt8(address & 0xFF), UInt8(value >> 8), UInt8(value & 0xFF)]
            default:  // 15, 16
                bank.set(table, address: address, writeValues)
                frame += [UInt8(address >> 8), UInt8(address & 0xFF), UInt8(count >> 8), UInt8(count & 0xFF)]
            }
            ModbusCRC16.append(to: &frame)
            return frame
        }
    }
}
