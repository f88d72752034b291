import Glibc
import Logging
import RailgateBuffer
import RailgateCore
import RailgateGPIO
import RailgateModbus
import RailgateSystem

/// The daemon: loads the configuration, opens the buffer, and runs one poller per bus, the
/// uplink and the control socket until SIGTERM or SIGINT; SIGHUP reloads the configuration
/// (an invalid one is refused and the running one kept). This is the one place where the
/// services are wired together.
///
/// Supervision: a bus poller, gate watcher, control socket or metrics thread that ends while
/// not asked to is logged and restarted after a back-off (`Supervisor`); a thread that cannot be
/// created at start or reload makes the daemon exit 71. A stop (or the stop half of a reload)
/// that takes longer than `stopDeadlineMs` is cut short: the buffer is synced, the service that
/// did not stop is logged, and the daemon exits 70, for systemd to restart it.
public final class Gateway: @unchecked Sendable {
    private var config: GatewayConfig
    private let buffer: DiskBuffer
    private let sink: BufferSink
    private let alarmStore: AlarmStore
    private let records: AlarmTrackingSink
    /// The stored records streamed to `follow` clients, and the recent events for `status`.
    private let feed: RecordFeed
    /// Records stored and acknowledged per second, sampled at each `status` (guarded by `lock`).
    private var storedRate = RateMeter()
    private var sentRate = RateMeter()
    private let logger: Logger
    private let started = WallClock.now()
    /// Held while a birth message is built and announced (`announceBirth`).
    private let announcing = ConditionLock()
    private let startedMonotonic = MonotonicInstant.now()
    private let lock = ConditionLock()
    private var pollers: [BusPoller] = []
    private var gates: [GateWatcher] = []
    private var inputs: [InputWatcher] = []
    private var uplink: Uplink?
    private var control: ControlServer?
    private var metrics: MetricsServer?
    private let supervisor: Supervisor
    /// The last reading of each device's `poll = "once"` points, for the birth message (guarded by `lock`).
    private var statics: [String: [(name: String, reading: Result<PointValue, ReadFailure>)]] = [:]
    /// The service being stopped now, for the log line when the stop deadline passes.
    private var stopping: String?

    /// The whole stop (or the stop half of a reload) must be over within this, well inside the
    /// unit's `TimeoutStopSec` (30 s), so the daemon exits on its own with the buffer synced.
    public static let stopDeadlineMs = 20_000
    /// Exit status when the stop deadline passed or a service whose policy is `exitDaemon` ended (EX_SOFTWARE).
    public static let exitServiceFailed: Int32 = 70
    /// Exit status when a service thread could not be created (EX_OSERR).
    public static let exitNoThread: Int32 = 71

    /// The signals the daemon takes with `sigwait`: SIGTERM, SIGINT (stop), SIGHUP (reload), and
    /// SIGUSR1 (the supervisor's wake-up).
    static let handledSignals = [SIGTERM, SIGINT, SIGHUP, SIGUSR1]

    /// Blocks the daemon's signals in the calling thread and ignores SIGPIPE. Call first thing
    /// in `railgate run`, before the buffer or anything else starts a thread: every thread then
    /// inherits the mask, so no signal can reach a thread that would die of it; a signal that
    /// arrives during start-up waits, pending, until `run()` takes it. The C function is
    /// `pthread_sigmask`.
    public static func blockSignals() {
        var signals = signalSet()
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        Glibc.signal(SIGPIPE, SIG_IGN)
    }

    private static func signalSet() -> sigset_t {
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in handledSignals { sigaddset(&signals, signal) }
        return signals
    }

    /// Opens the buffer for `config` and loads the alarm state; throws if the state directory
    /// cannot be used. Call after `blockSignals()`: the buffer starts its sync thread here.
    public init(config: GatewayConfig, logger: Logger) throws(BufferError) {
        self.config = config
        self.logger = logger
        buffer = try DiskBuffer(
            stateDirectory: config.gateway.stateDir, settings: config.buffer, source: config.gateway.id)
        feed = RecordFeed(logger: logger)
        sink = BufferSink(buffer: buffer, logger: logger, feed: feed)
        alarmStore = AlarmStore(stateDirectory: config.gateway.stateDir, logger: logger)
        records = AlarmTrackingSink(inner: sink, buffer: buffer, store: alarmStore, logger: logger)
        let mainThread = pthread_self()
        supervisor = Supervisor(logger: logger) { _ = pthread_kill(mainThread, SIGUSR1) }
    }

