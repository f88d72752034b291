import Glibc
import Logging
import RailgateBuffer
import RailgateCore
import RailgateSystem

/// The alarms raised and not yet cleared, per device and point, kept in `state_dir/alarms.json`
/// so that a restart or a reload neither raises an alarm a second time nor loses its clear.
///
/// The file is replaced atomically on every change (written to `alarms.json.new`, fsynced,
/// renamed over the old one, directory fsynced), so a power cut leaves the old state or the new
/// one. A damaged or unreadable file is logged and ignored: the daemon starts with no alarm
/// raised (an alarm still active is then raised once more), never refuses to start.
///
/// Thread-safe: bus threads record alarm events, the main thread reads it when services start.
final class AlarmStore: @unchecked Sendable {
    /// `state_dir/alarms.json`.
    let path: String
    private let directory: String
    private let logger: Logger
    private let lock = ConditionLock()
    /// Raised alarms by device, then point.
    private var raised: [String: [String: EdgeFilter.RaisedAlarm]] = [:]
    /// The devices of the running configuration, for the hysteresis of a new alarm.
    private var devices: [String: DeviceConfig] = [:]
    private var reportedWriteError: String?

    static let fileName = "alarms.json"

    /// Loads the alarms kept under `stateDirectory` (which must exist).
    init(stateDirectory: String, logger: Logger) {
        directory = stateDirectory
        path = stateDirectory + "/" + Self.fileName
        self.logger = logger
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code != ENOENT {
                logger.error(
                    "alarm state \(path) unreadable: \(String(cString: strerror(code))); starting with no alarm raised")
            }
            return
        }
        close(fd)
        guard let text = LocalFiles().read(path) else {
            logger.error("alarm state \(path) is not a readable file; starting with no alarm raised")
            return
        }
        do throws(AlarmStateError) {
            raised = try Self.decode(text)
        } catch {
            logger.error("alarm state \(path) is damaged (\(error)); ignored, starting with no alarm raised")
        }
    }

    /// The alarms raised now, by device.
    var alarms: [String: [EdgeFilter.RaisedAlarm]] {
        lock.withLock { raised.mapValues { $0.values.sorted { $0.point < $1.point } } }
    }

    /// Keeps the alarms of `devices` (the configuration about to run) whose points still alarm
    /// on the same side, at the same threshold, with the same hysteresis; drops (and logs) the
    /// others; returns what the bus pollers are to restore. Called before the services start.
    func retain(devices configured: [DeviceConfig]) -> [String: [EdgeFilter.RaisedAlarm]] {
        let (kept, dropped) = lock.withLock {
            devices = Dictionary(configured.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
            var kept: [String: [String: EdgeFilter.RaisedAlarm]] = [:]
            var dropped: [(String, EdgeFilter.RaisedAlarm)] = []
            for (device, alarms) in raised {
                for alarm in alarms.values {
                    let point = devices[device]?.profile.points.first { $0.name == alarm.point }
                    if let point, alarm.stillApplies(to: point) {
                        kept[device, default: [:]][alarm.point] = alarm
                    } else {
                        dropped.append((device, alarm))
                    }
                }
            }
            raised = kept
            if !dropped.isEmpty { persist() }
            return (kept, dropped)
        }
        for (device, alarm) in dropped.sorted(by: { ($0.0, $0.1.point) < ($1.0, $1.1.point) }) {
            logger.warning(
                "\(device): \(alarm.side.rawValue) on \(alarm.point) (threshold \(alarm.threshold)) is no longer kept: the device, the point or its alarm settings changed"
            )
        }
        return kept.mapValues { $0.values.sorted { $0.point < $1.point } }
    }

    /// Takes note of an `alarm_above`, `alarm_below` or `alarm_clear` event record (anything else
    /// is ignored) and rewrites the file if the state changed. Returns whether it was an alarm event.
    @discardableResult
    func record(_ event: Record) -> Bool {
        guard case .event(let name, let fields) = event.body, let change = Self.change(name) else { return false }
        guard let point = fields.first(where: { $0.0 == "point" })?.1.stringValue else { return false }
        lock.withLock {
            switch change {
            case .raise(let side):
                let definition = devices[event.source]?.profile.points.first { $0.name == point }
                let threshold =
                    fields.first { $0.0 == "threshold" }?.1.doubleValue
                    ?? (side == .above ? definition?.alarmAbove : definition?.alarmBelow) ?? .nan
                let alarm = EdgeFilter.RaisedAlarm(
                    point: point, side: side, threshold: threshold, hysteresis: definition?.hysteresis ?? .nan)
                guard raised[event.source]?[point] != alarm else { return }
                raised[event.source, default: [:]][point] = alarm
            case .clear:
                guard raised[event.source]?[point] != nil else { return }
                raised[event.source]?[point] = nil
                if raised[event.source]?.isEmpty == true { raised[event.source] = nil }
            }
            persist()
        }
        return true
    }

    private enum Change {
        case raise(EdgeFilter.AlarmSide)
        case clear
    }

    private static func change(_ eventName: String) -> Change? {
        if eventName == "alarm_clear" { return .clear }
        return EdgeFilter.AlarmSide(rawValue: eventName).map(Change.raise)
    }

    /// With the lock held: replaces the file with the current state; a failure is logged once
    /// (and its end), the state in memory stays right.
    private func persist() {
        let temporary = path + ".new"
        var failure: String?
        let bytes = Self.encode(raised)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        if fd < 0 {
            failure = "open \(temporary): \(String(cString: strerror(errno)))"
        } else {
            var offset = 0
            while offset < bytes.count, failure == nil {
                let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                if written < 0, errno == EINTR { continue }
                if written <= 0 {
                    failure = "write \(temporary): \(String(cString: strerror(written == 0 ? ENOSPC : errno)))"
                } else {
                    offset += written
                }
            }
            if failure == nil, fsync(fd) != 0 { failure = "fsync \(temporary): \(String(cString: strerror(errno)))" }
            close(fd)
        }
        if failure == nil, rename(temporary, path) != 0 {
            failure = "rename \(temporary) to \(path): \(String(cString: strerror(errno)))"
        }
        if failure == nil {
            let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if directoryFD >= 0 {
                if fsync(directoryFD) != 0 { failure = "fsync \(directory): \(String(cString: strerror(errno)))" }
                close(directoryFD)
            }
        }
        if let failure {
            unlink(temporary)
            if failure != reportedWriteError {
                logger.error("cannot save the alarm state: \(failure); a restart may raise an active alarm again")
            }
        } else if reportedWriteError != nil {
            logger.notice("the alarm state is saved again")
        }
        reportedWriteError = failure
    }

    // MARK: File format

    /// `{"version":1,"alarms":[{"device":D,"point":P,"side":"alarm_above","threshold":T,"hysteresis":H},...]}`
    static func encode(_ alarms: [String: [String: EdgeFilter.RaisedAlarm]]) -> [UInt8] {
        var entries: [JSON] = []
        for device in alarms.keys.sorted() {
            for alarm in alarms[device]!.values.sorted(by: { $0.point < $1.point }) {
                entries.append(
                    .object([
                        ("device", .string(device)), ("point", .string(alarm.point)),
                        ("side", .string(alarm.side.rawValue)), ("threshold", .number(alarm.threshold)),
                        ("hysteresis", .number(alarm.hysteresis)),
                    ]))
            }
        }
        return JSON.object([("version", .integer(1)), ("alarms", .array(entries))]).bytes + [10]
    }

    /// Reads what `encode` wrote. - Throws: `AlarmStateError` naming what is wrong.
    static func decode(_ text: String) throws(AlarmStateError) -> [String: [String: EdgeFilter.RaisedAlarm]] {
        let document: JSON
        do {
            document = try JSONReader.parse(text)
        } catch {
            throw AlarmStateError(reason: error.description)
        }
        guard document["version"]?.intValue == 1 else {
            throw AlarmStateError(reason: "version \(document["version"]?.serialized ?? "missing"), expected 1")
        }
        guard let entries = document["alarms"]?.arrayValue else { throw AlarmStateError(reason: "no alarms list") }
        var alarms: [String: [String: EdgeFilter.RaisedAlarm]] = [:]
        for (index, entry) in entries.enumerated() {
            guard let device = entry["device"]?.stringValue, let point = entry["point"]?.stringValue,
                let side = entry["side"]?.stringValue.flatMap(EdgeFilter.AlarmSide.init(rawValue:)),
                let threshold = entry["threshold"]?.doubleValue, let hysteresis = entry["hysteresis"]?.doubleValue
            else {
                throw AlarmStateError(reason: "entry \(index) lacks device, point, side, threshold or hysteresis")
            }
            alarms[device, default: [:]][point] = EdgeFilter.RaisedAlarm(
                point: point, side: side, threshold: threshold, hysteresis: hysteresis)
        }
        return alarms
    }
}

/// The alarm state file could not be read.
struct AlarmStateError: Error, CustomStringConvertible {
    var reason: String
    var description: String { reason }
}

/// Puts records into `inner` and keeps `store` up to date with the alarm events among them. An
/// alarm event is made durable in the buffer before the state file says it happened, so a power
/// cut in between sends it twice at worst, never loses it.
final class AlarmTrackingSink: RecordSink, @unchecked Sendable {
    private let inner: any RecordSink
    private let buffer: DiskBuffer
    private let store: AlarmStore
    private let logger: Logger

    init(inner: any RecordSink, buffer: DiskBuffer, store: AlarmStore, logger: Logger) {
        self.inner = inner
        self.buffer = buffer
        self.store = store
        self.logger = logger
    }

    func accept(_ record: Record) {
        inner.accept(record)
        guard record.priority == .alarm, case .event(let name, _) = record.body,
            name == "alarm_clear" || EdgeFilter.AlarmSide(rawValue: name) != nil
        else { return }
        do {
            try buffer.sync()
        } catch {
            logger.error("could not sync the buffer after \(name): \(error)")
        }
        store.record(record)
    }
}
