import Glibc
import RailgateCore
import RailgateSystem

/// A problem with the buffer's files, with the errno and the path for the log line.
public struct BufferError: Error, Sendable, CustomStringConvertible {
    public var operation: String
    public var path: String
    public var code: Int32

    public var description: String { "\(operation) \(path): \(String(cString: strerror(code))) (errno \(code))" }
}

/// What the buffer holds, for `railgate status` and `railgate buffer stats`.
public struct BufferStats: Sendable, Equatable {
    /// Records not yet acknowledged upstream.
    public var records: Int
    /// Bytes of all segment files on disk.
    public var bytes: Int
    /// Oldest unacknowledged seq (== nextSeq when empty).
    public var firstSeq: UInt64
    /// The seq the next record will get.
    public var nextSeq: UInt64
    /// Everything up to here was acknowledged by the broker.
    public var ackedSeq: UInt64
    /// Everything up to here is on flash (fsynced).
    public var durableSeq: UInt64
    public var droppedNormal: UInt64
    public var droppedAlarm: UInt64
    /// Bytes skipped as corrupt when the buffer was opened.
    public var corruptBytesSkipped: Int
    public var maxBytes: Int
    /// The last disk error, until a write succeeds again.
    public var diskError: String?

    public var dropped: UInt64 { droppedNormal + droppedAlarm }
}

/// The durable record buffer under `state_dir/buffer` (see `Sources/RailgateBuffer/DESIGN.md`).
///
/// Records get their `seq` in `append`, are written to the active segment at once and made
/// durable by a group commit every `sync_interval_ms`; only durable records are handed out by
/// `records(after:limits:)`, so a seq is never seen upstream before it is on flash. A record
/// leaves only when `acknowledge(through:)` covers it. Thread-safe: pollers append, the uplink
/// reads and acknowledges, from their own threads.
public final class DiskBuffer: @unchecked Sendable {
    public let directory: String
    private let settings: BufferSettings
    private let segmentLimit: Int
    private let readOnly: Bool
    private let lock = ConditionLock()

    private var segments: [Segment] = []
    private var activeFD: Int32 = -1
    /// Frames appended but not yet written to the active segment: written in one call when it
    /// reaches `writeChunk`, at each group commit, at rotation and at close. Nothing is read
    /// from here: readers get durable records only, and those are always written.
    private var pending: [UInt8] = []
    private static let writeChunk = 64 << 10
    /// Below this much free room no record's size needs estimating (records are far smaller).
    private static let roomyMargin = 64 << 10
    private var lockFD: Int32 = -1
    private var ackFD: Int32 = -1
    private var nextSeq: UInt64 = 1
    private var durableSeq: UInt64 = 0
    private var ackedSeq: UInt64 = 0
    private var persistedAck: UInt64 = 0
    private var droppedNormal: UInt64 = 0
    private var droppedAlarm: UInt64 = 0
    /// Drops already reported upstream in a `buffer_overflow` event.
    private var reportedNormal: UInt64 = 0
    private var reportedAlarm: UInt64 = 0
    private var dropsDirty = false
    /// Records acknowledged ahead of the contiguous position (alarms and events sent first).
    private var ackedAhead: Set<UInt64> = []
    private var corruptBytes = 0
    private var diskError: String?
    private var cursor: ReadCursor?
    /// Bytes of every segment but the active one (kept so that appends need not sum them).
    private var closedSegmentBytes = 0
    private var closed = false
    private var syncThread: pthread_t?

    /// Opens (creating if needed) the buffer in `stateDirectory/buffer`, recovering from a crash:
    /// a torn tail is cut off, corrupt frames are skipped and counted.
    /// - Parameter readOnly: inspect without changing anything (the technician's `buffer` commands);
    ///   works while the daemon runs.
    public init(stateDirectory: String, settings: BufferSettings, readOnly: Bool = false) throws(BufferError) {
        directory = stateDirectory + "/buffer"
        self.settings = settings
        self.readOnly = readOnly
        segmentLimit = min(max(settings.maxBytes / 16, 64 << 10), 8 << 20)
        if !readOnly {
            try Self.makeDirectory(stateDirectory)
            try Self.makeDirectory(directory)
            lockFD = try Self.check(
                open(directory + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644), "open", directory + "/lock")
            if flock(lockFD, LOCK_EX | LOCK_NB) != 0 {
                let code = errno
                Glibc.close(lockFD)
                throw BufferError(
                    operation: "lock (is another railgate running on this state_dir?)", path: directory, code: code)
            }
        }
        try recover()
        if !readOnly {
            recordLimits()
            startSyncThread()
        }
    }