    /// Runs until SIGTERM/SIGINT, then stops polling, flushes what the broker will take,
    /// persists the buffer and returns 0; returns 70 or 71 when a service failed (see the type's
    /// doc). Call from the thread that called `init`, after `blockSignals()`.
    public func run() -> Int32 {
        Self.blockSignals()  // Idempotent; in case the caller did not.
        var signals = Self.signalSet()

        let stats = buffer.stats()
        logger.info(
            "railgate \(RailgateVersion.current) gateway \(config.gateway.id): buffer holds \(stats.records) records, next seq \(stats.nextSeq)"
        )
        if stats.corruptBytesSkipped > 0 {
            logger.warning(
                "buffer: skipped \(stats.corruptBytesSkipped) corrupt bytes when opening; intact records kept")
        }
        for warning in stats.warnings { logger.warning("buffer: \(warning)") }
        for loss in stats.losses { logger.error("buffer: \(loss); reported upstream as a records_lost event") }
        do {
            try startServices(config)
        } catch {
            logger.critical("\(error); exiting")
            return stop(exitCode: Self.exitNoThread)
        }
        // Ready: the configuration is loaded, the buffer open and every service started.
        SystemdNotifier.notify("READY=1")
        let watchdog =
            SystemdNotifier.isActive
            ? SystemdWatchdog(environment: SystemdWatchdog.processEnvironment(), pid: getpid()) : nil
        if let watchdog {
            logger.info("systemd watchdog: pinging every \(watchdog.pingIntervalMs) ms while every loop beats")
        }
        var health = HealthReport()
        var nextTick: MonotonicInstant? = SystemdNotifier.isActive ? .now() : nil
        while true {
            if let reason = supervisor.fatalReason {
                logger.critical("\(reason): stopping")
                return stop(exitCode: Self.exitServiceFailed)
            }
            supervisor.restartDue()
            if let tick = nextTick, MonotonicInstant.now() >= tick {
                reportHealth(watchdog: watchdog, into: &health)
                nextTick = MonotonicInstant.now().adding(
                    milliseconds: min(Self.statusIntervalMs, watchdog?.pingIntervalMs ?? Self.statusIntervalMs))
            }
            let wakeUp = [supervisor.nextRestart, nextTick].compactMap { $0 }.min()
            let received = Self.waitForSignal(&signals, until: wakeUp)
            switch received {
            case SIGHUP:
                // A ping now: the reload (at most the 20 s stop deadline) stays within WatchdogSec.
                if nextTick != nil { reportHealth(watchdog: watchdog, into: &health) }
                do {
                    try reload()
                } catch {
                    logger.critical("reload: \(error); exiting")
                    return stop(exitCode: Self.exitNoThread)
                }
            case SIGTERM, SIGINT:
                logger.notice("signal \(received): stopping")
                return stop(exitCode: 0)
            default:
                continue  // The supervisor's wake-up, or a restart is due.
            }
        }
    }

    /// How often the main thread refreshes `STATUS=` (sent only when it changed), in milliseconds.
    static let statusIntervalMs = 2000

    /// What the last health report said, so that each change is logged and sent once.
    struct HealthReport {
        var status = ""
        var stalled: String?
    }

