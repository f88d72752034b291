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

/// A run of seqs that will never arrive upstream, found when the buffer was opened (or when a
/// segment could not be read later). Reported upstream as a `records_lost` event, in the log,
/// in `status` and in the metrics.
public struct SeqLoss: Sendable, Equatable, CustomStringConvertible {
    /// Why the seqs will not arrive.
    public enum Reason: String, Sendable {
        /// Past the last intact record, up to the reserved high-water mark: records appended
        /// but not yet durable at a power cut, or the end of the buffer's files gone. Seqs are
        /// reserved in blocks, so part of the range was never handed out: not countable.
        case tailLost = "tail_lost"
        /// Below an intact record: every seq here was handed out and was on flash (damaged
        /// frames, a deleted or emptied segment). Countable.
        case damaged
        /// The range of a segment file that cannot be read (not a regular file, open refused,
        /// a name out of range).
        case unreadableSegment = "unreadable_segment"
        /// The reservation file was damaged: the next seq jumps a block past everything known,
        /// so none is reused; the seqs skipped are reported as this loss.
        case reservationUnreadable = "reservation_unreadable"
    }

    /// First and last seq of the run (inclusive).
    public var from: UInt64
    public var to: UInt64
    /// Records known lost in the run; nil when it cannot be counted (part of the run was never
    /// handed out).
    public var count: UInt64?
    public var reason: Reason

    public init(from: UInt64, to: UInt64, count: UInt64?, reason: Reason) {
        self.from = from
        self.to = to
        self.count = count
        self.reason = reason
    }

    /// How many seqs the run spans.
    public var seqs: UInt64 { to - from + 1 }

    public var description: String {
        "seqs \(HumanFormat.range(from, to)) will never arrive (\(reason.rawValue); "
            + (count.map { "\(HumanFormat.count($0, "record")) lost" }
                ?? "up to \(HumanFormat.count(seqs, "record")), not countable") + ")"
    }
}

/// What the buffer holds, for `railgate status` and `railgate buffer stats`.
public struct BufferStats: Sendable, Equatable {
    /// Records not yet acknowledged upstream.
    public var records: Int
    /// Bytes of all segment files on disk.
    public var bytes: Int
    /// Records in the segment files, acknowledged or not: the records `bytes` holds (acknowledged
    /// ones stay until their segment is removed). `bytes / storedRecords` is the mean size of a
    /// record on disk, frame included.
    public var storedRecords: Int
    /// Oldest unacknowledged seq (== nextSeq when empty).
    public var firstSeq: UInt64
    /// The seq the next record will get.
    public var nextSeq: UInt64
    /// The newest record's seq (0 when the buffer holds none).
    public var lastSeq: UInt64
    /// Everything up to here was acknowledged by the broker.
    public var ackedSeq: UInt64
    /// Everything up to here is on flash (fsynced).
    public var durableSeq: UInt64
    /// The durable high-water mark: no seq above it was ever handed out (reserved in blocks).
    public var reservedSeq: UInt64
    public var droppedNormal: UInt64
    public var droppedAlarm: UInt64
    /// Bytes skipped as corrupt when the buffer was opened.
    public var corruptBytesSkipped: Int
    public var maxBytes: Int
    /// The last disk error, until a write succeeds again.
    public var diskError: String?
    /// Records known lost (damaged or unreadable files) since the buffer was opened.
    public var lostRecords: UInt64
    /// Seqs that will never arrive, found since the buffer was opened (lost records and seqs
    /// reserved but not handed out before a power cut).
    public var lostSeqs: UInt64
    /// The runs of lost seqs found since the buffer was opened, oldest first (at most 16).
    public var losses: [SeqLoss]
    /// Damaged state found when the buffer was opened, and what was done about it.
    public var warnings: [String]

    public var dropped: UInt64 { droppedNormal &+ droppedAlarm }
}

/// The durable record buffer under `state_dir/buffer` (see `Sources/RailgateBuffer/DESIGN.md`).
///
/// Records get their `seq` in `append`, are written to the active segment at once and made
/// durable by a group commit every `sync_interval_ms`, run on the buffer's own sync thread
/// outside the lock appends take; only durable records are handed out by
/// `records(after:limits:)`, so a seq is never seen upstream before it is on flash. Seqs are
/// handed out only below a durable high-water mark reserved a block ahead, so none is reused
/// whatever the disk loses. A record leaves only when `acknowledge(through:)` covers it.
/// Thread-safe: pollers append, the uplink reads and acknowledges, from their own threads.
public final class DiskBuffer: @unchecked Sendable {
    public let directory: String
    private let stateDirectory: String
    private let settings: BufferSettings
    private let segmentLimit: Int
    private let readOnly: Bool
    /// The `source` of the events the buffer writes itself (`records_lost`): the gateway id.
    private let reportSource: String
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
    /// Seqs reserved per write of the `reserved` file, at least: the next block is reserved when
    /// half of this one is left, and a block lasts about two seconds at the current rate (at
    /// most 2^24 seqs), so the file is written once a second at most, however fast records come.
    static let reservationBlock: UInt64 = 1 << 16
    private static let largestReservationBlock: UInt64 = 1 << 24
    /// When and where the last block was reserved (for the rate).
    private var lastReservation = (at: MonotonicInstant.now(), seq: UInt64(0))
    private var lockFD: Int32 = -1
    private var ackFD: Int32 = -1
    private var nextSeq: UInt64 = 1
    /// The last seq whose frame is written to its file (not in `pending`).
    private var writtenSeq: UInt64 = 0
    private var durableSeq: UInt64 = 0
    /// The durable high-water mark: seqs up to here may be handed out.
    private var reservedSeq: UInt64 = 0
    /// An appender asks the sync thread for the next block.
    private var reservationWanted = false
    /// An appender asks the sync thread to thin or compact ahead: the buffer is nearly full.
    private var compactionWanted = false
    /// The shape of the segments (count and version) when the sync thread last found nothing to
    /// compact: not asked again until it changes.
    private var compactionIdleShape = -1
    /// Why the last reservation failed, until one succeeds.
    private var reservationFailure: String?
    private var ackedSeq: UInt64 = 0
    private var persistedAck: UInt64 = 0
    private var droppedNormal: UInt64 = 0
    private var droppedAlarm: UInt64 = 0
    /// Drops already reported upstream in a `buffer_overflow` event.
    private var reportedNormal: UInt64 = 0
    private var reportedAlarm: UInt64 = 0
    /// Every seq up to here left the buffer legitimately (acknowledged, or dropped and counted
    /// with the oldest segment): the loss analysis at open starts above it.
    private var retiredThrough: UInt64 = 0
    private var dropsDirty = false
    /// Records acknowledged ahead of the contiguous position (alarms and events sent first).
    private var ackedAhead: Set<UInt64> = []
    private var corruptBytes = 0
    private var diskError: String?
    private var cursor: ReadCursor?
    /// Changes whenever a segment is rewritten or removed: a reader's cursor from before is void.
    private var segmentsVersion = 0
    /// Bytes of every segment but the active one (kept so that appends need not sum them).
    private var closedSegmentBytes = 0
    private var closed = false
    private var syncThread: DaemonThread?
    /// A group commit is running (its `fdatasync` outside the lock); one at a time.
    private var syncing = false
    /// Rotated segments whose frames were written but not yet synced: the next commit syncs and
    /// closes them.
    private var unsyncedFDs: [Int32] = []
    /// A segment was created since the last commit: the directory must be synced too.
    private var directoryDirty = false
    private var losses: [SeqLoss] = []
    private var lostRecords: UInt64 = 0
    private var lostSeqs: UInt64 = 0
    /// Losses not yet in the buffer as a `records_lost` event.
    private var unreportedLosses: [SeqLoss] = []
    /// Damaged state found and worked around; its own lock, so any thread may add to it.
    private let warningsLock = ConditionLock()
    private var warnings: [String] = []
    /// Read-only: the daemon holds the lock, so the reserved block above the last record is in
    /// use, not lost.
    private var daemonRunning = false

