import Glibc
import Testing

@testable import RailgateBuffer
@testable import RailgateCore

/// A fresh state directory under /tmp, removed at the end of the test.
final class StateDirectory {
    let path: String

    init() {
        var template = Array("/tmp/railgate-buffer-test-XXXXXX".utf8CString)
        path = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    deinit { _ = system("rm -rf '\(path)'") }

    var segments: [String] {
        guard let stream = opendir(path + "/buffer") else { return [] }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasPrefix("segment-") { names.append(path + "/buffer/" + name) }
        }
        return names.sorted()
    }
}

func sample(_ index: Int, priority: Priority = .normal) -> Record {
    Record(
        timestamp: Timestamp(millisecondsSinceEpoch: 1_795_910_400_000 + Int64(index)), source: "axlebox-1",
        body: .sample(values: [("bearing_temp_1", .number(40 + Double(index % 100) / 10))], errors: []),
        priority: priority)
}

let everything = BatchLimits(maxRecords: .max, maxBytes: .max)

@Suite("Durable buffer")
struct DiskBufferTests {
    @Test("records get increasing seqs and come back in order once durable")
    func appendAndRead() throws {
        let directory = StateDirectory()
        let buffer = try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings(syncIntervalMs: 60_000))
        for index in 1...10 { #expect(try buffer.append(sample(index)) == UInt64(index)) }
        #expect(buffer.records(after: 0, limits: everything).isEmpty, "nothing is handed out before it is durable")
        try buffer.sync()
        let records = buffer.records(after: 0, limits: everything)
        #expect(records.map(\.seq) == Array(1...10))
        #expect(
            String(decoding: records[0].bytes, as: UTF8.self)
                == String(decoding: sample(1).encoded(seq: 1), as: UTF8.self))
        #expect(buffer.records(after: 4, limits: BatchLimits(maxRecords: 3, maxBytes: .max)).map(\.seq) == [5, 6, 7])
        let oneRecordBytes = records[0].bytes.count
        #expect(
            buffer.records(after: 0, limits: BatchLimits(maxRecords: 100, maxBytes: oneRecordBytes * 2 + 1)).count == 2)
        buffer.close()
    }

    @Test("acknowledged records leave; seqs continue across reopen and an emptied buffer")
    func acknowledgeAndReopen() throws {
        let directory = StateDirectory()
        let settings = BufferSettings(maxBytes: 1 << 20, syncIntervalMs: 60_000)
        var buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        for index in 1...2000 { try buffer.append(sample(index)) }
        try buffer.sync()
        buffer.acknowledge(through: 1500)
        try buffer.sync()
        #expect(buffer.stats().records == 500)
        #expect(buffer.stats().firstSeq == 1501)
        #expect(buffer.records(after: 0, limits: everything).first?.seq == 1501)
        buffer.close()

        buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        #expect(buffer.stats().ackedSeq == 1500)
        #expect(buffer.stats().nextSeq == 2001)
        #expect(buffer.records(after: 0, limits: everything).map(\.seq) == Array(1501...2000))
        buffer.acknowledge(through: 2000)
        buffer.close()

        buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        #expect(buffer.stats().records == 0)
        #expect(try buffer.append(sample(1)) == 2001, "a seq is never reused, even once everything was acknowledged")
        buffer.close()
    }

    @Test("a second writer on the same state_dir is refused")
    func exclusive() throws {
        let directory = StateDirectory()
        let first = try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings())
        #expect(throws: BufferError.self) { try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings()) }
        let reader = try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings(), readOnly: true)
        reader.close()
        first.close()
    }

    @Test("a full buffer evicts the oldest records and counts them")
    func bounded() throws {
        let directory = StateDirectory()
        let settings = BufferSettings(maxBytes: 256 << 10, syncIntervalMs: 60_000, whenFull: .dropOldest)
        let buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        for index in 1...20_000 { try buffer.append(sample(index)) }
        try buffer.sync()
        let stats = buffer.stats()
        #expect(stats.bytes <= settings.maxBytes)
        #expect(stats.dropped > 0)
        #expect(Int(stats.dropped) + stats.records == 20_000)
        let kept = buffer.records(after: 0, limits: everything).map(\.seq)
        #expect(kept.last == 20_000)
        #expect(kept == Array(kept.first!...20_000), "what is kept is the newest, without holes")
        buffer.close()
    }

    @Test("a torn tail is cut off and appends continue after it")
    func tornTail() throws {
        let directory = StateDirectory()
        var buffer = try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings(syncIntervalMs: 60_000))
        for index in 1...100 { try buffer.append(sample(index)) }
        buffer.close()
        let segment = try #require(directory.segments.last)
        var status = stat()
        stat(segment, &status)
        truncate(segment, status.st_size - 7)  // a power cut in the middle of the last frame

        buffer = try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings(syncIntervalMs: 60_000))
        #expect(buffer.records(after: 0, limits: everything).map(\.seq) == Array(1...99))
        #expect(buffer.stats().losses == [SeqLoss(from: 100, to: 100, count: nil, reason: .tailLost)])
        // Seq 100 was handed out once: it is reported lost (the records_lost event takes 101), never reused.
        #expect(try buffer.append(sample(100)) == 102)
        try buffer.sync()
        let tail = buffer.records(after: 98, limits: everything)
        #expect(tail.map(\.seq) == [99, 101, 102])
        #expect(parse(tail[1])["event"] == .string("records_lost"))
        #expect(parse(tail[1])["from_seq"] == .unsigned(100) && parse(tail[1])["to_seq"] == .unsigned(100))
        buffer.close()
    }

    @Test("flipped bytes in the middle are skipped and counted, never returned")
    func corruptMiddle() throws {
        let directory = StateDirectory()
        var buffer = try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings(syncIntervalMs: 60_000))
        for index in 1...100 { try buffer.append(sample(index)) }
        buffer.close()
        let segment = try #require(directory.segments.last)
        let fd = open(segment, O_RDWR)
        var byte: UInt8 = 0
        pread(fd, &byte, 1, 5000)
        byte ^= 0xFF
        pwrite(fd, &byte, 1, 5000)
        close(fd)

        buffer = try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings(syncIntervalMs: 60_000))
        let seqs = buffer.records(after: 0, limits: everything).map(\.seq)
        #expect(seqs.count == 99, "exactly the damaged record is lost")
        #expect(seqs.last == 100)
        #expect(buffer.stats().corruptBytesSkipped > 0)
        for record in buffer.records(after: 0, limits: everything) {
            #expect(
                try JSONReader.parse(String(decoding: record.bytes, as: UTF8.self))["seq"]
                    == .integer(Int64(record.seq)))
        }
        let missing = Set(1...100).subtracting(seqs.map(Int.init))
        #expect(
            buffer.stats().losses.map { [$0.from, $0.to, $0.count ?? 0] }
                == missing.map { [UInt64($0), UInt64($0), 1] }, "the damaged record is reported lost, counted")
        #expect(buffer.stats().losses.first?.reason == .damaged)
        #expect(buffer.stats().lostRecords == 1)
        #expect(try buffer.append(sample(101)) == 102, "101 is the records_lost event")
        buffer.close()
    }

    @Test("a zeroed segment in the middle is skipped and counted; the others are kept")
    func zeroedSegment() throws {
        let directory = StateDirectory()
        let settings = BufferSettings(maxBytes: 1 << 20, syncIntervalMs: 60_000)  // 64 KiB segments
        var buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        for index in 1...2000 { try buffer.append(sample(index)) }
        buffer.close()
        let segments = directory.segments
        #expect(segments.count >= 3)
        let victim = segments[1]
        var status = stat()
        stat(victim, &status)
        let fd = open(victim, O_WRONLY)
        let zeros = [UInt8](repeating: 0, count: Int(status.st_size))
        pwrite(fd, zeros, zeros.count, 0)
        close(fd)

        buffer = try DiskBuffer(stateDirectory: directory.path, settings: settings)
        let seqs = buffer.records(after: 0, limits: everything).map(\.seq)
        #expect(buffer.stats().corruptBytesSkipped == Int(status.st_size))
        #expect(seqs.first == 1 && seqs.last == 2000)
        #expect(seqs.count < 2000 && seqs.count > 1000, "only the zeroed segment's records are gone")
        #expect(seqs == seqs.sorted())
        let lost = buffer.stats().losses
        #expect(lost.count == 1 && lost.first?.reason == .damaged)
        #expect(lost.first.map { Int($0.count ?? 0) } == 2000 - seqs.count, "the lost records are counted exactly")
        #expect(try buffer.append(sample(2001)) == 2002, "2001 is the records_lost event")
        buffer.close()
    }

    @Test("a damaged ack position means resending, not losing")
    func damagedAck() throws {
        let directory = StateDirectory()
        var buffer = try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings(syncIntervalMs: 60_000))
        for index in 1...10 { try buffer.append(sample(index)) }
        buffer.acknowledge(through: 5)
        buffer.close()
        let fd = open(directory.path + "/buffer/acked", O_WRONLY)
        var garbage: [UInt8] = [1, 2, 3]
        pwrite(fd, &garbage, 3, 0)
        close(fd)
        buffer = try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings(syncIntervalMs: 60_000))
        #expect(buffer.records(after: 0, limits: everything).map(\.seq) == Array(1...10))
        #expect(try buffer.append(sample(11)) == 11)
        buffer.close()
    }
}
