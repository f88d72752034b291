import Glibc
import RailgateCore

/// One segment file: an append-only run of frames whose seqs increase. Its name carries the
/// seq of its first record, which is also the floor for the next seq when it is empty; a
/// segment thinned once when the buffer was full ends in `.rgt` instead of `.rgb`, one whose
/// samples all went in `.rgc`: holes in the seqs of either are counted drops, not losses.
struct Segment {
    /// How a segment was rewritten when the buffer was full (its name's suffix).
    enum Kind: Equatable {
        /// `.rgb`: as appended; its seqs run without holes unless the disk damaged it.
        case plain
        /// `.rgt`: every other sample of each source dropped.
        case thinned
        /// `.rgc`: all normal samples dropped.
        case compacted

        var suffix: String {
            switch self {
            case .plain: ".rgb"
            case .thinned: ".rgt"
            case .compacted: ".rgc"
            }
        }
    }

    /// An alarm or event record: kept longest when full, sent first after an outage.
    struct Precious {
        var seq: UInt64
        var offset: Int
        var alarm: Bool
    }

    let firstSeq: UInt64
    var path: String
    var size = 0
    var count = 0
    var firstRecordSeq: UInt64 = 0
    var lastSeq: UInt64 = 0
    /// Every seq, once the segment has holes (compacted, or corruption skipped); nil while the
    /// seqs run from `firstRecordSeq` to `lastSeq` without a gap.
    var seqs: [UInt64]?
    var precious: [Precious] = []
    var kind = Kind.plain

    /// Thinned or compacted: the full-buffer policy thins a segment once at most.
    var thinned: Bool { kind != .plain }

    init(firstSeq: UInt64, path: String, kind: Kind = .plain) {
        self.firstSeq = firstSeq
        self.path = path
        self.kind = kind
    }

    static func fileName(firstSeq: UInt64, kind: Kind = .plain) -> String {
        let digits = String(firstSeq)
        return "segment-" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits + kind.suffix
    }

    /// The first seq and the kind of a segment, from a segment file's name (any 20-digit number:
    /// the caller range-checks it).
    static func parse(fileName name: String) -> (firstSeq: UInt64, kind: Kind)? {
        guard name.hasPrefix("segment-"), name.count == 32, let seq = UInt64(name.dropFirst(8).dropLast(4)) else {
            return nil
        }
        if name.hasSuffix(".rgb") { return (seq, .plain) }
        if name.hasSuffix(".rgt") { return (seq, .thinned) }
        if name.hasSuffix(".rgc") { return (seq, .compacted) }
        return nil
    }

    /// Every seq of the segment's records, in order (for the loss analysis at open).
    var allSeqs: [UInt64] {
        if let seqs { return seqs }
        return count == 0 ? [] : Array(firstRecordSeq...lastSeq)
    }

    mutating func append(seq: UInt64, offset: Int, bytes: Int, alarm: Bool, sample: Bool) {
        if count == 0 {
            firstRecordSeq = seq
        } else if seqs == nil, seq != lastSeq + 1 {
            seqs = Array(firstRecordSeq...lastSeq)
        }
        seqs?.append(seq)
        count += 1
        size += bytes
        lastSeq = seq
        if alarm || !sample { precious.append(Precious(seq: seq, offset: offset, alarm: alarm)) }
    }

    /// Records with seq > `acked`.
    func count(after acked: UInt64) -> Int {
        guard count > 0, lastSeq > acked else { return 0 }
        if let seqs { return seqs.count - seqs.partitioningIndex { $0 > acked } }
        return acked < firstRecordSeq ? count : Int(lastSeq - acked)
    }

    func firstSeq(after acked: UInt64) -> UInt64? {
        guard count > 0, lastSeq > acked else { return nil }
        if let seqs { return seqs[seqs.partitioningIndex { $0 > acked }] }
        return max(firstRecordSeq, acked + 1)
    }

    /// Unacknowledged records by priority (alarm-priority records, and all the others).
    func unacknowledged(after acked: UInt64) -> (normal: Int, alarm: Int) {
        let alarms = precious.reduce(0) { $0 + ($1.alarm && $1.seq > acked ? 1 : 0) }
        return (count(after: acked) - alarms, alarms)
    }

    /// Unacknowledged normal samples: what the full-buffer policy may drop before anything precious.
    func samples(after acked: UInt64) -> Int {
        count(after: acked) - precious.reduce(0) { $0 + ($1.seq > acked ? 1 : 0) }
    }
}

extension Array {
    /// The index of the first element for which `belongs` holds, in an array where it holds for
    /// a suffix (binary search).
    func partitioningIndex(where belongs: (Element) -> Bool) -> Int {
        var low = 0
        var high = count
        while low < high {
            let middle = (low + high) / 2
            if belongs(self[middle]) { high = middle } else { low = middle + 1 }
        }
        return low
    }
}

