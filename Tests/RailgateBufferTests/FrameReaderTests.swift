import Glibc
import Testing

@testable import RailgateBuffer
@testable import RailgateCore

/// A record of `values` sample values: about 30 bytes of JSON each.
private func wideSample(_ index: Int, values: Int) -> Record {
    Record(
        timestamp: Timestamp(millisecondsSinceEpoch: 1_795_910_400_000 + Int64(index)), source: "axlebox-\(index)",
        body: .sample(values: (0..<values).map { ("bearing_temp_\($0)", .number(Double($0) / 10)) }, errors: []),
        priority: index % 7 == 0 ? .alarm : .normal)
}

@Suite("Read-ahead frame reader")
struct FrameReaderTests {
    /// Frames of 40 bytes to 100 KiB (some longer than the window, many straddling two windows),
    /// with flipped bytes, a zeroed run and a torn tail: at every byte offset, the windowed
    /// reader finds exactly what two `pread(2)`s per frame find.
    @Test("at every offset of a damaged segment, the read-ahead window finds what per-frame reads find")
    func sameFramesAsPerFrameReads() throws {
        let directory = StateDirectory()
        let path = directory.path + "/segment"
        var bytes: [UInt8] = []
        var starts: [Int] = []
        for index in 1...60 {
            starts.append(bytes.count)
            let values = [1, 3, 40, 400, 1800, 3500][index % 6]
            _ = Frame.append(wideSample(index, values: values), seq: UInt64(index), to: &bytes)
        }
        #expect(bytes.count > 3 * FrameReader.windowSize)
        #expect(
            zip(starts, starts.dropFirst()).contains { $1 - $0 > FrameReader.windowSize }, "a frame beyond the window")
        for offset in [starts[5] + 9, starts[17] + 30, starts[33] + 2, starts[41] + 19] { bytes[offset] ^= 0x5A }
        for offset in starts[25]..<(starts[25] + 300) { bytes[offset] = 0 }
        bytes.removeLast(11)  // a torn tail
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(pwrite(fd, bytes, bytes.count, 0) == bytes.count)

        for limit in [bytes.count, bytes.count + 11, starts[40]] {
            var reader = FrameReader(fd: fd)
            var found = 0
            for offset in 0..<(limit + 4) {
                let expected = Frame.read(fd: fd, at: offset, limit: limit)
                let actual = Frame.read(&reader, at: offset, limit: limit)
                #expect(actual?.seq == expected?.seq, "offset \(offset), limit \(limit)")
                #expect(actual?.payload == expected?.payload, "offset \(offset), limit \(limit)")
                #expect(actual?.priority == expected?.priority && actual?.isSample == expected?.isSample)
                if expected != nil { found += 1 }
            }
            // Every frame start except the four damaged, the zeroed one and (for the whole
            // file) the torn last one; `starts[40]` ends the file before frame 41.
            #expect(found == (limit == starts[40] ? 40 - 4 : 60 - 6))
        }
    }

    @Test("a buffer of frames longer than the window hands them out whole and in order")
    func framesLongerThanTheWindow() throws {
        let directory = StateDirectory()
        let buffer = try DiskBuffer(stateDirectory: directory.path, settings: BufferSettings(syncIntervalMs: 60_000))
        let records = (1...12).map { wideSample($0, values: $0 % 3 == 0 ? 3500 : 5) }
        for record in records { _ = try buffer.append(record) }
        try buffer.sync()
        let read = buffer.records(after: 0, limits: everything)
        #expect(read.map(\.seq) == Array(1...12))
        for (index, record) in read.enumerated() {
            #expect(record.bytes == records[index].encoded(seq: record.seq))
        }
        #expect(read.contains { $0.bytes.count > FrameReader.windowSize })
        buffer.close()
    }
}
