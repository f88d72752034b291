import Glibc
import RailgateBuffer
import RailgateCore

/// A buffer directory made from the input (segment files of any name, kind and bytes; `acked`,
/// `reserved` and `drops` state files, raw or well-formed with any value), opened read-only or
/// for writing. Holds: opening never traps; every record read back is an intact frame of a
/// segment file (its CRC-32 matches its bytes), seqs come strictly increasing and within
/// 1...2^53; and when writing, the record appended next gets a seq above every one seen (or, past
/// a record at 2^53, is refused with the seq limit's error), and
/// reads back after a reopen.
enum BufferRecoveryHarness {
    /// The directory each run rebuilds (tmpfs where there is one: the buffer syncs).
    static let stateDirectory: String = {
        let base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp"
        return "\(base)/railgate-fuzz-buffer-\(getpid())"
    }()

    static func check(_ bytes: [UInt8]) -> [String] {
        var violations = Violations()
        var input = FuzzInput(bytes)
        let writable = input.byte() & 1 == 1
        let directory = stateDirectory + "/buffer"
        removeDirectory()
        mkdir(stateDirectory, 0o755)
        mkdir(directory, 0o755)
        defer { removeDirectory() }
        var chunks = 0
        while !input.isEmpty, chunks < 8 {
            chunks += 1
            let tag = input.byte()
            let length = Int(input.u16())
            switch tag % 8 {
            case 0, 1, 2:
                let firstSeq = UInt64(input.u16())
                let digits = String(firstSeq)
                let suffix = [".rgb", ".rgt", ".rgc"][Int(tag % 8)]
                let name = "segment-" + String(repeating: "0", count: 20 - digits.count) + digits + suffix
                write(directory + "/" + name, input.take(length))
            case 3, 4, 5:
                let name = ["acked", "reserved", "drops"][Int(tag % 8) - 3]
                write(directory + "/" + name, input.take(length))
            default:
                // A well-formed state record with any value: u64 | CRC-32 of it | magic.
                let name = tag & 8 == 0 ? "acked" : "reserved"
                let magic: UInt32 = tag & 8 == 0 ? 0x4B43_4152 : 0x5653_4752
                var record = littleEndian(input.u64())
                record += littleEndian(CRC32.checksum(record))
                record += littleEndian(magic)
                write(directory + "/" + name, record)
            }
        }
        let frames = intactFrames(in: directory)
        let settings = BufferSettings(maxBytes: 1 << 20, syncIntervalMs: 1000)
        let buffer: DiskBuffer
        do {
            buffer = try DiskBuffer(stateDirectory: stateDirectory, settings: settings, readOnly: !writable)
        } catch {
            violations.check(false, "the buffer does not open: \(error)")
            return violations.messages
        }
        let before = readAll(buffer, allowed: frames, &violations)
        guard writable else { return violations.messages }
        let record = Record(
            timestamp: Timestamp(millisecondsSinceEpoch: 1_800_000_000_000), source: "fuzz",
            body: .event(name: "probe", fields: []))
        let seq: UInt64
        do {
            seq = try buffer.append(record)
            try buffer.sync()
        } catch {
            // An intact record at the seq limit (2^53) leaves no seq to hand out: the append must be
            // refused with the limit's error (no seq reused, none past the limit), not made.
            let atLimit = error.code == EOVERFLOW && buffer.stats().nextSeq > 1 << 53
            buffer.close()
            violations.check(atLimit, "append after recovery: \(error)")
            return violations.messages
        }
        let durable = buffer.stats().durableSeq
        let after = readAll(buffer, allowed: intactFrames(in: directory), &violations)
        buffer.close()
        violations.check(before.allSatisfy { $0 < seq }, "seq \(seq) appended after \(before.suffix(3))")
        violations.check(after.last == seq, "the appended seq \(seq) is not the last read: \(after.suffix(3))")
        violations.check(durable >= seq, "synced, yet durable only through \(durable), not \(seq)")
        do {
            let reopened = try DiskBuffer(stateDirectory: stateDirectory, settings: settings, readOnly: true)
            let again = reopened.records(after: seq - 1, limits: BatchLimits(maxRecords: 1, maxBytes: 1 << 30))
            violations.check(
                again.first?.seq == seq && again.first?.bytes == record.encoded(seq: seq),
                "the appended record \(seq) does not read back: \(again.map(\.seq))")
            reopened.close()
        } catch {
            violations.check(false, "the buffer does not reopen: \(error)")
        }
        return violations.messages
    }

