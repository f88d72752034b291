import Glibc
import Logging
import RailgateBuffer
import RailgateCore
import RailgateModbus

/// The daemon: loads the configuration, opens the buffer, and runs one poller per bus, the
/// uplink and the control socket until SIGTERM or SIGINT; SIGHUP reloads the configuration
/// (an invalid one is refused and the running one kept). This is the one place where the
/// services are wired together.
public final class Gateway: @unchecked Sendable {
    private var config: GatewayConfig
    private let buffer: DiskBuffer
    private let sink: BufferSink
    private let logger: Logger
    private let started = WallClock.now()
    private let startedMonotonic = MonotonicInstant.now()
    private let lock = ConditionLock()
    private var pollers: [BusPoller] = []
    private var gates: [GateWatcher] = []
    private var uplink: Uplink?
    private var control: ControlServer?
    private var metrics: MetricsServer?

    /// Opens the buffer for `config`; throws if the state directory cannot be used.
    public init(config: GatewayConfig, logger: Logger) throws(BufferError) {
        self.config = config
        self.logger = logger
        buffer = try DiskBuffer(
            stateDirectory: config.gateway.stateDir, settings: config.buffer, source: config.gateway.id)
        sink = BufferSink(buffer: buffer, logger: logger)
    }

    /// Runs until SIGTERM/SIGINT, then stops polling, flushes what the broker will take,
    /// persists the buffer and returns 0. Call from the main thread.
    public func run() -> Int32 {
        var signals = sigset_t()
        sigemptyset(&signals)
        for signal in [SIGTERM, SIGINT, SIGHUP] { sigaddset(&signals, signal) }
        // Blocked before any thread starts, so every thread inherits the mask and only sigwait sees them.
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        Glibc.signal(SIGPIPE, SIG_IGN)

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
        startServices(config)
        SystemdNotifier.notify(
            "READY=1\nSTATUS=polling \(config.devices.count) devices, watching \(config.gates.count) gates")
        while true {
            var received: Int32 = 0
            guard sigwait(&signals, &received) == 0 else { continue }
            if received == SIGHUP {
                reload()
                continue
            }
            logger.notice("signal \(received): stopping")
            SystemdNotifier.notify("STOPPING=1")
            stopServices()
            buffer.close()
            return 0
        }
    }

    private func reload() {
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
        let kept = stopServices(keepingUplink: sameUpstream)
        lock.withLock { config = fresh }
        startServices(fresh, uplink: kept)
    }

    /// Starts every service for `config`; an `uplink` kept across a reload is told the new sources.
    private func startServices(_ config: GatewayConfig, uplink kept: Uplink? = nil) {
        let pollers = config.buses.compactMap { bus -> BusPoller? in
            let devices = config.devices(on: bus.name)
            guard !devices.isEmpty else { return nil }
            return BusPoller(bus: bus, devices: devices, sink: sink, logger: logger)
        }
        pollers.forEach { $0.start() }
        let gates = config.gates.map { GateWatcher(gate: $0, sink: sink, logger: logger) }
        gates.forEach { $0.start() }
        var uplink: Uplink?
        if let kept {
            kept.announce(StatusMessage.birth(config: config, started: started))
            uplink = kept
        } else if case .mqtt = config.upstream.endpoint {
            let candidate = Uplink(config: config, buffer: buffer, started: started, logger: logger)
            do {
                try candidate.start()
                uplink = candidate
            } catch {
                logger.error("uplink cannot start: \(error); records stay buffered")
            }
        } else {
            logger.notice("upstream url is \"none\": buffering only")
        }
        let control = ControlServer(path: config.gateway.controlSocket, logger: logger) { [weak self] command in
            self?.answer(command) ?? .object([("error", .string("shutting down"))])
        }
        do {
            try control.start()
        } catch {
            logger.error("control socket unavailable (railgate status will not reach this daemon): \(error)")
        }
        var metrics: MetricsServer?
        if let listen = config.metricsListen {
            let server = MetricsServer(listen: listen) { [weak self] in self?.metricsText() ?? "" }
            do {
                try server.start()
                metrics = server
                logger.info("Prometheus metrics at http://\(listen)/metrics")
            } catch {
                logger.error("metrics endpoint unavailable: \(error)")
            }
        }
        lock.withLock {
            self.pollers = pollers
            self.gates = gates
            self.uplink = uplink
            self.control = control
            self.metrics = metrics
        }
    }

