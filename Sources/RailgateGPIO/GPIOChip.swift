import Glibc
import RailgateCore

/// A GPIO problem, naming the chip, the line and what a technician can do about it.
public struct GPIOError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case noSuchChip, permissionDenied, lineBusy(consumer: String), noSuchLine(lineCount: Int), io
    }

    public var kind: Kind
    public var chip: String
    public var line: Int?
    /// The errno read right after the failing call (0 when not from a system call).
    public var code: Int32

    public var description: String {
        let lineText = line.map { " line \($0)" } ?? ""
        switch kind {
        case .noSuchChip:
            return
                "GPIO chip '\(chip)' not found: check the chip name (`railgate gpio info` lists the chips) and that the board's GPIO driver is loaded"
        case .permissionDenied:
            return
                "GPIO chip '\(chip)'\(lineText): permission denied: the railgate user needs access to the chip device (a gpio group or a udev rule)"
        case .lineBusy(let consumer) where Self.isRailgateDaemon(consumer):
            return
                "GPIO chip '\(chip)'\(lineText) is busy, held by '\(consumer)': the running railgate daemon watches it; see what it sees with `railgate events --follow` (or `railgate top`)"
        case .lineBusy(let consumer):
            return
                "GPIO chip '\(chip)'\(lineText) is busy, held by '\(consumer.isEmpty ? "unknown" : consumer)': stop the other user (gpiomon? a kernel driver?) or wire the switch to a free line"
        case .noSuchLine(let count):
            return
                "GPIO chip '\(chip)' has \(count) lines; line\(lineText) does not exist: check open_line and closed_line"
        case .io:
            return "GPIO chip '\(chip)'\(lineText): \(String(cString: strerror(code))) (errno \(code))"
        }
    }

    /// Whether a line's consumer is the railgate daemon: it requests a gate's or an input's lines
    /// as `railgate-NAME`; the tools use `railgate-watch` and `railgate-doctor`.
    public static func isRailgateDaemon(_ consumer: String) -> Bool {
        consumer.hasPrefix("railgate-") && consumer != "railgate-watch" && consumer != "railgate-doctor"
    }

    /// The line is held by the running railgate daemon (see `isRailgateDaemon`).
    public var isHeldByRailgateDaemon: Bool {
        if case .lineBusy(let consumer) = kind { return Self.isRailgateDaemon(consumer) }
        return false
    }

    public init(_ kind: Kind, chip: String, line: Int? = nil, code: Int32 = 0) {
        self.kind = kind
        self.chip = chip
        self.line = line
        self.code = code
    }

    /// The error for an errno from opening or requesting.
    static func from(errno code: Int32, chip: String, line: Int? = nil) -> GPIOError {
        switch code {
        case ENOENT, ENODEV, ENOTTY: GPIOError(.noSuchChip, chip: chip, line: line, code: code)
        case EACCES, EPERM: GPIOError(.permissionDenied, chip: chip, line: line, code: code)
        case EBUSY: GPIOError(.lineBusy(consumer: ""), chip: chip, line: line, code: code)
        default: GPIOError(.io, chip: chip, line: line, code: code)
        }
    }
}

/// What a line is and who uses it, as gpioinfo shows it.
public struct GPIOLineInfo: Sendable, Equatable {
    public var offset: Int
    public var name: String
    public var consumer: String
    public var isUsed: Bool
    public var isOutput: Bool
    public var activeLow: Bool
    /// The physical level, where the backend can tell without requesting the line (simulator).
    public var level: Bool?
}

/// One edge on a watched line.
public struct GPIOEdge: Sendable, Equatable {
    public var line: Int
    /// The line's logical level after the edge (active-low already applied).
    public var active: Bool
    /// When the edge happened, on CLOCK_MONOTONIC, in nanoseconds (the kernel's timestamp,
    /// converted where the kernel used another clock: see `GPIOEventClock`).
    public var timestampNs: Int64
}

/// A GPIO chip: the seam between the gate watcher and the hardware. libgpiod (`gpiochip0`,
/// `/dev/gpiochip0`, a label or a number) and the simulated chip (`sim:PATH`) implement it, so
/// the rest of railgate cannot tell them apart.
public protocol GPIOChip: AnyObject {
    var name: String { get }
    var label: String { get }
    var lineCount: Int { get }
    func lineInfo(_ offset: Int) throws(GPIOError) -> GPIOLineInfo
    /// Requests `lines` as inputs with both-edge events, honouring `activeLow`.
    func watch(lines: [Int], activeLow: Bool, consumer: String) throws(GPIOError) -> any GPIOLineWatch
}

/// Lines requested for edge events. Blocking calls: use from a dedicated thread.
public protocol GPIOLineWatch: AnyObject {
    /// The logical levels of the watched lines now.
    func levels() throws(GPIOError) -> [Int: Bool]
    /// The edges that arrive within `timeoutMs` (empty on timeout), oldest first.
    func waitForEdges(timeoutMs: Int) throws(GPIOError) -> [GPIOEdge]
    /// Releases the lines.
    func release()
}