    /// Opens (creating if needed) the buffer in `stateDirectory/buffer`, recovering from a crash:
    /// a torn tail is cut off, corrupt frames are skipped and counted, files that cannot be used
    /// are moved aside, and every run of seqs that will never arrive is reported (`losses`) and,
    /// when writing, appended as a `records_lost` event with `source`.
    /// - Parameter readOnly: inspect without changing anything (the technician's `buffer` commands);
    ///   works while the daemon runs.
    /// - Throws: `BufferError` when the directory cannot be created or read, or another daemon
    ///   holds the lock.
    public init(
        stateDirectory: String, settings: BufferSettings, readOnly: Bool = false, source: String = "railgate"
    ) throws(BufferError) {
        directory = stateDirectory + "/buffer"
        self.stateDirectory = stateDirectory
        self.settings = settings
        self.readOnly = readOnly
        reportSource = source
        segmentLimit = min(max(settings.maxBytes / 16, 64 << 10), 8 << 20)
        if !readOnly {
            try Self.makeDirectory(stateDirectory)
            try Self.makeDirectory(directory)
            try takeLock()
        }
        if readOnly { daemonRunning = Self.lockIsHeld(directory + "/lock") }
        try recover()
        if !readOnly {
            recordLimits()
            try startSyncThread()
        }
    }

    private func takeLock() throws(BufferError) {
        let path = directory + "/lock"
        var fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        if fd < 0, [EISDIR, ELOOP, ENXIO, EACCES, EPERM].contains(errno) {
            warn("the lock file \(path) cannot be used (\(String(cString: strerror(errno)))): moved aside")
            moveAside(path)
            fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        }
        lockFD = try Self.check(fd, "open", path)
        // A daemon that is just exiting (or a child forked before it exec'd) may hold the lock
        // for a moment: wait up to 2 s before refusing.
        let deadline = MonotonicInstant.now().adding(milliseconds: 2000)
        while flock(lockFD, LOCK_EX | LOCK_NB) != 0, errno == EWOULDBLOCK || errno == EINTR,
            MonotonicInstant.now() < deadline
        {
            usleep(20_000)
        }
        if flock(lockFD, LOCK_EX | LOCK_NB) != 0 {
            let code = errno
            Glibc.close(lockFD)
            lockFD = -1
            throw BufferError(
                operation: "lock (is another railgate running on this state_dir?)", path: directory, code: code)
        }
    }

    /// Whether a daemon holds the buffer's lock (the read-only tools ask, and take no lock).
    private static func lockIsHeld(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        return flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK
    }

    /// The `max_bytes` the daemon last opened this buffer with (the technician's read-only tools
    /// have no configuration), or nil if unknown or unreadable.
    public static func recordedMaxBytes(stateDirectory: String) -> Int? {
        guard let text = LocalFiles().read(stateDirectory + "/buffer/limits"), text.hasPrefix("max_bytes="),
            let value = Int(text.dropFirst(10).prefix { $0.isNumber }), value > 0
        else { return nil }
        return value
    }

    private func recordLimits() {
        // Rewritten only when it changes: each atomic replacement costs two syncs.
        guard Self.recordedMaxBytes(stateDirectory: stateDirectory) != settings.maxBytes else { return }
        do {
            try writeStateFile("limits", Array("max_bytes=\(settings.maxBytes)\n".utf8))
        } catch {
            warn("could not record max_bytes for the read-only tools: \(error)")
        }
    }

    deinit { close() }

    // MARK: Writing

    /// Appends `record`, assigning its seq. Never waits on `fdatasync` unless
    /// `sync_interval_ms` is 0; waits for the next seq block only if the sync thread has not
    /// reserved it yet (a few milliseconds, every few thousand records at most).
    /// - Throws: `BufferError` when the record cannot be accepted: the disk refused writes and
    ///   4 MiB are held in memory already, or no seq can be reserved durably.
    @discardableResult
    public func append(_ record: Record) throws(BufferError) -> UInt64 {
        let seq = try lock.withLock { () throws(BufferError) -> UInt64 in
            precondition(!readOnly && !closed, "append on a closed or read-only buffer")
            try reportLossesLocked()
            return try appendLocked(record, isLossReport: false)
        }
        // The record is accepted: a failed commit shows in `stats()` and is retried.
        if settings.syncIntervalMs == 0 { try? commit() }
        return seq
    }

    /// With the lock held: assigns the next seq to `record` and puts its frame in `pending`.
    private func appendLocked(_ record: Record, isLossReport: Bool) throws(BufferError) -> UInt64 {
        let seq = nextSeq
        guard seq <= Frame.seqLimit else {
            throw BufferError(operation: "append (the seq limit 2^53 is reached)", path: directory, code: EOVERFLOW)
        }
        try waitForReservation(of: seq)
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
        if syncThread != nil, !compactionWanted, totalBytes + compactionHeadroom > settings.maxBytes,
            segments.count + segmentsVersion != compactionIdleShape
        {
            compactionWanted = true
            lock.broadcast()
        }
        if let diskError, pending.count >= Self.pendingLimit {
            throw BufferError(
                operation: "append (the disk refuses writes: \(diskError))", path: directory, code: ENOSPC)
        }
        let offset = segments[segments.count - 1].size
        let length = Frame.append(record, seq: seq, isLossReport: isLossReport, to: &pending)
        segments[segments.count - 1].append(
            seq: seq, offset: offset, bytes: length, alarm: record.priority == .alarm, sample: record.isSample)
        nextSeq = seq + 1
        // The record is accepted: a refused write leaves it pending for the next attempt, and
        // the reason stays in `diskError` for `stats()`.
        if pending.count >= Self.writeChunk { try? writePending() }
        return seq
    }

    /// With the lock held: returns once `seq` is below the durable reservation. The sync thread
    /// reserves the next block when half of this one is used, so this waits only when records
    /// come faster than it can write a 16-byte file.
    private func waitForReservation(of seq: UInt64) throws(BufferError) {
        if reservedSeq >= seq, reservedSeq - seq >= currentBlock / 2 { return }
        if syncThread == nil {
            try reserveLocked()
            return
        }
        if !reservationWanted {
            reservationWanted = true
            lock.broadcast()
        }
        if reservedSeq >= seq { return }
        let deadline = MonotonicInstant.now().adding(milliseconds: 2000)
        while reservedSeq < seq, reservationFailure == nil, !closed, MonotonicInstant.now() < deadline {
            _ = lock.wait(until: deadline)
        }
        guard reservedSeq >= seq else {
            throw BufferError(
                operation:
                    "append (no seq can be reserved durably: \(reservationFailure ?? "the sync thread is late"))",
                path: directory + "/reserved", code: EIO)
        }
    }

    /// The block size now: two seconds of records at the rate since the last reservation.
    private var currentBlock: UInt64 = reservationBlock

