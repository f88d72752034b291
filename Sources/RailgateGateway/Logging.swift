import Glibc
import Logging
import RailgateCore
import RailgateSystem

/// Log lines for journald and a terminal, one per line on standard error. systemd adds the
/// timestamp; a technician's terminal does not need one.
///
/// On a terminal: `LEVEL label: message key=value`. When standard error is the journal
/// (`$JOURNAL_STREAM` names its device and inode, see systemd.exec(5)), each line starts with
/// the syslog priority instead, `<N>label: message key=value` as sd-daemon(3) describes, so
/// journald files it at that priority (`journalctl -p warning` shows warnings and worse).
public struct RailgateLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let journal: Bool

    /// - Parameter journal: prefix priorities; by default when standard error is the journal.
    public init(label: String, level: Logger.Level, journal: Bool = JournalStream.isStandardError) {
        self.label = label
        logLevel = level
        self.journal = journal
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        StandardStreams.error(Self.line(event: event, label: label, metadata: metadata, journal: journal))
    }

    /// One log line: `<N>label: message k=v` for the journal, `LEVEL label: message k=v` otherwise.
    static func line(event: LogEvent, label: String, metadata: Logger.Metadata, journal: Bool) -> String {
        var line =
            journal
            ? "<\(event.level.syslogPriority)>\(label): \(event.message)"
            : "\(event.level.rawValue.uppercased()) \(label): \(event.message)"
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        for key in merged.keys.sorted() { line += " \(key)=\(merged[key]!)" }
        return line
    }
}

/// Whether standard error is connected to the journal: systemd sets `$JOURNAL_STREAM` to
/// `DEVICE:INODE` of the stream it connected; a child that redirected stderr must not prefix.
/// The C function is `fstat`.
public enum JournalStream {
    public static let isStandardError: Bool = {
        guard let value = getenv("JOURNAL_STREAM").map({ String(cString: $0) }) else { return false }
        return matches(value, fd: 2)
    }()

    /// True when `value` (`"DEVICE:INODE"`, decimal) names the file open on `fd`.
    static func matches(_ value: String, fd: Int32) -> Bool {
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }
}

extension Logger.Level {
    init(_ name: LogLevelName) {
        switch name {
        case .trace: self = .trace
        case .debug: self = .debug
        case .info: self = .info
        case .notice: self = .notice
        case .warning: self = .warning
        case .error: self = .error
        }
    }

    /// The syslog priority journald files a line under (LOG_DEBUG 7 ... LOG_CRIT 2).
    var syslogPriority: Int {
        switch self {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }
}
