/// How Modbus frames travel: an MBAP header over TCP, slave address and CRC-16 (RTU, on a serial
/// line or inside a TCP stream), or ASCII: ':' + hex digits + LRC + CR LF (on a line or in TCP).
public enum ModbusFraming: Sendable, Equatable {
    case tcp
    case rtu
    case ascii

    /// Whether a frame carries a slave address and no transaction id (RTU, ASCII): one request
    /// at a time, a late answer is told apart only by silence, so the link is drained after a
    /// timeout or bad frame; unit ids 0...247.
    public var isLineFraming: Bool { self != .tcp }
}

/// Why a reply is not the answer to the request in flight.
public enum ModbusReplyFault: Sendable, Equatable, CustomStringConvertible {
    /// MBAP protocol id other than 0: not a Modbus frame, the stream is out of step.
    case protocolId(UInt16)
    /// A length field (MBAP length, or its agreement with the byte count) that is impossible.
    case length(Int)
    /// The reply names another unit (slave address) than the one asked, or than `reply_unit`.
    case unit(expected: UInt8, got: UInt8)
    /// The reply answers another function code.
    case function(expected: UInt8, got: UInt8)
    /// The byte count does not match the number of items asked for.
    case byteCount(expected: Int, got: Int)
    /// The RTU frame's CRC-16 does not match its bytes.
    case crc
    /// Bytes followed a complete RTU or ASCII frame: it may have been the late answer to an earlier request.
    case trailingBytes(Int)
    /// The ASCII frame's LRC does not match its bytes.
    case lrc
    /// An ASCII frame that does not start with ':', has characters other than hex digits, an odd
    /// number of them, or no CR LF at its end.
    case asciiSyntax

    public var description: String {
        switch self {
        case .protocolId(let id): "protocol id \(id) instead of 0"
        case .length(let length): "impossible length \(length)"
        case .unit(let expected, let got): "reply from unit \(got) to a request for unit \(expected)"
        case .function(let expected, let got): "function code \(got) in the reply to function \(expected)"
        case .byteCount(let expected, let got): "byte count \(got) instead of \(expected)"
        case .crc: "CRC mismatch"
        case .trailingBytes(let count): "\(count) bytes after the reply frame"
        case .lrc: "LRC mismatch"
        case .asciiSyntax: "not a Modbus ASCII frame"
        }
    }
}

/// What the bytes received so far say about the reply to one request.
public enum ModbusReplyVerdict: Sendable, Equatable {
    /// Not complete yet: at least this many bytes (in total) are needed.
    case needMore(Int)
    /// The answer: registers, or bits as 0/1, one element per item asked for.
    case values([UInt16], frameLength: Int)
    /// The slave answered this request with a Modbus exception code.
    case exception(UInt8, frameLength: Int)
    /// TCP: a whole, well-formed frame of another transaction (a late answer to an earlier
    /// request, a duplicate): drop its `frameLength` bytes and keep reading.
    case foreign(frameLength: Int)
    /// Not the answer. `frameLength` is how far the bad frame reaches when the stream is still in
    /// step (TCP, length known), nil when it is not (the connection must be drained or closed).
    case reject(ModbusReplyFault, frameLength: Int?)
}

/// One read request (function 1, 2, 3 or 4) as it goes on the wire, and the strict matcher for
/// its reply. Pure: no I/O; the connection feeds it the bytes it received.
public struct ModbusReadFrame: Sendable, Equatable {
    public var framing: ModbusFraming
    public var table: RegisterTable
    /// The unit id (slave address) the request is sent to: 0...255 on TCP, 0...247 on RTU and ASCII.
    public var unit: UInt8
    /// The unit id the reply must carry: `unit`, unless a TCP gateway answers every unit with a
    /// fixed one (`reply_unit`); the reply is then still matched by transaction id.
    public var replyUnit: UInt8
    public var address: UInt16
    /// Items (registers or bits) to read: 1...125 registers, 1...2000 bits.
    public var count: UInt16
    /// The MBAP transaction id (TCP only; ignored on RTU).
    public var transactionId: UInt16