/// The on-disk frame of one record (little-endian):
///
///     u32 payload length | u32 CRC-32 of bytes 8..<end | u64 seq | u8 flags | u8 0 | u16 magic "RG" | payload
///
/// flags: bit 0 alarm priority, bit 1 sample, bit 2 a `records_lost` report (whose range the
/// recovery reads back, so a reported gap is not reported again). The CRC covers seq, flags,
/// magic and payload, so a torn or flipped frame is detected and never returned as data.
struct Frame {
    static let headerSize = 20
    static let magic: UInt16 = 0x4752
    static let maxPayload = 1 << 24
    /// The largest seq the buffer hands out or believes from disk (2^53, the largest integer
    /// every JSON consumer reads exactly; 28,000 years at 10,000 records a second). Anything
    /// above it on disk is damage.
    static let seqLimit: UInt64 = 1 << 53

    var seq: UInt64
    var priority: Priority
    var isSample: Bool
    var isLossReport = false
    var payload: [UInt8]

    var length: Int { Frame.headerSize + payload.count }

    /// Appends the frame of `record` with `seq` to `output` (the record is encoded in place).
    /// Returns the frame's length.
    static func append(_ record: Record, seq: UInt64, isLossReport: Bool = false, to output: inout [UInt8]) -> Int {
        append(seq: seq, priority: record.priority, isSample: record.isSample, isLossReport: isLossReport, to: &output)
        {
            record.write(seq: seq, to: &$0)
        }
    }

    /// The frame's bytes, as `append` writes them (compaction copies kept frames this way).
    var bytes: [UInt8] {
        var frame: [UInt8] = []
        frame.reserveCapacity(length)
        _ = Frame.append(seq: seq, priority: priority, isSample: isSample, isLossReport: isLossReport, to: &frame) {
            $0 += payload
        }
        return frame
    }

    /// Appends a frame header, the payload `writePayload` appends, then fills in length and CRC.
    private static func append(
        seq: UInt64, priority: Priority, isSample: Bool, isLossReport: Bool, to output: inout [UInt8],
        writePayload: (inout [UInt8]) -> Void
    ) -> Int {
        let start = output.count
        output.appendLittleEndian(UInt32(0))  // length, filled in below
        output.appendLittleEndian(UInt32(0))  // CRC, filled in below
        output.appendLittleEndian(seq)
        output.append((priority == .alarm ? 1 : 0) | (isSample ? 2 : 0) | (isLossReport ? 4 : 0))
        output.append(0)
        output.appendLittleEndian(magic)
        writePayload(&output)
        output.storeLittleEndian(UInt32(output.count - start - headerSize), at: start)
        let crc = output.withUnsafeBytes { CRC32.update(0, UnsafeRawBufferPointer(rebasing: $0[(start + 8)...])) }
        output.storeLittleEndian(crc, at: start + 4)
        return output.count - start
    }

