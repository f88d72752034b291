import ArgumentParser
import Glibc
import RailgateBuffer
import RailgateCore
import RailgateSystem

struct BufferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "buffer", abstract: "Inspect the durable buffer (works with the daemon stopped or running).",
        discussion: """
            Examples:
              railgate buffer stats --state-dir /var/lib/railgate
              railgate buffer dump --state-dir /var/lib/railgate --from 1042 --limit 10
              railgate buffer dump --state-dir /var/lib/railgate --text
            """,
        subcommands: [BufferStatsCommand.self, BufferDumpCommand.self])
}

struct BufferOptions: ParsableArguments {
    @Option(name: .customLong("state-dir"), help: "The gateway's state_dir.")
    var stateDir: String = "/var/lib/railgate"

    func open() throws -> DiskBuffer {
        let settings = BufferSettings(
            maxBytes: DiskBuffer.recordedMaxBytes(stateDirectory: stateDir) ?? BufferSettings().maxBytes)
        do {
            return try DiskBuffer(stateDirectory: stateDir, settings: settings, readOnly: true)
        } catch {
            StandardStreams.error("railgate buffer: cannot open the buffer in \(stateDir): \(error)")
            throw Exit.ioError
        }
    }
}

struct BufferStatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Depth, seq range, bytes, drops, age of the oldest record, and how long the free space lasts.",
        discussion: """
            Examples:
              railgate buffer stats --state-dir /var/lib/railgate
              railgate buffer stats --state-dir /var/lib/railgate --json
            """)

    @OptionGroup var options: BufferOptions

    @Flag(help: "Print one JSON document.")
    var json = false

    func run() throws {
        let buffer = try options.open()
        defer { buffer.close() }
        let stats = buffer.stats()
        let oldest = buffer.records(after: stats.ackedSeq, limits: BatchLimits(maxRecords: 1, maxBytes: .max)).first
        let now = WallClock.now()
        let oldestTime = oldest.flatMap { Self.timestamp(of: $0.bytes) }
        let ageSeconds = oldestTime.map { Double(now.millisecondsSinceEpoch - $0.millisecondsSinceEpoch) / 1000 }
        let bytesPerHour = Self.recentRate(buffer, stats)
        var filesystem = statvfs()
        let diskFree =
            statvfs(options.stateDir, &filesystem) == 0 ? Int(filesystem.f_bavail) * Int(filesystem.f_frsize) : Int.max
        let free = max(0, min(stats.maxBytes - stats.bytes, diskFree))
        let hoursLeft = bytesPerHour.map { Double(free) / $0 }
        if json {
            StandardStreams.out(
                JSON.object([
                    ("records", .integer(Int64(stats.records))), ("bytes", .integer(Int64(stats.bytes))),
                    ("stored_records", .integer(Int64(stats.storedRecords))),
                    ("max_bytes", .integer(Int64(stats.maxBytes))), ("first_seq", .unsigned(stats.firstSeq)),
                    ("next_seq", .unsigned(stats.nextSeq)), ("last_seq", .unsigned(stats.lastSeq)),
                    ("acked_seq", .unsigned(stats.ackedSeq)),
                    ("dropped", .unsigned(stats.dropped)), ("dropped_normal", .unsigned(stats.droppedNormal)),
                    ("dropped_alarm", .unsigned(stats.droppedAlarm)),
                    ("corrupt_bytes_skipped", .integer(Int64(stats.corruptBytesSkipped))),
                    ("reserved_seq", .unsigned(stats.reservedSeq)), ("lost_records", .unsigned(stats.lostRecords)),
                    ("lost_seqs", .unsigned(stats.lostSeqs)),
                    (
                        "losses",
                        .array(
                            stats.losses.map {
                                .object([
                                    ("from_seq", .unsigned($0.from)), ("to_seq", .unsigned($0.to)),
                                    ("count", $0.count.map(JSON.unsigned) ?? .null),
                                    ("reason", .string($0.reason.rawValue)),
                                ])
                            })
                    ),
                    ("warnings", .array(stats.warnings.map(JSON.string))),
                    ("oldest_ts", oldestTime.map { .string($0.description) } ?? .null),
                    ("oldest_age_s", ageSeconds.map(JSON.number) ?? .null),
                    ("bytes_per_hour", bytesPerHour.map(JSON.number) ?? .null),
                    ("free_bytes", .integer(Int64(free))), ("hours_left", hoursLeft.map(JSON.number) ?? .null),
                ]).serialized)
            return
        }
        var lines: [(String, String)] = []
        var records = "\(stats.records) unacknowledged"
        if stats.records > 0 {
            records +=
                ", \(stats.firstSeq == stats.lastSeq ? "seq" : "seqs") \(HumanFormat.range(stats.firstSeq, stats.lastSeq))"
        }
        records +=
            stats.ackedSeq > 0 ? ", acknowledged through seq \(stats.ackedSeq)" : ", nothing acknowledged yet"
        records += ", next seq \(stats.nextSeq)"
        lines.append(("records", records))
        lines.append(
            (
                "size",
                "\(HumanFormat.bytes(stats.bytes)) of \(HumanFormat.bytes(stats.maxBytes)) "
                    + "(\(HumanFormat.percent(Double(stats.bytes), of: Double(stats.maxBytes))))"
            ))
        var dropped =
            stats.dropped == 0
            ? "none" : "\(stats.dropped) (\(stats.droppedNormal) normal, \(stats.droppedAlarm) alarm)"
        if stats.corruptBytesSkipped > 0 {
            dropped += "; \(HumanFormat.bytes(stats.corruptBytesSkipped)) corrupt skipped"
        }
        lines.append(("dropped", dropped))
        for loss in stats.losses {
            lines.append(("lost", "\(loss) (not yet reported upstream: the daemon reports it when it starts)"))
        }
        for warning in stats.warnings { lines.append(("damaged", warning)) }
        lines.append(
            (
                "oldest",
                oldestTime.map { "\($0) (\(HumanFormat.duration(seconds: ageSeconds!)) ago)" } ?? "none"
            ))
        if let bytesPerHour, let hoursLeft {
            lines.append(
                (
                    "rate",
                    "\(HumanFormat.bytesPerHour(bytesPerHour)) recently; the free space (\(HumanFormat.bytes(free))) "
                        + "holds about \(HumanFormat.duration(seconds: hoursLeft * 3600)) more"
                ))
        } else {
            lines.append(
                (
                    "rate",
                    "the unacknowledged records span under a minute, too little to measure "
                        + "how fast the free space (\(HumanFormat.bytes(free))) would fill"
                ))
        }
        for line in HumanFormat.columns(lines.map { [$0.0, $0.1] }) { StandardStreams.out(line) }
    }

    /// Bytes per hour over the most recent unacknowledged records, frame headers (20 bytes)
    /// included: the last 1,000 seqs, four times as many while they span under a minute and older
    /// ones wait (a gateway storing 100 records a second needs 6,000); nil when every waiting
    /// record together spans under a minute.
    static func recentRate(_ buffer: DiskBuffer, _ stats: BufferStats) -> Double? {
        var span: UInt64 = 1000
        while true {
            let from = stats.lastSeq > span ? max(stats.ackedSeq, stats.lastSeq - span) : stats.ackedSeq
            let recent = buffer.records(after: from, limits: BatchLimits(maxRecords: .max, maxBytes: .max))
            if recent.count >= 2, let first = timestamp(of: recent.first!.bytes),
                let last = timestamp(of: recent.last!.bytes),
                let rate = OutageRoom.bytesPerHour(
                    firstMs: first.millisecondsSinceEpoch, lastMs: last.millisecondsSinceEpoch,
                    bytesAfterFirst: recent.dropFirst().reduce(0) { $0 + $1.bytes.count + 20 })
            {
                return rate
            }
            if from == stats.ackedSeq { return nil }
            span *= 4  // below lastSeq (at most 2^53), or `from` was the acknowledged seq
        }
    }

    static func timestamp(of record: [UInt8]) -> Timestamp? {
        guard let document = try? JSONReader.parse(String(decoding: record, as: UTF8.self)),
            let text = document["ts"]?.stringValue
        else { return nil }
        return Timestamp(parsing: text)
    }
}