    public init(
        framing: ModbusFraming, table: RegisterTable, unit: UInt8, replyUnit: UInt8? = nil, address: UInt16,
        count: UInt16, transactionId: UInt16 = 0
    ) {
        self.framing = framing
        self.table = table
        self.unit = unit
        self.replyUnit = replyUnit ?? unit
        self.address = address
        self.count = count
        self.transactionId = transactionId
    }

    /// Modbus function code: 1 coils, 2 discrete inputs, 3 holding registers, 4 input registers.
    public var functionCode: UInt8 {
        switch table {
        case .coil: 1
        case .discrete: 2
        case .holding: 3
        case .input: 4
        }
    }

    /// The data bytes a correct reply carries: 2 per register, 1 per 8 bits.
    public var expectedByteCount: Int { table.holdsBits ? (Int(count) + 7) / 8 : Int(count) * 2 }

    /// The request ADU: MBAP header + PDU on TCP, address + PDU + CRC-16 (low byte first) on RTU,
    /// ':' + address and PDU and LRC as upper-case hex digits + CR LF on ASCII.
    public var bytes: [UInt8] {
        let pdu: [UInt8] = [
            functionCode, UInt8(address >> 8), UInt8(address & 0xFF), UInt8(count >> 8), UInt8(count & 0xFF),
        ]
        switch framing {
        case .tcp:
            return [UInt8(transactionId >> 8), UInt8(transactionId & 0xFF), 0, 0, 0, UInt8(pdu.count + 1), unit] + pdu
        case .rtu:
            let body = [unit] + pdu
            let crc = ModbusCRC16.checksum(body)
            return body + [UInt8(crc & 0xFF), UInt8(crc >> 8)]
        case .ascii:
            return ModbusASCII.frame([unit] + pdu)
        }
    }

    /// Judges the bytes received since the request was sent (`reply` starts at the first of them).
    public func examine(_ reply: ArraySlice<UInt8>) -> ModbusReplyVerdict {
        switch framing {
        case .tcp: examineTCP(reply)
        case .rtu: examineRTU(reply)
        case .ascii: examineASCII(reply)
        }
    }

    /// Judges the bytes received since the request was sent.
    public func examine(_ reply: [UInt8]) -> ModbusReplyVerdict { examine(reply[...]) }

    private func byte(_ reply: ArraySlice<UInt8>, _ offset: Int) -> UInt8 { reply[reply.startIndex + offset] }

    private func examineTCP(_ reply: ArraySlice<UInt8>) -> ModbusReplyVerdict {
        guard reply.count >= 7 else { return .needMore(7) }
        let tid = UInt16(byte(reply, 0)) << 8 | UInt16(byte(reply, 1))
        let protocolId = UInt16(byte(reply, 2)) << 8 | UInt16(byte(reply, 3))
        let length = Int(byte(reply, 4)) << 8 | Int(byte(reply, 5))
        guard protocolId == 0 else { return .reject(.protocolId(protocolId), frameLength: nil) }
        // Unit id + function code at least; a PDU is at most 253 bytes.
        guard (2...254).contains(length) else { return .reject(.length(length), frameLength: nil) }
        let frameLength = 6 + length
        guard reply.count >= frameLength else { return .needMore(frameLength) }
        guard tid == transactionId else { return .foreign(frameLength: frameLength) }
        let unitId = byte(reply, 6)
        guard unitId == replyUnit else {
            return .reject(.unit(expected: replyUnit, got: unitId), frameLength: frameLength)
        }
        let function = byte(reply, 7)
        if function == functionCode | 0x80 {
            guard length == 3 else { return .reject(.length(length), frameLength: frameLength) }
            return .exception(byte(reply, 8), frameLength: frameLength)
        }
        guard function == functionCode else {
            return .reject(.function(expected: functionCode, got: function), frameLength: frameLength)
        }
        guard length >= 3 else { return .reject(.length(length), frameLength: frameLength) }
        let byteCount = Int(byte(reply, 8))
        guard byteCount == expectedByteCount else {
            return .reject(.byteCount(expected: expectedByteCount, got: byteCount), frameLength: frameLength)
        }
        guard length == 3 + byteCount else { return .reject(.length(length), frameLength: frameLength) }
        return .values(decode(reply.dropFirst(9).prefix(byteCount)), frameLength: frameLength)
    }

