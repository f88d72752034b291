import Glibc
import RailgateCore
import RailgateSystem

/// Modbus RTU slaves on a serial line (or one end of a pty pair), answering for many unit ids.
///
/// libmodbus's RTU receive filters on one slave id and builds replies itself, so this slave
/// frames requests by line silence, checks their CRC, and builds the reply PDUs directly: that
/// lets one process play several slaves on a line and inject faults into the bytes on the wire
/// (bad CRC, short replies). Blocking: run it on its own thread or process.
public final class ModbusRTUSlave {
    private let fd: Int32
    public let device: String
    /// Silence that ends a frame: 3.5 characters at the baud rate, at least 2 ms.
    private let frameGapMs: Int32

    /// Opens `device` raw at the given line settings.
    public init(
        device: String, baud: Int, parity: BusTransport.Parity, dataBits: Int = 8, stopBits: Int = 1
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
        let bitsPerCharacter = 1 + dataBits + (parity == .none ? 0 : 1) + stopBits
        frameGapMs = Int32(max(2, (35 * bitsPerCharacter * 1000 / 10 + baud - 1) / baud))
    }

    deinit { close(fd) }

    /// Serves requests until `shouldStop` returns true, calling `tick` about every `tickMs`.
    /// `respond` decides what each well-formed request (right CRC) gets.
    public func serve(
        tickMs: Int, tick: () -> Void, shouldStop: () -> Bool, respond: (ModbusIndication) -> ModbusResponse
    ) {
        var frame: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while !shouldStop() {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, frame.isEmpty ? Int32(tickMs) : frameGapMs)
            if ready > 0 {
                let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if count > 0 { frame += chunk[0..<count] }
                if frame.count > 256 { frame.removeAll() }  // noise: no RTU frame is longer
                continue
            }
            tick()
            guard !frame.isEmpty else { continue }
            defer { frame.removeAll() }
            guard frame.count >= 4, ModbusCRC.check(frame), let request = RTURequest(frame) else { continue }
            let response = respond(request.indication)
            guard request.indication.unit != 0 else { continue }  // broadcast: no reply
            guard let reply = request.reply(response) else { continue }
            write(reply)
        }
    }

    private func write(_ bytes: [UInt8]) {
        StandardStreams.write(fd: fd, bytes: bytes)
        tcdrain(fd)
    }

    static func speed(_ baud: Int) -> speed_t {
        let speeds: [Int: Int32] = [
            1200: B1200, 2400: B2400, 4800: B4800, 9600: B9600, 19200: B19200, 38400: B38400, 57600: B57600,
            115200: B115200, 230400: B230400,
        ]
        return speed_t(speeds[baud] ?? B19200)
    }
}

/// The CRC-16 of Modbus RTU (polynomial 0xA001 reflected, initial 0xFFFF), sent low byte first.
public enum ModbusCRC {
    public static func compute(_ bytes: some Collection<UInt8>) -> UInt16 {
        var crc: UInt16 = 0xFFFF
        for byte in bytes {
            crc ^= UInt16(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xA001 : crc >> 1 }
        }
        return crc
    }

    /// Whether the last two bytes of `frame` are the CRC of the rest.
    public static func check(_ frame: [UInt8]) -> Bool {
        let crc = compute(frame.dropLast(2))
        return frame[frame.count - 2] == UInt8(crc & 0xFF) && frame[frame.count - 1] == UInt8(crc >> 8)
    }

    public static func append(to frame: inout [UInt8]) {
        let crc = compute(frame)
        frame += [UInt8(crc & 0xFF), UInt8(crc >> 8)]
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
            ModbusCRC.append(to: &frame)
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
            ModbusCRC.append(to: &frame)
            return frame
        }
    }
}
