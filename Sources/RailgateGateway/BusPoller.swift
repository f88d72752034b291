import Glibc
import Logging
import RailgateCore
import RailgateModbus
import RailgateSystem

/// Where records go once made: the buffer in the daemon, standard output for `run --once`.
public protocol RecordSink: AnyObject, Sendable {
    func accept(_ record: Record)
}

/// A snapshot of one bus and its devices for `railgate status`.
public struct BusStatus: Sendable {
    public var name: String
    public var endpoint: String
    /// Share of recent wall time the line spent in requests (0...1), an exponential moving average.
    public var utilisation: Double
    public var devices: [(name: String, stats: DeviceStats)]
    /// Each device's last reading, latency and recent failures, by device name (`railgate top`).
    public var activity: [String: DeviceActivity] = [:]
}

/// What `railgate top` shows of one device: its last poll's reading (every point, before
/// deadbands, with units), how long polls take and how many of the recent ones failed.
public struct DeviceActivity: Sendable {
    /// One point of the last poll: its value, or why there is none, and its profile unit.
    public struct Point: Sendable {
        public var name: String
        public var value: PointValue?
        public var failure: ReadFailure?
        public var unit: String?
    }

    /// How many polls `errorRate` looks back over.
    public static let window = 20

    /// When the last poll was made (wall clock); nil before the first.
    public var lastPoll: Timestamp?
    /// The last poll's points in profile order, each read or failed (built when asked: the bus
    /// thread only keeps the record).
    public var points: [Point] {
        guard let profile else { return [] }
        let read = Dictionary(values, uniquingKeysWith: { first, _ in first })
        let failed = Dictionary(errors, uniquingKeysWith: { first, _ in first })
        return profile.points.compactMap { point in
            guard read[point.name] != nil || failed[point.name] != nil else { return nil }
            return Point(name: point.name, value: read[point.name], failure: failed[point.name], unit: point.unit)
        }
    }
    /// The last poll's duration in milliseconds, retries and timeouts included.
    public var latencyMs: Double = 0
    /// Whether each of the last `window` polls failed (at least one point unread), oldest first.
    public var recentFailures: [Bool] = []
    private var values: [(String, PointValue)] = []
    private var errors: [(String, ReadFailure)] = []
    private var profile: DeviceProfile?

    public init() {}

    /// The share of the last `window` polls in which a point could not be read (0...1); nil before the first poll.
    public var errorRate: Double? {
        recentFailures.isEmpty
            ? nil : Double(recentFailures.filter { $0 }.count) / Double(recentFailures.count)
    }

    /// Takes note of one poll's `record` (a sample) that took `latencyMs`; units from `profile`.
    mutating func note(_ record: Record, latencyMs: Double, profile: DeviceProfile) {
        guard case .sample(let values, let errors) = record.body else { return }
        lastPoll = record.timestamp
        self.latencyMs = latencyMs
        if recentFailures.count >= Self.window { recentFailures.removeFirst(recentFailures.count - Self.window + 1) }
        recentFailures.append(!errors.isEmpty)
        self.values = values
        self.errors = errors
        self.profile = profile
    }
}

/// Polls every device of one bus from one dedicated thread, so requests on a shared line are
/// serialised, never interleaved, with `inter_request_delay_ms` between any two of them whichever
/// devices they belong to (the connection paces them; a stop cuts the pause short). Devices of one
/// interval are polled in cycles: all due at once, one after the other, then the thread sleeps
/// until the next cycle. Spreading them across the interval instead cost 1.5-1.8 us of CPU per
/// point against 0.95 at 100 devices x 100 points (`make bench`): three sleeps and wake-ups per
/// device instead of two, and code and data cold again at every device.
final class BusPoller: @unchecked Sendable {
    let bus: BusConfig
    private let sink: any RecordSink
    private let logger: Logger
    private let worker = ServiceThread()
    private var lock: ConditionLock { worker.lock }
    private var pollers: [DevicePoller]
    private var utilisation = 0.0
    private var snapshot: [(name: String, stats: DeviceStats)]
    private var activity: [String: DeviceActivity] = [:]
    /// Told each new reading of a device's `poll = "once"` points (device name, readings), from
    /// the bus thread.
    private let onStatic: @Sendable (String, [(name: String, reading: Result<PointValue, ReadFailure>)]) -> Void
    /// The poll loop's proof of life for the systemd watchdog.
    let heartbeat: Heartbeat
    /// The longest one device's poll may take on this line, in milliseconds: every request of
    /// the device with all its retries, each a timeout plus the drain after it and the pause.
    private let pollBoundMs: Int

