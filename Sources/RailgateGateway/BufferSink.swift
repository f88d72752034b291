import Logging
import RailgateBuffer
import RailgateCore
import RailgateSystem

/// Puts records into the durable buffer. When the disk refuses (ENOSPC, EIO, read-only), the
/// buffer keeps accepting into memory (4 MiB of frames); past that, records wait here, up to
/// `memoryLimit`, and go into the buffer in order once it takes them again, the oldest normal
/// records dropped first if even that fills. The trouble is logged once, and its end.
final class BufferSink: RecordSink, @unchecked Sendable {
    private let buffer: DiskBuffer
    private let logger: Logger
    private let lock = ConditionLock()
    private var waiting: [Record] = []
    private var failing = false
    private var reportedDiskError: String?
    private(set) var lostInMemory = 0
    static let memoryLimit = 20_000

    init(buffer: DiskBuffer, logger: Logger) {
        self.buffer = buffer
        self.logger = logger
    }

    func accept(_ record: Record) {
        lock.withLock {
            waiting.append(record)
            while let next = waiting.first {
                do {
                    try buffer.append(next)
                    waiting.removeFirst()
                } catch {
                    if !failing {
                        logger.error("buffer write failed: \(error); holding records in memory until the disk recovers")
                    }
                    failing = true
                    if waiting.count > Self.memoryLimit {
                        let victim = waiting.firstIndex { $0.priority == .normal } ?? 0
                        waiting.remove(at: victim)
                        lostInMemory += 1
                    }
                    return
                }
            }
            if failing {
                logger.notice("the buffer takes records again")
                failing = false
            }
            let diskError = buffer.currentDiskError
            if diskError != reportedDiskError {
                if let diskError {
                    logger.error(
                        "buffer disk trouble: \(diskError); holding records in memory until the disk takes them")
                } else {
                    logger.notice("buffer writes succeed again; the records held in memory are on disk")
                }
                reportedDiskError = diskError
            }
        }
    }

    /// Records waiting in memory for the disk.
    var waitingInMemory: Int { lock.withLock { waiting.count } }
}
