import Dispatch
import Glibc
import RailgateSystem
import Testing

@testable import RailgateBuffer
@testable import RailgateCore

/// A small sample (about 140 bytes) or, every so often, a big event (about 1,600 bytes): two
/// sizes whose encoded length the buffer estimates closely, so segments start with either.
func mixed(_ index: Int, big: Bool) -> Record {
    let time = Timestamp(millisecondsSinceEpoch: 1_795_910_400_000 + Int64(index))
    if big {
        return Record(
            timestamp: time, source: "wagon-\(index % 7)",
            body: .event(name: "diagnostics", fields: [("dump", .string(String(repeating: "d", count: 1450)))]))
    }
    return Record(
        timestamp: time, source: "wagon-\(index % 7)",
        body: .sample(values: [("bearing_temp_1", .number(40 + Double(index % 100) / 10))], errors: []))
}

/// Reads the whole buffer the way the uplink does: batch after batch from the last seq sent.
func drain(_ buffer: DiskBuffer, limits: BatchLimits) -> [UInt64] {
    var sent: [UInt64] = []
    var cursor: UInt64 = 0
    while true {
        let batch = buffer.records(after: cursor, limits: limits)
        guard let last = batch.last else { return sent }
        sent += batch.map(\.seq)
        cursor = last.seq
    }
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

func ackRecord(_ seq: UInt64) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.appendLittleEndian(seq)
    bytes.appendLittleEndian(CRC32.checksum(bytes))
    bytes.appendLittleEndian(UInt32(0x4B43_4152))
    return bytes
}

func fileSize(_ path: String) -> Int {
    var status = stat()
    return stat(path, &status) == 0 ? Int(status.st_size) : -1
}

@Suite("Batches")
struct BatchTests {
    @Test("a batch full by bytes in an older segment ends there: no record of it is skipped")
    func byteBoundBatchesSkipNothing() throws {
        let directory = StateDirectory()
        // 64 KiB segments; records of two sizes, so a batch often fills by bytes with the next
        // segment's first record still small enough to fit.
        let buffer = try DiskBuffer(
            stateDirectory: directory.path, settings: BufferSettings(maxBytes: 1 << 20, syncIntervalMs: 60_000))
        defer { buffer.close() }
        // Sizes from a fixed pseudo-random sequence, so segments start with small and big records alike.
        var state: UInt32 = 12345
        for index in 1...3000 {
            state = state &* 1_103_515_245 &+ 12345
            try buffer.append(mixed(index, big: (state >> 16) % 10 == 0))
        }
        try buffer.sync()
        #expect(directory.segments.count > 5)
        #expect(buffer.stats().dropped == 0)
        for maxBytes in [1000, 2500, 4000, 9000] {
            let sent = drain(buffer, limits: BatchLimits(maxRecords: 50, maxBytes: maxBytes))
            let missing = Set(1...3000).subtracting(sent.map(Int.init))
            #expect(
                missing.isEmpty, "byte limit \(maxBytes): \(missing.count) seqs skipped, from \(missing.min() ?? 0)")
            #expect(sent.count == 3000 && sent == sent.sorted(), "byte limit \(maxBytes): every seq once, in order")
        }
        // Records sent ahead are left out; the rest still comes as one contiguous run.
        let ahead: Set<UInt64> = [5, 10, 400, 401]
        let batch = buffer.records(after: 0, limits: BatchLimits(maxRecords: 500, maxBytes: .max), excluding: ahead)
        #expect(batch.count == 500 && batch.map(\.seq) == Array(1...504).filter { !ahead.contains($0) })
    }
}

@Suite("Damaged state")
struct DamagedStateTests {
    let settings = BufferSettings(maxBytes: 1 << 20, syncIntervalMs: 60_000)  // 64 KiB segments

    /// A buffer with `count` records, of which the first `acked` were acknowledged, closed cleanly.
    func filled(_ count: Int, acked: UInt64 = 0) throws -> StateDirectory {
        let directory = StateDirectory()
        let buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        for index in 1...count { try buffer.append(sample(index)) }
        try buffer.sync()
        if acked > 0 { buffer.acknowledge(through: acked) }
        buffer.close()
        return directory
    }