    /// Under systemd: sends `WATCHDOG=1` when every loop's heartbeat is on time (logs the first
    /// loop that is not, once, and withholds the ping so systemd restarts the service), and
    /// `STATUS=` when the line changed. Called on the main thread.
    private func reportHealth(watchdog: SystemdWatchdog?, into report: inout HealthReport) {
        let (pollers, gates, uplink) = lock.withLock { (self.pollers, self.gates, self.uplink) }
        let beats =
            pollers.map(\.heartbeat) + gates.map(\.heartbeat) + inputs.map(\.heartbeat)
            + (uplink.map { [$0.heartbeat] } ?? [])
        let overdue = beats.lazy.compactMap { beat in beat.overdueMs().map { (beat.name, $0) } }.first
        if let (name, late) = overdue, report.stalled != name {
            logger.critical(
                "\(name) made no progress: \(late / 1000) s past its heartbeat; withholding the watchdog ping so systemd restarts railgate"
            )
        } else if overdue == nil, let name = report.stalled {
            logger.notice("\(name) made progress again")
        }
        report.stalled = overdue?.0
        var message: [String] = []
        if watchdog != nil, overdue == nil { message.append("WATCHDOG=1") }
        let devices = pollers.flatMap { $0.status().devices }
        let stored = buffer.stats()
        let status = StatusLine.render(
            devicesAnswering: devices.filter { $0.stats.polls > 0 && $0.stats.consecutiveFailures == 0 }.count,
            devices: devices.count, gates: gates.count, uplink: uplink?.status().state ?? "disabled",
            records: stored.records, nextSeq: stored.nextSeq, stalled: overdue?.0)
        if status != report.status {
            message.append("STATUS=\(status)")
            report.status = status
        }
        if !message.isEmpty { SystemdNotifier.notify(message.joined(separator: "\n")) }
    }

    /// The next of `signals`, or 0 when `deadline` passes first (or the wait was interrupted).
    private static func waitForSignal(_ signals: inout sigset_t, until deadline: MonotonicInstant?) -> Int32 {
        guard let deadline else {
            var received: Int32 = 0
            return sigwait(&signals, &received) == 0 ? received : 0
        }
        let left = max(0, deadline.nanoseconds - MonotonicInstant.now().nanoseconds)
        var timeout = timespec(tv_sec: Int(left / 1_000_000_000), tv_nsec: Int(left % 1_000_000_000))
        let received = sigtimedwait(&signals, nil, &timeout)
        return received > 0 ? received : 0
    }

    /// Stops every service within the stop deadline, closes the buffer, returns `exitCode`.
    private func stop(exitCode: Int32) -> Int32 {
        SystemdNotifier.notify("STOPPING=1")
        withStopDeadline {
            stopServices()
            stopping("the follow clients") { feed.stop() }
        }
        buffer.close()
        return exitCode
    }

    /// Runs `body` (stopping services) with a watchdog: if it is not over within
    /// `stopDeadlineMs`, the watchdog logs the service that did not stop, syncs the buffer and
    /// ends the process with status 70.
    private func withStopDeadline(_ body: () -> Void) {
        let watchdog = ServiceThread()
        let deadline = MonotonicInstant.now().adding(milliseconds: Self.stopDeadlineMs)
        do {
            try watchdog.start(name: "stop deadline") { [self] in
                guard watchdog.wait(until: deadline) else { return }
                let service = lock.withLock { stopping } ?? "a service"
                logger.critical(
                    "\(service) did not stop within \(Self.stopDeadlineMs / 1000) s; syncing the buffer and exiting \(Self.exitServiceFailed)"
                )
                do {
                    try buffer.sync()
                } catch {
                    logger.critical("could not sync the buffer: \(error)")
                }
                _exit(Self.exitServiceFailed)
            }
        } catch {
            logger.error("\(error): stopping without a deadline")
        }
        body()
        watchdog.stop()
    }

    private func reload() throws(ThreadError) {
        SystemdNotifier.notify("RELOADING=1")
        defer { SystemdNotifier.notify("READY=1") }
        let fresh: GatewayConfig
        do {
            fresh = try ConfigLoader(files: LocalFiles()).load(config.file)
        } catch {
            for problem in error.problems { logger.error("reload refused: \(problem)") }
            logger.error("reload refused: keeping the running configuration")
            return
        }
        if fresh.gateway.stateDir != config.gateway.stateDir || fresh.buffer != config.buffer {
            logger.warning("reload: state_dir and [buffer] changes take effect at the next restart")
        }
        logger.notice("reloading the configuration from \(fresh.file)")
        // With the same upstream the MQTT session stays up (no offline/online flap for the
        // consumers); only the birth message is published again, describing the new sources.
        let sameUpstream = fresh.upstream == config.upstream && fresh.gateway.id == config.gateway.id
        var kept: Uplink?
        withStopDeadline { kept = stopServices(keepingUplink: sameUpstream) }
        let previous = lock.withLock { () -> GatewayConfig in
            let previous = config
            config = fresh
            return previous
        }
        try startServices(fresh, uplink: kept)
        logger.notice("reloaded: \(ReloadSummary.describe(from: previous, to: fresh, upstreamKept: sameUpstream))")
    }