    /// The `max_bytes` the daemon last opened this buffer with (the technician's read-only tools
    /// have no configuration), or nil if unknown.
    public static func recordedMaxBytes(stateDirectory: String) -> Int? {
        guard let text = LocalFiles().read(stateDirectory + "/buffer/limits"), text.hasPrefix("max_bytes=") else {
            return nil
        }
        return Int(text.dropFirst(10).prefix { $0.isNumber })
    }

    private func recordLimits() {
        let path = directory + "/limits"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        try? Self.writeAll(fd, Array("max_bytes=\(settings.maxBytes)\n".utf8), path: path)
        Glibc.close(fd)
    }

    deinit { close() }

    // MARK: Writing

    /// Appends `record`, assigning its seq. Never blocks on fsync unless `sync_interval_ms` is 0.
    @discardableResult
    public func append(_ record: Record) throws(BufferError) -> UInt64 {
        try lock.withLock { () throws(BufferError) -> UInt64 in
            precondition(!readOnly && !closed, "append on a closed or read-only buffer")
            let seq = nextSeq
            // Room for the frame, made before it is encoded in place from an upper bound of its
            // size; the bound is only worked out near a full buffer or a segment's end.
            let activeSize = segments[segments.count - 1].size
            if totalBytes + Self.roomyMargin > settings.maxBytes || activeSize + Self.roomyMargin > segmentLimit {
                let estimate = Frame.headerSize + record.sizeEstimate
                try makeRoom(for: estimate)
                if segments[segments.count - 1].size + estimate > segmentLimit, segments[segments.count - 1].count > 0 {
                    try rotate()
                }
            }
            if let diskError, pending.count >= Self.pendingLimit {
                throw BufferError(
                    operation: "append (the disk refuses writes: \(diskError))", path: directory, code: ENOSPC)
            }
            let offset = segments[segments.count - 1].size
            let length = Frame.append(record, seq: seq, to: &pending)
            segments[segments.count - 1].append(
                seq: seq, offset: offset, bytes: length, alarm: record.priority == .alarm, sample: record.isSample)
            nextSeq = seq + 1
            // The record is accepted: a refused write leaves it pending for the next attempt.
            if pending.count >= Self.writeChunk { try? writePending() }
            if settings.syncIntervalMs == 0 { try? syncLocked() }
            return seq
        }
    }

    /// Makes everything appended so far durable, and persists the acknowledged position.
    public func sync() throws(BufferError) {
        try lock.withLock { () throws(BufferError) in try syncLocked() }
    }

