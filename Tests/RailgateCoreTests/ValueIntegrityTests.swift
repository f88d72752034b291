import Testing

@testable import RailgateCore

/// A register holding two bytes, the first sent first on the wire of a high-byte-first device.
private func word(_ first: UInt8, _ second: UInt8) -> UInt16 { UInt16(first) << 8 | UInt16(second) }

/// Issue 9, the value side: no NaN, infinity or "no sensor" sentinel ever goes upstream as a
/// value; strings read as devices send them; request sizes within what a device serves.
@Suite("Never a wrong value")
struct ValueIntegrityTests {
    // MARK: strings

    @Test("string:4 low byte first with 0xFF padding reads clean with BADC (and DCBA)")
    func lowByteFirstWithFFPadding() {
        // "AX-4-K" low byte first, then 0xFF padding: registers 0x5841 0x342D 0x4B2D 0xFFFF.
        let registers: [UInt16] = [0x5841, 0x342D, 0x4B2D, 0xFFFF]
        #expect(RegisterCodec.raw(registers, as: .string(registers: 4), order: .badc) == .text("AX-4-K"))
        #expect(RegisterCodec.raw(registers, as: .string(registers: 4), order: .dcba) == .text("AX-4-K"))
        // Read high byte first, the same registers are the scrambled text the issue saw (Latin-1 ÿ at
        // the end is padding and goes; no U+FFFD anywhere).
        let scrambled = RegisterCodec.raw(registers, as: .string(registers: 4), order: .abcd)
        #expect(scrambled == .text("XA4-K-"))
        #expect(!scrambled.description.unicodeScalars.contains("\u{FFFD}"))
    }

    @Test(
        "strings are cut at the first NUL; trailing spaces, NULs and 0xFF dropped",
        arguments: [
            ([word(0x41, 0x42), word(0x00, 0x43), word(0x44, 0x45)], "AB"),  // NUL then garbage after it
            ([word(0x41, 0x42), word(0x20, 0x20), word(0x20, 0x20)], "AB"),
            ([word(0x41, 0x42), word(0x43, 0xFF), word(0xFF, 0xFF)], "ABC"),
            ([word(0x41, 0x20), word(0x42, 0x20), word(0xFF, 0x00)], "A B"),
            ([word(0x00, 0x41), word(0x42, 0x43), word(0x44, 0x45)], ""),
            ([word(0xFF, 0xFF), word(0xFF, 0xFF), word(0xFF, 0xFF)], ""),
            ([word(0x20, 0x41), word(0x42, 0x43), word(0x44, 0x45)], " ABCDE"),  // leading space kept
        ])
    func padding(_ registers: [UInt16], _ expected: String) {
        #expect(RegisterCodec.raw(registers, as: .string(registers: 3), order: .abcd) == .text(expected))
        let swapped = registers.map(\.byteSwapped)
        #expect(RegisterCodec.raw(swapped, as: .string(registers: 3), order: .badc) == .text(expected))
    }

    @Test("valid UTF-8 passes as UTF-8; anything else reads as Latin-1, never as U+FFFD")
    func encodings() {
        // "Wärme" in UTF-8: 57 C3 A4 72 6D 65.
        let utf8: [UInt16] = [word(0x57, 0xC3), word(0xA4, 0x72), word(0x6D, 0x65)]
        #expect(RegisterCodec.raw(utf8, as: .string(registers: 3), order: .abcd) == .text("Wärme"))
        // "Wärme" in Latin-1: 57 E4 72 6D 65, NUL padded.
        let latin1: [UInt16] = [word(0x57, 0xE4), word(0x72, 0x6D), word(0x65, 0x00)]
        #expect(RegisterCodec.raw(latin1, as: .string(registers: 3), order: .abcd) == .text("Wärme"))
        // A lone continuation byte and a control byte: each byte one Latin-1 character.
        let junk: [UInt16] = [word(0x80, 0x41), word(0x01, 0xC0)]
        let text = RegisterCodec.raw(junk, as: .string(registers: 2), order: .abcd).description
        #expect(text.unicodeScalars.map(\.value) == [0x80, 0x41, 0x01, 0xC0])
        // And upstream it is valid JSON with the control character escaped.
        let record = Record(
            timestamp: Timestamp(millisecondsSinceEpoch: 0), source: "d",
            body: .sample(values: [("s", .text(text))], errors: []))
        #expect(record.text(seq: nil).contains(#""values":{"s":"\#u{80}A\u0001\#u{C0}"}"#))
    }