    /// A bus read a device's static points: the birth message is published again with them.
    private func staticsRead(device: String, _ readings: [(name: String, reading: Result<PointValue, ReadFailure>)]) {
        lock.withLock { statics[device] = readings }
        logger.info("device \(device): static points read; publishing the birth message again")
        announceBirth()
    }

    /// Builds the birth message from the configuration and the static readings known now and
    /// hands it to the uplink, one caller at a time: two buses reading static points at once
    /// could otherwise announce in the reverse order, and the retained message would be the
    /// older one, without the other device's values, until the next connect.
    private func announceBirth() {
        announcing.withLock {
            let (birth, uplink) = lock.withLock {
                (StatusMessage.birth(config: config, started: started, statics: statics), self.uplink)
            }
            uplink?.announce(birth)
        }
    }

    /// Starts every service for `config`; an `uplink` kept across a reload is told the new sources.
    /// Each service is registered as it starts, so a failure part-way leaves nothing unstoppable.
    /// - Throws: `ThreadError` if a service's thread could not be created.
    private func startServices(_ config: GatewayConfig, uplink kept: Uplink? = nil) throws(ThreadError) {
        let alarms = alarmStore.retain(devices: config.devices)
        feed.configure(config)
        for bus in config.buses {
            let devices = config.devices(on: bus.name)
            guard !devices.isEmpty else { continue }
            let poller = BusPoller(
                bus: bus, devices: devices, sink: records, logger: logger, alarms: alarms
            ) { [weak self] device, readings in
                self?.staticsRead(device: device, readings)
            }
            lock.withLock { pollers.append(poller) }
            try poller.start(supervisor: supervisor)
        }
        for gate in config.gates {
            let watcher = GateWatcher(gate: gate, sink: records, logger: logger)
            lock.withLock { gates.append(watcher) }
            try watcher.start(supervisor: supervisor)
        }
        for input in config.inputs {
            let watcher = InputWatcher(input: input, sink: records, logger: logger)
            lock.withLock { inputs.append(watcher) }
            try watcher.start(supervisor: supervisor)
        }
        if let kept {
            kept.reconfigure(config)
            lock.withLock { uplink = kept }
            announceBirth()
        } else if case .mqtt = config.upstream.endpoint {
            let candidate = Uplink(config: config, buffer: buffer, started: started, logger: logger)
            do {
                try candidate.start()
                // Static points read before the uplink existed go into its birth message now.
                let known = lock.withLock {
                    uplink = candidate
                    return !statics.isEmpty
                }
                if known { announceBirth() }
            } catch let error as ThreadError {
                throw error
            } catch {
                logger.error("uplink cannot start: \(error); records stay buffered")
            }
        } else {
            logger.notice("upstream url is \"none\": buffering only")
        }
        let control = ControlServer(
            path: config.gateway.controlSocket, logger: logger,
            respond: { [weak self] command in
                self?.answer(command) ?? .object([("error", .string("shutting down"))])
            },
            follow: { [feed] fd in feed.follow(fd: fd) })
        do {
            try control.start(supervisor: supervisor)
            lock.withLock { self.control = control }
        } catch let error as ThreadError {
            throw error
        } catch {
            logger.error("control socket unavailable (railgate status will not reach this daemon): \(error)")
        }
        if let listen = config.metricsListen {
            let server = MetricsServer(listen: listen) { [weak self] in self?.metricsText() ?? "" }
            do {
                try server.start(supervisor: supervisor)
                lock.withLock { metrics = server }
                logger.info("Prometheus metrics at http://\(listen)/metrics")
            } catch let error as ThreadError {
                throw error
            } catch {
                logger.error("metrics endpoint unavailable: \(error)")
            }
        }
    }