    private func examineRTU(_ reply: ArraySlice<UInt8>) -> ModbusReplyVerdict {
        guard reply.count >= 2 else { return .needMore(2) }
        let slave = byte(reply, 0)
        guard slave == replyUnit else { return .reject(.unit(expected: replyUnit, got: slave), frameLength: nil) }
        let function = byte(reply, 1)
        let frameLength: Int
        if function == functionCode | 0x80 {
            frameLength = 5
        } else {
            guard function == functionCode else {
                return .reject(.function(expected: functionCode, got: function), frameLength: nil)
            }
            guard reply.count >= 3 else { return .needMore(3) }
            let byteCount = Int(byte(reply, 2))
            guard byteCount == expectedByteCount else {
                return .reject(.byteCount(expected: expectedByteCount, got: byteCount), frameLength: nil)
            }
            frameLength = 3 + byteCount + 2
        }
        guard reply.count >= frameLength else { return .needMore(frameLength) }
        let frame = reply.prefix(frameLength)
        let crc = ModbusCRC16.checksum(frame.dropLast(2))
        guard byte(reply, frameLength - 2) == UInt8(crc & 0xFF), byte(reply, frameLength - 1) == UInt8(crc >> 8) else {
            return .reject(.crc, frameLength: nil)
        }
        guard reply.count == frameLength else {
            return .reject(.trailingBytes(reply.count - frameLength), frameLength: nil)
        }
        if function == functionCode | 0x80 { return .exception(byte(reply, 2), frameLength: frameLength) }
        return .values(decode(frame.dropFirst(3).dropLast(2)), frameLength: frameLength)
    }

    /// ASCII: the frame must start at the first byte with ':' and end with CR LF, all between in
    /// hex digit pairs; then slave address, function code, byte count and LRC as on RTU, and
    /// nothing after the LF.
    private func examineASCII(_ reply: ArraySlice<UInt8>) -> ModbusReplyVerdict {
        guard let first = reply.first else { return .needMore(1) }
        guard first == UInt8(ascii: ":") else { return .reject(.asciiSyntax, frameLength: nil) }
        // The longest reply: ':' + 2 x (address, function, count, 250 data bytes, LRC) + CR LF.
        let longest = 1 + 2 * 254 + 2
        guard let newline = reply.firstIndex(of: 0x0A) else {
            return reply.count >= longest ? .reject(.asciiSyntax, frameLength: nil) : .needMore(reply.count + 1)
        }
        let frameLength = newline - reply.startIndex + 1
        guard let bytes = ModbusASCII.bytes(of: reply.prefix(frameLength)), bytes.count >= 3 else {
            return .reject(.asciiSyntax, frameLength: nil)
        }
        guard bytes[0] == replyUnit else { return .reject(.unit(expected: replyUnit, got: bytes[0]), frameLength: nil) }
        let function = bytes[1]
        let dataEnd: Int
        if function == functionCode | 0x80 {
            guard bytes.count == 4 else { return .reject(.length(bytes.count), frameLength: nil) }
            dataEnd = 3
        } else {
            guard function == functionCode else {
                return .reject(.function(expected: functionCode, got: function), frameLength: nil)
            }
            let byteCount = Int(bytes[2])
            guard byteCount == expectedByteCount else {
                return .reject(.byteCount(expected: expectedByteCount, got: byteCount), frameLength: nil)
            }
            guard bytes.count == 3 + byteCount + 1 else { return .reject(.length(bytes.count), frameLength: nil) }
            dataEnd = 3 + byteCount
        }
        guard ModbusASCII.lrc(bytes[..<dataEnd]) == bytes[dataEnd] else { return .reject(.lrc, frameLength: nil) }
        guard reply.count == frameLength else {
            return .reject(.trailingBytes(reply.count - frameLength), frameLength: nil)
        }
        if function == functionCode | 0x80 { return .exception(bytes[2], frameLength: frameLength) }
        return .values(decode(bytes[3..<dataEnd]), frameLength: frameLength)
    }