    /// - Parameter alarms: alarms raised before (a restart or reload), by device and point: not raised again.
    init(
        bus: BusConfig, devices: [DeviceConfig], sink: any RecordSink, logger: Logger,
        alarms: [String: [EdgeFilter.RaisedAlarm]] = [:],
        onStatic: @escaping @Sendable (String, [(name: String, reading: Result<PointValue, ReadFailure>)]) -> Void = {
            _, _ in
        }
    ) {
        self.bus = bus
        self.onStatic = onStatic
        self.sink = sink
        self.logger = logger
        let now = MonotonicInstant.now()
        pollers = devices.map { DevicePoller(device: $0, maxGap: bus.maxGap, firstDue: now) }
        for poller in pollers { poller.edge.restore(alarms[poller.device.name] ?? []) }
        snapshot = pollers.map { ($0.device.name, $0.stats) }
        heartbeat = Heartbeat(name: "bus \(bus.name)")
        // Generous on purpose: a bound too tight restarts a healthy daemon, one too loose only
        // notices a hang later. Refused reads may be halved down to one request per point (twice
        // the points at worst), static points are read in the same turn, every attempt may cost a
        // timeout and an RTU drain (capped at 10 timeouts), and busy replies are asked again.
        let requests =
            pollers.map { 2 * ($0.requests.count + $0.staticRequests.count + $0.device.profile.points.count) }
            .max() ?? 1
        let attemptMs = 11 * bus.timeoutMs + bus.interRequestDelayMs
        let requestMs = (bus.retries + 1) * attemptMs + bus.busyRetries * (bus.busyRetryMs + attemptMs)
        pollBoundMs = bus.connectDelayMs + max(1, requests) * requestMs
    }

    /// Starts polling on the bus's own thread, supervised by `supervisor` (restarted if it ends).
    func start(supervisor: Supervisor? = nil) throws(ThreadError) {
        try worker.start(name: "bus \(bus.name)", supervisor: supervisor) { [self] in run() }
    }

    /// Stops after the request in progress (at most one timeout) and waits for the thread.
    func stop() { worker.stop() }

    func status() -> BusStatus {
        lock.withLock {
            BusStatus(
                name: bus.name, endpoint: ModbusEndpoint(bus.transport).description, utilisation: utilisation,
                devices: snapshot, activity: activity)
        }
    }