    /// Stops the services; with `keepingUplink` the uplink runs on and is returned.
    @discardableResult
    private func stopServices(keepingUplink: Bool = false) -> Uplink? {
        let (pollers, gates, uplink, control, metrics) = lock.withLock {
            (self.pollers, self.gates, self.uplink, self.control, self.metrics)
        }
        let inputs = lock.withLock { self.inputs }
        for poller in pollers { stopping("bus \(poller.bus.name)") { poller.stop() } }
        for gate in gates { stopping("gate \(gate.gate.name)") { gate.stop() } }
        for input in inputs { stopping("input \(input.input.name)") { input.stop() } }
        // Make the last polls durable so the uplink can still send them.
        stopping("the buffer's sync") {
            do {
                try buffer.sync()
            } catch {
                logger.error("could not sync the buffer: \(error)")
            }
        }
        if !keepingUplink, let uplink { stopping("the uplink") { uplink.stop() } }
        if let control { stopping("the control socket") { control.stop() } }
        if let metrics { stopping("the metrics endpoint") { metrics.stop() } }
        lock.withLock {
            self.pollers = []
            self.gates = []
            self.inputs = []
            self.uplink = nil
            self.control = nil
            self.metrics = nil
            stopping = nil
        }
        return keepingUplink ? uplink : nil
    }

    private func stopping(_ service: String, _ body: () -> Void) {
        lock.withLock { stopping = service }
        body()
    }

    // MARK: Control socket

    private func answer(_ command: String) -> JSON {
        switch command {
        case "status": return status()
        case "ping": return .object([("ok", .bool(true))])
        default:
            return .object([
                ("error", .string("unknown command '\(command.prefix(64))'; try \"status\", \"ping\" or \"follow\""))
            ])
        }
    }

    /// The Prometheus text served at /metrics.
    func metricsText() -> String {
        let (pollers, uplink) = lock.withLock { (self.pollers, self.uplink) }
        return MetricsText.render(
            buffer: buffer.stats(), buses: pollers.map { $0.status() }, upstream: uplink?.status(),
            droppedInMemory: sink.lostInMemory)
    }