    /// Registers big-endian, two bytes each; bits least significant first, eight per byte.
    private func decode(_ data: ArraySlice<UInt8>) -> [UInt16] {
        let bytes = Array(data)
        if table.holdsBits {
            return (0..<Int(count)).map { UInt16(bytes[$0 / 8] >> UInt8($0 % 8) & 1) }
        }
        return (0..<Int(count)).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
    }
}

/// The Modbus RTU CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF), sent low byte first.
public enum ModbusCRC16 {
    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt16 {
        var crc: UInt16 = 0xFFFF
        for byte in bytes {
            crc ^= UInt16(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xA001 : crc >> 1 }
        }
        return crc
    }

    /// Whether the last two bytes of `frame` are the CRC of the rest.
    public static func check(_ frame: [UInt8]) -> Bool {
        guard frame.count >= 2 else { return false }
        let crc = checksum(frame.dropLast(2))
        return frame[frame.count - 2] == UInt8(crc & 0xFF) && frame[frame.count - 1] == UInt8(crc >> 8)
    }

    /// Appends the CRC of `frame`, low byte first.
    public static func append(to frame: inout [UInt8]) {
        let crc = checksum(frame)
        frame += [UInt8(crc & 0xFF), UInt8(crc >> 8)]
    }
}

/// Modbus ASCII framing (Modbus over serial line, 2.5.2): ':' then every byte of address, PDU and
/// LRC as two upper-case hex digits, then CR LF.
public enum ModbusASCII {
    /// The LRC: the two's complement of the 8-bit sum of the bytes.
    public static func lrc(_ bytes: some Sequence<UInt8>) -> UInt8 {
        0 &- bytes.reduce(UInt8(0)) { $0 &+ $1 }
    }

    /// The ASCII frame of `body` (address and PDU), LRC appended.
    public static func frame(_ body: [UInt8]) -> [UInt8] {
        let digits = Array("0123456789ABCDEF".utf8)
        var frame: [UInt8] = [UInt8(ascii: ":")]
        for byte in body + [lrc(body)] {
            frame.append(digits[Int(byte >> 4)])
            frame.append(digits[Int(byte & 0x0F)])
        }
        return frame + [0x0D, 0x0A]
    }

    /// The bytes (address, PDU, LRC) of one whole frame, ':' to LF; nil if it is not one (no ':'
    /// first, no CR LF last, a character other than a hex digit, an odd number of digits).
    /// Lower-case hex digits are accepted.
    public static func bytes(of frame: some Collection<UInt8>) -> [UInt8]? {
        let characters = Array(frame)
        guard characters.count >= 3, characters.first == UInt8(ascii: ":"), characters.suffix(2) == [0x0D, 0x0A]
        else { return nil }
        let digits = characters[1..<(characters.count - 2)]
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = digits.startIndex
        while index < digits.endIndex {
            guard let high = value(ofHexDigit: digits[index]), let low = value(ofHexDigit: digits[index + 1]) else {
                return nil
            }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    static func value(ofHexDigit character: UInt8) -> UInt8? {
        switch character {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): character - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): character - UInt8(ascii: "A") + 10
        case UInt8(ascii: "a")...UInt8(ascii: "f"): character - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}