    /// With the lock held: the high-water mark to reserve next, sizing the block to the rate.
    private func nextReservation() -> UInt64 {
        let now = MonotonicInstant.now()
        let elapsed = max(1, now.milliseconds(since: lastReservation.at))
        let used = nextSeq > lastReservation.seq ? nextSeq - lastReservation.seq : 0
        let twoSeconds = used.multipliedReportingOverflow(by: 2000).partialValue / UInt64(elapsed)
        currentBlock = min(max(Self.reservationBlock, twoSeconds), Self.largestReservationBlock)
        lastReservation = (now, nextSeq)
        return min(max(reservedSeq, nextSeq - 1) + currentBlock, Frame.seqLimit)
    }

    /// Reserves the next seq block on the sync thread, outside the lock (one state-file write at
    /// a time: it takes the commit's turn).
    private func reserveAhead() throws(BufferError) {
        let target: UInt64 = lock.withLock {
            while syncing { _ = lock.wait(until: MonotonicInstant.now().adding(milliseconds: 1000)) }
            syncing = true
            return nextReservation()
        }
        var failure: BufferError?
        do { try writeReservation(target) } catch { failure = error }
        lock.withLock {
            if let failure {
                reservationFailure = failure.description
                diskError = failure.description
            } else {
                reservedSeq = max(reservedSeq, target)
                reservationFailure = nil
            }
            reservationWanted = false
            syncing = false
            lock.broadcast()
        }
        if let failure { throw failure }
    }

    /// With the lock held, without a sync thread (`sync_interval_ms` 0): reserves the next block
    /// at once.
    private func reserveLocked() throws(BufferError) {
        // A commit writing the reservation file without the lock finishes first (one writer).
        while syncing { _ = lock.wait(until: MonotonicInstant.now().adding(milliseconds: 1000)) }
        let target = nextReservation()
        do {
            try writeReservation(target)
            reservedSeq = target
            reservationFailure = nil
        } catch {
            reservationFailure = error.description
            diskError = error.description
            throw error
        }
    }

    /// Makes everything appended so far durable, and persists the acknowledged position.
    /// - Throws: `BufferError` from `write` or `fdatasync` (also kept for `stats()`).
    public func sync() throws(BufferError) {
        try commit()
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
        writtenSeq = nextSeq - 1
        diskError = nil
    }

    /// The most frames held in memory while the disk refuses writes; past it `append` refuses
    /// and the caller holds records itself.
    private static let pendingLimit = 4 << 20

    /// What one group commit does outside the lock.
    private struct CommitPlan {
        var durableTarget: UInt64
        var files: [Int32]
        var directory: Bool
        var ack: UInt64?
        var drops: [UInt8]?
        var reservation: UInt64?
        var writeFailure: BufferError?
    }

    /// One group commit: under the lock, writes the pending frames and notes what needs syncing;
    /// then, without the lock, `fdatasync`s the segments written since the last commit, the
    /// directory if a segment was created, and writes the ack, drop and reservation files;
    /// then, under the lock again, moves `durableSeq` to what was written before the sync began.
    /// Appends, readers and acknowledgements go on meanwhile. One commit runs at a time.
    private func commit(closing: Bool = false) throws(BufferError) {
        guard !readOnly else { return }
        let plan: CommitPlan = try lock.withLock { () throws(BufferError) -> CommitPlan in
            while syncing { _ = lock.wait(until: MonotonicInstant.now().adding(milliseconds: 1000)) }
            syncing = true
            var writeFailure: BufferError?
            do throws(BufferError) { try writePending() } catch { writeFailure = error }
            var files = unsyncedFDs
            unsyncedFDs = []
            if activeFD >= 0, writtenSeq > durableSeq || !files.isEmpty {
                let copy = dup(activeFD)
                if copy >= 0 { files.append(copy) }
            }
            var reservation: UInt64?
            if closing, writeFailure == nil {
                // A clean stop: nothing above the last seq was handed out, so the next start
                // reports no gap.
                reservation = nextSeq - 1
            } else if reservationWanted || reservedSeq < nextSeq - 1 + currentBlock / 2 {
                reservation = nextReservation()
            }
            let plan = CommitPlan(
                durableTarget: writtenSeq, files: files, directory: directoryDirty,
                ack: persistedAck != ackedSeq ? ackedSeq : nil, drops: dropsDirty ? dropsBytes() : nil,
                reservation: reservation, writeFailure: writeFailure)
            directoryDirty = false
            dropsDirty = false
            if let writeFailure, files.isEmpty {
                syncing = false
                lock.broadcast()
                throw writeFailure
            }
            return plan
        }
        var syncFailure: BufferError?
        var unsynced: [Int32] = []
        for fd in plan.files {
            if fdatasync(fd) == 0 {
                Glibc.close(fd)
            } else {
                syncFailure = syncFailure ?? BufferError(operation: "fdatasync", path: directory, code: errno)
                unsynced.append(fd)
            }
        }
        if plan.directory, syncFailure == nil { syncFailure = syncDirectory() }
        // What was written before the sync began is durable now, even if later frames were refused.
        var failure = syncFailure ?? plan.writeFailure
        var ackWritten = false
        if let ack = plan.ack {
            do {
                try writeAck(ack)
                ackWritten = true
            } catch { failure = failure ?? error }
        }
        var dropsWritten = plan.drops == nil
        if let drops = plan.drops {
            do {
                try writeDrops(drops)
                dropsWritten = true
            } catch { failure = failure ?? error }
        }
        var reservationError: BufferError?
        // A clean stop lowers the reservation only once everything is durable.
        if let target = plan.reservation, !(closing && failure != nil) {
            do { try writeReservation(target) } catch { reservationError = error }
        }
        lock.withLock {
            if syncFailure == nil {
                if plan.durableTarget > durableSeq { durableSeq = plan.durableTarget }
            } else {
                unsyncedFDs += unsynced
                directoryDirty = directoryDirty || plan.directory
            }
            if ackWritten, let ack = plan.ack {
                persistedAck = ack
                removeAcknowledgedSegments()
            }
            if !dropsWritten { dropsDirty = true }
            if let target = plan.reservation {
                if let reservationError {
                    reservationFailure = reservationError.description
                    failure = failure ?? reservationError
                } else {
                    if !closing { reservedSeq = max(reservedSeq, target) }
                    reservationFailure = nil
                }
                reservationWanted = false
            }
            if let failure { diskError = failure.description } else { diskError = nil }
            syncing = false
            lock.broadcast()
        }
        if let failure { throw failure }
    }

    /// Syncs and closes the files; the buffer cannot be used afterwards. A clean close lowers the
    /// reservation to the last seq handed out, so the next start reports no gap.
    public func close() {
        let thread: DaemonThread?? = lock.withLock {
            guard !closed else { return nil }
            closed = true
            lock.broadcast()
            return .some(syncThread)
        }
        guard let thread else { return }
        thread?.join()
        if !readOnly {
            do { try commit(closing: true) } catch { warn("closing: \(error)") }
        }
        lock.withLock {
            for fd in [activeFD, ackFD, lockFD] + unsyncedFDs where fd >= 0 { Glibc.close(fd) }
            unsyncedFDs = []
            activeFD = -1
            ackFD = -1
            lockFD = -1
        }
    }

    // MARK: Reading and acknowledging