    private func run() {
        heartbeat.expect(within: pollBoundMs)
        defer { heartbeat.ended() }
        let connection: ModbusConnection
        do {
            connection = try ModbusConnection(bus: bus, devices: pollers.map(\.device))
        } catch {
            logger.error("bus \(bus.name): \(error); its devices will not be polled")
            return
        }
        connection.pause = { [worker] deadline in worker.wait(until: deadline) }
        let busy = BusyPolicy(bus: bus) { [worker] deadline in worker.wait(until: deadline) }
        // The connection count at which each device's static points were last read.
        var staticConnects = [Int](repeating: -1, count: pollers.count)
        var windowStart = MonotonicInstant.now()
        var busyNanoseconds: Int64 = 0
        while true {
            // The first due, in configuration order among equals (a cycle's order).
            guard let index = pollers.indices.min(by: { pollers[$0].nextDue < pollers[$1].nextDue }) else { return }
            let poller = pollers[index]
            let due = poller.nextDue
            guard waitBeating(until: due) else { break }
            if StallTestHook.triggered() {
                logger.warning("bus \(bus.name): RAILGATE_TEST_HOOK_STALL_FILE: this loop hangs now (test hook)")
                _ = worker.wait(until: MonotonicInstant(nanoseconds: Int64.max))
                break
            }
            heartbeat.expect(within: pollBoundMs)
            let started = MonotonicInstant.now()
            let wasAnswering = poller.stats.consecutiveFailures == 0
            let failedBefore = !wasAnswering
            let record = poller.poll(over: connection, retries: bus.retries, busy: busy, at: WallClock.now())
            let latencyMs = Double(MonotonicInstant.now().nanoseconds - started.nanoseconds) / 1_000_000
            if !poller.staticRequests.isEmpty,
                !worker.isStopping
            {
                // Static points, read while the device answers: at start, after a reconnect, when
                // it answers again after being down (it may have been replaced), and until every
                // one has a value.
                let answering = poller.stats.consecutiveFailures == 0
                let due =
                    answering
                    && (staticConnects[index] != connection.connects || !wasAnswering || !poller.staticComplete)
                if due {
                    let before = poller.staticReadings.map(Self.describe)
                    if let readings = poller.readStatic(over: connection, retries: bus.retries, busy: busy) {
                        staticConnects[index] = connection.connects
                        if Self.describe(readings) != before { onStatic(poller.device.name, readings) }
                    }
                }
            }
            let finished = MonotonicInstant.now()
            // A stop cut a pause short: the poll's errors say "stopping", not something about the device.
            if worker.isStopping, case .sample(_, let errors) = record.body, !errors.isEmpty { break }
            busyNanoseconds += finished.nanoseconds - started.nanoseconds
            let (sample, alarms) = poller.edge.process(record, nowMs: finished.nanoseconds / 1_000_000)
            for alarm in alarms {
                logger.warning("\(poller.device.name): \(alarm.text(seq: nil))")
                sink.accept(alarm)
            }
            if let sample { sink.accept(sample) }
            for note in poller.takePlanNotes() { logger.notice("\(note)") }
            // One line per change of this device's state, never one per poll.
            let down = poller.stats.consecutiveFailures > 0
            if down, poller.stats.consecutiveFailures == 1 {
                logger.warning(
                    "device \(poller.device.name) (unit \(poller.device.unit)) is not answering: \(poller.stats.lastError ?? "?")"
                )
            } else if !down, failedBefore {
                logger.notice("device \(poller.device.name) answers again")
            }
            poller.scheduleNext(after: due, now: finished, maxBackoffMs: bus.maxBackoffMs)
            let windowMs = finished.milliseconds(since: windowStart)
            lock.withLock {
                if windowMs >= 1000 {
                    let share = min(1, Double(busyNanoseconds) / Double(windowMs * 1_000_000))
                    utilisation = utilisation == 0 ? share : utilisation * 0.8 + share * 0.2
                }
                snapshot[index].stats = poller.stats
                activity[poller.device.name, default: DeviceActivity()].note(
                    record, latencyMs: latencyMs, profile: poller.device.profile)
            }
            if windowMs >= 1000 {
                windowStart = finished
                busyNanoseconds = 0
            }
        }
        connection.disconnect()
    }

    /// A comparable rendering of static readings.
    private static func describe(_ readings: [(name: String, reading: Result<PointValue, ReadFailure>)]) -> String {
        readings.map { reading in
            switch reading.reading {
            case .success(let value): "\(reading.name)=\(value)"
            case .failure(let reason): "\(reading.name)!\(reason)"
            }
        }.joined(separator: ",")
    }

    /// Waits until `deadline` in slices of `Heartbeat.sliceMs`, beating after each; false when stopping.
    private func waitBeating(until deadline: MonotonicInstant) -> Bool {
        while true {
            let slice = MonotonicInstant.now().adding(milliseconds: Heartbeat.sliceMs)
            heartbeat.expect(within: Heartbeat.sliceMs)
            guard worker.wait(until: min(deadline, slice)) else { return false }
            if MonotonicInstant.now() >= deadline { return true }
        }
    }
}

extension ModbusConnection {
    /// A connection for `bus` with its response timeout, pacing (`inter_request_delay_ms`,
    /// `connect_delay_ms`) and the fixed reply unit ids of its `devices` (`reply_unit`).
    /// Does not connect yet; throws `.setup` if the libmodbus context cannot be made.
    public convenience init(bus: BusConfig, devices: [DeviceConfig]) throws(ModbusError) {
        try self.init(endpoint: ModbusEndpoint(bus.transport), responseTimeoutMs: bus.timeoutMs)
        interRequestDelayMs = bus.interRequestDelayMs
        connectDelayMs = bus.connectDelayMs
        for device in devices {
            if let replyUnit = device.replyUnit { replyUnits[device.unit] = replyUnit }
        }
    }
}
