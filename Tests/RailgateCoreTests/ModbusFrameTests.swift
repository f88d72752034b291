import RailgateCore
import Testing

/// The reply a correct slave sends to `request` with `values` (registers, or bits as 0/1).
func correctReply(to request: ModbusReadFrame, values: [UInt16], unit: UInt8? = nil) -> [UInt8] {
    var data: [UInt8] = []
    if request.table.holdsBits {
        data = [UInt8](repeating: 0, count: (values.count + 7) / 8)
        for (index, bit) in values.enumerated() where bit != 0 { data[index / 8] |= 1 << UInt8(index % 8) }
    } else {
        for value in values { data += [UInt8(value >> 8), UInt8(value & 0xFF)] }
    }
    let pdu = [request.functionCode, UInt8(data.count)] + data
    return frame(request, unit: unit ?? request.replyUnit, pdu: pdu)
}

/// `pdu` framed for `request`'s transport, with its transaction id (TCP) or CRC (RTU).
func frame(_ request: ModbusReadFrame, unit: UInt8, pdu: [UInt8], transactionId: UInt16? = nil) -> [UInt8] {
    switch request.framing {
    case .tcp:
        let tid = transactionId ?? request.transactionId
        let length = pdu.count + 1
        return [UInt8(tid >> 8), UInt8(tid & 0xFF), 0, 0, UInt8(length >> 8), UInt8(length & 0xFF), unit] + pdu
    case .rtu:
        let body = [unit] + pdu
        let crc = ModbusCRC16.checksum(body)
        return body + [UInt8(crc & 0xFF), UInt8(crc >> 8)]
    case .ascii:
        return ModbusASCII.frame([unit] + pdu)
    }
}

/// A small deterministic generator, so that failures repeat.
struct SplitMix {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}

func randomRequest(_ random: inout SplitMix, framing: ModbusFraming) -> (ModbusReadFrame, [UInt16]) {
    let table = RegisterTable.allCases[random.below(4)]
    let count = 1 + random.below(table.holdsBits ? 2000 : 125)
    let request = ModbusReadFrame(
        framing: framing, table: table, unit: UInt8(random.below(framing == .tcp ? 256 : 248)),
        address: UInt16(random.below(65536 - count)), count: UInt16(count),
        transactionId: UInt16(random.below(65536)))
    let values = (0..<count).map { _ in table.holdsBits ? UInt16(random.below(2)) : UInt16(random.below(65536)) }
    return (request, values)
}

@Suite("Modbus frames: requests and strict reply matching")
struct ModbusFrameTests {
    @Test("request ADUs are byte for byte what libmodbus and mbpoll send")
    func requestBytes() {
        // Read 2 holding registers at 0x6B from unit 17 (the spec's example), transaction 1.
        let tcp = ModbusReadFrame(framing: .tcp, table: .holding, unit: 17, address: 0x6B, count: 3, transactionId: 1)
        #expect(tcp.bytes == [0, 1, 0, 0, 0, 6, 17, 3, 0, 0x6B, 0, 3])
        let rtu = ModbusReadFrame(framing: .rtu, table: .holding, unit: 17, address: 0x6B, count: 3)
        #expect(rtu.bytes == [0x11, 0x03, 0x00, 0x6B, 0x00, 0x03, 0x76, 0x87])
        let unit250 = ModbusReadFrame(
            framing: .tcp, table: .input, unit: 250, address: 0, count: 1, transactionId: 0xBEEF)
        #expect(unit250.bytes == [0xBE, 0xEF, 0, 0, 0, 6, 250, 4, 0, 0, 0, 1])
        #expect(ModbusCRC16.checksum([0x01, 0x03, 0x00, 0x00, 0x00, 0x01]) == 0x0A84)
    }