    /// Up to `limits` durable records with seq > `seq`, oldest first, as stored (encoded JSON):
    /// one contiguous run in seq order, without the records in `excluding` and those
    /// acknowledged ahead. `limits.maxBytes` bounds the records joined by commas (the first
    /// record always comes); the batch ends at the first record that does not fit, so whatever
    /// follows the last record returned comes in the next batch. Files are read outside the lock.
    public func records(
        after seq: UInt64, limits: BatchLimits, excluding: Set<UInt64> = []
    ) -> [(seq: UInt64, bytes: [UInt8])] {
        var result: [(seq: UInt64, bytes: [UInt8])] = []
        guard limits.maxRecords > 0 else { return result }
        var size = 0
        let (after, upTo, skipped, version, startCursor) = lock.withLock {
            let from = max(seq, ackedSeq)
            return (
                from, readOnly ? nextSeq - 1 : durableSeq, ackedAhead, segmentsVersion,
                self.cursor.flatMap { $0.seq <= from + 1 ? $0 : nil }
            )
        }
        guard after < upTo else { return result }
        var cursor = startCursor
        var previousSegment: UInt64?
        // The last intact frame's seq: a frame at or below it (out of order, or repeated in a
        // later segment) is damage, skipped as the recovery's scan skips it.
        var lastSeq: UInt64 = 0
        var full = false
        while !full, result.count < limits.maxRecords {
            // The next segment holding seqs above `after`, opened under the lock (it may be
            // compacted or removed meanwhile: the open descriptor keeps what it had).
            guard let (segment, fd) = lock.withLock({ nextSegment(after: after, following: previousSegment) })
            else { break }
            previousSegment = segment.firstSeq
            defer { Glibc.close(fd) }
            if cursor == nil || cursor!.segmentFirstSeq != segment.firstSeq {
                cursor = ReadCursor(segmentFirstSeq: segment.firstSeq, offset: 0, seq: 0)
            }
            var offset = cursor!.offset
            var previousSeq = max(lastSeq, cursor!.seq > 0 ? cursor!.seq - 1 : 0)
            defer { lastSeq = previousSeq }
            var reachedEnd = false
            var reader = FrameReader(fd: fd)
            while offset < segment.size, result.count < limits.maxRecords {
                guard let frame = Frame.read(&reader, at: offset, limit: segment.size), frame.seq > previousSeq else {
                    // Damaged bytes (counted when the buffer was opened): skip to the next intact frame.
                    guard
                        let next = Frame.resynchronise(
                            fd: fd, from: offset + 1, limit: segment.size, after: previousSeq)
                    else { break }
                    offset = next
                    continue
                }
                previousSeq = frame.seq
                if frame.seq > upTo {
                    reachedEnd = true
                    break
                }
                if frame.seq > after, !excluding.contains(frame.seq), !skipped.contains(frame.seq) {
                    // The size of the records joined by commas, as a batch carries them.
                    let added = frame.payload.count + (result.isEmpty ? 0 : 1)
                    if !result.isEmpty, size + added > limits.maxBytes {
                        // The batch is full: it ends here, and the next one starts with this
                        // record. Never go on to a later segment (that would skip the rest).
                        full = true
                        break
                    }
                    result.append((frame.seq, frame.payload))
                    size += added
                } else if frame.seq <= after {
                    cursor = ReadCursor(
                        segmentFirstSeq: segment.firstSeq, offset: offset + frame.length, seq: frame.seq + 1)
                }
                offset += frame.length
            }
            if reachedEnd || (result.last.map { $0.seq >= upTo } ?? false) { break }
        }
        lock.withLock { if segmentsVersion == version { self.cursor = cursor } }
        return result
    }

    /// With the lock held: the first segment after `following` (by first seq) with records above
    /// `after`, and a read-only descriptor of it. A closed segment that cannot be opened is a
    /// loss: counted, reported, and left out from then on.
    private func nextSegment(after: UInt64, following: UInt64?) -> (Segment, Int32)? {
        var index = segments.firstIndex { ($0.firstSeq > (following ?? 0) || following == nil) && $0.lastSeq > after }
        while let current = index {
            let segment = segments[current]
            let fd = open(segment.path, O_RDONLY | O_CLOEXEC)
            if fd >= 0 { return (segment, fd) }
            let reason = String(cString: strerror(errno))
            guard current < segments.count - 1 else { return nil }
            let lostCount = UInt64(segment.count(after: ackedSeq))
            let from = max(segment.firstSeq, ackedSeq + 1)
            let to = segments[current + 1].firstSeq - 1
            warn("segment \(segment.path) cannot be read (\(reason)): its records are lost")
            segments.remove(at: current)
            segmentsChanged()
            if from <= to { recordLoss(SeqLoss(from: from, to: to, count: lostCount, reason: .unreadableSegment)) }
            do { try reportLossesLocked() } catch {
                warn("reporting lost seqs: \(error) (retried with the next append)")
            }
            index = segments.indices.first { $0 >= current && segments[$0].lastSeq > after }
        }
        return nil
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
            for segment in segments where segment.lastSeq > after && !segment.precious.isEmpty {
                let wanted = segment.precious.filter {
                    $0.seq > after && $0.seq <= upTo && !excluding.contains($0.seq) && !ackedAhead.contains($0.seq)
                }
                guard !wanted.isEmpty else { continue }
                let fd = open(segment.path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { continue }  // reported as a loss by the next `records(after:)`
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

    /// The last disk error and how many runs of lost seqs were found so far, in one call (the
    /// sink checks both after every append).
    public var health: (diskError: String?, losses: Int) { lock.withLock { (diskError, losses.count) } }

    public func stats() -> BufferStats {
        lock.withLock {
            let bytes = totalBytes
            let pending = segments.reduce(0) { $0 + $1.count(after: ackedSeq) } - ackedAhead.count
            let first = segments.lazy.compactMap { $0.firstSeq(after: self.ackedSeq) }.first ?? nextSeq
            return BufferStats(
                records: max(0, pending), bytes: bytes, storedRecords: segments.reduce(0) { $0 + $1.count },
                firstSeq: first, nextSeq: nextSeq,
                lastSeq: segments.last(where: { $0.count > 0 })?.lastSeq ?? 0, ackedSeq: ackedSeq,
                durableSeq: readOnly ? nextSeq - 1 : durableSeq, reservedSeq: reservedSeq,
                droppedNormal: droppedNormal, droppedAlarm: droppedAlarm, corruptBytesSkipped: corruptBytes,
                maxBytes: settings.maxBytes, diskError: diskError, lostRecords: lostRecords, lostSeqs: lostSeqs,
                losses: Array(losses.suffix(16)), warnings: warningsLock.withLock { warnings })
        }
    }

    // MARK: Reports upstream

    /// Appends one `buffer_overflow` event (alarm priority, with `source`) for the drops not yet
    /// reported and marks them reported in the same step, under the buffer's lock: if the
    /// append fails nothing is marked, and the next call reports them. Returns what was
    /// reported, or nil when nothing was dropped since the last report.
    /// - Throws: `BufferError` from the append (the drops stay unreported).
    public func appendOverflowReport(source: String) throws(BufferError) -> (normal: UInt64, alarm: UInt64)? {
        try lock.withLock { () throws(BufferError) -> (normal: UInt64, alarm: UInt64)? in
            guard !readOnly, !closed else { return nil }
            let normal = droppedNormal - min(reportedNormal, droppedNormal)
            let alarm = droppedAlarm - min(reportedAlarm, droppedAlarm)
            guard normal + alarm > 0 else { return nil }
            let event = Record(
                timestamp: WallClock.now(), source: source,
                body: .event(
                    name: "buffer_overflow",
                    fields: [("dropped_normal", .unsigned(normal)), ("dropped_alarm", .unsigned(alarm))]),
                priority: .alarm)
            _ = try appendLocked(event, isLossReport: false)
            reportedNormal = droppedNormal
            reportedAlarm = droppedAlarm
            dropsDirty = true
            return (normal, alarm)
        }
    }

    /// With the lock held: appends a `records_lost` event for each loss not yet in the buffer.
    /// A failed append leaves the rest for the next call.
    private func reportLossesLocked() throws(BufferError) {
        while let loss = unreportedLosses.first {
            var fields: [(String, JSON)] = [
                ("from_seq", .unsigned(loss.from)), ("to_seq", .unsigned(loss.to)),
                ("count", loss.count.map(JSON.unsigned) ?? .null), ("reason", .string(loss.reason.rawValue)),
            ]
            fields.append(("seqs", .unsigned(loss.seqs)))
            let event = Record(
                timestamp: WallClock.now(), source: reportSource, body: .event(name: "records_lost", fields: fields),
                priority: .alarm)
            _ = try appendLocked(event, isLossReport: true)
            unreportedLosses.removeFirst()
        }
    }

    /// With the lock held: counts a loss and queues its report.
    private func recordLoss(_ loss: SeqLoss) {
        losses.append(loss)
        if losses.count > 64 { losses.removeFirst(losses.count - 64) }
        lostRecords &+= loss.count ?? 0
        lostSeqs &+= loss.seqs
        if !readOnly { unreportedLosses.append(loss) }
    }

    private func warn(_ text: String) {
        warningsLock.withLock {
            warnings.append(text)
            if warnings.count > 32 { warnings.removeFirst(warnings.count - 32) }
        }
    }

    // MARK: Segments

    /// With the lock held: closes the active segment and starts the next one. The old one's
    /// frames are written; the next commit syncs them and the new directory entry.
    private func rotate() throws(BufferError) {
        try writePending()
        unsyncedFDs.append(activeFD)
        activeFD = -1
        try openSegment(firstSeq: nextSeq)
        removeAcknowledgedSegments()
    }

    private func openSegment(firstSeq: UInt64) throws(BufferError) {
        let path = directory + "/" + Segment.fileName(firstSeq: firstSeq)
        activeFD = try Self.check(
            open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o644), "create", path)
        segments.append(Segment(firstSeq: firstSeq, path: path))
        segmentsChanged()
        // The new file's name must survive a power cut too: synced with the next commit.
        directoryDirty = true
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
                let victim = segments[0]
                count(dropped: victim.unacknowledged(after: ackedSeq))
                removeFirstSegment()
            }
        }
    }

