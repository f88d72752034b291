import RailgateCore

/// A read request (any framing, table, unit, address, count, transaction id) and bytes that
/// arrive after it: raw fuzzer bytes, or the correct reply built from them, whole, cut short,
/// with one byte changed, or with bytes after it. Holds: the matcher never traps; it accepts only
/// a reply that provably answers the request (its unit, function, byte count, length, CRC or
/// LRC, transaction id; values decoded from its data); a correct reply is accepted with exactly
/// its values, and each of its proper prefixes asks for more bytes (never for fewer than it has).
enum ModbusReplyHarness {
    static func check(_ bytes: [UInt8]) -> [String] {
        var input = FuzzInput(bytes)
        let framing = [ModbusFraming.tcp, .rtu, .ascii][Int(input.byte() % 3)]
        let table = RegisterTable.allCases[Int(input.byte() % 4)]
        let unit = input.byte()
        let replyUnit = input.byte() & 1 == 1 ? input.byte() : unit
        let address = input.u16()
        let count = UInt16(1 + Int(input.u16()) % table.maxItemsPerRequest)
        let transactionId = input.u16()
        let request = ModbusReadFrame(
            framing: framing, table: table, unit: unit, replyUnit: replyUnit, address: address, count: count,
            transactionId: transactionId)
        let mode = input.byte()
        var violations = Violations()
        if mode % 6 == 0 {
            judge(request, input.rest(), &violations)
            return violations.messages
        }
        let exception: UInt8? = mode % 6 == 5 ? input.byte() : nil
        var data = input.take(request.expectedByteCount)
        data += [UInt8](repeating: 0, count: request.expectedByteCount - data.count)
        let correct = reply(to: request, data: data, exception: exception)
        var damaged = correct
        switch mode % 6 {
        case 1, 5:
            let verdict = judge(request, correct, &violations)
            let expected: ModbusReplyVerdict =
                exception.map { .exception($0, frameLength: correct.count) }
                ?? .values(values(of: request, data: data[...]), frameLength: correct.count)
            violations.check(verdict == expected, "the correct reply \(correct) is judged \(verdict)")
            for length in 0..<correct.count {
                let partial = request.examine(correct[..<length])
                if case .needMore(let needed) = partial, needed > length, needed <= correct.count { continue }
                violations.check(false, "\(length) bytes of the correct reply \(correct) are judged \(partial)")
            }
            return violations.messages
        case 2:
            let position = Int(input.u16()) % correct.count
            damaged[position] ^= max(1, input.byte())
        case 3:
            damaged.removeLast(1 + Int(input.u16()) % correct.count)
        default:
            damaged += input.rest().prefix(16)
            if damaged.count == correct.count { damaged.append(0) }
        }
        judge(request, damaged, &violations)
        return violations.messages
    }

    /// The reply a correct slave sends: `data` (the expected byte count), or exception `exception`.
    static func reply(to request: ModbusReadFrame, data: [UInt8], exception: UInt8?) -> [UInt8] {
        let pdu: [UInt8] =
            exception.map { [request.functionCode | 0x80, $0] }
            ?? [request.functionCode, UInt8(request.expectedByteCount)] + data
        switch request.framing {
        case .tcp:
            let length = pdu.count + 1
            return [
                UInt8(request.transactionId >> 8), UInt8(request.transactionId & 0xFF), 0, 0, UInt8(length >> 8),
                UInt8(length & 0xFF), request.replyUnit,
            ] + pdu
        case .rtu:
            var frame = [request.replyUnit] + pdu
            ModbusCRC16.append(to: &frame)
            return frame
        case .ascii:
            return ModbusASCII.frame([request.replyUnit] + pdu)
        }
    }

    /// Registers big-endian, bits least significant first: what the data bytes say.
    static func values(of request: ModbusReadFrame, data: ArraySlice<UInt8>) -> [UInt16] {
        let bytes = Array(data)
        guard bytes.count == request.expectedByteCount else { return [] }
        var values: [UInt16] = []
        for index in 0..<Int(request.count) {
            if request.table.holdsBits {
                values.append(UInt16((bytes[index / 8] >> UInt8(index % 8)) & 1))
            } else {
                values.append(UInt16(bytes[2 * index]) << 8 | UInt16(bytes[2 * index + 1]))
            }
        }
        return values
    }