    /// The daemon's state, as `railgate status --json` prints it.
    func status() -> JSON {
        let (config, pollers, gates, uplink) = lock.withLock { (self.config, self.pollers, self.gates, self.uplink) }
        let buffer = self.buffer.stats()
        let busStatuses = pollers.map { $0.status() }
        let nowMs = MonotonicInstant.now().nanoseconds / 1_000_000
        // Rates of counts, not of seqs: after a crash the seqs jump over the unused reservation.
        let sentRecords = UInt64(uplink?.status().records ?? 0)
        let (stored, sent) = lock.withLock {
            storedRate.add(atMs: nowMs, value: buffer.nextSeq)
            sentRate.add(atMs: nowMs, value: sentRecords)
            return (
                storedRate.rate(atMs: nowMs, value: buffer.nextSeq), sentRate.rate(atMs: nowMs, value: sentRecords)
            )
        }
        let rate = { (value: Double?) -> JSON in value.map { .number(($0 * 100).rounded() / 100) } ?? .null }
        // The oldest record not yet acknowledged, and how long it has waited.
        let oldest = self.buffer.records(after: buffer.ackedSeq, limits: BatchLimits(maxRecords: 1, maxBytes: .max))
            .first.flatMap { try? JSONReader.parse(String(decoding: $0.bytes, as: UTF8.self)) }?["ts"]?.stringValue
            .flatMap(Timestamp.init(parsing:))
        let oldestAge = oldest.map { Double(WallClock.now().millisecondsSinceEpoch - $0.millisecondsSinceEpoch) / 1000 }
        let upstream: JSON
        if let uplink {
            let state = uplink.status()
            upstream = .object([
                ("state", .string(state.state)), ("acked_seq", .unsigned(state.ackedSeq)),
                ("batches", .integer(Int64(state.batches))),
                ("in_flight", .integer(Int64(state.inFlight))), ("url", .string(state.url)),
                ("last_error", state.lastError.map(JSON.string) ?? .null),
                ("undeliverable", .integer(Int64(state.undeliverable))),
                ("batch_bytes_limit", .integer(Int64(state.batchBytesLimit))),
                ("sent_per_s", rate(sent)),
            ])
        } else {
            upstream = .object([
                ("state", .string("disabled")), ("acked_seq", .unsigned(buffer.ackedSeq)), ("batches", .integer(0)),
                ("sent_per_s", rate(sent)),
            ])
        }
        var devices: [JSON] = []
        for bus in busStatuses {
            for (name, stats) in bus.devices {
                let activity = bus.activity[name] ?? DeviceActivity()
                let points: [JSON] = activity.points.map { point in
                    var members: [(String, JSON)] = [("name", .string(point.name))]
                    if let value = point.value { members.append(("value", value.jsonValue)) }
                    if let failure = point.failure { members.append(("error", .string(failure.description))) }
                    if let unit = point.unit { members.append(("unit", .string(unit))) }
                    return .object(members)
                }
                let latency: JSON = activity.lastPoll == nil ? .null : .number((activity.latencyMs * 10).rounded() / 10)
                let errorRate: JSON = activity.errorRate.map { .number(($0 * 1000).rounded() / 1000) } ?? .null
                devices.append(
                    .object([
                        ("name", .string(name)), ("bus", .string(bus.name)), ("polls", .integer(Int64(stats.polls))),
                        ("errors", .integer(Int64(stats.errors))),
                        ("last_error", stats.lastError.map(JSON.string) ?? .null),
                        ("answering", .bool(stats.consecutiveFailures == 0)),
                        ("requests", .integer(Int64(stats.requests))),
                        ("last_poll_ts", activity.lastPoll.map { .string($0.description) } ?? .null),
                        ("latency_ms", latency), ("error_rate", errorRate),
                        ("points", .array(points)),
                    ]))
            }
        }
        let uptime = Double(MonotonicInstant.now().milliseconds(since: startedMonotonic)) / 1000
        let alarms: [JSON] = alarmStore.alarms.sorted { $0.key < $1.key }.flatMap { device, alarms in
            alarms.map { alarm in
                JSON.object([
                    ("device", .string(device)), ("point", .string(alarm.point)),
                    ("side", .string(alarm.side.rawValue)), ("threshold", .number(alarm.threshold)),
                ])
            }
        }
        let bufferJSON: JSON = .object([
            ("records", .integer(Int64(buffer.records))), ("bytes", .integer(Int64(buffer.bytes))),
            ("stored_records", .integer(Int64(buffer.storedRecords))),
            ("first_seq", .unsigned(buffer.firstSeq)), ("next_seq", .unsigned(buffer.nextSeq)),
            ("durable_seq", .unsigned(buffer.durableSeq)),
            ("dropped", .unsigned(buffer.dropped)), ("dropped_normal", .unsigned(buffer.droppedNormal)),
            ("dropped_alarm", .unsigned(buffer.droppedAlarm)), ("max_bytes", .integer(Int64(buffer.maxBytes))),
            ("waiting_in_memory", .integer(Int64(sink.waitingInMemory))),
            ("disk_error", buffer.diskError.map(JSON.string) ?? .null),
            ("reserved_seq", .unsigned(buffer.reservedSeq)),
            ("dropped_in_memory", .integer(Int64(sink.lostInMemory))),
            ("lost_records", .unsigned(buffer.lostRecords)), ("lost_seqs", .unsigned(buffer.lostSeqs)),
            ("last_loss", buffer.losses.last.map(BufferSink.json) ?? .null),
            ("oldest_ts", oldest.map { .string($0.description) } ?? .null),
            ("oldest_age_s", oldestAge.map { .number(($0 * 10).rounded() / 10) } ?? .null),
            ("stored_per_s", rate(stored)),
        ])
        return .object([
            ("gateway", .string(config.gateway.id)), ("version", .string(RailgateVersion.current)),
            ("gpio_backend", .string(LibgpiodBackend.summary)), ("uptime_s", .number(uptime)),
            ("buffer", bufferJSON),
            ("upstream", upstream),
            (
                "buses",
                .array(
                    busStatuses.map { bus in
                        .object([
                            ("name", .string(bus.name)), ("endpoint", .string(bus.endpoint)),
                            ("utilisation", .number((bus.utilisation * 1000).rounded() / 1000)),
                        ])
                    })
            ),
            ("devices", .array(devices)),
            ("gates", .array(gates.map { $0.status() })),
            ("inputs", .array(lock.withLock { self.inputs }.map { $0.status() })),
            ("watchdog", .object([("overdue", .array(overdueLoops().map(JSON.string)))])),
            ("alarms", .array(alarms)),
            ("recent_events", .array(feed.recentEvents)),
            ("followers", .integer(Int64(feed.followerCount))),
        ])
    }

