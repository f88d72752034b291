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
}

/// Polls every device of one bus from one dedicated thread, so requests on a shared line are
/// serialised, never interleaved, with `inter_request_delay_ms` between any two of them whichever
/// devices they belong to (the connection paces them; a stop cuts the pause short). Devices start
/// staggered across their interval rather than all due at once.
final class BusPoller: @unchecked Sendable {
    let bus: BusConfig
    private let sink: any RecordSink
    private let logger: Logger
    private let worker = ServiceThread()
    private var lock: ConditionLock { worker.lock }
    private var pollers: [DevicePoller]
    private var utilisation = 0.0
    private var snapshot: [(name: String, stats: DeviceStats)]

    /// - Parameter alarms: alarms raised before (a restart or reload), by device and point: not raised again.
    init(
        bus: BusConfig, devices: [DeviceConfig], sink: any RecordSink, logger: Logger,
        alarms: [String: [EdgeFilter.RaisedAlarm]] = [:]
    ) {
        self.bus = bus
        self.sink = sink
        self.logger = logger
        let now = MonotonicInstant.now()
        pollers = devices.enumerated().map { index, device in
            let stagger = device.pollIntervalMs * index / max(1, devices.count)
            return DevicePoller(device: device, maxGap: bus.maxGap, firstDue: now.adding(milliseconds: stagger))
        }
        for poller in pollers { poller.edge.restore(alarms[poller.device.name] ?? []) }
        snapshot = pollers.map { ($0.device.name, $0.stats) }
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
                devices: snapshot)
        }
    }

    private func run() {
        let connection: ModbusConnection
        do {
            connection = try ModbusConnection(bus: bus, devices: pollers.map(\.device))
        } catch {
            logger.error("bus \(bus.name): \(error); its devices will not be polled")
            return
        }
        connection.pause = { [worker] deadline in worker.wait(until: deadline) }
        var windowStart = MonotonicInstant.now()
        var busyNanoseconds: Int64 = 0
        var wasDown = false
        while true {
            guard let poller = pollers.min(by: { $0.nextDue < $1.nextDue }) else { return }
            let due = poller.nextDue
            guard worker.wait(until: due) else { break }
            let started = MonotonicInstant.now()
            let record = poller.poll(over: connection, retries: bus.retries, at: WallClock.now())
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
            let down = poller.stats.consecutiveFailures > 0
            if down != wasDown || (down && poller.stats.consecutiveFailures == 1) {
                if down {
                    logger.warning(
                        "device \(poller.device.name) (unit \(poller.device.unit)) is not answering: \(poller.stats.lastError ?? "?")"
                    )
                } else if wasDown {
                    logger.notice("device \(poller.device.name) answers again")
                }
            }
            wasDown = pollers.contains { $0.stats.consecutiveFailures > 0 }
            poller.scheduleNext(after: due, now: finished, maxBackoffMs: bus.maxBackoffMs)
            let windowMs = finished.milliseconds(since: windowStart)
            lock.withLock {
                if windowMs >= 1000 {
                    let share = min(1, Double(busyNanoseconds) / Double(windowMs * 1_000_000))
                    utilisation = utilisation == 0 ? share : utilisation * 0.8 + share * 0.2
                }
                snapshot = pollers.map { ($0.device.name, $0.stats) }
            }
            if windowMs >= 1000 {
                windowStart = finished
                busyNanoseconds = 0
            }
        }
        connection.disconnect()
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
