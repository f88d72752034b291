import Testing

@testable import RailgateBuffer
@testable import RailgateCore

/// Two sources alternating, a sample every "second", and an alarm event every 50th record.
func workload(_ index: Int) -> Record {
    let time = Timestamp(millisecondsSinceEpoch: 1_795_910_400_000 + Int64(index) * 1000)
    if index % 50 == 0 {
        return Record(
            timestamp: time, source: "axlebox-1",
            body: .event(name: "alarm_above", fields: [("point", .string("t")), ("value", .number(91))]),
            priority: .alarm)
    }
    return Record(
        timestamp: time, source: index % 2 == 0 ? "axlebox-1" : "axlebox-2",
        body: .sample(values: [("bearing_temp_1", .number(40 + Double(index % 10)))], errors: []))
}

func parse(_ record: (seq: UInt64, bytes: [UInt8])) -> JSON {
    (try? JSONReader.parse(String(decoding: record.bytes, as: UTF8.self))) ?? .null
}

@Suite("Full buffer")
struct FullBufferTests {
    let capacity = 256 << 10

    func fill(_ policy: FullBufferPolicy, records: Int) throws -> (DiskBuffer, StateDirectory) {
        let directory = StateDirectory()
        let buffer = try DiskBuffer(
            stateDirectory: directory.path,
            settings: BufferSettings(maxBytes: capacity, syncIntervalMs: 60_000, whenFull: policy))
        for index in 1...records { try buffer.append(workload(index)) }
        try buffer.sync()
        return (buffer, directory)
    }