    /// Opens the damaged buffer, checks what it reports, appends one record and returns its seq
    /// with the stats and the records_lost events in the buffer.
    func reopen(_ directory: StateDirectory) throws -> (seq: UInt64, stats: BufferStats, reports: [JSON]) {
        // The read-only tools first: they must not crash or change anything.
        let reader = try DiskBuffer(stateDirectory: directory.path, settings: settings, readOnly: true)
        _ = reader.stats()
        _ = reader.records(after: 0, limits: everything)
        reader.close()
        let buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings, source: "gw-test")
        defer { buffer.close() }
        let seq = try buffer.append(sample(0))
        try buffer.sync()
        let reports = buffer.records(after: 0, limits: everything).map(parse).filter {
            $0["event"] == .string("records_lost")
        }
        return (seq, buffer.stats(), reports)
    }

    @Test("seqs handed out but not durable at a power cut are never handed out again", arguments: [0, 1, 3])
    func powerCut(rounds: Int) throws {
        let directory = StateDirectory()
        let copy = StateDirectory()
        let buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        for index in 1...100 { try buffer.append(sample(index)) }
        try buffer.sync()
        var handedOut: UInt64 = 0
        for index in 1...(50 + rounds * 3000) { handedOut = try buffer.append(sample(index)) }
        // The files as a power cut leaves them: what was written, without what was still in memory.
        // (A temporary state file may vanish under cp while the sync thread renames it: ignored.)
        _ = system("cp -a '\(directory.path)/buffer' '\(copy.path)/buffer' 2>/dev/null")
        #expect(fileSize(copy.path + "/buffer/reserved") == 16)
        let (seq, stats, reports) = try reopen(copy)
        buffer.close()
        #expect(seq > handedOut, "no seq handed out before the cut is handed out again")
        #expect(stats.losses.count == 1)
        let loss = try #require(stats.losses.first)
        #expect(loss.reason == .tailLost && loss.count == nil)
        #expect(loss.to >= handedOut && loss.to < seq)
        #expect(reports.count == 1)
        #expect(reports.first?["from_seq"] == .unsigned(loss.from) && reports.first?["to_seq"] == .unsigned(loss.to))
        #expect(reports.first?["source"] == .string("gw-test") && reports.first?["priority"] == .string("alarm"))
        #expect(reports.first?["count"] == .null)
    }

    @Test("a clean restart reports nothing and continues the seqs without a gap")
    func cleanRestart() throws {
        let directory = try filled(10)
        let (seq, stats, reports) = try reopen(directory)
        #expect(seq == 11)
        #expect(stats.losses.isEmpty && reports.isEmpty && stats.warnings.isEmpty)
    }

    @Test("a reported gap is not reported again at the next start")
    func reportedOnce() throws {
        let directory = try filled(10)
        let last = try #require(directory.segments.last)
        truncate(last, off_t(fileSize(last) - 30))
        #expect(try reopen(directory).stats.losses.count == 1)
        let again = try reopen(directory)
        #expect(again.stats.losses.isEmpty, "the records_lost event in the buffer covers the gap")
        #expect(again.reports.count == 1)
    }

    @Test("the last segment truncated at several offsets", arguments: [1, 19, 20, 21, 100, 5000])
    func truncatedLast(cut: Int) throws {
        let directory = try filled(2000)
        let last = try #require(directory.segments.last)
        let size = fileSize(last)
        truncate(last, off_t(max(0, size - cut)))
        let (seq, stats, reports) = try reopen(directory)
        #expect(seq > 2000 + 1, "2000 was handed out; the next seq goes past the report")
        #expect(stats.losses.count == 1)
        #expect(stats.losses.first?.to == 2000 && stats.losses.first?.reason == .tailLost)
        #expect(reports.count == 1)
    }

    @Test("the last segment emptied, or deleted")
    func lastSegmentGone() throws {
        for deleting in [false, true] {
            let directory = try filled(2000)
            let last = try #require(directory.segments.last)
            if deleting { unlink(last) } else { truncate(last, 0) }
            let (seq, stats, reports) = try reopen(directory)
            #expect(seq > 2001)
            #expect(stats.losses.map(\.to) == [2000])
            #expect(stats.losses.first.map { $0.from > 1 && $0.from <= 2000 } == true)
            #expect(reports.count == 1)
        }
    }

    @Test("all segments deleted: the seqs continue above the reservation and the whole range is reported")
    func allSegmentsGone() throws {
        let directory = try filled(2000, acked: 500)
        for segment in directory.segments { unlink(segment) }
        let (seq, stats, reports) = try reopen(directory)
        #expect(seq > 2001)
        #expect(stats.losses == [SeqLoss(from: 501, to: 2000, count: nil, reason: .tailLost)])
        #expect(reports.count == 1)
    }

    @Test("a middle segment deleted: counted exactly, the rest kept")
    func middleSegmentDeleted() throws {
        let directory = try filled(2000)
        let segments = directory.segments
        let victimFirst = try #require(Segment.parse(fileName: String(segments[1].split(separator: "/").last!)))
        let nextFirst = try #require(Segment.parse(fileName: String(segments[2].split(separator: "/").last!)))
        unlink(segments[1])
        let (seq, stats, _) = try reopen(directory)
        #expect(seq == 2002)
        #expect(
            stats.losses == [
                SeqLoss(
                    from: victimFirst.firstSeq, to: nextFirst.firstSeq - 1,
                    count: nextFirst.firstSeq - victimFirst.firstSeq, reason: .damaged)
            ])
    }

    @Test("a middle segment that cannot be read (a directory in its place): moved aside, counted")
    func middleSegmentUnreadable() throws {
        let directory = try filled(2000)
        let segments = directory.segments
        let victimFirst = try #require(Segment.parse(fileName: String(segments[1].split(separator: "/").last!)))
        let nextFirst = try #require(Segment.parse(fileName: String(segments[2].split(separator: "/").last!)))
        unlink(segments[1])
        mkdir(segments[1], 0o755)
        let (seq, stats, reports) = try reopen(directory)
        #expect(seq == 2002)
        #expect(
            stats.losses == [
                SeqLoss(
                    from: victimFirst.firstSeq, to: nextFirst.firstSeq - 1,
                    count: nextFirst.firstSeq - victimFirst.firstSeq, reason: .unreadableSegment)
            ])
        #expect(stats.warnings.contains { $0.contains("cannot be read") })
        #expect(reports.count == 1)
    }

    @Test("a segment that becomes unreadable while running is skipped, counted and reported")
    func segmentUnreadableAtRuntime() throws {
        let directory = StateDirectory()
        let buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings, source: "gw-test")
        defer { buffer.close() }
        for index in 1...2000 { try buffer.append(sample(index)) }
        try buffer.sync()
        unlink(directory.segments[1])  // gone while running: open fails with ENOENT
        let seqs = drain(buffer, limits: BatchLimits(maxRecords: 100, maxBytes: .max))
        let loss = try #require(buffer.stats().losses.first)
        #expect(loss.reason == .unreadableSegment && loss.count == loss.seqs)
        let expected = Array(1...2000).filter { $0 < loss.from || $0 > loss.to }
        #expect(seqs.filter { $0 <= 2000 }.count == expected.count && seqs.filter { $0 <= 2000 } == expected)
        try buffer.sync()
        let report = buffer.records(after: 2000, limits: everything).map(parse).first {
            $0["event"] == .string("records_lost")
        }
        #expect(report?["from_seq"] == .unsigned(loss.from) && report?["count"] == .unsigned(loss.seqs))
    }

    @Test("a segment named with the largest seq: moved aside, no arithmetic trap, seqs continue")
    func hugeSegmentName() throws {
        let directory = try filled(100)
        writeFile(directory.path + "/buffer/segment-18446744073709551615.rgb", Array(repeating: 7, count: 100))
        writeFile(directory.path + "/buffer/segment-00009007199254740993.rgb", [])
        let (seq, stats, _) = try reopen(directory)
        #expect(seq == 101)
        #expect(stats.warnings.filter { $0.contains("out of range") }.count == 2)
    }

    @Test(
        "ack file set to UInt64.max or past the last seq: refused, everything sent again",
        arguments: [
            UInt64.max, 1 << 60, 5000,
        ])
    func ackPastTheEnd(ack: UInt64) throws {
        let directory = try filled(100, acked: 40)
        writeFile(directory.path + "/buffer/acked", ackRecord(ack))
        let reader = try DiskBuffer(stateDirectory: directory.path, settings: settings, readOnly: true)
        #expect(reader.stats().ackedSeq == 0)
        #expect(reader.records(after: 0, limits: everything).map(\.seq) == Array(1...100))
        #expect(reader.stats().warnings.contains { $0.contains("not trusted") })
        reader.close()
        let (seq, stats, _) = try reopen(directory)
        #expect(seq == 101)
        #expect(stats.losses.isEmpty)
    }

    @Test("ack file made a directory: moved aside, the position is written again")
    func ackDirectory() throws {
        let directory = try filled(100, acked: 40)
        unlink(directory.path + "/buffer/acked")
        mkdir(directory.path + "/buffer/acked", 0o755)
        let buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        #expect(buffer.stats().ackedSeq == 0)
        buffer.acknowledge(through: 60)
        try buffer.sync()
        buffer.close()
        let reopened = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        #expect(reopened.stats().ackedSeq == 60)
        #expect(try reopened.append(sample(0)) == 101)
        reopened.close()
    }

    @Test("lock file made a directory: moved aside; the buffer opens")
    func lockDirectory() throws {
        let directory = try filled(10)
        unlink(directory.path + "/buffer/lock")
        mkdir(directory.path + "/buffer/lock", 0o755)
        let buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        #expect(try buffer.append(sample(0)) == 11)
        #expect(throws: BufferError.self) { try DiskBuffer(stateDirectory: directory.path, settings: settings) }
        buffer.close()
    }

    @Test("damaged limits, drops and reservation files: safe fallbacks, no seq reused")
    func damagedStateFiles() throws {
        let directory = try filled(100)
        writeFile(directory.path + "/buffer/limits", [])
        writeFile(directory.path + "/buffer/drops", Array(repeating: 0xFF, count: 48))
        writeFile(directory.path + "/buffer/reserved", [1, 2, 3])
        #expect(DiskBuffer.recordedMaxBytes(stateDirectory: directory.path) == nil)
        let (seq, stats, reports) = try reopen(directory)
        #expect(seq > 100 + DiskBuffer.reservationBlock, "the next seq jumps a block past everything known")
        #expect(stats.losses.first?.reason == .reservationUnreadable)
        #expect(reports.count == 1)
        #expect(stats.dropped == 0)
        #expect(DiskBuffer.recordedMaxBytes(stateDirectory: directory.path) == settings.maxBytes)
    }

    @Test("sync_interval_ms 0 with four appending threads: every seq once, durable at return, reserved ahead")
    func syncEveryAppend() throws {
        let directory = StateDirectory()
        let settings = BufferSettings(maxBytes: 1 << 20, syncIntervalMs: 0)
        let buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        final class Seen: @unchecked Sendable {
            let lock = ConditionLock()
            var seqs: [UInt64] = []
        }
        let seen = Seen()
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for index in 0..<300 {
                let seq = (try? buffer.append(sample(thread * 1000 + index))) ?? 0
                // Durable when append returns: handed out at once.
                let durable = buffer.records(
                    after: seq > 0 ? seq - 1 : 0, limits: BatchLimits(maxRecords: 1, maxBytes: .max))
                seen.lock.withLock {
                    seen.seqs.append(seq)
                    if durable.first?.seq != seq { seen.seqs.append(0) }
                }
            }
        }
        let seqs = seen.lock.withLock { seen.seqs }
        #expect(seqs.count == 1200 && seqs.sorted() == Array(1...1200), "each seq once, each durable at return")
        #expect(buffer.stats().reservedSeq >= 1200)
        buffer.close()
        let reopened = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        #expect(reopened.stats().losses.isEmpty)
        #expect(try reopened.append(sample(0)) == 1201)
        reopened.close()
    }

    @Test("state files are replaced, never rewritten in place")
    func atomicStateFiles() throws {
        let directory = try filled(10)
        for name in ["limits", "reserved"] {
            #expect(fileSize(directory.path + "/buffer/" + name) > 0, "\(name) is written")
            #expect(fileSize(directory.path + "/buffer/" + name + ".new") == -1, "no temporary \(name) left")
        }
    }
}
