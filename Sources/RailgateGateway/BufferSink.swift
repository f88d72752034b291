import Logging
import RailgateBuffer
import RailgateCore
import RailgateSystem

/// Puts records into the durable buffer. When the disk refuses (ENOSPC, EIO, read-only), the
/// buffer keeps accepting into memory (4 MiB of frames); past that, records wait here, up to
/// `memoryLimit`, and go into the buffer in order once it takes them again, the oldest normal
/// records dropped first if even that fills (counted in `lostInMemory`, shown in `status` and
/// the metrics, and logged). The trouble is logged once, and its end; so is every run of seqs
/// the buffer finds lost.
final class BufferSink: RecordSink, @unchecked Sendable {
    private let buffer: DiskBuffer
    private let logger: Logger
    private let lock = ConditionLock()
    private var waiting: [Record] = []
    private var failing = false
    private var reportedDiskError: String?
    private var loggedLosses: Int
    private var lostInMemoryCount = 0
    private var lostInMemoryLogged = 0
    static let memoryLimit = 20_000
    /// Told every record stored, with its seq (`railgate events --follow`).
    private let feed: RecordFeed?

    init(buffer: DiskBuffer, logger: Logger, feed: RecordFeed? = nil) {
        self.buffer = buffer
        self.logger = logger
        self.feed = feed
        loggedLosses = buffer.health.losses  // those found at open are logged by the gateway
    }

    /// Records dropped in memory because the disk refused them for too long.
    var lostInMemory: Int { lock.withLock { lostInMemoryCount } }

    func accept(_ record: Record) {
        lock.withLock {
            waiting.append(record)
            while let next = waiting.first {
                do {
                    let seq = try buffer.append(next)
                    waiting.removeFirst()
                    feed?.publish(next, seq: seq)
                } catch {
                    if !failing {
                        logger.error("buffer write failed: \(error); holding records in memory until the disk recovers")
                    }
                    failing = true
                    if waiting.count > Self.memoryLimit {
                        let victim = waiting.firstIndex { $0.priority == .normal } ?? 0
                        waiting.remove(at: victim)
                        lostInMemoryCount += 1
                        if lostInMemoryCount == 1 || lostInMemoryCount - lostInMemoryLogged >= 1000 {
                            logger.error(
                                "\(lostInMemoryCount) records dropped in memory so far: the disk has refused them for too long (\(error))"
                            )
                            lostInMemoryLogged = lostInMemoryCount
                        }
                    }
                    return
                }
            }
            if failing {
                let dropped = lostInMemoryCount > 0 ? "; \(lostInMemoryCount) records were dropped in memory" : ""
                logger.notice("the buffer takes records again\(dropped)")
                failing = false
            }
            let health = buffer.health
            if health.diskError != reportedDiskError {
                if let diskError = health.diskError {
                    logger.error(
                        "buffer disk trouble: \(diskError); holding records in memory until the disk takes them")
                } else {
                    logger.notice("buffer writes succeed again; the records held in memory are on disk")
                }
                reportedDiskError = health.diskError
            }
            if health.losses > loggedLosses {
                for loss in buffer.stats().losses.suffix(health.losses - loggedLosses) {
                    logger.error("buffer: \(loss); reported upstream as a records_lost event")
                }
                loggedLosses = health.losses
            }
        }
    }

    /// Records waiting in memory for the disk.
    var waitingInMemory: Int { lock.withLock { waiting.count } }

    /// A loss as `status` shows it.
    static func json(_ loss: SeqLoss) -> JSON {
        .object([
            ("from_seq", .unsigned(loss.from)), ("to_seq", .unsigned(loss.to)),
            ("count", loss.count.map(JSON.unsigned) ?? .null), ("reason", .string(loss.reason.rawValue)),
        ])
    }
}