/// Opens chips by the names a configuration uses.
public enum GPIOChips {
    /// `sim:PATH` opens a simulated chip served on a Unix socket; anything else goes to libgpiod
    /// as a path, a name (gpiochip0), a number or a label, in that order (v1:
    /// `gpiod_chip_open_lookup`; v2 has no lookup: `railgate_gpio_chip_open` does it the same way).
    public static func open(_ descriptor: String) throws(GPIOError) -> any GPIOChip {
        if descriptor.hasPrefix("sim:") { return try SimulatedGPIOChip(socketPath: String(descriptor.dropFirst(4))) }
        return try LibgpiodChip(descriptor)
    }

    /// The names of the kernel's GPIO chips (`/dev/gpiochip*`), sorted.
    public static func kernelChips() -> [String] {
        guard let directory = opendir("/dev") else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name.hasPrefix("gpiochip") { names.append(name) }
        }
        return names.sorted { $0.count != $1.count ? $0.count < $1.count : $0 < $1 }
    }
}

extension GPIOChips {
    /// Opens `gate`'s chip and requests its two limit-switch lines for edge events, honouring
    /// `active_low`; returns them with whether each switch is active now.
    public static func requestLimitSwitches(
        of gate: GateConfig, consumer: String
    ) throws(GPIOError)
        -> (watch: any GPIOLineWatch, openActive: Bool, closedActive: Bool)
    {
        let chip = try open(gate.chip)
        let watch = try chip.watch(
            lines: [gate.openLine, gate.closedLine], activeLow: gate.activeLow, consumer: consumer)
        do {
            let levels = try watch.levels()
            return (watch, levels[gate.openLine] ?? false, levels[gate.closedLine] ?? false)
        } catch {
            watch.release()
            throw error
        }
    }
}

/// Edge timestamps on one clock. railgate compares an edge's time with its own
/// CLOCK_MONOTONIC (debounce, travel timeouts), so every `GPIOEdge.timestampNs` is monotonic:
/// - libgpiod 2 asks the kernel for CLOCK_MONOTONIC event timestamps
///   (`gpiod_line_settings_set_event_clock`);
/// - libgpiod 1.6 cannot ask: kernels 5.7 and later stamp v1 events with CLOCK_MONOTONIC,
///   older kernels with CLOCK_REALTIME. `monotonic(_:now:)` tells them apart by value (since
///   1970 against since boot: decades apart) and moves a realtime stamp onto the monotonic
///   clock by the offset between the two clocks read together when the event is read;
/// - the simulated chip stamps with the simulator's CLOCK_MONOTONIC (same machine).
public enum GPIOEventClock {
    /// Both clocks, read one right after the other, in nanoseconds.
    public struct Now: Sendable, Equatable {
        public var monotonicNs: Int64
        public var realtimeNs: Int64

        public init(monotonicNs: Int64, realtimeNs: Int64) {
            self.monotonicNs = monotonicNs
            self.realtimeNs = realtimeNs
        }

        /// `clock_gettime` of CLOCK_MONOTONIC and CLOCK_REALTIME.
        public static func read() -> Now {
            var monotonic = timespec()
            var realtime = timespec()
            clock_gettime(CLOCK_MONOTONIC, &monotonic)
            clock_gettime(CLOCK_REALTIME, &realtime)
            return Now(
                monotonicNs: Int64(monotonic.tv_sec) * 1_000_000_000 + Int64(monotonic.tv_nsec),
                realtimeNs: Int64(realtime.tv_sec) * 1_000_000_000 + Int64(realtime.tv_nsec))
        }
    }

    /// An event timestamp (ns) of unknown clock as CLOCK_MONOTONIC ns: unchanged when it is
    /// nearer the monotonic clock than the realtime clock, else shifted by their offset. Any
    /// 64-bit stamp is taken without trapping (the distances are exact in UInt64; a shift past
    /// Int64's range saturates; clocks a full range apart leave the stamp as it is).
    public static func monotonic(_ stampNs: Int64, now: Now) -> Int64 {
        func distance(_ a: Int64, _ b: Int64) -> UInt64 {
            a >= b ? UInt64(bitPattern: a &- b) : UInt64(bitPattern: b &- a)
        }
        guard distance(stampNs, now.realtimeNs) < distance(stampNs, now.monotonicNs) else { return stampNs }
        let (offset, offsetOverflow) = now.realtimeNs.subtractingReportingOverflow(now.monotonicNs)
        guard !offsetOverflow else { return stampNs }
        let (shifted, overflow) = stampNs.subtractingReportingOverflow(offset)
        guard overflow else { return shifted }
        return offset > 0 ? .min : .max
    }
}
