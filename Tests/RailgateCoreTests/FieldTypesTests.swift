import Testing

@testable import RailgateCore

/// A register point of `type` at holding 0.
private func point(_ type: ValueType, order: WordOrder = .abcd, scale: Double = 1) -> PointDefinition {
    PointDefinition(name: "p", table: .holding, address: 0, type: type, order: order, scale: scale)
}

private func profile(_ points: String, file: String = "t.toml") throws(ConfigErrors) -> DeviceProfile {
    try DeviceProfile.parse("model = \"m\"\n" + points, file: file)
}

@Suite("Field types: bits, bytes, f16, BCD")
struct FieldTypesTests {
    @Test("bit N of a register reads that bit, for every N; other bits do not matter")
    func bits() {
        for bit in 0...15 {
            let flag = point(.bit(bit))
            #expect(flag.reading([1 << UInt16(bit)]) == .success(.bool(true)))
            #expect(flag.reading([~(1 << UInt16(bit))]) == .success(.bool(false)))
            #expect(flag.encode(.bool(true)) == [1 << UInt16(bit)])
            #expect(flag.type.registerMask == 1 << UInt16(bit))
        }
        #expect(point(.bit(15)).reading([0x8000]) == .success(.bool(true)))
        #expect(point(.bit(0)).reading([0x8000]) == .success(.bool(false)))
    }

    @Test("u8 and i8 of the high and low byte")
    func bytes() {
        let word: UInt16 = 0xC8FB
        #expect(point(.u8(.high)).reading([word]) == .success(.unsigned(200)))
        #expect(point(.u8(.low)).reading([word]) == .success(.unsigned(251)))
        #expect(point(.i8(.high)).reading([word]) == .success(.integer(-56)))
        #expect(point(.i8(.low)).reading([word]) == .success(.integer(-5)))
        #expect(point(.i8(.high)).reading([0x7F80]) == .success(.integer(127)))
        #expect(point(.i8(.low)).reading([0x7F80]) == .success(.integer(-128)))
        #expect(point(.u8(.low), scale: 0.5).reading([0x00FF]) == .success(.number(127.5)))
        #expect(point(.u8(.high)).encode(.unsigned(200)) == [0xC800])
        #expect(point(.i8(.low)).encode(.integer(-5)) == [0x00FB])
        #expect(point(.u8(.high)).type.registerMask == 0xFF00)
        // A sentinel of an 8-bit point is compared with its byte.
        var sentinel = point(.u8(.low))
        sentinel.invalid = [0xFF]
        #expect(sentinel.reading([0x12FF]) == .failure(.invalid))
        #expect(sentinel.reading([0xFF12]) == .success(.unsigned(0x12)))
    }

    @Test(
        "f16: normal values, subnormals, zero signs; NaN and infinities are errors", arguments: [WordOrder.abcd, .badc])
    func halfPrecision(_ order: WordOrder) {
        func word(_ bits: UInt16) -> [UInt16] { [order == .abcd ? bits : bits.byteSwapped] }
        let half = point(.f16, order: order)
        #expect(half.reading(word(0x4E20)) == .success(.number(24.5)))
        #expect(half.reading(word(0x3C00)) == .success(.number(1)))
        #expect(half.reading(word(0xC000)) == .success(.number(-2)))
        #expect(half.reading(word(0x7BFF)) == .success(.number(65504)))
        #expect(half.reading(word(0x3555)) == .success(.number(0.3333)))
        // Subnormals: the smallest (2^-24) and the largest (1023 x 2^-24), in shortest form.
        #expect(half.reading(word(0x0001)) == .success(.number(6e-08)))
        #expect(half.reading(word(0x03FF)) == .success(.number(6.1e-05)))
        #expect(half.reading(word(0x8001)) == .success(.number(-6e-08)))
        #expect(half.reading(word(0x0000)) == .success(.number(0)))
        #expect(half.reading(word(0x7C00)) == .failure(.inf))
        #expect(half.reading(word(0xFC00)) == .failure(.inf))
        #expect(half.reading(word(0x7E00)) == .failure(.nan))
        #expect(half.reading(word(0x7C01)) == .failure(.nan))
        #expect(half.reading(word(0xFE00)) == .failure(.nan))
        #expect(half.encode(.number(24.5)) == word(0x4E20))
    }