    /// Stops the services; with `keepingUplink` the uplink runs on and is returned.
    @discardableResult
    private func stopServices(keepingUplink: Bool = false) -> Uplink? {
        let (pollers, gates, uplink, control, metrics) = lock.withLock {
            (self.pollers, self.gates, self.uplink, self.control, self.metrics)
        }
        pollers.forEach { $0.stop() }
        gates.forEach { $0.stop() }
        // Make the last polls durable so the uplink can still send them.
        try? buffer.sync()
        if !keepingUplink { uplink?.stop() }
        control?.stop()
        metrics?.stop()
        lock.withLock {
            self.pollers = []
            self.gates = []
            self.uplink = nil
            self.control = nil
            self.metrics = nil
        }
        return keepingUplink ? uplink : nil
    }

    // MARK: Control socket

    private func answer(_ command: String) -> JSON {
        switch command {
        case "status": return status()
        case "ping": return .object([("ok", .bool(true))])
        default: return .object([("error", .string("unknown command '\(command.prefix(64))'; try \"status\""))])
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
        let upstream: JSON
        if let uplink {
            let state = uplink.status()
            upstream = .object([
                ("state", .string(state.state)), ("acked_seq", .unsigned(state.ackedSeq)),
                ("batches", .integer(Int64(state.batches))),
                ("in_flight", .integer(Int64(state.inFlight))), ("url", .string(state.url)),
                ("last_error", state.lastError.map(JSON.string) ?? .null),
            ])
        } else {
            upstream = .object([
                ("state", .string("disabled")), ("acked_seq", .unsigned(buffer.ackedSeq)), ("batches", .integer(0)),
            ])
        }
        var devices: [JSON] = []
        for bus in busStatuses {
            for (name, stats) in bus.devices {
                devices.append(
                    .object([
                        ("name", .string(name)), ("bus", .string(bus.name)), ("polls", .integer(Int64(stats.polls))),
                        ("errors", .integer(Int64(stats.errors))),
                        ("last_error", stats.lastError.map(JSON.string) ?? .null),
                        ("answering", .bool(stats.consecutiveFailures == 0)),
                        ("requests", .integer(Int64(stats.requests))),
                    ]))
            }
        }
        let uptime = Double(MonotonicInstant.now().milliseconds(since: startedMonotonic)) / 1000
        return .object([
            ("gateway", .string(config.gateway.id)), ("version", .string(RailgateVersion.current)),
            ("uptime_s", .number(uptime)),
            (
                "buffer",
                .object([
                    ("records", .integer(Int64(buffer.records))), ("bytes", .integer(Int64(buffer.bytes))),
                    ("first_seq", .unsigned(buffer.firstSeq)), ("next_seq", .unsigned(buffer.nextSeq)),
                    ("dropped", .unsigned(buffer.dropped)), ("dropped_normal", .unsigned(buffer.droppedNormal)),
                    ("dropped_alarm", .unsigned(buffer.droppedAlarm)), ("max_bytes", .integer(Int64(buffer.maxBytes))),
                    ("waiting_in_memory", .integer(Int64(sink.waitingInMemory))),
                    ("disk_error", buffer.diskError.map(JSON.string) ?? .null),
                    ("reserved_seq", .unsigned(buffer.reservedSeq)),
                    ("dropped_in_memory", .integer(Int64(sink.lostInMemory))),
                    ("lost_records", .unsigned(buffer.lostRecords)), ("lost_seqs", .unsigned(buffer.lostSeqs)),
                    ("last_loss", buffer.losses.last.map(BufferSink.json) ?? .null),
                ])
            ),
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
        ])
    }
}

/// `railgate run --once`: polls every device and reads every gate once, without buffer or uplink.
public enum SinglePoll {
    /// The records of one poll of every device and gate, and whether every one answered.
    public static func pollAll(_ config: GatewayConfig) -> (records: [Record], allAnswered: Bool) {
        var records: [Record] = []
        var allAnswered = true
        for bus in config.buses {
            let devices = config.devices(on: bus.name)
            guard !devices.isEmpty else { continue }
            let connection = try? ModbusConnection(
                endpoint: ModbusEndpoint(bus.transport), responseTimeoutMs: bus.timeoutMs)
            for device in devices {
                let poller = DevicePoller(device: device, maxGap: bus.maxGap, firstDue: .now())
                let record: Record
                if let connection {
                    record = poller.poll(
                        over: connection, retries: bus.retries, interRequestDelayMs: bus.interRequestDelayMs,
                        at: WallClock.now())
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
            } catch {
                StandardStreams.error("gate \(gate.name): \(error)")
                allAnswered = false
            }
        }
        return (records, allAnswered)
    }
}