    @Test("the simulator's string encoding follows the byte order", arguments: [WordOrder.abcd, .badc, .dcba])
    func stringRoundTrip(_ order: WordOrder) {
        let point = PointDefinition(name: "s", table: .holding, address: 0, type: .string(registers: 4), order: order)
        let registers = point.encode(.text("AX-4-K"))
        #expect(point.decode(registers) == .text("AX-4-K"))
        #expect(registers[0] == (order == .abcd ? 0x4158 : 0x5841))
    }

    // MARK: non-finite values and sentinels

    func f32(_ value: Float, _ order: WordOrder = .abcd) -> [UInt16] {
        RegisterCodec.registers(for: .number(Double(value)), as: .f32, order: order)
    }

    @Test("f32 and f64 NaN and infinities are errors, not values", arguments: WordOrder.allCases)
    func nonFinite(_ order: WordOrder) {
        let f32Point = PointDefinition(name: "t", table: .holding, address: 0, type: .f32, order: order)
        #expect(f32Point.reading(f32(.nan, order)) == .failure(.nan))
        #expect(f32Point.reading(f32(.infinity, order)) == .failure(.inf))
        #expect(f32Point.reading(f32(-.infinity, order)) == .failure(.inf))
        #expect(f32Point.reading(f32(21.5, order)) == .success(.number(21.5)))
        // A signalling NaN with payload (0x7F800001) and a negative quiet NaN (0xFFC00000).
        let abcdSNaN: [UInt16] = [0x7F80, 0x0001]
        let signalling = order.registers(fromBigEndian: WordOrder.abcd.bigEndianBytes(from: abcdSNaN))
        #expect(f32Point.reading(signalling) == .failure(.nan))
        let negativeNaN = order.registers(fromBigEndian: [0xFF, 0xC0, 0, 0])
        #expect(f32Point.reading(negativeNaN) == .failure(.nan))

        let f64Point = PointDefinition(name: "t", table: .holding, address: 0, type: .f64, order: order)
        func f64(_ value: Double) -> [UInt16] { RegisterCodec.registers(for: .number(value), as: .f64, order: order) }
        #expect(f64Point.reading(f64(.nan)) == .failure(.nan))
        #expect(f64Point.reading(f64(.infinity)) == .failure(.inf))
        #expect(f64Point.reading(f64(-.infinity)) == .failure(.inf))
        #expect(f64Point.reading(f64(-123.456)) == .success(.number(-123.456)))
    }

    @Test("a scaled value that overflows to infinity is an error")
    func scaledOverflow() {
        let point = PointDefinition(name: "t", table: .holding, address: 0, type: .f64, scale: 1e300)
        #expect(point.reading(RegisterCodec.registers(for: .number(1e300), as: .f64, order: .abcd)) == .failure(.inf))
    }

    @Test("invalid sentinels compare the raw pattern, before scale and offset")
    func sentinels() {
        let i16 = PointDefinition(
            name: "t", table: .input, address: 0, type: .i16, scale: 0.1, invalid: [0x7FFF, 0x8000])
        #expect(i16.reading([0x7FFF]) == .failure(.invalid))
        #expect(i16.reading([0x8000]) == .failure(.invalid))
        #expect(i16.reading([0x7FFE]) == .success(.number(3276.6)))
        #expect(i16.reading([UInt16(bitPattern: -183)]) == .success(.number(-18.3)))

        let u16 = PointDefinition(name: "t", table: .holding, address: 0, type: .u16, invalid: [0xFFFF])
        #expect(u16.reading([0xFFFF]) == .failure(.invalid))
        #expect(u16.reading([0xFFFE]) == .success(.unsigned(0xFFFE)))
        // Low byte first: the sentinel is the value as read, not the register on the wire.
        let swapped = PointDefinition(
            name: "t", table: .holding, address: 0, type: .u16, order: .badc, invalid: [0x7FFF])
        #expect(swapped.reading([0xFF7F]) == .failure(.invalid))
        #expect(swapped.reading([0x7FFF]) == .success(.unsigned(0xFF7F)))

        // 32 bits: the pattern after word order.
        for order in WordOrder.allCases {
            let u32 = PointDefinition(
                name: "t", table: .holding, address: 0, type: .u32, order: order, invalid: [0xFFFF_FFFF, 0x8000_0000])
            let sentinel = order.registers(fromBigEndian: [0x80, 0, 0, 0])
            #expect(u32.reading(sentinel) == .failure(.invalid), "\(order)")
            #expect(u32.reading([0xFFFF, 0xFFFF]) == .failure(.invalid))
            #expect(u32.reading(order.registers(fromBigEndian: [0, 0, 0, 0x80])) == .success(.unsigned(0x80)))
        }
        // A float sentinel (some meters send -9999.0 for "no reading"): 0xC61C3C00.
        let meter = PointDefinition(name: "t", table: .holding, address: 0, type: .f32, invalid: [0xC61C_3C00])
        #expect(meter.reading(f32(-9999)) == .failure(.invalid))
        #expect(meter.reading(f32(-9998)) == .success(.number(-9998)))
    }