    @Test("BCD: 4 and 8 digits in every order that applies; a nibble above 9 is invalid")
    func bcd() {
        #expect(point(.bcd16).reading([0x1234]) == .success(.unsigned(1234)))
        #expect(point(.bcd16).reading([0x9999]) == .success(.unsigned(9999)))
        #expect(point(.bcd16).reading([0x0000]) == .success(.unsigned(0)))
        #expect(point(.bcd16, order: .badc).reading([0x3412]) == .success(.unsigned(1234)))
        #expect(point(.bcd16, order: .dcba).reading([0x3412]) == .success(.unsigned(1234)))
        let orders: [(WordOrder, [UInt16])] = [
            (.abcd, [0x1234, 0x5678]), (.cdab, [0x5678, 0x1234]), (.badc, [0x3412, 0x7856]), (.dcba, [0x7856, 0x3412]),
        ]
        for (order, registers) in orders {
            #expect(point(.bcd32, order: order).reading(registers) == .success(.unsigned(12_345_678)), "\(order)")
            #expect(point(.bcd32, order: order).encode(.unsigned(12_345_678)) == registers, "\(order)")
        }
        for bad: UInt16 in [0x12A4, 0xF000, 0x000A, 0xFFFF] {
            #expect(point(.bcd16).reading([bad]) == .failure(.invalid), "0x\(String(bad, radix: 16))")
        }
        #expect(point(.bcd32).reading([0x1234, 0x567B]) == .failure(.invalid))
        #expect(point(.bcd32, order: .cdab).reading([0xE678, 0x1234]) == .failure(.invalid))
        #expect(point(.bcd16, scale: 0.1).reading([0x1234]) == .success(.number(123.4)))
        #expect(point(.bcd16).encode(.unsigned(1234)) == [0x1234])
    }

    @Test("u32/i32 counters wrap as the device's register does: 0xFFFFFFFF then 0")
    func counterWrap() {
        #expect(point(.u32).reading([0xFFFF, 0xFFFF]) == .success(.unsigned(4_294_967_295)))
        #expect(point(.u32).reading([0, 0]) == .success(.unsigned(0)))
        #expect(point(.i32).reading([0x7FFF, 0xFFFF]) == .success(.integer(2_147_483_647)))
        #expect(point(.i32).reading([0x8000, 0]) == .success(.integer(-2_147_483_648)))
    }

    @Test("16 flags of one register plus 4 other points are one request of 5 registers")
    func flagsInOneRequest() {
        var points = (0...15).map {
            PointDefinition(name: "flag_\($0)", table: .holding, address: 0, type: .bit($0))
        }
        points += [
            PointDefinition(name: "hi", table: .holding, address: 1, type: .u8(.high)),
            PointDefinition(name: "lo", table: .holding, address: 1, type: .i8(.low)),
            PointDefinition(name: "volts", table: .holding, address: 2, type: .f16),
            PointDefinition(name: "odo", table: .holding, address: 3, type: .bcd32),
        ]
        let plan = ReadPlanner.plan(points, maxGap: 0)
        #expect(plan == [ReadRequest(table: .holding, address: 0, count: 5, pointIndices: Array(0..<20))])
        // Apart from the others, the static ones.
        points[19].pollOnce = true
        #expect(ReadPlanner.plan(points, maxGap: 0) { !$0.pollOnce }.map(\.count) == [3])
        #expect(ReadPlanner.plan(points, maxGap: 0) { $0.pollOnce }.map(\.pointIndices) == [[19]])
    }