struct BufferDumpCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dump", abstract: "Print the buffered (unacknowledged) records as JSON lines, oldest first.",
        discussion: """
            JSON lines are the default (the machine-readable form); --text prints one line per record \
            for people, alarms and gate events marked.

            Examples:
              railgate buffer dump --state-dir /var/lib/railgate --from 1042 --limit 10
              railgate buffer dump --state-dir /var/lib/railgate --text
            """)

    @OptionGroup var options: BufferOptions

    @Option(help: "Start at this seq.")
    var from: UInt64 = 0

    @Option(help: "Print at most this many records.")
    var limit: Int = .max

    @Flag(help: "Accepted for symmetry: the output is JSON lines unless --text.")
    var json = false

    @Flag(help: "One line per record for people (time, seq, source, values; alarms and events marked).")
    var text = false

    func validate() throws {
        if json, text { throw ValidationError("give --json or --text, not both") }
    }

    func run() throws {
        let buffer = try options.open()
        defer { buffer.close() }
        var after = from > 0 ? from - 1 : 0
        var printed = 0
        while printed < limit {
            let chunk = buffer.records(
                after: after, limits: BatchLimits(maxRecords: min(1000, limit - printed), maxBytes: .max))
            guard let last = chunk.last else { break }
            for record in chunk {
                let line = String(decoding: record.bytes, as: UTF8.self)
                if text, let document = try? JSONReader.parse(line) {
                    StandardStreams.out(RecordText.line(document).text)
                } else {
                    StandardStreams.out(line)
                }
            }
            printed += chunk.count
            after = last.seq
        }
    }
}