    /// Writes the pending frames to the active segment. On failure what was written is dropped
    /// from `pending` and the rest stays (the error is kept for `stats()`), to be written when
    /// the disk takes it again: a partial write is resumed, never repeated.
    private func writePending() throws(BufferError) {
        var offset = 0
        defer {
            if offset == pending.count { pending.removeAll(keepingCapacity: true) } else { pending.removeFirst(offset) }
        }
        while offset < pending.count {
            let written = pending.withUnsafeBytes { Glibc.write(activeFD, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0, errno == EINTR { continue }
            guard written > 0 else {
                let error = BufferError(
                    operation: "write", path: segments[segments.count - 1].path, code: written < 0 ? errno : ENOSPC)
                diskError = error.description
                throw error
            }
            offset += written
        }
        diskError = nil
    }

    /// The most frames held in memory while the disk refuses writes; past it `append` refuses
    /// and the caller holds records itself.
    private static let pendingLimit = 4 << 20

    private func syncLocked() throws(BufferError) {
        guard !readOnly, !segments.isEmpty else { return }
        let last = nextSeq - 1
        if durableSeq < last {
            try writePending()
            if fdatasync(activeFD) != 0 {
                let error = BufferError(operation: "fdatasync", path: segments[segments.count - 1].path, code: errno)
                diskError = error.description
                throw error
            }
            durableSeq = last
            lock.broadcast()
        }
        if persistedAck != ackedSeq {
            try writeAck(ackedSeq)
            persistedAck = ackedSeq
            removeAcknowledgedSegments()
        }
        if dropsDirty {
            try writeDrops()
            dropsDirty = false
        }
    }

    /// Syncs and closes the files; the buffer cannot be used afterwards.
    public func close() {
        let thread: pthread_t? = lock.withLock {
            guard !closed else { return nil }
            if !readOnly { try? syncLocked() }
            closed = true
            lock.broadcast()
            return syncThread
        }
        if let thread { pthread_join(thread, nil) }
        for fd in [activeFD, ackFD, lockFD] where fd >= 0 { Glibc.close(fd) }
        activeFD = -1
        ackFD = -1
        lockFD = -1
    }

    // MARK: Reading and acknowledging

    /// Up to `limits` durable records with seq > `seq`, oldest first, as stored (encoded JSON).
    /// `limits.maxBytes` bounds the records joined by commas (the first record always comes).
    /// Records in `excluding`, and those acknowledged ahead, are skipped.
    public func records(
        after seq: UInt64, limits: BatchLimits, excluding: Set<UInt64> = []
    ) -> [(seq: UInt64, bytes: [UInt8])] {
        lock.withLock {
            var result: [(seq: UInt64, bytes: [UInt8])] = []
            var size = 0
            let after = max(seq, ackedSeq)
            let upTo = readOnly ? nextSeq - 1 : durableSeq
            guard after < upTo else { return result }
            var cursor = self.cursor.flatMap { $0.seq <= after + 1 ? $0 : nil }
            for (index, segment) in segments.enumerated() where segment.lastSeq > after {
                if cursor == nil || cursor!.segmentFirstSeq != segment.firstSeq {
                    cursor = ReadCursor(segmentFirstSeq: segment.firstSeq, offset: 0, seq: 0)
                }
                guard let fd = segmentDescriptor(index) else { continue }
                defer { Glibc.close(fd) }
                var offset = cursor!.offset
                var previousSeq = cursor!.seq > 0 ? cursor!.seq - 1 : 0
                while offset < segment.size, result.count < limits.maxRecords {
                    guard let frame = Frame.read(fd: fd, at: offset, limit: segment.size) else {
                        // Damaged bytes (counted when the buffer was opened): skip to the next intact frame.
                        guard
                            let next = Frame.resynchronise(
                                fd: fd, from: offset + 1, limit: segment.size, after: previousSeq)
                        else { break }
                        offset = next
                        continue
                    }
                    previousSeq = frame.seq
                    if frame.seq > upTo { break }
                    if frame.seq > after, !excluding.contains(frame.seq), !ackedAhead.contains(frame.seq) {
                        // The size of the records joined by commas, as a batch carries them.
                        let added = frame.payload.count + (result.isEmpty ? 0 : 1)
                        if !result.isEmpty, size + added > limits.maxBytes { break }
                        result.append((frame.seq, frame.payload))
                        size += added
                    } else if frame.seq <= after {
                        cursor = ReadCursor(
                            segmentFirstSeq: segment.firstSeq, offset: offset + frame.length, seq: frame.seq + 1)
                    }
                    offset += frame.length
                }
                if result.count >= limits.maxRecords || (result.last.map { $0.seq >= upTo } ?? false) { break }
                if !result.isEmpty, size >= limits.maxBytes { break }
            }
            self.cursor = cursor
            return result
        }
    }

    /// Everything with seq <= `seq` was acknowledged by the broker: it may leave the buffer.
    /// Persisted with the next group commit (a power cut before it means a resend, not a loss).
    public func acknowledge(through seq: UInt64) {
        lock.withLock {
            guard seq > ackedSeq else { return }
            ackedSeq = min(seq, nextSeq - 1)
            ackedAhead = ackedAhead.filter { $0 > ackedSeq }
        }
    }

    /// These records, sent ahead of the backlog, were acknowledged; they leave with the
    /// contiguous position (until then a restart sends them again: at-least-once).
    public func acknowledge(seqs: [UInt64]) {
        lock.withLock { ackedAhead.formUnion(seqs.lazy.filter { $0 > self.ackedSeq }) }
    }

    /// Durable alarms and events with seq > `seq` not yet acknowledged and not in `excluding`,
    /// oldest first, at most `limit`: what goes upstream before an older backlog of samples.
    public func urgentRecords(after seq: UInt64, excluding: Set<UInt64>, limit: Int) -> [(seq: UInt64, bytes: [UInt8])]
    {
        lock.withLock {
            let after = max(seq, ackedSeq)
            let upTo = readOnly ? nextSeq - 1 : durableSeq
            var result: [(seq: UInt64, bytes: [UInt8])] = []
            for (index, segment) in segments.enumerated() where segment.lastSeq > after && !segment.precious.isEmpty {
                let wanted = segment.precious.filter {
                    $0.seq > after && $0.seq <= upTo && !excluding.contains($0.seq) && !ackedAhead.contains($0.seq)
                }
                guard !wanted.isEmpty, let fd = segmentDescriptor(index) else { continue }
                defer { Glibc.close(fd) }
                for entry in wanted.prefix(limit - result.count) {
                    if let frame = Frame.read(fd: fd, at: entry.offset, limit: segment.size), frame.seq == entry.seq {
                        result.append((frame.seq, frame.payload))
                    }
                }
                if result.count >= limit { break }
            }
            return result
        }
    }

    /// Blocks until a durable record with seq > `seq` exists or `deadline` passes; true if one does.
    public func waitForRecords(after seq: UInt64, until deadline: MonotonicInstant) -> Bool {
        lock.withLock {
            while !closed, max(seq, ackedSeq) >= (readOnly ? nextSeq - 1 : durableSeq) {
                if !lock.wait(until: deadline), MonotonicInstant.now() >= deadline { break }
            }
            return max(seq, ackedSeq) < durableSeq
        }
    }

    /// The last disk error, until a write succeeds again.
    public var currentDiskError: String? { lock.withLock { diskError } }

    public func stats() -> BufferStats {
        lock.withLock {
            let bytes = totalBytes
            let pending = segments.reduce(0) { $0 + $1.count(after: ackedSeq) } - ackedAhead.count
            let first = segments.lazy.compactMap { $0.firstSeq(after: self.ackedSeq) }.first ?? nextSeq
            return BufferStats(
                records: pending, bytes: bytes, firstSeq: first, nextSeq: nextSeq, ackedSeq: ackedSeq,
                durableSeq: readOnly ? nextSeq - 1 : durableSeq, droppedNormal: droppedNormal,
                droppedAlarm: droppedAlarm,
                corruptBytesSkipped: corruptBytes, maxBytes: settings.maxBytes, diskError: diskError)
        }
    }

    // MARK: Segments

    private func rotate() throws(BufferError) {
        try writePending()
        if fdatasync(activeFD) == 0, durableSeq < nextSeq - 1 {
            durableSeq = nextSeq - 1
            lock.broadcast()
        }
        Glibc.close(activeFD)
        activeFD = -1
        try openSegment(firstSeq: nextSeq)
        removeAcknowledgedSegments()
    }

    private func openSegment(firstSeq: UInt64) throws(BufferError) {
        let path = directory + "/" + Segment.fileName(firstSeq: firstSeq)
        activeFD = try Self.check(open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644), "create", path)
        segments.append(Segment(firstSeq: firstSeq, path: path))
        segmentsChanged()
        // The new file's name must survive a power cut too: it carries the seq floor.
        syncDirectory()
    }

    /// Makes room for `incoming` bytes within `max_bytes`, oldest closed segments first: with
    /// `when_full = "thin"` each is first thinned once (every other sample of each source
    /// dropped, so the history keeps its span at half the resolution); then their normal samples
    /// go; alarms and events go only when nothing else is left. Drops are counted by priority.
    private func makeRoom(for incoming: Int) throws(BufferError) {
        while totalBytes + incoming > settings.maxBytes {
            if segments.count == 1 {
                guard segments[0].count > 0 else { return }
                try rotate()
                continue
            }
            let closed = segments.indices.dropLast()
            if settings.whenFull == .thin,
                let index = closed.first(where: { !segments[$0].thinned && segments[$0].samples(after: ackedSeq) > 1 })
            {
                try compact(index, thinning: true)
            } else if let index = closed.first(where: { segments[$0].samples(after: ackedSeq) > 0 }) {
                try compact(index, thinning: false)
            } else {
                let victim = segments.removeFirst()
                let lost = victim.unacknowledged(after: ackedSeq)
                count(dropped: lost)
                unlink(victim.path)
                if cursor?.segmentFirstSeq == victim.firstSeq { cursor = nil }
                segmentsChanged()
            }
        }
    }

    private func count(dropped: (normal: Int, alarm: Int)) {
        guard dropped.normal + dropped.alarm > 0 else { return }
        droppedNormal += UInt64(dropped.normal)
        droppedAlarm += UInt64(dropped.alarm)
        dropsDirty = true
    }

    /// Rewrites closed segment `index` without its acknowledged records and without normal samples
    /// (all of them, or with `thinning` every other one of each source), through a temporary file
    /// renamed over it: a power cut leaves either the old or the new segment, never half of one.
    private func compact(_ index: Int, thinning: Bool) throws(BufferError) {
        let old = segments[index]
        let fd = open(old.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BufferError(operation: "open", path: old.path, code: errno) }
        var kept = Segment(
            firstSeq: old.firstSeq,
            path: directory + "/" + Segment.fileName(firstSeq: old.firstSeq, thinned: old.thinned || thinning),
            thinned: old.thinned || thinning)
        var output: [UInt8] = []
        var parity: [ArraySlice<UInt8>: Bool] = [:]
        var droppedSamples = 0
        var offset = 0
        var previous: UInt64 = 0
        while offset < old.size {
            guard let frame = Frame.read(fd: fd, at: offset, limit: old.size) else {
                guard let next = Frame.resynchronise(fd: fd, from: offset + 1, limit: old.size, after: previous) else {
                    break
                }
                offset = next
                continue
            }
            offset += frame.length
            previous = frame.seq
            guard frame.seq > ackedSeq else { continue }
            if frame.isSample, frame.priority == .normal {
                let source = frame.source
                let drop = !thinning || parity[source, default: false]
                parity[source] = !(parity[source] ?? false)
                if drop {
                    droppedSamples += 1
                    continue
                }
            }
            kept.append(
                seq: frame.seq, offset: output.count, bytes: frame.length, alarm: frame.priority == .alarm,
                sample: frame.isSample)
            output += frame.bytes
        }
        Glibc.close(fd)
        if kept.count == 0 {
            unlink(old.path)
            segments.remove(at: index)
        } else {
            let temporary = kept.path + ".tmp"
            let out = try Self.check(
                open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644), "create", temporary)
            do throws(BufferError) {
                try Self.writeAll(out, output, path: temporary)
            } catch {
                Glibc.close(out)
                unlink(temporary)
                throw error
            }
            fdatasync(out)
            Glibc.close(out)
            guard rename(temporary, kept.path) == 0 else {
                throw BufferError(operation: "rename", path: temporary, code: errno)
            }
            if kept.path != old.path { unlink(old.path) }
            syncDirectory()
            segments[index] = kept
        }
        count(dropped: (droppedSamples, 0))
        if cursor?.segmentFirstSeq == old.firstSeq { cursor = nil }
        segmentsChanged()
    }

