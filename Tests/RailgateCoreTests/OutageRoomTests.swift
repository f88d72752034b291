import RailgateCore
import Testing

@Suite("Outage room: how long the buffer's free space lasts")
struct OutageRoomTests {
    @Test("a record's size on disk is the files' bytes over every record in them, acknowledged or not")
    func recordSize() {
        // Link up: 3 MiB in the active segment, 10,000 records, 3 of them not yet acknowledged.
        #expect(OutageRoom.bytesPerRecord(storedBytes: 3 << 20, storedRecords: 10_000) == 314)
        #expect(OutageRoom.bytesPerRecord(storedBytes: 0, storedRecords: 0) == 256)
        #expect(OutageRoom.bytesPerRecord(storedBytes: 100, storedRecords: 10) == 64)
        let hours = OutageRoom.hours(
            roomBytes: 61 << 20, bytesPerRecord: OutageRoom.bytesPerRecord(storedBytes: 3 << 20, storedRecords: 10_000),
            recordsPerHour: 3600)
        #expect(abs(hours - Double(61 << 20) / (3600 * 314)) < 1e-9)
        #expect(hours > 56 && hours < 57)
        #expect(OutageRoom.hours(roomBytes: 1 << 20, bytesPerRecord: 300, recordsPerHour: 0) == .infinity)
        #expect(OutageRoom.hours(roomBytes: -5, bytesPerRecord: 300, recordsPerHour: 10) == 0)
    }

    /// The rate of records given oldest first as (timestamp, bytes), as `buffer stats` takes it
    /// from the records it reads: none from fewer than two.
    func rate(_ records: [(milliseconds: Int64, bytes: Int)], minimumSpanMs: Int64 = 60_000) -> Double? {
        guard records.count >= 2, let first = records.first, let last = records.last else { return nil }
        return OutageRoom.bytesPerHour(
            firstMs: first.milliseconds, lastMs: last.milliseconds,
            bytesAfterFirst: records.dropFirst().reduce(0) { $0 + $1.bytes }, minimumSpanMs: minimumSpanMs)
    }

    @Test("the store rate: n records span n - 1 intervals, and under a minute of records is no rate")
    func storeRate() throws {
        // One 300-byte record a second for two minutes: 300 B/s, 1,080,000 B/h (not twice that).
        let steady = (0...120).map { (Int64($0) * 1000, 300) }
        let steadyRate = try #require(rate(steady))
        #expect(abs(steadyRate - 1_080_000) < 1e-6)
        // Two records a second apart: a second's worth, and too short a span to say.
        #expect(rate([(0, 300), (1000, 300)]) == nil)
        #expect(rate([(0, 300), (1000, 300)], minimumSpanMs: 1) == 1_080_000)
        #expect(rate([(5, 300)], minimumSpanMs: 0) == nil)
        // 100 devices polled in cycles a second apart, each cycle 40 ms long, 61 cycles: within
        // 2 % of 100 records a second (a minute of cycles overstates it by about one cycle in 60).
        var cycles: [(milliseconds: Int64, bytes: Int)] = []
        for cycle in 0...60 {
            for device in 0..<100 { cycles.append((Int64(cycle) * 1000 + Int64(device) * 40 / 100, 300)) }
        }
        let cycled = try #require(rate(cycles))
        #expect(abs(cycled / (100 * 300 * 3600) - 1) < 0.02, "\(cycled)")
    }
}