    /// Judges `reply`, checking the verdict against the bytes independently of the matcher.
    @discardableResult
    static func judge(
        _ request: ModbusReadFrame, _ reply: [UInt8], _ violations: inout Violations
    )
        -> ModbusReplyVerdict
    {
        let verdict = request.examine(reply)
        let describe = { "\(request) judged \(verdict) for \(reply)" }
        switch verdict {
        case .needMore(let needed):
            violations.check(needed > reply.count, "needs fewer bytes than it has: " + describe())
            violations.check(needed <= 6 + 254 || request.framing != .tcp, "needs too many: " + describe())
            violations.check(needed <= 1 + 2 * 256 + 2, "needs too many: " + describe())
        case .values(let values, let frameLength):
            let frame = Array(reply.prefix(frameLength))
            violations.check(values.count == Int(request.count), "wrong item count: " + describe())
            violations.check(
                frameLength > 0 && frameLength <= reply.count, "frame length outside the bytes: " + describe())
            guard let pdu = answer(request, frame, reply.count, &violations, describe) else { break }
            violations.check(
                pdu.count == 2 + request.expectedByteCount && pdu.first == request.functionCode
                    && Int(pdu[1]) == request.expectedByteCount, "accepted a PDU that is no answer: " + describe())
            if pdu.count == 2 + request.expectedByteCount {
                violations.check(values == Self.values(of: request, data: pdu[2...]), "wrong values: " + describe())
            }
        case .exception(let code, let frameLength):
            let frame = Array(reply.prefix(frameLength))
            violations.check(
                frameLength > 0 && frameLength <= reply.count, "frame length outside the bytes: " + describe())
            guard let pdu = answer(request, frame, reply.count, &violations, describe) else { break }
            violations.check(
                pdu == [request.functionCode | 0x80, code], "accepted an exception that is no answer: " + describe())
        case .foreign(let frameLength):
            violations.check(request.framing == .tcp, "a foreign frame outside TCP: " + describe())
            violations.check(frameLength >= 8 && frameLength <= reply.count, "bad foreign length: " + describe())
            violations.check(
                reply.count >= 2 && UInt16(reply[0]) << 8 | UInt16(reply[1]) != request.transactionId,
                "own transaction called foreign: " + describe())
        case .reject(_, let frameLength):
            if let frameLength {
                violations.check(frameLength > 0 && frameLength <= reply.count, "bad reject length: " + describe())
            }
        }
        return verdict
    }

    /// The PDU of an accepted frame, after checking everything around it (header, unit, CRC, LRC,
    /// nothing after it on a line).
    private static func answer(
        _ request: ModbusReadFrame, _ frame: [UInt8], _ received: Int, _ violations: inout Violations,
        _ describe: () -> String
    ) -> [UInt8]? {
        switch request.framing {
        case .tcp:
            guard frame.count >= 8 else {
                violations.check(false, "accepted a short TCP frame: " + describe())
                return nil
            }
            let transactionId = UInt16(frame[0]) << 8 | UInt16(frame[1])
            let length = Int(frame[4]) << 8 | Int(frame[5])
            violations.check(transactionId == request.transactionId, "another transaction accepted: " + describe())
            violations.check(frame[2] == 0 && frame[3] == 0, "protocol id not 0: " + describe())
            violations.check(length == frame.count - 6, "MBAP length disagrees: " + describe())
            violations.check(frame[6] == request.replyUnit, "another unit accepted: " + describe())
            return Array(frame[7...])
        case .rtu:
            violations.check(frame.count == received, "bytes after an RTU frame accepted: " + describe())
            violations.check(ModbusCRC16.check(frame), "bad CRC accepted: " + describe())
            guard frame.count >= 4 else {
                violations.check(false, "accepted a short RTU frame: " + describe())
                return nil
            }
            violations.check(frame[0] == request.replyUnit, "another unit accepted: " + describe())
            return Array(frame[1..<(frame.count - 2)])
        case .ascii:
            violations.check(frame.count == received, "bytes after an ASCII frame accepted: " + describe())
            violations.check(
                frame.first == UInt8(ascii: ":") && frame.suffix(2) == [13, 10], "not an ASCII frame: " + describe())
            guard frame.count >= 3, (frame.count - 3) % 2 == 0 else {
                violations.check(false, "odd ASCII frame accepted: " + describe())
                return nil
            }
            var body: [UInt8] = []
            for index in stride(from: 1, to: frame.count - 2, by: 2) {
                guard let high = hexDigit(frame[index]), let low = hexDigit(frame[index + 1]) else {
                    violations.check(false, "non-hex ASCII frame accepted: " + describe())
                    return nil
                }
                body.append(high << 4 | low)
            }
            guard body.count >= 3 else {
                violations.check(false, "short ASCII frame accepted: " + describe())
                return nil
            }
            let sum = body.dropLast().reduce(UInt8(0)) { $0 &+ $1 }
            violations.check(0 &- sum == body.last, "bad LRC accepted: " + describe())
            violations.check(body[0] == request.replyUnit, "another unit accepted: " + describe())
            return Array(body[1..<(body.count - 1)])
        }
    }

    private static func hexDigit(_ character: UInt8) -> UInt8? {
        switch character {
        case 0x30...0x39: character - 0x30
        case 0x41...0x46: character - 0x41 + 10
        case 0x61...0x66: character - 0x61 + 10
        default: nil
        }
    }
}