    private func syncDirectory() {
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            fsync(dirFD)
            Glibc.close(dirFD)
        }
    }

    /// Bytes of all segments, the pending frames included.
    private var totalBytes: Int { closedSegmentBytes + (segments.last?.size ?? 0) }

    /// Recomputes `closedSegmentBytes` after the list of segments changed (rare: rotation, removal).
    private func segmentsChanged() {
        closedSegmentBytes = segments.dropLast().reduce(0) { $0 + $1.size }
    }

    private func removeAcknowledgedSegments() {
        while segments.count > 1, segments[0].lastSeq <= persistedAck {
            let done = segments.removeFirst()
            unlink(done.path)
            if cursor?.segmentFirstSeq == done.firstSeq { cursor = nil }
            segmentsChanged()
        }
    }

    /// A read-only descriptor of segment `index` (the active one is open for appending only).
    private func segmentDescriptor(_ index: Int) -> Int32? {
        let fd = open(segments[index].path, O_RDONLY | O_CLOEXEC)
        return fd >= 0 ? fd : nil
    }

    // MARK: Recovery

    private func recover() throws(BufferError) {
        ackedSeq = readAck()
        persistedAck = ackedSeq
        readDrops()
        guard let directoryStream = opendir(directory) else {
            if readOnly { throw BufferError(operation: "open", path: directory, code: errno) }
            throw BufferError(operation: "open", path: directory, code: errno)
        }
        var names: [String] = []
        while let entry = readdir(directoryStream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if Segment.parse(fileName: name) != nil { names.append(name) }
        }
        closedir(directoryStream)
        names.sort()
        var floor = ackedSeq + 1
        for (position, name) in names.enumerated() {
            let isLast = position == names.count - 1
            let (firstSeq, thinned) = Segment.parse(fileName: name)!
            var segment = Segment(firstSeq: firstSeq, path: directory + "/" + name, thinned: thinned)
            floor = max(floor, firstSeq)
            let fd = open(segment.path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            var status = stat()
            fstat(fd, &status)
            let fileSize = Int(status.st_size)
            var offset = 0
            var lastGood = 0
            var previousSeq = (segments.last?.lastSeq ?? 0)
            while offset < fileSize {
                if let frame = Frame.read(fd: fd, at: offset, limit: fileSize), frame.seq > previousSeq {
                    segment.append(
                        seq: frame.seq, offset: offset, bytes: frame.length, alarm: frame.priority == .alarm,
                        sample: frame.isSample)
                    previousSeq = frame.seq
                    offset += frame.length
                    lastGood = offset
                    continue
                }
                // Corrupt or torn: look for the next valid frame; none before the end means a torn tail.
                guard let next = Frame.resynchronise(fd: fd, from: offset + 1, limit: fileSize, after: previousSeq)
                else {
                    break
                }
                corruptBytes += next - offset
                offset = next
            }
            Glibc.close(fd)
            if lastGood < fileSize {
                if isLast, !readOnly {
                    // A torn tail (power cut mid-write): cut it so appends continue on a clean frame boundary.
                    truncate(segment.path, off_t(lastGood))
                    if lastGood < fileSize, offset < fileSize { corruptBytes += fileSize - offset }
                } else {
                    corruptBytes += fileSize - max(lastGood, offset)
                }
            }
            segment.size = isLast && !readOnly ? lastGood : fileSize
            if segment.count == 0, !isLast {
                if !readOnly { unlink(segment.path) }
                continue
            }
            segments.append(segment)
        }
        nextSeq = max(floor, (segments.last?.lastSeq ?? 0) + 1)
        durableSeq = nextSeq - 1
        segmentsChanged()
        if !readOnly {
            if let last = segments.last {
                let path = last.path
                activeFD = try Self.check(open(path, O_WRONLY | O_APPEND | O_CLOEXEC), "open", path)
            } else {
                try openSegment(firstSeq: nextSeq)
            }
            removeAcknowledgedSegments()
        } else if segments.isEmpty {
            segments.append(Segment(firstSeq: nextSeq, path: directory + "/" + Segment.fileName(firstSeq: nextSeq)))
        }
    }

    // MARK: The acknowledged position

    private static let ackMagic: UInt32 = 0x4B43_4152  // "RACK"

    private func readAck() -> UInt64 {
        let fd = open(directory + "/acked", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return 0 }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 16)
        guard bytes.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, 16, 0) }) == 16 else { return 0 }
        let seq = bytes.loadLittleEndian(UInt64.self, at: 0)
        guard bytes.loadLittleEndian(UInt32.self, at: 12) == Self.ackMagic,
            bytes.loadLittleEndian(UInt32.self, at: 8) == CRC32.checksum(Array(bytes[0..<8]))
        else {
            // A damaged ack position only means resending: start from everything still buffered.
            return 0
        }
        return seq
    }

    private func writeAck(_ seq: UInt64) throws(BufferError) {
        let path = directory + "/acked"
        if ackFD < 0 { ackFD = try Self.check(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644), "open", path) }
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(seq)
        bytes.appendLittleEndian(CRC32.checksum(bytes))
        bytes.appendLittleEndian(Self.ackMagic)
        // 16 bytes at offset 0 sit in one sector: the write is atomic on flash and disks alike.
        let written = bytes.withUnsafeBytes { pwrite(ackFD, $0.baseAddress, 16, 0) }
        guard written == 16, fdatasync(ackFD) == 0 else {
            let error = BufferError(operation: "write", path: path, code: errno)
            diskError = error.description
            throw error
        }
    }

    // MARK: Drop counters

    private static let dropsMagic: UInt32 = 0x5044_4752  // "RGDP"

    /// Reads the drop counters (dropped and reported, by priority); damaged means zero.
    private func readDrops() {
        let fd = open(directory + "/drops", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 40)
        guard bytes.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, 40, 0) }) == 40,
            bytes.loadLittleEndian(UInt32.self, at: 36) == Self.dropsMagic,
            bytes.loadLittleEndian(UInt32.self, at: 32) == CRC32.checksum(Array(bytes[0..<32]))
        else { return }
        droppedNormal = bytes.loadLittleEndian(UInt64.self, at: 0)
        droppedAlarm = bytes.loadLittleEndian(UInt64.self, at: 8)
        reportedNormal = bytes.loadLittleEndian(UInt64.self, at: 16)
        reportedAlarm = bytes.loadLittleEndian(UInt64.self, at: 24)
    }

    private func writeDrops() throws(BufferError) {
        let path = directory + "/drops"
        var bytes: [UInt8] = []
        for value in [droppedNormal, droppedAlarm, reportedNormal, reportedAlarm] { bytes.appendLittleEndian(value) }
        bytes.appendLittleEndian(CRC32.checksum(bytes))
        bytes.appendLittleEndian(Self.dropsMagic)
        let fd = try Self.check(open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644), "open", path)
        defer { Glibc.close(fd) }
        guard bytes.withUnsafeBytes({ pwrite(fd, $0.baseAddress, 40, 0) }) == 40, fdatasync(fd) == 0 else {
            throw BufferError(operation: "write", path: path, code: errno)
        }
    }

    /// Drops not yet reported upstream, marked reported (persisted at the next commit): the
    /// uplink turns them into one `buffer_overflow` event when the link returns.
    public func takeUnreportedDrops() -> (normal: UInt64, alarm: UInt64)? {
        lock.withLock {
            let normal = droppedNormal - reportedNormal
            let alarm = droppedAlarm - reportedAlarm
            guard normal + alarm > 0 else { return nil }
            reportedNormal = droppedNormal
            reportedAlarm = droppedAlarm
            dropsDirty = true
            return (normal, alarm)
        }
    }

    // MARK: Sync thread

    private func startSyncThread() {
        guard settings.syncIntervalMs > 0 else { return }
        let unmanaged = Unmanaged.passRetained(self)
        var thread = pthread_t()
        let result = pthread_create(
            &thread, nil,
            { argument in
                let buffer = Unmanaged<DiskBuffer>.fromOpaque(argument!).takeRetainedValue()
                buffer.syncLoop()
                return nil
            }, unmanaged.toOpaque())
        if result == 0 { syncThread = thread } else { unmanaged.release() }
    }

    private func syncLoop() {
        lock.withLock {
            while !closed {
                lock.wait(until: MonotonicInstant.now().adding(milliseconds: settings.syncIntervalMs))
                if closed { break }
                try? syncLocked()
            }
        }
    }

    // MARK: File helpers

    static func makeDirectory(_ path: String) throws(BufferError) {
        if mkdir(path, 0o750) != 0, errno != EEXIST {
            throw BufferError(operation: "create directory", path: path, code: errno)
        }
    }

    static func check(_ fd: Int32, _ operation: String, _ path: String) throws(BufferError) -> Int32 {
        guard fd >= 0 else { throw BufferError(operation: operation, path: path, code: errno) }
        return fd
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(BufferError) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0, errno == EINTR { continue }
            guard written > 0 else { throw BufferError(operation: "write", path: path, code: errno) }
            offset += written
        }
    }
}

/// Where a sequential reader left off, so each batch does not rescan its segment.
private struct ReadCursor {
    var segmentFirstSeq: UInt64
    var offset: Int
    /// The seq expected at `offset`.
    var seq: UInt64
}