    @Test("profiles: bit needs bit, u8/i8 need byte; the keys belong to their types; orders are checked")
    func profileKeys() throws {
        let good = try profile(
            """
            [[point]]
            name = "door"
            table = "input"
            address = 4
            type = "bit"
            bit = 12
            [[point]]
            name = "code"
            table = "holding"
            address = 5
            type = "i8"
            byte = "high"
            [[point]]
            name = "serial"
            table = "input"
            address = 100
            type = "bcd32"
            order = "CDAB"
            poll = "once"
            """)
        #expect(good.points.map(\.type) == [.bit(12), .i8(.high), .bcd32])
        #expect(good.points.map(\.pollOnce) == [false, false, true])
        let cases: [(String, String)] = [
            ("type = \"bit\"", "needs bit = 0..15"),
            ("type = \"bit\"\nbit = 16", "bit"),
            ("type = \"u8\"", "needs byte = \"high\" or \"low\""),
            ("type = \"i8\"\nbyte = \"middle\"", "byte"),
            ("type = \"u16\"\nbit = 3", "bit applies to type = \"bit\" only"),
            ("type = \"u16\"\nbyte = \"low\"", "byte applies to type = \"u8\" or \"i8\" only"),
            ("type = \"f16\"\norder = \"CDAB\"", "has no meaning for f16"),
            ("type = \"bit\"\nbit = 1\norder = \"BADC\"", "has no meaning for bit"),
            ("type = \"u16\"\npoll = \"once\"\nalarm_above = 3.0", "deadband and alarms do not apply"),
            ("type = \"u16\"\npoll = \"sometimes\"", "poll"),
        ]
        for (keys, message) in cases {
            do {
                _ = try profile("[[point]]\nname = \"p\"\ntable = \"holding\"\naddress = 0\n" + keys)
                Issue.record("accepted: \(keys)")
            } catch {
                #expect(error.problems.contains { $0.message.contains(message) }, "\(keys): \(error.problems)")
            }
        }
        do {
            _ = try profile("[[point]]\nname = \"p\"\ntable = \"coil\"\naddress = 0\ntype = \"bit\"\nbit = 0")
            Issue.record("a bit point on a coil was accepted")
        } catch {
            #expect(error.problems.contains { $0.message.contains("must be \"bool\"") })
        }
    }

    @Test("buses: rtu-over-tcp, ascii (7 data bits by default), ascii-over-tcp; busy_retries and busy_retry_ms")
    func transports() throws {
        func config(_ bus: String, unit: Int = 1) throws(ConfigErrors) -> GatewayConfig {
            try ConfigLoader(files: MemoryFiles(files: ["profiles/axle.toml": axleProfile])).parse(
                """
                [gateway]
                id = "g"
                state_dir = "/tmp/x"
                profile_path = ["profiles"]
                [upstream]
                url = "none"
                [[bus]]
                name = "b"
                \(bus)
                [[device]]
                name = "d"
                bus = "b"
                unit = \(unit)
                profile = "axle"
                """, file: "g.toml")
        }
        let overTCP = try config("transport = \"rtu-over-tcp\"\nhost = \"10.0.0.5\"\nport = 4001\nbusy_retries = 5")
        #expect(overTCP.buses[0].transport == .rtuOverTCP(host: "10.0.0.5", port: 4001))
        #expect(overTCP.buses[0].busyRetries == 5 && overTCP.buses[0].busyRetryMs == 200)
        let ascii = try config("transport = \"ascii\"\ndevice = \"/dev/ttyS2\"\nbusy_retry_ms = 50")
        #expect(
            ascii.buses[0].transport
                == .ascii(device: "/dev/ttyS2", baud: 19200, parity: .even, dataBits: 7, stopBits: 1))
        #expect(ascii.buses[0].busyRetryMs == 50)
        let asciiTCP = try config("transport = \"ascii-over-tcp\"\nhost = \"h\"")
        #expect(asciiTCP.buses[0].transport == .asciiOverTCP(host: "h", port: 502))
        for (bus, message) in [
            ("transport = \"rtu-over-tcp\"\nhost = \"h\"\nbaud = 9600", "baud belongs to a serial bus"),
            ("transport = \"ascii\"\ndevice = \"/dev/x\"\nport = 5", "port belongs to a tcp bus"),
        ] {
            do {
                _ = try config(bus)
                Issue.record("accepted: \(bus)")
            } catch {
                #expect(error.problems.contains { $0.message.contains(message) }, "\(error.problems)")
            }
        }
        do {
            _ = try config("transport = \"rtu-over-tcp\"\nhost = \"h\"", unit: 250)
            Issue.record("unit 250 accepted on rtu-over-tcp")
        } catch {
            #expect(error.problems.contains { $0.message.contains("1...247") })
        }
    }
}