    /// The record's `source`, read from its JSON without parsing all of it (for thinning).
    var source: ArraySlice<UInt8> {
        let key = Array(#""source":""#.utf8)
        guard payload.count > key.count else { return [] }
        for start in 0...(payload.count - key.count)
        where payload[start] == key[0] && Array(payload[start..<(start + key.count)]) == key {
            let valueStart = start + key.count
            let valueEnd = payload[valueStart...].firstIndex(of: UInt8(ascii: "\"")) ?? payload.count
            return payload[valueStart..<valueEnd]
        }
        return []
    }

    /// The valid frame at `offset` of `fd`, or nil if it is torn, corrupt or runs past `limit`.
    static func read(fd: Int32, at offset: Int, limit: Int) -> Frame? {
        guard offset + headerSize <= limit else { return nil }
        var header = [UInt8](repeating: 0, count: headerSize)
        guard header.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, headerSize, off_t(offset)) }) == headerSize,
            header.loadLittleEndian(UInt16.self, at: 18) == magic
        else { return nil }
        let length = Int(header.loadLittleEndian(UInt32.self, at: 0))
        guard length <= maxPayload, offset + headerSize + length <= limit, header[17] == 0 else { return nil }
        var payload = [UInt8](repeating: 0, count: length)
        if length > 0 {
            guard
                payload.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, length, off_t(offset + headerSize)) })
                    == length
            else { return nil }
        }
        var crc = header.withUnsafeBytes { CRC32.update(0, UnsafeRawBufferPointer(rebasing: $0[8...])) }
        crc = payload.withUnsafeBytes { CRC32.update(crc, $0) }
        let seq = header.loadLittleEndian(UInt64.self, at: 8)
        guard crc == header.loadLittleEndian(UInt32.self, at: 4), seq > 0, seq <= seqLimit else { return nil }
        return Frame(
            seq: seq, priority: header[16] & 1 != 0 ? .alarm : .normal, isSample: header[16] & 2 != 0,
            isLossReport: header[16] & 4 != 0, payload: payload)
    }

    /// The valid frame at `offset` of `reader`'s file, as `read(fd:at:limit:)` finds it, served
    /// from the reader's read-ahead window: a batch of frames costs one `pread(2)` per window
    /// instead of two per frame. A frame longer than the window is read with `read(fd:at:limit:)`.
    static func read(_ reader: inout FrameReader, at offset: Int, limit: Int) -> Frame? {
        guard offset + headerSize <= limit else { return nil }
        guard reader.load(offset, count: headerSize, limit: limit) else { return nil }
        let start = offset - reader.start
        let (length, lengthOK) = reader.window.withUnsafeBytes { bytes -> (Int, Bool) in
            let magicOK = bytes.loadUnaligned(fromByteOffset: start + 18, as: UInt16.self).littleEndian == magic
            let length = Int(bytes.loadUnaligned(fromByteOffset: start, as: UInt32.self).littleEndian)
            return (length, magicOK && bytes[start + 17] == 0)
        }
        guard lengthOK, length <= maxPayload, offset + headerSize + length <= limit else { return nil }
        guard headerSize + length <= reader.window.count else { return read(fd: reader.fd, at: offset, limit: limit) }
        guard reader.load(offset, count: headerSize + length, limit: limit) else { return nil }
        let base = offset - reader.start
        return reader.window.withUnsafeBytes { bytes -> Frame? in
            let crc = CRC32.update(
                0, UnsafeRawBufferPointer(rebasing: bytes[(base + 8)..<(base + headerSize + length)]))
            let seq = bytes.loadUnaligned(fromByteOffset: base + 8, as: UInt64.self).littleEndian
            guard crc == bytes.loadUnaligned(fromByteOffset: base + 4, as: UInt32.self).littleEndian, seq > 0,
                seq <= seqLimit
            else { return nil }
            let flags = bytes[base + 16]
            return Frame(
                seq: seq, priority: flags & 1 != 0 ? .alarm : .normal, isSample: flags & 2 != 0,
                isLossReport: flags & 4 != 0,
                payload: Array(bytes[(base + headerSize)..<(base + headerSize + length)]))
        }
    }

    /// The offset of the next valid frame at or after `start` whose seq is above `after`, if any.
    static func resynchronise(fd: Int32, from start: Int, limit: Int, after: UInt64) -> Int? {
        var offset = start
        var window = [UInt8](repeating: 0, count: 65536)
        while offset + headerSize <= limit {
            let count = window.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
            guard count > 0 else { return nil }
            // Candidate frames start 18 bytes before a magic "RG".
            var index = 0
            while index + 1 < count {
                if window[index] == 0x52, window[index + 1] == 0x47 {
                    let candidate = offset + index - 18
                    if candidate >= start, let frame = read(fd: fd, at: candidate, limit: limit), frame.seq > after {
                        return candidate
                    }
                }
                index += 1
            }
            offset += max(1, count - 1)
        }
        return nil
    }
}

/// A read-ahead window over one segment file's descriptor, for `Frame.read(_:at:limit:)`: the
/// bytes at `start..<(start + valid)` of the file as one `pread(2)` found them. Segment bytes
/// below a segment's recorded size never change once written, so a window stays valid for the
/// descriptor's lifetime. Not thread-safe: one per reading loop.
struct FrameReader {
    /// The window's size in bytes: a batch of 64 KiB or less is read with one `pread(2)`.
    static let windowSize = 65536

    let fd: Int32
    var window: [UInt8]
    var start = 0
    var valid = 0

    init(fd: Int32, windowSize: Int = FrameReader.windowSize) {
        self.fd = fd
        window = [UInt8](repeating: 0, count: windowSize)
    }

    /// Makes `offset..<(offset + count)` available in the window (reading from `offset`, no
    /// further than `limit`); false if the file holds fewer bytes there (a torn frame).
    mutating func load(_ offset: Int, count: Int, limit: Int) -> Bool {
        if offset >= start, offset + count <= start + valid { return true }
        let wanted = min(window.count, limit - offset)
        guard wanted >= count else { return false }
        let read = window.withUnsafeMutableBytes { pread(fd, $0.baseAddress, wanted, off_t(offset)) }
        start = offset
        valid = max(0, read)
        return valid >= count
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    mutating func storeLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        Swift.withUnsafeBytes(of: value.littleEndian) { bytes in
            for (index, byte) in bytes.enumerated() { self[offset + index] = byte }
        }
    }

    func loadLittleEndian<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        var value = T.zero
        Swift.withUnsafeMutableBytes(of: &value) { target in
            for index in 0..<MemoryLayout<T>.size { target[index] = self[offset + index] }
        }
        return T(littleEndian: value)
    }
}