    /// Reads every record; checks each against the intact frames on disk and the order of seqs.
    private static func readAll(_ buffer: DiskBuffer, allowed: Set<Frame>, _ violations: inout Violations) -> [UInt64] {
        var seqs: [UInt64] = []
        var after: UInt64 = 0
        while seqs.count < 100_000 {
            let batch = buffer.records(after: after, limits: BatchLimits(maxRecords: 64, maxBytes: 1 << 20))
            guard let last = batch.last else { break }
            for (seq, payload) in batch {
                violations.check(
                    allowed.contains(Frame(seq: seq, payload: payload)),
                    "record \(seq) (\(payload.count) bytes) is no intact frame on disk")
                violations.check(seq > (seqs.last ?? 0) && seq <= 1 << 53, "seq \(seq) after \(seqs.suffix(3))")
                seqs.append(seq)
            }
            guard last.seq > after else {
                violations.check(false, "records(after: \(after)) returned \(last.seq): no progress")
                break
            }
            after = last.seq
        }
        return seqs
    }

    struct Frame: Hashable {
        var seq: UInt64
        var payload: [UInt8]
    }

    /// Every frame at any offset of any segment file whose CRC-32 matches (an oracle written
    /// apart from the buffer's reader): `u32 length | u32 CRC of bytes 8..<end | u64 seq | u8
    /// flags | u8 0 | u16 "RG" | payload`.
    static func intactFrames(in directory: String) -> Set<Frame> {
        var frames: Set<Frame> = []
        guard let stream = opendir(directory) else { return frames }
        defer { closedir(stream) }
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasPrefix("segment-"), let bytes = read(directory + "/" + name) else { continue }
            var offset = 0
            while offset + 20 <= bytes.count {
                defer { offset += 1 }
                guard bytes[offset + 18] == 0x52, bytes[offset + 19] == 0x47, bytes[offset + 17] == 0 else { continue }
                let length = Int(load(bytes, offset, 4))
                guard length <= bytes.count - offset - 20 else { continue }
                let end = offset + 20 + length
                guard CRC32.checksum(bytes[(offset + 8)..<end]) == UInt32(load(bytes, offset + 4, 4)) else { continue }
                frames.insert(Frame(seq: load(bytes, offset + 8, 8), payload: Array(bytes[(offset + 20)..<end])))
            }
        }
        return frames
    }

    private static func load(_ bytes: [UInt8], _ offset: Int, _ count: Int) -> UInt64 {
        (0..<count).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64(bytes[offset + $1]) }
    }

    private static func littleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<(T.bitWidth / 8)).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }

    private static func write(_ path: String, _ bytes: [UInt8]) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
    }

    private static func read(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard count > 0 else { return bytes }
            bytes += chunk[0..<count]
        }
    }

    private static func removeDirectory() {
        for sub in [stateDirectory + "/buffer", stateDirectory] {
            if let stream = opendir(sub) {
                while let entry = readdir(stream) {
                    let name = withUnsafeBytes(of: entry.pointee.d_name) {
                        String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
                    }
                    if name != ".", name != ".." { unlink(sub + "/" + name) }
                }
                closedir(stream)
            }
        }
        rmdir(stateDirectory + "/buffer")
        rmdir(stateDirectory)
    }
}

/// CRC-32 (IEEE 802.3, reflected 0xEDB88320), bit by bit: the oracle's own, not the buffer's.
enum CRC32 {
    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 != 0 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        }
        return ~crc
    }
}