    private func count(dropped: (normal: Int, alarm: Int)) {
        guard dropped.normal + dropped.alarm > 0 else { return }
        droppedNormal &+= UInt64(dropped.normal)
        droppedAlarm &+= UInt64(dropped.alarm)
        dropsDirty = true
    }

    /// With the lock held: removes the oldest segment (acknowledged, or dropped and counted);
    /// every seq below the next one's name is retired (persisted with the drop counters).
    private func removeFirstSegment() {
        let victim = segments.removeFirst()
        unlink(victim.path)
        if let next = segments.first, next.firstSeq > 0, next.firstSeq - 1 > retiredThrough {
            retiredThrough = next.firstSeq - 1
            dropsDirty = true
        }
        if cursor?.segmentFirstSeq == victim.firstSeq { cursor = nil }
        segmentsVersion += 1
        segmentsChanged()
    }

    /// Rewrites closed segment `index` without its acknowledged records and without normal samples
    /// (all of them, or with `thinning` every other one of each source), through a temporary file
    /// renamed over it: a power cut leaves either the old or the new segment, never half of one
    /// (if both names survive, the rewritten one wins at open). An emptied segment other than
    /// the oldest stays as an empty `.rgc` file, so its seqs read as dropped, not lost.
    /// With the lock held; the sync thread does the same ahead of need without it
    /// (`compactAhead`), so appends rarely wait for this.
    private func compact(_ index: Int, thinning: Bool) throws(BufferError) {
        try install(try rewrite(segments[index], thinning: thinning, acked: ackedSeq), at: index)
    }

    /// A rewritten segment: its index entry, the synced temporary file holding its frames, and
    /// how many samples it dropped.
    private struct Rewrite {
        var old: Segment
        var kept: Segment
        var temporary: String
        var droppedSamples: Int
    }