    // MARK: the deadband after a gap

    @Test("NaN for 3 s then 21.5 with deadband 0.5: 21.5 goes out at once, NaN never as a value")
    func deadbandAfterNaN() {
        let point = PointDefinition(name: "temp", table: .holding, address: 0, type: .f32, deadband: 0.5)
        var filter = EdgeFilter(profile: DeviceProfile(model: "m", points: [point]))
        var sent: [String] = []
        // 21.4, NaN for three polls (or +Inf, -Inf), then 21.5: within the deadband of 21.4.
        for gap in [Float.nan, .infinity, -.infinity] {
            for (step, value) in [21.4, gap, gap, gap, 21.5, 21.6].enumerated() {
                let sample: Record.Body
                switch point.reading(f32(value)) {
                case .success(let decoded): sample = .sample(values: [("temp", decoded)], errors: [])
                case .failure(let reason): sample = .sample(values: [], errors: [("temp", reason)])
                }
                let record = Record(timestamp: Timestamp(millisecondsSinceEpoch: 0), source: "d", body: sample)
                guard let out = filter.process(record, nowMs: Int64(step) * 1000).sample else {
                    sent.append("-")
                    continue
                }
                sent.append(out.text(seq: nil).split(separator: "\"source\":\"d\",").last.map(String.init) ?? "")
            }
            #expect(
                sent == [
                    #""values":{"temp":21.4}}"#, "\"errors\":{\"temp\":\"\(gap.isNaN ? "nan" : "inf")\"}}",
                    "\"errors\":{\"temp\":\"\(gap.isNaN ? "nan" : "inf")\"}}",
                    "\"errors\":{\"temp\":\"\(gap.isNaN ? "nan" : "inf")\"}}", #""values":{"temp":21.5}}"#, "-",
                ], "\(gap)")
            #expect(!sent.joined().contains("null"))
            sent = []
            filter = EdgeFilter(profile: DeviceProfile(model: "m", points: [point]))
        }
    }

    @Test("a sentinel, then a good value within the deadband: the good value goes out at once")
    func deadbandAfterSentinel() {
        let point = PointDefinition(
            name: "temp", table: .input, address: 0, type: .i16, scale: 0.1, deadband: 0.5, invalid: [0x7FFF])
        var filter = EdgeFilter(profile: DeviceProfile(model: "m", points: [point]))
        func step(_ raw: UInt16, _ at: Int64) -> Record? {
            let body: Record.Body
            switch point.reading([raw]) {
            case .success(let value): body = .sample(values: [("temp", value)], errors: [])
            case .failure(let reason): body = .sample(values: [], errors: [("temp", reason)])
            }
            return filter.process(
                Record(timestamp: .init(millisecondsSinceEpoch: 0), source: "d", body: body), nowMs: at
            )
            .sample
        }
        #expect(step(214, 0)?.body == .sample(values: [("temp", .number(21.4))], errors: []))
        #expect(step(0x7FFF, 1000)?.body == .sample(values: [], errors: [("temp", .invalid)]))
        #expect(step(215, 2000)?.body == .sample(values: [("temp", .number(21.5))], errors: []))
        #expect(step(216, 3000) == nil, "the deadband holds again after the first good value")
    }

    // MARK: request limits

    func registers(_ count: Int, _ table: RegisterTable = .holding) -> [PointDefinition] {
        (0..<count).map {
            PointDefinition(
                name: "p\($0)", table: table, address: $0, type: table.holdsBits ? .bool : .u16)
        }
    }

    @Test("60 holding registers with max_registers_per_request 50: two requests")
    func registerLimit() {
        let plan = ReadPlanner.plan(registers(60), maxGap: 8, limits: RequestLimits(registers: 50))
        #expect(plan.map(\.count) == [50, 10])
        #expect(plan.map(\.address) == [0, 50])
        #expect(plan.flatMap(\.pointIndices) == Array(0..<60))
        #expect(ReadPlanner.plan(registers(60), maxGap: 8).map(\.count) == [60])
        // A 4-register value is never cut: 13 f64 from 0, limit 10 -> 8 + 8 + ... registers.
        let f64s = (0..<13).map { PointDefinition(name: "f\($0)", table: .input, address: $0 * 4, type: .f64) }
        let plan64 = ReadPlanner.plan(f64s, maxGap: 8, limits: RequestLimits(registers: 10))
        #expect(plan64.allSatisfy { $0.count <= 10 && $0.count % 4 == 0 })
        #expect(plan64.count == 7)
    }

    @Test("bits: max_bits_per_request splits coils and discrete inputs, not registers")
    func bitLimit() {
        let points = registers(100, .coil) + registers(30, .discrete) + registers(60)
        let plan = ReadPlanner.plan(points, maxGap: 8, limits: RequestLimits(bits: 40))
        #expect(plan.filter { $0.table == .coil }.map(\.count) == [40, 40, 20])
        #expect(plan.filter { $0.table == .discrete }.map(\.count) == [30])
        #expect(plan.filter { $0.table == .holding }.map(\.count) == [60])
    }

    @Test("halving a request cuts near the middle on a point boundary")
    func halves() {
        let points = registers(60)
        let request = ReadPlanner.plan(points, maxGap: 8)[0]
        let (low, high) = request.halves(of: points)!
        #expect((low.address, low.count, high.address, high.count) == (0, 30, 30, 30))
        let wide =
            [PointDefinition(name: "a", table: .input, address: 0, type: .string(registers: 20))]
            + [PointDefinition(name: "b", table: .input, address: 20, type: .u16)]
        let request2 = ReadPlanner.plan(wide, maxGap: 8)[0]
        let (first, second) = request2.halves(of: wide)!
        #expect((first.count, second.address, second.count) == (20, 20, 1))
        #expect(first.halves(of: wide) == nil)
    }

    // MARK: checking profiles and devices

    func problems(_ profile: String) -> [String] {
        do {
            _ = try DeviceProfile.parse(profile, file: "p.toml")
            return []
        } catch {
            return error.problems.map(\.description)
        }
    }

    @Test("check refuses an order a type cannot have, with file:line")
    func ordersPerType() {
        func profile(_ type: String, _ order: String, table: String = "holding") -> String {
            "model = \"m\"\n[[point]]\nname = \"p\"\ntable = \"\(table)\"\naddress = 0\ntype = \"\(type)\"\norder = \"\(order)\"\n"
        }
        #expect(
            problems(profile("u16", "CDAB")) == [
                #"p.toml:7: order = "CDAB" has no meaning for u16 (it takes ABCD, BADC, DCBA)"#
            ])
        #expect(problems(profile("i16", "CDAB")).count == 1)
        #expect(
            problems(profile("bool", "CDAB")) == [#"p.toml:7: order = "CDAB" has no meaning for bool (it takes ABCD)"#])
        #expect(problems(profile("bool", "BADC", table: "coil")).count == 1)
        #expect(
            problems(profile("string:4", "CDAB")).first?.hasPrefix(
                "p.toml:7: order = \"CDAB\" has no meaning for string:4") == true)
        for accepted in [
            ("u16", "BADC"), ("i16", "DCBA"), ("string:4", "BADC"), ("string:4", "DCBA"), ("f32", "CDAB"),
            ("u64", "DCBA"), ("bool", "ABCD"),
        ] {
            #expect(problems(profile(accepted.0, accepted.1)) == [], "\(accepted)")
        }
    }

    @Test("invalid sentinels: hex and signed values accepted, out of range refused with its line")
    func sentinelValidation() throws {
        let good = """
            model = "m"
            [[point]]
            name = "t"
            table = "input"
            address = 0
            type = "i16"
            invalid = [0x7FFF, -32768, 0xFFFF]
            [[point]]
            name = "f"
            table = "input"
            address = 1
            type = "f32"
            invalid = [0x7FC00000]
            [[point]]
            name = "big"
            table = "input"
            address = 3
            type = "u64"
            invalid = [-1]
            """
        let profile = try DeviceProfile.parse(good, file: "p.toml")
        #expect(profile.points[0].invalid == [0x7FFF, 0x8000, 0xFFFF])
        #expect(profile.points[1].invalid == [0x7FC0_0000])
        #expect(profile.points[2].invalid == [.max])

        let bad = """
            model = "m"
            [[point]]
            name = "t"
            table = "input"
            address = 0
            type = "u16"
            invalid = [
              0x7FFF,
              0x10000,
              -1,
            ]
            [[point]]
            name = "s"
            table = "input"
            address = 1
            type = "string:2"
            invalid = [0]
            [[point]]
            name = "i"
            table = "input"
            address = 3
            type = "i32"
            invalid = [-2147483649, "x"]
            """
        let found = problems(bad)
        #expect(found.contains("p.toml:9: invalid value 65536 does not fit u16's raw 16 bits (0...0xFFFF)"))
        #expect(found.contains("p.toml:10: invalid value -1 does not fit u16's raw 16 bits (0...0xFFFF)"))
        #expect(found.contains("p.toml:17: invalid applies to number types on registers only, not string:2"))
        #expect(found.contains("p.toml:23: invalid must hold integers only, found a string"))
        #expect(found.count == 4, "\(found)")
        let i32 = problems(bad.replacing(", \"x\"", with: ""))
        #expect(
            i32.contains(
                "p.toml:23: invalid value -2147483649 does not fit i32's raw 32 bits (-2147483648...0xFFFFFFFF)"))
    }

    @Test("request limits: ranges, and a point larger than the limit, with file:line")
    func limitValidation() throws {
        let profile = """
            model = "m"
            max_registers_per_request = 4
            max_bits_per_request = 2001
            [[point]]
            name = "serial"
            table = "holding"
            address = 0
            type = "string:8"
            """
        #expect(
            problems(profile) == [
                "p.toml:3: max_bits_per_request = 2001 is out of range (1...2000)",
                "p.toml:2: max_registers_per_request = 4 is less than point 'serial' needs (string:8: 8 registers in one read)",
            ])
        #expect(
            problems(profile.replacing("= 4", with: "= 126")).first
                == "p.toml:2: max_registers_per_request = 126 is out of range (1...125)")

        let config = """
            [gateway]
            id = "gw"
            state_dir = "/tmp/rg"
            profile_path = ["profiles"]
            [upstream]
            url = "none"
            [[bus]]
            name = "line"
            transport = "tcp"
            host = "127.0.0.1"
            [[device]]
            name = "d1"
            bus = "line"
            unit = 1
            profile = "serial"
            max_registers_per_request = 7
            max_bits_per_request = 0
            """
        let serial =
            "model = \"m\"\n[[point]]\nname = \"serial\"\ntable = \"holding\"\naddress = 0\ntype = \"string:8\"\n"
        let loader = ConfigLoader(files: MemoryFiles(files: ["profiles/serial.toml": serial]))
        do {
            _ = try loader.parse(config, file: "gw.toml")
            Issue.record("limits out of range were accepted")
        } catch {
            #expect(
                error.problems.map(\.description) == [
                    "gw.toml:16: max_registers_per_request = 7 is less than point 'serial' of profile 'serial' needs (string:8: 8 registers in one read)",
                    "gw.toml:17: max_bits_per_request = 0 is out of range (1...2000)",
                ])
        }
        let fine = config.replacing("= 7", with: "= 50").replacing(
            "max_bits_per_request = 0", with: "max_bits_per_request = 64")
        let loaded = try loader.parse(fine, file: "gw.toml")
        #expect(loaded.devices[0].requestLimits == RequestLimits(registers: 50, bits: 64))
    }

    @Test("the device's limits override the profile's, which override the protocol's")
    func limitPrecedence() throws {
        let profile = try DeviceProfile.parse(
            "model = \"m\"\nmax_registers_per_request = 50\n[[point]]\nname = \"a\"\ntable = \"holding\"\naddress = 0\ntype = \"u16\"\n",
            file: "p.toml")
        var device = DeviceConfig(
            name: "d", bus: "b", unit: 1, profileName: "p", profile: profile, pollIntervalMs: 1000)
        #expect(device.requestLimits == RequestLimits(registers: 50, bits: 2000))
        device.maxRegistersPerRequest = 20
        device.maxBitsPerRequest = 100
        #expect(device.requestLimits == RequestLimits(registers: 20, bits: 100))
        device.profile.maxRegistersPerRequest = nil
        device.maxRegistersPerRequest = nil
        #expect(device.requestLimits == RequestLimits(registers: 125, bits: 100))
    }
}
