import Testing

@testable import RailgateCore

/// The poll path's shortcuts (scale issue) give exactly what the plain code gave.
@Suite("Hot path equivalence")
struct HotPathTests {
    /// A small deterministic generator (SplitMix64).
    struct Generator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    @Test("f32 widened through its shortest decimal: the fast path equals strtod, bit for bit")
    func widenMatchesStrtod() {
        var generator = Generator(state: 7)
        var floats: [Float] = [
            0, -0, 1, -1, 0.1, 123.456, 41.5, 1e-7, 1e-30, 3.4028235e38, .leastNormalMagnitude,
            .leastNonzeroMagnitude, 16_777_216, 0.3333333, 5.0, 2.5e10, -9.87654e-5,
        ]
        for _ in 0..<200_000 { floats.append(Float(bitPattern: UInt32(truncatingIfNeeded: generator.next()))) }
        // Values as sensors give them: a few decimals in everyday ranges.
        for index in 0..<200_000 {
            floats.append(
                Float(Double(Int64(generator.next() % 2_000_000) - 1_000_000) / [1, 10, 100, 1000][index % 4]))
        }
        var checked = 0
        var mismatches: [Float] = []
        for value in floats where value.isFinite {
            let expected = Double(value.description)!
            let widened = RegisterCodec.widen(value)
            if widened.bitPattern != expected.bitPattern { mismatches.append(value) }
            checked += 1
        }
        #expect(checked > 390_000)
        #expect(mismatches.isEmpty, "first mismatches: \(mismatches.prefix(5).map { $0.bitPattern })")
        #expect(RegisterCodec.widen(123.456) == 123.456)
        #expect(RegisterCodec.widen(.infinity) == .infinity)
        #expect(RegisterCodec.widen(.nan).isNaN)
    }

    @Test("Decimal fast path: what it takes and what it leaves to strtod")
    func exactDecimal() {
        func parse(_ text: String) -> Double? {
            var text = text
            return text.withUTF8 { RegisterCodec.exactDecimal($0) }
        }
        #expect(parse("41.5") == 41.5)
        #expect(parse("-0.001") == -0.001)
        #expect(parse("1e-05") == 1e-05)
        #expect(parse("2.5e+10") == 2.5e10)
        #expect(parse("-0.0")?.sign == .minus)
        #expect(parse("1e-30") == nil)  // beyond 10^22: strtod
        #expect(parse("1234567890123456") == nil)  // 16 digits: strtod
        #expect(parse("") == nil)
        #expect(parse("1.2.3") == nil)
        #expect(parse("1e") == nil)
        #expect(parse("nan") == nil)
    }

    @Test("Raw patterns of 2- and 4-register types in every word order equal the byte-wise form")
    func rawPatternMatchesBytes() {
        var generator = Generator(state: 11)
        for _ in 0..<2000 {
            let registers = (0..<4).map { _ in UInt16(truncatingIfNeeded: generator.next()) }
            for order in [WordOrder.abcd, .cdab, .badc, .dcba] {
                for (type, count) in [(ValueType.u32, 2), (.f32, 2), (.u64, 4), (.f64, 4)] {
                    let slice = registers[0..<count]
                    let expected = order.bigEndianBytes(from: slice).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    #expect(RegisterCodec.rawPattern(slice, as: type, order: order) == expected)
                }
            }
        }
        // 0x42F6E979 is 123.456 as f32; CDAB sends the low word first.
        #expect(RegisterCodec.rawPattern([0xE979, 0x42F6], as: .f32, order: .cdab) == 0x42F6_E979)
        #expect(RegisterCodec.rawPattern([0xF642, 0x79E9], as: .f32, order: .badc) == 0x42F6_E979)
        #expect(RegisterCodec.rawPattern([0x79E9, 0xF642], as: .f32, order: .dcba) == 0x42F6_E979)
    }

    @Test("A profile without deadbands or alarms passes samples through unchanged; empty ones are dropped")
    func edgeFilterPassThrough() {
        let profile = DeviceProfile(
            model: "block",
            points: (0..<3).map { PointDefinition(name: "v\($0)", table: .holding, address: 2 * $0, type: .f32) })
        var filter = EdgeFilter(profile: profile)
        let sample = Record(
            timestamp: Timestamp(millisecondsSinceEpoch: 1_795_910_400_000), source: "dev-1",
            body: .sample(values: [("v0", .number(1.5)), ("v1", .number(1.5))], errors: [("v2", .timeout)]))
        for now in [0, 1, 2] as [Int64] {
            let (kept, events) = filter.process(sample, nowMs: now)
            #expect(kept == sample)
            #expect(events.isEmpty)
        }
        let empty = Record(timestamp: sample.timestamp, source: "dev-1", body: .sample(values: [], errors: []))
        #expect(filter.process(empty, nowMs: 3).sample == nil)
        #expect(filter.restore([.init(point: "v0", side: .above, threshold: 1, hysteresis: 0)]).count == 1)
    }
}