    /// Reads segment `old` and writes the frames it keeps to a synced temporary file
    /// (`NAME.tmp`, or `NAME.ahead.tmp` from the sync thread, so that a rewrite under the lock
    /// and one ahead of it never share a file). Touches no shared state: runs with the lock or
    /// without it.
    private func rewrite(
        _ old: Segment, thinning: Bool, acked: UInt64, ahead: Bool = false
    ) throws(BufferError)
        -> Rewrite
    {
        let fd = open(old.path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BufferError(operation: "open", path: old.path, code: errno) }
        let kind: Segment.Kind = thinning && old.kind == .plain ? .thinned : .compacted
        var kept = Segment(
            firstSeq: old.firstSeq, path: directory + "/" + Segment.fileName(firstSeq: old.firstSeq, kind: kind),
            kind: kind)
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
            guard frame.seq > acked else { continue }
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
        let temporary = kept.path + (ahead ? ".ahead.tmp" : ".tmp")
        let out = try Self.check(
            open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644), "create", temporary)
        do throws(BufferError) {
            try Self.writeAll(out, output, path: temporary)
            guard fdatasync(out) == 0 else { throw BufferError(operation: "fdatasync", path: temporary, code: errno) }
        } catch {
            Glibc.close(out)
            unlink(temporary)
            throw error
        }
        Glibc.close(out)
        return Rewrite(old: old, kept: kept, temporary: temporary, droppedSamples: droppedSamples)
    }

    /// With the lock held: puts `rewrite` in place of segment `index` (a rename: the directory is
    /// synced with the next commit) and counts the samples it dropped.
    private func install(_ rewrite: Rewrite, at index: Int) throws(BufferError) {
        let old = rewrite.old
        if rewrite.kept.count == 0, index == 0 {
            unlink(rewrite.temporary)
            count(dropped: (rewrite.droppedSamples, 0))
            removeFirstSegment()
            return
        }
        guard rename(rewrite.temporary, rewrite.kept.path) == 0 else {
            let error = BufferError(operation: "rename", path: rewrite.temporary, code: errno)
            unlink(rewrite.temporary)
            throw error
        }
        if rewrite.kept.path != old.path { unlink(old.path) }
        directoryDirty = true
        segments[index] = rewrite.kept
        count(dropped: (rewrite.droppedSamples, 0))
        if cursor?.segmentFirstSeq == old.firstSeq { cursor = nil }
        segmentsVersion += 1
        segmentsChanged()
    }

    /// How close to full the sync thread starts thinning and compacting ahead (1/32 of
    /// `max_bytes`, at least 16 KiB): little enough that the policy drops no earlier than it must.
    private var compactionHeadroom: Int { max(settings.maxBytes / 32, 16 << 10) }

    /// On the sync thread: while the buffer is within `compactionHeadroom` of full, thins or compacts the
    /// oldest closed segment as `makeRoom` would, reading and writing outside the lock; the
    /// result is put in place under the lock only if no segment was rewritten or removed
    /// meanwhile. Evicting whole segments of alarms stays with `makeRoom`, when really needed.
    private func compactAhead() {
        while true {
            let job: (index: Int, segment: Segment, thinning: Bool, acked: UInt64, version: Int)? = lock.withLock {
                guard !closed, segments.count > 1, totalBytes + compactionHeadroom > settings.maxBytes else {
                    return nil
                }
                let closedSegments = segments.indices.dropLast()
                if settings.whenFull == .thin,
                    let index = closedSegments.first(where: {
                        !segments[$0].thinned && segments[$0].samples(after: ackedSeq) > 1
                    })
                {
                    return (index, segments[index], true, ackedSeq, segmentsVersion)
                }
                if let index = closedSegments.first(where: { segments[$0].samples(after: ackedSeq) > 0 }) {
                    return (index, segments[index], false, ackedSeq, segmentsVersion)
                }
                compactionIdleShape = segments.count + segmentsVersion
                return nil
            }
            guard let job else { return }
            do {
                let result = try rewrite(job.segment, thinning: job.thinning, acked: job.acked, ahead: true)
                try lock.withLock { () throws(BufferError) in
                    guard segmentsVersion == job.version, job.index < segments.count,
                        segments[job.index].path == job.segment.path
                    else {
                        unlink(result.temporary)  // the segments changed meanwhile: try again
                        return
                    }
                    try install(result, at: job.index)
                }
            } catch {
                lock.withLock { diskError = error.description }
                return
            }
        }
    }

    /// `fsync`s the buffer's directory (new, renamed or removed names); nil on success.
    @discardableResult
    private func syncDirectory() -> BufferError? {
        let dirFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dirFD >= 0 else { return BufferError(operation: "open", path: directory, code: errno) }
        defer { Glibc.close(dirFD) }
        guard fsync(dirFD) == 0 else { return BufferError(operation: "fsync", path: directory, code: errno) }
        return nil
    }

    /// Bytes of all segments, the pending frames included.
    private var totalBytes: Int { closedSegmentBytes + (segments.last?.size ?? 0) }

    /// Recomputes `closedSegmentBytes` after the list of segments changed (rare: rotation, removal).
    private func segmentsChanged() {
        closedSegmentBytes = segments.dropLast().reduce(0) { $0 + $1.size }
    }

    private func removeAcknowledgedSegments() {
        while segments.count > 1, segments[0].lastSeq <= persistedAck {
            removeFirstSegment()
        }
    }

    // MARK: Recovery

    /// A segment file as found at open.
    private struct Scanned {
        var segment: Segment
        var fileSize: Int
        /// The end of the last intact frame.
        var lastGood: Int
        /// Where scanning stopped (the end, or damage with no intact frame after it).
        var stopped: Int
    }

    private func recover() throws(BufferError) {
        readDrops()
        let reservation = readReservation()
        let storedAck = readAck()
        guard let directoryStream = opendir(directory) else {
            throw BufferError(operation: "open", path: directory, code: errno)
        }
        var names: [(name: String, firstSeq: UInt64, kind: Segment.Kind)] = []
        while let entry = readdir(directoryStream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let (firstSeq, kind) = Segment.parse(fileName: name) {
                names.append((name, firstSeq, kind))
            } else if name.hasPrefix("segment-"), name.hasSuffix(".tmp"), !readOnly {
                unlink(directory + "/" + name)  // a compaction cut short: the original is intact
            }
        }
        closedir(directoryStream)
        // Oldest first; of two files with one first seq (a compaction cut between its rename and
        // the old file's removal) the rewritten one wins.
        func rank(_ kind: Segment.Kind) -> Int { kind == .plain ? 0 : kind == .thinned ? 1 : 2 }
        names.sort { $0.firstSeq != $1.firstSeq ? $0.firstSeq < $1.firstSeq : rank($0.kind) > rank($1.kind) }
        var scanned: [Scanned] = []
        var unusable: [(firstSeq: UInt64, kind: Segment.Kind)] = []
        var maxName: UInt64 = 0
        var highest: UInt64 = 0
        for (position, entry) in names.enumerated() {
            let path = directory + "/" + entry.name
            if position > 0, names[position - 1].firstSeq == entry.firstSeq {
                warn("\(path) is superseded by its rewritten copy: removed")
                if !readOnly { unlink(path) }
                continue
            }
            guard entry.firstSeq <= Frame.seqLimit else {
                warn("segment \(path) is named with a seq out of range: moved aside, not read")
                if !readOnly { moveAside(path) }
                continue
            }
            maxName = max(maxName, entry.firstSeq)
            var status = stat()
            let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
            let problem: String? =
                fd < 0
                ? String(cString: strerror(errno))
                : fstat(fd, &status) != 0
                    ? String(cString: strerror(errno))
                    : (status.st_mode & S_IFMT) != S_IFREG ? "not a regular file" : nil
            if let problem {
                if fd >= 0 { Glibc.close(fd) }
                warn("segment \(path) cannot be read (\(problem)): its records are lost; moved aside")
                if !readOnly { moveAside(path) }
                unusable.append((entry.firstSeq, entry.kind))
                continue
            }
            let file = scan(
                fd: fd, segment: Segment(firstSeq: entry.firstSeq, path: path, kind: entry.kind),
                fileSize: Int(status.st_size), after: highest)
            Glibc.close(fd)
            highest = max(highest, file.segment.lastSeq)
            scanned.append(file)
        }
        // Bytes that are not intact frames: counted; at the end of the last segment (a torn tail
        // from a power cut) cut off, so appends continue on a frame boundary.
        for index in scanned.indices {
            let file = scanned[index]
            let isLast = index == scanned.count - 1
            if file.lastGood < file.fileSize {
                corruptBytes += file.fileSize - file.stopped
                if isLast, !readOnly {
                    if truncate(file.segment.path, off_t(file.lastGood)) != 0 {
                        warn("could not cut the torn tail of \(file.segment.path): \(String(cString: strerror(errno)))")
                    }
                }
            }
            scanned[index].segment.size = isLast && !readOnly ? file.lastGood : file.fileSize
        }
        segments = scanned.map(\.segment)
        let lastIntact = segments.map(\.lastSeq).max() ?? 0
        let known = max(lastIntact, maxName > 0 ? maxName - 1 : 0, retiredThrough)

        // The reservation: no seq above it was handed out.
        var reserved: UInt64?
        var reservationDamaged = false
        switch reservation {
        case .missing:
            reserved = nil  // a new buffer, or one written before reservations existed
        case .value(let value) where value <= Frame.seqLimit:
            reserved = value
        case .value, .damaged:
            reservationDamaged = true
            reserved = min(known + Self.reservationBlock, Frame.seqLimit)
            warn(
                "the seq reservation file is damaged: seqs up to \(reserved!) are skipped so that none is reused")
        }
        // The acknowledged position, believed only if it is below the last seq written.
        let ceiling = reserved ?? known
        ackedSeq = 0
        if let storedAck {
            if storedAck > ceiling || storedAck > Frame.seqLimit {
                warn(
                    "the acknowledged position \(storedAck) is past the last seq written (\(ceiling)): not trusted; "
                        + "everything buffered is sent again")
            } else {
                ackedSeq = storedAck
            }
        }
        persistedAck = ackedSeq
        // While the daemon runs, the reserved block above its last record is in use, not lost.
        let top = daemonRunning ? max(known, ackedSeq) : max(reserved ?? 0, known, ackedSeq)
        nextSeq = top + 1
        writtenSeq = nextSeq - 1
        durableSeq = nextSeq - 1
        reservedSeq = max(reserved ?? top, top)
        for loss in findLosses(
            base: max(ackedSeq, retiredThrough), top: top, lastIntact: lastIntact, unusable: unusable,
            reservationDamaged: reservationDamaged)
        {
            recordLoss(loss)
        }
        segmentsChanged()
        if !readOnly {
            if let last = segments.last {
                let path = last.path
                activeFD = try Self.check(open(path, O_WRONLY | O_APPEND | O_CLOEXEC), "open", path)
            } else {
                try openSegment(firstSeq: nextSeq)
                _ = syncDirectory()
                directoryDirty = false
            }
            removeAcknowledgedSegments()
            // The first block before any seq is handed out; a failure here (a full disk) is
            // retried by the sync thread, and appends wait for it.
            lastReservation = (MonotonicInstant.now(), nextSeq)
            do { try reserveLocked() } catch { warn("reserving seqs: \(error)") }
            do { try reportLossesLocked() } catch {
                warn("reporting lost seqs: \(error) (retried with the next append)")
            }
        } else if segments.isEmpty {
            segments.append(Segment(firstSeq: nextSeq, path: directory + "/" + Segment.fileName(firstSeq: nextSeq)))
        }
    }

    /// Reads one segment's frames in order, keeping the intact ones with seqs above `after`.
    private func scan(fd: Int32, segment start: Segment, fileSize: Int, after: UInt64) -> Scanned {
        var segment = start
        var offset = 0
        var lastGood = 0
        var previousSeq = after
        while offset < fileSize {
            if let frame = Frame.read(fd: fd, at: offset, limit: fileSize), frame.seq > previousSeq {
                segment.append(
                    seq: frame.seq, offset: offset, bytes: frame.length, alarm: frame.priority == .alarm,
                    sample: frame.isSample)
                if frame.isLossReport { noteReportedLoss(frame) }
                previousSeq = frame.seq
                offset += frame.length
                lastGood = offset
                continue
            }
            // Corrupt or torn: look for the next valid frame; none before the end means a torn tail.
            guard let next = Frame.resynchronise(fd: fd, from: offset + 1, limit: fileSize, after: previousSeq) else {
                break
            }
            corruptBytes += next - offset
            offset = next
        }
        return Scanned(segment: segment, fileSize: fileSize, lastGood: lastGood, stopped: min(offset, fileSize))
    }

    /// Ranges already reported upstream by `records_lost` events still in the buffer.
    private var reportedRanges: [ClosedRange<UInt64>] = []

    private func noteReportedLoss(_ frame: Frame) {
        let event: JSON
        do { event = try JSONReader.parse(String(decoding: frame.payload, as: UTF8.self)) } catch {
            warn("the records_lost event at seq \(frame.seq) does not parse (\(error)): its gap may be reported again")
            return
        }
        guard let from = event["from_seq"]?.intValue, let to = event["to_seq"]?.intValue, from > 0, from <= to else {
            warn("the records_lost event at seq \(frame.seq) has no valid range: its gap may be reported again")
            return
        }
        reportedRanges.append(UInt64(from)...UInt64(to))
    }

    /// The runs of seqs in `base+1...top` that are neither in an intact record, nor in a
    /// thinned or compacted segment's range (dropped and counted), nor in a range a
    /// `records_lost` event in the buffer reported already.
    private func findLosses(
        base: UInt64, top: UInt64, lastIntact: UInt64, unusable: [(firstSeq: UInt64, kind: Segment.Kind)],
        reservationDamaged: Bool
    ) -> [SeqLoss] {
        guard top > base else { return [] }
        // Every segment's name range: [its name, the next name - 1].
        var names = segments.map { ($0.firstSeq, $0.kind, true) } + unusable.map { ($0.firstSeq, $0.kind, false) }
        names.sort { $0.0 < $1.0 }
        var explained: [ClosedRange<UInt64>] = reportedRanges
        var unreadableRanges: [(range: ClosedRange<UInt64>, countable: Bool)] = []
        for (index, (firstSeq, kind, readable)) in names.enumerated() {
            let end = index + 1 < names.count ? names[index + 1].0 : top + 1
            guard end > firstSeq else { continue }
            let range = firstSeq...(end - 1)
            if readable, kind != .plain { explained.append(range) }
            if !readable { unreadableRanges.append((range, kind == .plain)) }
        }
        for segment in segments where segment.count > 0 {
            if let seqs = segment.seqs {
                var runStart = seqs[0]
                var previous = seqs[0]
                for seq in seqs.dropFirst() {
                    if seq != previous + 1 {
                        explained.append(runStart...previous)
                        runStart = seq
                    }
                    previous = seq
                }
                explained.append(runStart...previous)
            } else {
                explained.append(segment.firstRecordSeq...segment.lastSeq)
            }
        }
        explained.sort { $0.lowerBound < $1.lowerBound }
        var holes: [ClosedRange<UInt64>] = []
        var next = base + 1
        for range in explained where range.upperBound >= next {
            if range.lowerBound > next { holes.append(next...min(range.lowerBound - 1, top)) }
            if range.upperBound >= top { next = top + 1 } else { next = max(next, range.upperBound + 1) }
            if next > top { break }
        }
        if next <= top { holes.append(next...top) }
        // Split holes at unreadable segments' boundaries, and name the cause of each part.
        var result: [SeqLoss] = []
        for hole in holes {
            var start = hole.lowerBound
            while start <= hole.upperBound {
                if let unreadable = unreadableRanges.first(where: { $0.range.contains(start) }) {
                    let end = min(unreadable.range.upperBound, hole.upperBound)
                    let countable = unreadable.countable && end < lastIntact
                    result.append(
                        SeqLoss(
                            from: start, to: end, count: countable ? end - start + 1 : nil, reason: .unreadableSegment))
                    start = end + 1
                    continue
                }
                let nextUnreadable = unreadableRanges.map(\.range.lowerBound).filter { $0 > start }.min()
                let end = min(hole.upperBound, (nextUnreadable ?? UInt64.max) - 1)
                if end < lastIntact {
                    result.append(SeqLoss(from: start, to: end, count: end - start + 1, reason: .damaged))
                } else {
                    result.append(
                        SeqLoss(
                            from: start, to: end, count: nil,
                            reason: reservationDamaged ? .reservationUnreadable : .tailLost
                        ))
                }
                if end == UInt64.max { break }
                start = end + 1
            }
        }
        return result
    }

    /// Renames a file that cannot serve as buffer state out of the way (`NAME.unusable-N`), so
    /// that a new one can take its place; the original stays for the technician.
    private func moveAside(_ path: String) {
        for attempt in 1...100 where access(path + ".unusable-\(attempt)", F_OK) != 0 {
            if rename(path, path + ".unusable-\(attempt)") != 0 {
                warn("could not move \(path) aside: \(String(cString: strerror(errno)))")
            }
            return
        }
    }

    // MARK: State files

    /// Replaces `directory/name` with `bytes` atomically and durably: a new file, written and
    /// synced, renamed over the old one, and the directory synced. A power cut leaves the old
    /// file or the new one, never an empty or half-written one.
    private func writeStateFile(_ name: String, _ bytes: [UInt8]) throws(BufferError) {
        let path = directory + "/" + name
        let temporary = path + ".new"
        let fd = try Self.check(
            open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644), "create", temporary)
        do throws(BufferError) {
            try Self.writeAll(fd, bytes, path: temporary)
            guard fdatasync(fd) == 0 else { throw BufferError(operation: "fdatasync", path: temporary, code: errno) }
        } catch {
            Glibc.close(fd)
            unlink(temporary)
            throw error
        }
        Glibc.close(fd)
        if rename(temporary, path) != 0 {
            var code = errno
            if code == EISDIR || code == ENOTEMPTY || code == EEXIST {
                // A directory where the file should be: move it aside and take its place.
                moveAside(path)
                code = rename(temporary, path) == 0 ? 0 : errno
            }
            if code != 0 {
                unlink(temporary)
                throw BufferError(operation: "rename", path: temporary, code: code)
            }
        }
        if let error = syncDirectory() { throw error }
    }

    /// A 16-byte state record: `u64 value | u32 CRC-32 of the value | u32 magic`.
    private static func stateRecord(_ value: UInt64, magic: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLittleEndian(value)
        bytes.appendLittleEndian(CRC32.checksum(bytes))
        bytes.appendLittleEndian(magic)
        return bytes
    }

    /// What a state file holds.
    private enum StateValue {
        case missing
        case damaged
        case value(UInt64)
    }

    /// Reads a 16-byte state record (`stateRecord`); a file that cannot be opened or read, is
    /// not a regular file, or fails its CRC or magic is damaged (with a warning).
    private func readStateRecord(_ name: String, magic: UInt32) -> StateValue {
        let path = directory + "/" + name
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            if errno == ENOENT { return .missing }
            warn("\(path) cannot be read (\(String(cString: strerror(errno))))")
            return .damaged
        }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 16)
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, 16, 0) }
        guard count == 16, bytes.loadLittleEndian(UInt32.self, at: 12) == magic,
            bytes.loadLittleEndian(UInt32.self, at: 8) == CRC32.checksum(Array(bytes[0..<8]))
        else {
            let reason = count < 0 ? String(cString: strerror(errno)) : count < 16 ? "\(count) bytes" : "bad checksum"
            warn("\(path) is damaged (\(reason))")
            return .damaged
        }
        return .value(bytes.loadLittleEndian(UInt64.self, at: 0))
    }

    // MARK: The seq reservation

    private static let reservationMagic: UInt32 = 0x5653_4752  // "RGSV"

    private func readReservation() -> StateValue { readStateRecord("reserved", magic: Self.reservationMagic) }

    /// Persists the high-water mark `seq` (atomically: new file, sync, rename, sync directory).
    /// Called without the lock from the sync thread, or with it without one.
    private func writeReservation(_ seq: UInt64) throws(BufferError) {
        try writeStateFile("reserved", Self.stateRecord(seq, magic: Self.reservationMagic))
    }

    // MARK: The acknowledged position

    private static let ackMagic: UInt32 = 0x4B43_4152  // "RACK"

    /// The stored acknowledged position; nil when missing or damaged (everything still buffered
    /// is then sent again).
    private func readAck() -> UInt64? {
        switch readStateRecord("acked", magic: Self.ackMagic) {
        case .value(let seq): return seq
        case .damaged:
            warn("the acknowledged position is unreadable: everything still buffered is sent again")
            return nil
        case .missing: return nil
        }
    }

    /// Writes the acknowledged position in place: 16 bytes at offset 0 sit in one sector, so the
    /// write is atomic on flash and disks alike (the CRC catches one that is not). Called by the
    /// one running commit, without the lock.
    private func writeAck(_ seq: UInt64) throws(BufferError) {
        let path = directory + "/acked"
        if ackFD < 0 {
            var fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
            if fd < 0, [EISDIR, ELOOP, EACCES, EPERM].contains(errno) {
                warn("\(path) cannot be written (\(String(cString: strerror(errno)))): moved aside")
                moveAside(path)
                fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
            }
            ackFD = try Self.check(fd, "open", path)
        }
        let bytes = Self.stateRecord(seq, magic: Self.ackMagic)
        let written = bytes.withUnsafeBytes { pwrite(ackFD, $0.baseAddress, 16, 0) }
        guard written == 16 else {
            throw BufferError(operation: "write", path: path, code: written < 0 ? errno : ENOSPC)
        }
        guard fdatasync(ackFD) == 0 else { throw BufferError(operation: "fdatasync", path: path, code: errno) }
    }

    // MARK: Drop counters

    private static let dropsMagic: UInt32 = 0x5044_4752  // "RGDP"
    private static let dropsSize = 48

    /// Reads the drop counters (dropped and reported, by priority) and the retired position;
    /// damaged means zero (with a warning). Counts are range-checked: a reported count above
    /// the dropped one is cut to it.
    private func readDrops() {
        let path = directory + "/drops"
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            if errno != ENOENT {
                warn("\(path) cannot be read (\(String(cString: strerror(errno)))): drops start at 0")
            }
            return
        }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: Self.dropsSize)
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, Self.dropsSize, 0) }
        // 48 bytes: the counters, the retired position, CRC, magic; 40 bytes: before the retired
        // position existed.
        let layout = count == 48 ? 40 : count == 40 ? 32 : -1
        guard layout > 0, bytes.loadLittleEndian(UInt32.self, at: layout + 4) == Self.dropsMagic,
            bytes.loadLittleEndian(UInt32.self, at: layout) == CRC32.checksum(Array(bytes[0..<layout]))
        else {
            warn("\(path) is damaged: drop counts start at 0")
            return
        }
        func bounded(_ offset: Int) -> UInt64 { min(bytes.loadLittleEndian(UInt64.self, at: offset), Frame.seqLimit) }
        droppedNormal = bounded(0)
        droppedAlarm = bounded(8)
        reportedNormal = min(bounded(16), droppedNormal)
        reportedAlarm = min(bounded(24), droppedAlarm)
        if layout == 40 { retiredThrough = bounded(32) }
    }

    /// With the lock held: the drops file's bytes as they are now.
    private func dropsBytes() -> [UInt8] {
        var bytes: [UInt8] = []
        for value in [droppedNormal, droppedAlarm, reportedNormal, reportedAlarm, retiredThrough] {
            bytes.appendLittleEndian(value)
        }
        bytes.appendLittleEndian(CRC32.checksum(bytes))
        bytes.appendLittleEndian(Self.dropsMagic)
        return bytes
    }

    /// Writes the drop counters atomically (new file, sync, rename, sync directory).
    private func writeDrops(_ bytes: [UInt8]) throws(BufferError) {
        try writeStateFile("drops", bytes)
    }

    // MARK: Sync thread

    /// The `operation` of the error `init` throws when the group commit's thread cannot be started.
    public static let syncThreadOperation = "start a thread for the buffer's group commit"

    /// Starts the group commit's thread.
    /// - Throws: `BufferError` when no thread can be had: without it nothing would become durable.
    private func startSyncThread() throws(BufferError) {
        guard settings.syncIntervalMs > 0 else { return }
        do {
            let thread = try DaemonThread(name: "buffer sync") { [self] in syncLoop() }
            lock.withLock { syncThread = thread }
        } catch {
            throw BufferError(operation: Self.syncThreadOperation, path: directory, code: error.code)
        }
    }

    /// The sync thread: a group commit every `sync_interval_ms`, or at once when an appender
    /// needs the next seq block. Errors are kept in `diskError` for `stats()`; the next commit
    /// retries.
    private func syncLoop() {
        while true {
            let running: Bool = lock.withLock {
                let deadline = MonotonicInstant.now().adding(milliseconds: settings.syncIntervalMs)
                while !closed, !reservationWanted, !compactionWanted, MonotonicInstant.now() < deadline {
                    _ = lock.wait(until: deadline)
                }
                return !closed
            }
            guard running else { return }
            if lock.withLock({ compactionWanted && !reservationWanted }) {
                compactAhead()
                lock.withLock { compactionWanted = false }
                continue
            }
            if lock.withLock({ reservationWanted }) {
                // An appender needs the next block before the interval is up: reserve only, the
                // group commit keeps its rhythm.
                do { try reserveAhead() } catch {
                    lock.withLock { reservationWanted = false }  // retried with the next commit
                }
                continue
            }
            do { try commit() } catch {
                // Kept in `diskError` (shown by `stats()`, logged by the sink); retried next time.
                // After a failed reservation, wait for the next interval before trying again.
                lock.withLock { if reservationFailure != nil { reservationWanted = false } }
            }
            compactAhead()
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
            guard written > 0 else {
                throw BufferError(operation: "write", path: path, code: written < 0 ? errno : ENOSPC)
            }
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
