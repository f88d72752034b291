/// How long the buffer's free room holds records while the link is down: the arithmetic behind
/// `railgate doctor`'s buffer line and `railgate buffer stats`' rate line. Pure.
public enum OutageRoom {
    /// The bytes a record takes on disk, frame included: `storedBytes / storedRecords` (every
    /// record in the segment files, acknowledged or not), at least 64; 256 when nothing is stored
    /// yet. Not `storedBytes` over the unacknowledged records: while the link is up the files hold
    /// mostly acknowledged records waiting for their segment to go, and a handful in flight would
    /// make each record seem megabytes long and the room minutes.
    public static func bytesPerRecord(storedBytes: Int, storedRecords: Int) -> Int {
        storedRecords > 0 ? max(64, storedBytes / storedRecords) : 256
    }

    /// The hours `roomBytes` holds at `recordsPerHour` records of `bytesPerRecord` bytes each;
    /// infinity when nothing is stored per hour.
    public static func hours(roomBytes: Int, bytesPerRecord: Int, recordsPerHour: Double) -> Double {
        guard recordsPerHour > 0 else { return .infinity }
        return Double(max(0, roomBytes)) / (recordsPerHour * Double(max(1, bytesPerRecord)))
    }

    /// The store rate in bytes per hour from the most recent stored records: the bytes on disk of
    /// every record after the first (`bytesAfterFirst`) over the time from the first record's
    /// timestamp to the last's (milliseconds since the epoch). n records span n - 1 intervals: two
    /// records a second apart are one a second, not two. Nil when they span less than
    /// `minimumSpanMs` (default a minute): records are stored in poll cycles, and a span of a few
    /// cycles overstates the rate by up to a cycle's worth.
    public static func bytesPerHour(
        firstMs: Int64, lastMs: Int64, bytesAfterFirst: Int, minimumSpanMs: Int64 = 60_000
    )
        -> Double?
    {
        guard lastMs - firstMs >= max(1, minimumSpanMs) else { return nil }
        return Double(bytesAfterFirst) / (Double(lastMs - firstMs) / 3_600_000)
    }
}