    @Test("thinning halves the oldest samples and keeps the history's span; alarms all survive; drops counted")
    func thinning() throws {
        let (thinned, directoryA) = try fill(.thin, records: 4000)
        let (dropped, directoryB) = try fill(.dropOldest, records: 4000)
        defer { thinned.close(); dropped.close(); _ = (directoryA, directoryB) }
        let kept = thinned.records(after: 0, limits: everything).map(parse)
        let keptByDropping = dropped.records(after: 0, limits: everything).map(parse)
        let samples = kept.filter { $0["kind"] == .string("sample") }
        let firstSample = try #require(samples.first?["seq"]?.intValue)
        let firstSampleByDropping = try #require(
            keptByDropping.first { $0["kind"] == .string("sample") }?["seq"]?.intValue)
        #expect(thinned.stats().bytes <= capacity)
        #expect(
            firstSample < firstSampleByDropping / 2,
            "thinning keeps older samples (from seq \(firstSample)) than dropping (\(firstSampleByDropping))")
        // In the thinned stretch each source keeps every other sample: a stride of 4 seqs.
        let oldestOfSource = samples.filter { $0["source"] == .string("axlebox-2") }.prefix(20).compactMap {
            $0["seq"]?.intValue
        }
        let strides = Set(zip(oldestOfSource.dropFirst(), oldestOfSource).map { $0 - $1 })
        #expect(strides.isSubset(of: [4, 2 * 4, 4 + 2]), "strides \(strides) in \(oldestOfSource)")
        // Every alarm appended is still there.
        let alarms = kept.filter { $0["priority"] == .string("alarm") }.compactMap { $0["seq"]?.intValue }
        #expect(alarms == Array(stride(from: 50, through: 4000, by: 50)))
        let stats = thinned.stats()
        #expect(stats.droppedAlarm == 0)
        #expect(Int(stats.droppedNormal) + stats.records == 4000)
        #expect(stats.records == kept.count)
    }

    @Test(
        "with the sync thread compacting ahead (every 2 ms) nothing is lost or duplicated; alarms all survive",
        arguments: [FullBufferPolicy.thin, .dropOldest])
    func compactingAhead(policy: FullBufferPolicy) throws {
        let directory = StateDirectory()
        let buffer = try DiskBuffer(
            stateDirectory: directory.path,
            settings: BufferSettings(maxBytes: capacity, syncIntervalMs: 2, whenFull: policy))
        defer { buffer.close() }
        var sent: [UInt64] = []
        for index in 1...12_000 {
            try buffer.append(workload(index))
            // The uplink reading meanwhile, from its last seq.
            if index % 500 == 0 {
                sent += buffer.records(after: sent.last ?? 0, limits: BatchLimits(maxRecords: 100, maxBytes: 4000)).map(
                    \.seq)
            }
        }
        try buffer.sync()
        let kept = buffer.records(after: 0, limits: everything).map(parse)
        let seqs = kept.compactMap { $0["seq"]?.intValue }
        #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count)
        #expect(sent == sent.sorted() && Set(sent).count == sent.count)
        let stats = buffer.stats()
        #expect(stats.bytes <= capacity)
        #expect(stats.droppedAlarm == 0)
        #expect(Int(stats.droppedNormal) + stats.records == 12_000, "every record kept or counted as dropped")
        let alarms = kept.filter { $0["priority"] == .string("alarm") }.compactMap { $0["seq"]?.intValue }
        #expect(alarms == Array(stride(from: 50, through: 12_000, by: 50)))
    }

    @Test("drop_oldest evicts normal records at once; alarms go only when nothing else is left")
    func alarmsLast() throws {
        let directory = StateDirectory()
        let buffer = try DiskBuffer(
            stateDirectory: directory.path,
            settings: BufferSettings(maxBytes: capacity, syncIntervalMs: 60_000, whenFull: .dropOldest))
        defer { buffer.close() }
        for index in 1...2500 { try buffer.append(workload(index)) }
        #expect(buffer.stats().droppedNormal > 0 && buffer.stats().droppedAlarm == 0)
        // Now only alarms: they push out the remaining samples first, then the oldest alarms.
        var index = 2500
        while buffer.stats().droppedAlarm == 0 {
            index += 50
            try buffer.append(workload(index))
        }
        try buffer.sync()
        let kept = buffer.records(after: 0, limits: everything).map(parse)
        #expect(kept.allSatisfy { $0["priority"] == .string("alarm") }, "no normal record outlives an alarm")
        let stats = buffer.stats()
        #expect(stats.records == kept.count)
        #expect(Int(stats.droppedNormal) == 2500 - 2500 / 50)
        #expect(stats.bytes <= capacity)
    }

    @Test("drops are reported once, in the buffer, and the count survives a restart")
    func unreportedDrops() throws {
        let directory = StateDirectory()
        let settings = BufferSettings(maxBytes: capacity, syncIntervalMs: 60_000, whenFull: .dropOldest)
        var buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        for index in 1...3000 { try buffer.append(workload(index)) }
        buffer.close()
        buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        let drops = try #require(try buffer.appendOverflowReport(source: "gw-1"))
        #expect(drops.normal == buffer.stats().droppedNormal && drops.normal > 0)
        #expect(try buffer.appendOverflowReport(source: "gw-1") == nil)
        try buffer.sync()
        let report = try #require(buffer.records(after: 0, limits: everything).last)
        #expect(report.seq == 3001, "the report is the next record")
        #expect(parse(report)["event"] == .string("buffer_overflow"))
        #expect(parse(report)["dropped_normal"] == .unsigned(drops.normal))
        buffer.close()
        buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        #expect(try buffer.appendOverflowReport(source: "gw-1") == nil, "reported drops stay reported")
        buffer.close()
    }

    @Test("alarms and events can be taken ahead of the backlog and acknowledged out of order")
    func urgentFirst() throws {
        let directory = StateDirectory()
        let buffer = try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings(syncIntervalMs: 60_000))
        defer { buffer.close() }
        for index in 1...120 { try buffer.append(workload(index)) }
        try buffer.append(
            Record(timestamp: .init(millisecondsSinceEpoch: 0), source: "gate", body: .event(name: "open", fields: [])))
        try buffer.sync()
        let urgent = buffer.urgentRecords(after: 0, excluding: [], limit: 10)
        #expect(urgent.map(\.seq) == [50, 100, 121])
        #expect(buffer.urgentRecords(after: 60, excluding: [100], limit: 10).map(\.seq) == [121])
        buffer.acknowledge(seqs: [50, 100])
        #expect(buffer.stats().records == 119)
        let backlog = buffer.records(after: 0, limits: everything).map(\.seq)
        #expect(!backlog.contains(50) && !backlog.contains(100) && backlog.count == 119)
        #expect(buffer.urgentRecords(after: 0, excluding: [], limit: 10).map(\.seq) == [121])
        buffer.acknowledge(through: 121)
        #expect(buffer.stats().records == 0)
    }
}
