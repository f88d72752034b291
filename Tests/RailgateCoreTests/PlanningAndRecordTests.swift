import Testing

@testable import RailgateCore

@Suite("Request planning")
struct ReadPlannerTests {
    func point(_ name: String, _ table: RegisterTable, _ address: Int, _ type: ValueType = .u16) -> PointDefinition {
        PointDefinition(name: name, table: table, address: address, type: type)
    }

    @Test("neighbours merge across small gaps, per table")
    func merging() {
        let points = [
            point("a", .input, 0), point("b", .input, 1), point("c", .input, 5, .f32),
            point("d", .input, 40), point("e", .holding, 0), point("f", .coil, 0, .bool), point("g", .coil, 7, .bool),
        ]
        let plan = ReadPlanner.plan(points, maxGap: 8)
        #expect(plan.map(\.table) == [.coil, .input, .input, .holding])
        #expect(plan[0].address == 0 && plan[0].count == 8)
        #expect(plan[1].address == 0 && plan[1].count == 7 && plan[1].pointIndices == [0, 1, 2])
        #expect(plan[2].address == 40 && plan[2].count == 1)
        #expect(ReadPlanner.plan(points, maxGap: 0).count == 6)
    }

    @Test("40 points in three clusters take three requests")
    func clusters() {
        let points =
            (0..<15).map { point("a\($0)", .holding, $0) } + (0..<15).map { point("b\($0)", .holding, 200 + $0 * 2) }
            + (0..<10).map { point("c\($0)", .holding, 1000 + $0, .u16) }
        #expect(ReadPlanner.plan(points, maxGap: 8).count == 3)
    }

    @Test("requests stay within 125 registers")
    func limit() {
        let points = (0..<100).map { point("p\($0)", .input, $0 * 2, .u32) }
        let plan = ReadPlanner.plan(points, maxGap: 8)
        #expect(plan.allSatisfy { $0.count <= 125 })
        #expect(plan.count == 2)
        #expect(plan.flatMap(\.pointIndices).sorted() == Array(0..<100))
    }
}

@Suite("Records and batches")
struct RecordTests {
    let time = Timestamp(millisecondsSinceEpoch: 1_795_910_400_123)  // 2026-11-29T00:00:00.123Z

    @Test("a sample record reads as in the contract")
    func sample() {
        let record = Record(
            timestamp: time, source: "axlebox-1",
            body: .sample(
                values: [("bearing_temp_1", .number(41.5)), ("door_open", .bool(false)), ("sn", .text("A\"B"))],
                errors: [("bearing_temp_3", .timeout), ("x", .exception(2))]))
        #expect(
            record.text(seq: 1042)
                == #"{"seq":1042,"ts":"2026-11-29T00:00:00.123Z","kind":"sample","source":"axlebox-1","values":{"bearing_temp_1":41.5,"door_open":false,"sn":"A\"B"},"errors":{"bearing_temp_3":"timeout","x":"exception:2"}}"#
        )
        let allFailed = Record(timestamp: time, source: "d", body: .sample(values: [], errors: [("p", .io)]))
        #expect(!allFailed.text(seq: nil).contains("values"))
    }

    @Test("an event record carries its fields and priority")
    func event() {
        let record = Record(
            timestamp: time, source: "axlebox-1",
            body: .event(
                name: "alarm_above", fields: [("point", .string("bearing_temp_3")), ("value", .number(93.1))]),
            priority: .alarm)
        #expect(
            record.text(seq: 7)
                == #"{"seq":7,"ts":"2026-11-29T00:00:00.123Z","kind":"event","source":"axlebox-1","event":"alarm_above","point":"bearing_temp_3","value":93.1,"priority":"alarm"}"#
        )
    }

    @Test("timestamps format and parse in UTC")
    func timestamps() {
        #expect(time.description == "2026-11-29T00:00:00.123Z")
        #expect(time.secondsDescription == "2026-11-29T00:00:00Z")
        #expect(Timestamp(millisecondsSinceEpoch: 0).description == "1970-01-01T00:00:00.000Z")
        #expect(Timestamp(millisecondsSinceEpoch: 951_782_400_000).description == "2000-02-29T00:00:00.000Z")
        for millis: Int64 in [0, 951_782_400_000, 1_795_910_400_123, 4_102_444_799_999] {
            let stamp = Timestamp(millisecondsSinceEpoch: millis)
            #expect(Timestamp(parsing: stamp.description) == stamp)
        }
        #expect(Timestamp(parsing: "yesterday") == nil)
    }

    @Test("a batch wraps its records in the gateway's envelope")
    func batches() {
        let builder = BatchBuilder(gatewayID: "G")
        let records = (1...10).map { (seq: UInt64($0), bytes: Array("{\"seq\":\($0)}".utf8)) }
        #expect(builder.overhead == #"{"gateway":"G","records":[]}"#.utf8.count)
        let batch = builder.batch(of: Array(records.prefix(2)))
        #expect(String(decoding: batch.payload, as: UTF8.self) == #"{"gateway":"G","records":[{"seq":1},{"seq":2}]}"#)
        #expect(batch.seqs == [1, 2])
    }

    @Test("JSON round-trips through the reader")
    func json() throws {
        let document = JSON.object([
            ("a", .array([.integer(-1), .unsigned(.max), .number(1.5), .null, .bool(true)])),
            ("s", .string("é\n\"\u{01}")),
        ])
        #expect(try JSONReader.parse(document.serialized) == document)
        #expect(throws: JSONReader.SyntaxError.self) { try JSONReader.parse("{\"a\":}") }
        #expect(JSON.number(.nan).serialized == "null")
    }
}