    /// The service loops past their heartbeat (as the systemd watchdog sees them), for `doctor`.
    private func overdueLoops() -> [String] {
        let (pollers, gates, inputs, uplink) = lock.withLock { (self.pollers, self.gates, self.inputs, self.uplink) }
        let beats =
            pollers.map(\.heartbeat) + gates.map(\.heartbeat) + inputs.map(\.heartbeat)
            + (uplink.map { [$0.heartbeat] } ?? [])
        return beats.filter { $0.overdueMs() != nil }.map(\.name)
    }
}

/// `railgate run --once`: polls every device and reads every gate once, without buffer or uplink.
public enum SinglePoll {
    /// The records of one poll of every device and gate, and whether every one answered. A gate
    /// or input whose lines the running daemon holds is skipped with a note on standard error:
    /// the daemon watches it, so it is not a failure.
    public static func pollAll(_ config: GatewayConfig) -> (records: [Record], allAnswered: Bool) {
        var records: [Record] = []
        var allAnswered = true
        for bus in config.buses {
            let devices = config.devices(on: bus.name)
            guard !devices.isEmpty else { continue }
            let connection: ModbusConnection?
            do {
                connection = try ModbusConnection(bus: bus, devices: devices)
            } catch {
                StandardStreams.error("bus \(bus.name): \(error)")
                connection = nil
            }
            for device in devices {
                let poller = DevicePoller(device: device, maxGap: bus.maxGap, firstDue: .now())
                let record: Record
                if let connection {
                    record = poller.poll(
                        over: connection, retries: bus.retries, busy: BusyPolicy(bus: bus), at: WallClock.now())
                    // Say why on stderr: the record only carries "io" or "timeout".
                    if case .sample(_, let errors) = record.body, !errors.isEmpty, let reason = poller.stats.lastError {
                        StandardStreams.error("device \(device.name) (unit \(device.unit)): \(reason)")
                    }
                } else {
                    let errors = device.profile.points.map { ($0.name, ReadFailure.io) }
                    record = Record(
                        timestamp: WallClock.now(), source: device.name, body: .sample(values: [], errors: errors))
                }
                if case .sample(let values, _) = record.body, values.isEmpty { allAnswered = false }
                records.append(record)
            }
            connection?.disconnect()
        }
        for gate in config.gates {
            do {
                records.append(try GateWatcher.readOnce(gate))
            } catch  where error.isHeldByRailgateDaemon {
                StandardStreams.error(
                    "gate \(gate.name): skipped: the running railgate daemon holds its lines; watch it with `railgate events --follow`"
                )
            } catch {
                StandardStreams.error("gate \(gate.name): \(error)")
                allAnswered = false
            }
        }
        for input in config.inputs {
            do {
                records.append(try InputWatcher.readOnce(input))
            } catch  where error.isHeldByRailgateDaemon {
                StandardStreams.error(
                    "input \(input.name): skipped: the running railgate daemon holds its line; watch it with `railgate events --follow`"
                )
            } catch {
                StandardStreams.error("input \(input.name): \(error)")
                allAnswered = false
            }
        }
        return (records, allAnswered)
    }
}