    @Test(
        "a correct reply gives its values, whole or in any split; a prefix needs more",
        arguments: [ModbusFraming.tcp, .rtu, .ascii])
    func correctReplies(_ framing: ModbusFraming) {
        var random = SplitMix(state: framing == .tcp ? 1 : framing == .rtu ? 2 : 12)
        for _ in 0..<300 {
            let (request, values) = randomRequest(&random, framing: framing)
            let reply = correctReply(to: request, values: values)
            #expect(request.examine(reply) == .values(values, frameLength: reply.count))
            let cut = random.below(reply.count)
            guard case .needMore(let needed) = request.examine(Array(reply.prefix(cut))) else {
                Issue.record("a \(cut)-byte prefix of a \(reply.count)-byte reply was judged complete")
                continue
            }
            #expect(needed > cut && needed <= reply.count)
        }
    }

    @Test("the reply of another unit, function or size is never taken", arguments: [ModbusFraming.tcp, .rtu, .ascii])
    func mismatches(_ framing: ModbusFraming) {
        var random = SplitMix(state: framing == .tcp ? 3 : 4)
        for _ in 0..<300 {
            let (request, values) = randomRequest(&random, framing: framing)
            let otherUnit = request.unit &+ UInt8(1 + random.below(200))
            let wrongUnit = correctReply(to: request, values: values, unit: otherUnit)
            guard case .reject(.unit(request.unit, otherUnit), _) = request.examine(wrongUnit) else {
                Issue.record("unit \(otherUnit)'s reply to unit \(request.unit): \(request.examine(wrongUnit))")
                continue
            }
            var other = request
            other.table = RegisterTable.allCases.first {
                $0 != request.table && $0.holdsBits == request.table.holdsBits
            }!
            let wrongFunction = correctReply(to: other, values: values)
            #expect(
                request.examine(wrongFunction)
                    == .reject(
                        .function(expected: request.functionCode, got: other.functionCode),
                        frameLength: framing == .tcp ? wrongFunction.count : nil))
            // One register (or eight bits) more or less than asked.
            let step = request.table.holdsBits ? 8 : 1
            let otherCount = values.count > step ? values.count - step : values.count + step
            var resized = request
            resized.count = UInt16(otherCount)
            let wrongSize = correctReply(to: resized, values: Array(repeating: 1, count: otherCount))
            guard case .reject(.byteCount, _) = request.examine(wrongSize) else {
                Issue.record("\(otherCount) items for \(values.count): \(request.examine(wrongSize))")
                continue
            }
        }
    }

    @Test("TCP: frames of other transactions are skipped whole; protocol id and length are checked")
    func tcpTransactions() {
        var random = SplitMix(state: 5)
        for _ in 0..<200 {
            let (request, values) = randomRequest(&random, framing: .tcp)
            let stale = correctReply(to: request, values: values.map { _ in 7 }).enumerated().map { index, byte in
                index == 1 ? byte &+ 1 : byte
            }
            #expect(request.examine(stale) == .foreign(frameLength: stale.count))
            let both = stale + correctReply(to: request, values: values)
            #expect(request.examine(both[stale.count...]) == .values(values, frameLength: both.count - stale.count))
            var badProtocol = correctReply(to: request, values: values)
            badProtocol[3] = 1
            #expect(request.examine(badProtocol) == .reject(.protocolId(1), frameLength: nil))
            var badLength = correctReply(to: request, values: values)
            badLength[4] = 1
            #expect(request.examine(badLength) == .reject(.length(256 + Int(badLength[5])), frameLength: nil))
            // Length field one short of the byte count: the frame ends early and disagrees.
            var short = correctReply(to: request, values: values)
            short[5] &-= 1
            short[4] = short[5] == 255 ? short[4] &- 1 : short[4]
            guard case .reject = request.examine(short) else {
                Issue.record("a length field one short was accepted: \(request.examine(short))")
                continue
            }
        }
    }

    @Test("TCP gateways that answer with a fixed unit id: matched by reply_unit and transaction id")
    func fixedReplyUnit() {
        for fixed: UInt8 in [0, 255] {
            let request = ModbusReadFrame(
                framing: .tcp, table: .holding, unit: 250, replyUnit: fixed, address: 10, count: 2, transactionId: 9)
            let reply = correctReply(to: request, values: [1, 2])
            #expect(reply[6] == fixed)
            #expect(request.examine(reply) == .values([1, 2], frameLength: reply.count))
            let asked = correctReply(to: request, values: [1, 2], unit: 250)
            #expect(request.examine(asked) == .reject(.unit(expected: fixed, got: 250), frameLength: asked.count))
        }
    }

    @Test(
        "exceptions are recognised only for this function, unit and transaction",
        arguments: [ModbusFraming.tcp, .rtu, .ascii])
    func exceptions(_ framing: ModbusFraming) {
        var random = SplitMix(state: framing == .tcp ? 6 : 7)
        for _ in 0..<200 {
            let (request, _) = randomRequest(&random, framing: framing)
            let code = UInt8(1 + random.below(11))
            let reply = frame(request, unit: request.unit, pdu: [request.functionCode | 0x80, code])
            #expect(request.examine(reply) == .exception(code, frameLength: reply.count))
            let otherFunction = (request.functionCode % 4 + 1) | 0x80
            let foreign = frame(request, unit: request.unit, pdu: [otherFunction, code])
            guard case .reject(.function, _) = request.examine(foreign) else {
                Issue.record("exception of function \(otherFunction & 0x7F) taken: \(request.examine(foreign))")
                continue
            }
        }
    }

    @Test("ASCII: the spec's frame, LRC, hex digits, CR LF and trailing bytes are all checked")
    func asciiFrames() {
        let request = ModbusReadFrame(framing: .ascii, table: .holding, unit: 17, address: 0x6B, count: 3)
        #expect(request.bytes == Array(":1103006B00037E\r\n".utf8))
        let reply = correctReply(to: request, values: [0x022B, 0, 0x64])
        #expect(reply == Array(":110306022B0000006455\r\n".utf8))
        #expect(request.examine(reply) == .values([0x022B, 0, 0x64], frameLength: reply.count))
        let lower = Array(String(decoding: reply, as: UTF8.self).lowercased().utf8)
        #expect(request.examine(lower) == .values([0x022B, 0, 0x64], frameLength: reply.count))
        var badLRC = reply
        badLRC[reply.count - 3] = UInt8(ascii: "E")
        #expect(request.examine(badLRC) == .reject(.lrc, frameLength: nil))
        var notHex = reply
        notHex[5] = UInt8(ascii: "G")
        #expect(request.examine(notHex) == .reject(.asciiSyntax, frameLength: nil))
        #expect(request.examine(Array(reply.dropFirst())) == .reject(.asciiSyntax, frameLength: nil))
        #expect(request.examine(reply + [0x3A]) == .reject(.trailingBytes(1), frameLength: nil))
        // A late answer of another request (two registers) before ours: refused, never mixed.
        var earlier = request
        earlier.count = 2
        let late = correctReply(to: earlier, values: [1, 2]) + reply
        #expect(request.examine(late) == .reject(.byteCount(expected: 6, got: 4), frameLength: nil))
        // A slave that never ends its frame is cut off at the longest possible reply.
        let endless = [UInt8(ascii: ":")] + [UInt8](repeating: UInt8(ascii: "0"), count: 600)
        #expect(request.examine(endless) == .reject(.asciiSyntax, frameLength: nil))
        #expect(ModbusASCII.lrc([0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]) == 0x7E)
    }

    @Test("RTU: every single-bit error in a reply is caught; trailing bytes are refused")
    func rtuCorruption() {
        var random = SplitMix(state: 8)
        var checked = 0
        for _ in 0..<100 {
            let (request, values) = randomRequest(&random, framing: .rtu)
            let reply = correctReply(to: request, values: values)
            for _ in 0..<10 {
                var corrupted = reply
                let bit = random.below(reply.count * 8)
                corrupted[bit / 8] ^= 1 << UInt8(bit % 8)
                switch request.examine(corrupted) {
                case .values(let got, _): Issue.record("bit \(bit) flipped, still accepted: \(got == values)")
                default: checked += 1
                }
            }
            let trailing = reply + [request.unit]
            #expect(request.examine(trailing) == .reject(.trailingBytes(1), frameLength: nil))
            // A late answer to a request of another size, then ours: refused, not mixed.
            let late = correctReply(to: request, values: values) + reply
            if case .values = request.examine(late) { Issue.record("two frames taken as one") }
        }
        #expect(checked == 1000)
    }
}
