import RailgateCore
import Testing

/// The `compact/1` payload (`[upstream] payload = "compact"`): decoding gives back the plain
/// batch byte for byte, whatever the records hold.
@Suite("Compact payload")
struct CompactBatchTests {
    static let base: Int64 = 1_795_910_400_123

    static func sample(
        _ seq: UInt64, at offset: Int64, _ source: String = "axlebox-1", values: [(String, PointValue)] = [],
        errors: [(String, ReadFailure)] = []
    ) -> (seq: UInt64, bytes: [UInt8]) {
        let record = Record(
            timestamp: Timestamp(millisecondsSinceEpoch: base + offset), source: source,
            body: .sample(values: values, errors: errors))
        return (seq, record.encoded(seq: seq))
    }

    static func event(_ seq: UInt64, at offset: Int64) -> (seq: UInt64, bytes: [UInt8]) {
        let record = Record(
            timestamp: Timestamp(millisecondsSinceEpoch: base + offset), source: "axlebox-1",
            body: .event(
                name: "alarm_above",
                fields: [("point", .string("bearing_temp_3")), ("value", .number(93.1)), ("threshold", .number(90))]),
            priority: .alarm)
        return (seq, record.encoded(seq: seq))
    }

    /// Encodes, decodes and compares with the plain batch; returns the compact payload.
    @discardableResult
    static func roundTrip(
        _ records: [(seq: UInt64, bytes: [UInt8])], gateway: String = "KZ-WAG-00042",
        pointOrder: [String: [String]] = [:]
    ) throws -> [UInt8] {
        var encoder = CompactBatchEncoder(gatewayID: gateway, pointOrder: pointOrder)
        let compact = encoder.payload(of: records)
        let plain = BatchBuilder(gatewayID: gateway).batch(of: records).payload
        let decoded = try CompactBatch.decode(compact)
        #expect(
            decoded == plain,
            "compact \(String(decoding: compact, as: UTF8.self))\ndecoded \(String(decoding: decoded, as: UTF8.self))\nplain   \(String(decoding: plain, as: UTF8.self))"
        )
        // The compact payload is JSON a general reader takes.
        _ = try JSONReader.parse(String(decoding: compact, as: UTF8.self))
        return compact
    }

    @Test("every value type, every error reason, events, gaps in seq and time going back: decoded byte for byte")
    func everyKind() throws {
        let records = [
            Self.sample(
                41, at: 0,
                values: [
                    ("i", .integer(-32768)), ("u", .unsigned(UInt64.max)), ("f", .number(0.30000000000000004)),
                    ("tiny", .number(1e-05)), ("huge", .number(1.7976931348623157e308)), ("neg0", .number(-0.0)),
                    ("scaled", .number(41.5)), ("flag", .bool(true)), ("off", .bool(false)),
                    ("text", .text("AX4 \"north\" \\ ñ\u{1}")), ("empty", .text("")),
                ]),
            Self.sample(
                42, at: 1000,
                errors: [
                    ("i", .timeout), ("u", .exception(2)), ("f", .crc), ("tiny", .io), ("huge", .nan), ("neg0", .inf),
                    ("scaled", .invalid), ("flag", .busy),
                ]),
            Self.sample(43, at: 2001, values: [("f", .number(12.25))], errors: [("i", .timeout), ("text", .io)]),
            Self.event(44, at: 2002),
            Self.sample(45, at: 2003),
            // seq 46-49 sent ahead (not in this batch), a clock set back by 5 s.
            Self.sample(50, at: -3000, values: [("flag", .bool(false)), ("text", .text("x"))]),
            Self.sample(51, at: -2000, "brake-2", values: [("load", .number(1234.5))], errors: [("temp", .timeout)]),
            Self.sample(52, at: -1000, "we\"ird\\src", values: [("p\"q", .integer(1))]),
        ]
        let compact = try Self.roundTrip(records)
        let text = String(decoding: compact, as: UTF8.self)
        #expect(text.hasPrefix(#"{"gateway":"KZ-WAG-00042","format":"compact/1","sources":[["axlebox-1","i","u","#))
        // The first row carries seq and time in full, the next ones differences.
        #expect(text.contains(#""records":[[41,1795910400123,0,-32768,18446744073709551615,0.30000000000000004,"#))
        #expect(
            text.contains(
                #"[1,1000,0,["timeout"],["exception:2"],["crc"],["io"],["nan"],["inf"],["invalid"],["busy"]]"#))
        #expect(text.contains(#"[1,1001,0,["timeout"],null,12.25"#))
        #expect(text.contains(#""kind":"event""#))
        #expect(text.contains(#"[2,2,0]"#))
        #expect(text.contains(#"[5,-5003,0"#))
    }

    @Test("points a deadband left out, in changing subsets: slots in profile order, every record a row")
    func deadbandSubsets() throws {
        let names = (1...8).map { "bearing_temp_\($0)" }
        func values(_ indices: [Int]) -> [(String, PointValue)] {
            indices.map { (names[$0], .number(40 + Double($0))) }
        }
        let records = [
            Self.sample(1, at: 0, values: values([0, 3, 7])),
            Self.sample(2, at: 1000, values: values([0, 1, 2, 3])),
            Self.sample(3, at: 2000, values: values([5]), errors: [(names[4], .timeout)]),
            Self.sample(4, at: 3000, values: values(Array(0..<8))),
            Self.sample(5, at: 4000, values: values([6, 7])),
        ]
        let compact = String(
            decoding: try Self.roundTrip(records, pointOrder: ["axlebox-1": names, "other": ["x"]]), as: UTF8.self)
        // Without the profile's order the subsets still decode (some records kept plain).
        try Self.roundTrip(records)
        // One name list in profile order, no record kept plain.
        #expect(compact.contains("\"sources\":[[\"axlebox-1\",\(names.map { "\"\($0)\"" }.joined(separator: ","))]]"))
        #expect(!compact.contains("\"kind\""))
        #expect(compact.contains("[1,1000,0,null,null,null,null,[\"timeout\"],45.0]"))
        #expect(compact.contains("[1,1000,0,null,null,null,null,null,null,46.0,47.0]"))
    }

    @Test("records whose orders disagree, or that are mostly empty slots, stay plain objects and still decode")
    func fallbacks() throws {
        let many = (0..<60).map { "p\($0)" }
        let records = [
            Self.sample(1, at: 0, values: [("a", .integer(1)), ("b", .integer(2))]),
            Self.sample(2, at: 10, values: [("b", .integer(3)), ("a", .integer(4))]),
            Self.sample(3, at: 20, "wide", values: many.map { ($0, .integer(1)) }),
            Self.sample(4, at: 30, "wide", values: [("p59", .integer(2))]),
            Self.sample(5, at: 40, values: [("a", .integer(5))]),
            Self.sample(6, at: 50, "both", values: [("x", .integer(1)), ("y", .integer(2))], errors: [("y", .crc)]),
            Self.sample(7, at: 60, "both", values: [("x", .integer(1))], errors: [("y", .crc)]),
        ]
        let compact = String(decoding: try Self.roundTrip(records), as: UTF8.self)
        #expect(compact.contains(#"{"seq":6,"#), "a point both read and failed is kept plain")
        #expect(compact.contains(#"[2,20,2,1,["crc"]]"#), "a read point and a failed one share a row")
        #expect(compact.contains(#"{"seq":2,"#), "the record in the other order is kept plain")
        #expect(compact.contains(#"{"seq":4,"#), "the row of 59 nulls is kept plain")
        #expect(compact.contains(#"[2,20,0,5]"#), "the row base is the last row's, not the plain records'")
    }

    @Test("seeded random batches: values, errors, subsets, sources, gaps, events; each decodes byte for byte")
    func randomBatches() throws {
        var state: UInt64 = 0x5EED
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        let reasons: [ReadFailure] = [.timeout, .exception(4), .crc, .io, .nan, .inf, .invalid, .busy]
        // One encoder for all the batches (it keeps each source's names from batch to batch)
        // must give the bytes a fresh one gives, with and without profile ranks, the ranks of
        // one source against the order its records come in.
        let order = ["dev-0": (0..<12).map { "pt_\($0)" }, "dev-1": (0..<12).reversed().map { "pt_\($0)" }]
        var shared = CompactBatchEncoder(gatewayID: "KZ-WAG-00042")
        var sharedRanked = CompactBatchEncoder(gatewayID: "KZ-WAG-00042", pointOrder: order)
        for _ in 0..<300 {
            var records: [(seq: UInt64, bytes: [UInt8])] = []
            var seq = UInt64(next(1_000_000) + 1)
            var time: Int64 = Int64(next(1_000_000))
            for _ in 0..<(1 + next(40)) {
                seq += UInt64(1 + (next(5) == 0 ? next(10) : 0))
                time += Int64(next(3000)) - 500
                if next(10) == 0 {
                    records.append(Self.event(seq, at: time))
                    continue
                }
                var values: [(String, PointValue)] = []
                var errors: [(String, ReadFailure)] = []
                for point in 0..<(1 + next(12)) where next(3) > 0 {
                    let name = "pt_\(point)"
                    switch next(8) {
                    case 0: errors.append((name, reasons[next(reasons.count)]))
                    case 1: values.append((name, .bool(next(2) == 0)))
                    case 2: values.append((name, .text(String(repeating: "é\"", count: next(3)))))
                    case 3: values.append((name, .integer(Int64(next(200_000)) - 100_000)))
                    case 4: values.append((name, .unsigned(UInt64(next(Int.max)))))
                    default:
                        let bits = UInt64(next(Int.max)) << 1 | UInt64(next(2))
                        let number = Double(bitPattern: bits)
                        values.append((name, .number(number.isFinite ? number : Double(next(1000)) / 7)))
                    }
                }
                if next(4) == 0 { values.reverse() }
                records.append(Self.sample(seq, at: time, "dev-\(next(3))", values: values, errors: errors))
            }
            let fresh = try Self.roundTrip(records)
            #expect(shared.payload(of: records) == fresh, "an encoder's earlier batches changed a payload")
            var freshRanked = CompactBatchEncoder(gatewayID: "KZ-WAG-00042", pointOrder: order)
            let ranked = freshRanked.payload(of: records)
            #expect(sharedRanked.payload(of: records) == ranked, "earlier batches changed a ranked payload")
            #expect(
                try CompactBatch.decode(ranked) == BatchBuilder(gatewayID: "KZ-WAG-00042").batch(of: records).payload)
        }
    }

    @Test("payloads that are not compact/1 are refused with a reason")
    func refused() {
        for text in [
            #"{"gateway":"g","records":[]}"#, #"{"gateway":"g","format":"compact/2","sources":[],"records":[]}"#,
            #"{"gateway":"g","format":"compact/1","sources":[],"records":[[1,2,0]]}"#,
            #"{"gateway":"g","format":"compact/1","sources":[["s","a"]],"records":[[1,2,0,1,2]]}"#,
            #"{"gateway":"g","format":"compact/1","sources":[["s","a"]],"records":[[1,2,0,[1]]]}"#, "[",
        ] {
            #expect(throws: CompactBatchError.self, "\(text)") { try CompactBatch.decode(Array(text.utf8)) }
        }
    }

    @Test("damaged payloads (bytes changed, cut short) are refused or decoded, never a crash")
    func damaged() throws {
        var records: [(seq: UInt64, bytes: [UInt8])] = []
        for index in 1...20 {
            let values: [(String, PointValue)] = [
                ("a", .number(Double(index) / 3)), ("b", .bool(index % 2 == 0)), ("c", .text("x\(index)")),
            ]
            let errors: [(String, ReadFailure)] = index % 5 == 0 ? [("d", .timeout)] : []
            records.append(Self.sample(UInt64(index), at: Int64(index) * 1000, values: values, errors: errors))
        }
        var encoder = CompactBatchEncoder(gatewayID: "g")
        let payload = encoder.payload(of: records)
        var state: UInt64 = 99
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        let alphabet = Array(#"[]{},:"-0123456789e.null"#.utf8) + [0, 0xFF]
        var refused = 0
        for _ in 0..<3000 {
            var damaged = payload
            for _ in 0..<(1 + next(3)) { damaged[next(damaged.count)] = alphabet[next(alphabet.count)] }
            if next(4) == 0 { damaged.removeLast(next(damaged.count)) }
            do { _ = try CompactBatch.decode(damaged) } catch { refused += 1 }
        }
        #expect(refused > 1000)
        let huge = #"{"gateway":"g","format":"compact/1","sources":[["s"]],"records":[[1,9223372036854775807,0]]}"#
        #expect(throws: CompactBatchError.self) { try CompactBatch.decode(Array(huge.utf8)) }
    }

    @Test("the birth message carries the buffer's depth after started; none oldest when empty")
    func birthBufferDepth() throws {
        let birth = JSON.object([
            ("state", .string("online")), ("gateway", .string("g")), ("version", .string("0.1.0")),
            ("started", .string("2026-11-29T02:39:58Z")), ("sources", .object([])),
        ])
        let full = StatusMessage.withBuffer(birth, .init(records: 1234, oldestAgeSeconds: 3600))
        #expect(
            full.serialized
                == #"{"state":"online","gateway":"g","version":"0.1.0","started":"2026-11-29T02:39:58Z","buffer":{"records":1234,"oldest_age_s":3600},"sources":{}}"#
        )
        let empty = StatusMessage.withBuffer(full, .init(records: 0, oldestAgeSeconds: nil))
        #expect(empty["buffer"]?.serialized == #"{"records":0,"oldest_age_s":null}"#)
    }

    @Test("an empty batch and a batch of events only")
    func eventsOnly() throws {
        try Self.roundTrip([])
        let compact = String(decoding: try Self.roundTrip([Self.event(7, at: 0), Self.event(9, at: 5)]), as: UTF8.self)
        #expect(compact.contains(#""sources":[],"#))
    }
}
