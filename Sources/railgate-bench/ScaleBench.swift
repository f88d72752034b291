import Glibc
import RailgateCore
import RailgateMQTT
import RailgateSystem

/// Counts the seqs of the telemetry batches a subscriber receives: `"seq":N` in each plain batch
/// (a `compact/1` payload, the default, decoded with `CompactBatch.decode` first; duplicates,
/// at-least-once, counted once), and when the first arrived.
final class SeqCounter: @unchecked Sendable {
    private let lock = ConditionLock()
    private var seen: [Bool] = []
    private var distinct = 0
    private var duplicates = 0
    private var firstAt: Double?
    private var connected = false
    private var client: MQTTClient?

    init(port: Int) throws {
        let client = try MQTTClient(clientID: "bench-\(getpid())") { [weak self] event in
            guard let self else { return }
            switch event {
            case .message(let topic, let payload, _) where topic.hasSuffix("/telemetry"):
                let seqs = Self.seqs(in: payload)
                let now = seconds()
                lock.withLock {
                    if firstAt == nil, !seqs.isEmpty { firstAt = now }
                    for seq in seqs {
                        let index = Int(seq)
                        if index >= seen.count {
                            seen += [Bool](repeating: false, count: max(65536, index + 1 - seen.count))
                        }
                        if seen[index] { duplicates += 1 } else { seen[index] = true; distinct += 1 }
                    }
                }
            case .connected(0, _):
                lock.withLock { connected = true }
            default: break
            }
        }
        self.client = client
        try client.start(host: "127.0.0.1", port: port, keepaliveSeconds: 30)
        try waitFor(20, "the benchmark's subscriber to connect") { lock.withLock { connected } }
        try client.subscribe("railgate/+/telemetry", qos: 1)
        usleep(100_000)
    }

    deinit { client?.disconnect() }

    /// Distinct seqs so far, and the instant the first arrived (monotonic seconds).
    var state: (distinct: Int, duplicates: Int, firstAt: Double?) {
        lock.withLock { (distinct, duplicates, firstAt) }
    }

    /// Distinct seqs from `first` on received so far: what was produced since `first` and has
    /// reached the broker (a backlog from before it is not counted).
    func received(from first: Int) -> Int {
        lock.withLock { seen.indices.dropFirst(max(0, first)).reduce(0) { $0 + (seen[$1] ? 1 : 0) } }
    }

    /// Seqs in 1..<`next` not received.
    func missing(below next: Int) -> Int {
        lock.withLock { (1..<max(1, next)).reduce(0) { $0 + ($1 < seen.count && seen[$1] ? 0 : 1) } }
    }

    /// The seqs of a telemetry batch: the numbers after each `"seq":` in the plain batch it
    /// carries; a `compact/1` payload that does not decode counts none (a missing seq then shows).
    static func seqs(in payload: [UInt8]) -> [UInt64] {
        let compactHead = Array(#","format":"compact/1","#.utf8)
        if payload.prefix(512).firstRange(of: compactHead) != nil {
            guard let plain = try? CompactBatch.decode(payload) else { return [] }
            return seqs(inPlain: plain)
        }
        return seqs(inPlain: payload)
    }

    /// The numbers after each `"seq":` in a plain batch.
    private static func seqs(inPlain payload: [UInt8]) -> [UInt64] {
        let key = Array(#""seq":"#.utf8)
        var result: [UInt64] = []
        payload.withUnsafeBufferPointer { bytes in
            var index = 0
            let end = bytes.count - key.count
            while index < end {
                if bytes[index] == key[0], bytes[index + 1] == key[1], bytes[index + 2] == key[2],
                    bytes[index + 3] == key[3], bytes[index + 4] == key[4], bytes[index + 5] == key[5]
                {
                    index += key.count
                    var value: UInt64 = 0
                    while index < bytes.count, bytes[index] >= 48, bytes[index] <= 57 {
                        value = value * 10 + UInt64(bytes[index] - 48)
                        index += 1
                    }
                    result.append(value)
                } else {
                    index += 1
                }
            }
        }
        return result
    }
}

/// `make bench`'s scale figures: the release gateway polling `railgate-sim wagon` fleets and
/// publishing to a local Mosquitto, measured from /proc. Durations from the environment:
/// RAILGATE_BENCH_WARMUP_S (10), RAILGATE_BENCH_SCALE_S (60), RAILGATE_BENCH_STRESS_S (60),
/// RAILGATE_BENCH_IDLE_S (10), RAILGATE_BENCH_SOAK_S (600, `railgate-bench soak` only).
enum ScaleBench {
    static let binaries = ".build/release"

    struct Fleet {
        var devices = 100
        var points = 100
        var buses = 1
        var pollIntervalMs = 1000
        var pointsPerSecond: Double { Double(devices * points) * 1000 / Double(pollIntervalMs) }
    }

    /// What one run measured.
    struct Result {
        var startupSeconds: Double?
        var window: Double
        var gateway: (start: ProcSample, end: ProcSample)
        var simulator: (start: ProcSample, end: ProcSample)
        var recordsDelivered: Int
        var produced: Int
        var missing: Int
        var duplicates: Int
        var depths: [Double]
        var lost: Double
    }

    static func run() throws {
        let warmup = environmentSeconds("RAILGATE_BENCH_WARMUP_S", 10)
        let window = environmentSeconds("RAILGATE_BENCH_SCALE_S", 60)
        let stress = environmentSeconds("RAILGATE_BENCH_STRESS_S", 60)
        let idle = environmentSeconds("RAILGATE_BENCH_IDLE_S", 10)
        let buses = Int(environmentSeconds("RAILGATE_BENCH_BUSES", 4))

        let scale = Fleet(buses: buses)
        StandardStreams.out(
            "\n== Scale: \(scale.devices) devices x \(scale.points) f32 at \(scale.pollIntervalMs) ms on \(scale.buses) TCP buses "
                + "(\(Int(scale.pointsPerSecond)) points/s), release gateway -> Mosquitto, \(Int(window)) s after \(Int(warmup)) s warm-up"
        )
        let result = try measure(fleet: scale, warmup: warmup, window: window)
        report(result, fleet: scale, targets: true)

        let heavy = Fleet(buses: max(buses, 10), pollIntervalMs: 100)
        StandardStreams.out(
            "\n== Stress: \(heavy.devices) devices x \(heavy.points) f32 at \(heavy.pollIntervalMs) ms on \(heavy.buses) TCP buses "
                + "(\(Int(heavy.pointsPerSecond)) points/s), \(Int(stress)) s after \(Int(warmup)) s warm-up")
        report(try measure(fleet: heavy, warmup: warmup, window: stress), fleet: heavy, targets: false)

        try idleRun(seconds: idle)
    }

    /// `railgate-bench soak`: the 10,000 points/s fleet for RAILGATE_BENCH_SOAK_S, RSS and open
    /// fds every minute.
    static func soak() throws {
        let warmup = environmentSeconds("RAILGATE_BENCH_WARMUP_S", 10)
        let duration = environmentSeconds("RAILGATE_BENCH_SOAK_S", 600)
        let fleet = Fleet(buses: Int(environmentSeconds("RAILGATE_BENCH_BUSES", 4)))
        StandardStreams.out(
            "\n== Soak: \(Int(fleet.pointsPerSecond)) points/s for \(Int(duration)) s after \(Int(warmup)) s warm-up")
        var first: Double?
        let result = try measure(fleet: fleet, warmup: warmup, window: duration, every: 60) { sample in
            let start = first ?? sample.at
            first = start
            StandardStreams.out(
                "  t=\(Int((sample.at - start).rounded())) s: RSS \(format(Double(sample.rssKiB) / 1024)) MiB, \(sample.fds) open fds, "
                    + "\(sample.threads) threads")
        }
        report(result, fleet: fleet, targets: true)
        let (start, end) = result.gateway
        StandardStreams.out(
            "soak: RSS \(format(Double(start.rssKiB) / 1024)) -> \(format(Double(end.rssKiB) / 1024)) MiB, "
                + "open fds \(start.fds) -> \(end.fds), threads \(start.threads) -> \(end.threads) "
                + "(flat: \(end.fds == start.fds && end.rssKiB <= start.rssKiB + 2048 ? "yes" : "NO"))")
    }

    /// Broker, simulator, subscriber, then the gateway; after `warmup`, `window` seconds measured;
    /// then the simulator stops and the gateway drains its buffer before the seqs are checked.
    static func measure(
        fleet: Fleet, warmup: Double, window: Double, every: Double = 5,
        progress: (ProcSample) -> Void = { _ in }
    ) throws -> Result {
        let scratch = "/tmp/railgate-scale-\(getpid())"
        _ = system("rm -rf \(scratch) && mkdir -p \(scratch)")
        defer { _ = system("rm -rf \(scratch)") }

        let brokerPort = freePort()
        let brokerConfig = "\(scratch)/mosquitto.conf"
        try write(
            brokerConfig,
            "listener \(brokerPort) 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\npersistence false\nuser root\n"
        )
        let broker = try Child("/usr/sbin/mosquitto", ["-c", brokerConfig], output: "\(scratch)/mosquitto.log")
        defer { broker.stop() }
        try waitFor(20, "mosquitto") { connectLoopback(brokerPort).map { close($0) } != nil }

        let simulatorPort = freePort()
        let metricsPort = freePort()
        let generator = try Child(
            "\(binaries)/railgate-sim",
            [
                "fleet-config", "--out", scratch, "--devices", "\(fleet.devices)", "--points", "\(fleet.points)",
                "--buses", "\(fleet.buses)", "--poll-interval-ms", "\(fleet.pollIntervalMs)",
                "--port", "\(simulatorPort)", "--upstream", "mqtt://127.0.0.1:\(brokerPort)",
                "--metrics-listen", "127.0.0.1:\(metricsPort)",
            ], output: "\(scratch)/fleet-config.log")
        try waitFor(20, "fleet-config") { !generator.isRunning }
        let simulator = try Child(
            "\(binaries)/railgate-sim",
            [
                "wagon", "--profile", "\(scratch)/profiles/f32-block-\(fleet.points).toml",
                "--units", "1-\(fleet.devices)", "--tcp", "127.0.0.1:\(simulatorPort)", "--tick-ms", "1000",
            ], output: "\(scratch)/sim.log")
        defer { simulator.stop() }
        try waitFor(20, "the simulator: \(simulator.printed)") { simulator.printed.contains("serving") }

        let counter = try SeqCounter(port: brokerPort)
        let started = seconds()
        let gateway = try Child(
            "\(binaries)/railgate", ["run", "--config", "\(scratch)/railgate.toml"], output: "\(scratch)/gateway.log")
        defer { gateway.stop(SIGTERM) }
        try waitFor(30, "the first record at the broker: \(gateway.printed)") { counter.state.firstAt != nil }
        let startup = counter.state.firstAt.map { $0 - started }
        usleep(UInt32(max(0, warmup - (seconds() - started)) * 1_000_000))
        guard gateway.isRunning else { throw BenchError(description: "the gateway ended: \(gateway.printed)") }

        let gatewayStart = ProcSample.read(gateway.pid)
        let simulatorStart = ProcSample.read(simulator.pid)
        guard let nextSeqStart = metric(port: metricsPort, "railgate_buffer_next_seq") else {
            throw BenchError(description: "the gateway's metrics did not answer at the window's start")
        }
        progress(gatewayStart)
        var depths: [Double] = []
        let end = gatewayStart.at + window
        var nextSample = gatewayStart.at
        while seconds() < end {
            if seconds() >= nextSample {
                if let depth = metric(port: metricsPort, "railgate_buffer_records") { depths.append(depth) }
                if nextSample > gatewayStart.at { progress(ProcSample.read(gateway.pid)) }
                nextSample += every
            }
            usleep(UInt32(max(0, min(end, nextSample) - seconds()) * 1_000_000) + 1000)
        }
        let gatewayEnd = ProcSample.read(gateway.pid)
        let simulatorEnd = ProcSample.read(simulator.pid)
        // Records made in the window that reached the broker within it (a warm-up backlog
        // delivered meanwhile would count as throughput the fleet never produced).
        let delivered = counter.received(from: Int(nextSeqStart))
        let nextSeqEnd = metric(port: metricsPort, "railgate_buffer_next_seq") ?? 0
        if let depth = metric(port: metricsPort, "railgate_buffer_records") { depths.append(depth) }

        // Everything the gateway buffered must reach the broker: stop the fleet, let it drain.
        simulator.stop()
        var next = 0
        try waitFor(120, "the buffer to drain") {
            next = Int(metric(port: metricsPort, "railgate_buffer_next_seq") ?? 0)
            return metric(port: metricsPort, "railgate_buffer_records") == 0 && counter.state.distinct >= next - 1
        }
        let lost =
            (metric(port: metricsPort, "railgate_buffer_lost_seqs_total") ?? 0)
            + (metric(port: metricsPort, "railgate_buffer_dropped_total") ?? 0)
        return Result(
            startupSeconds: startup, window: gatewayEnd.at - gatewayStart.at, gateway: (gatewayStart, gatewayEnd),
            simulator: (simulatorStart, simulatorEnd), recordsDelivered: delivered,
            produced: Int(nextSeqEnd - nextSeqStart), missing: counter.missing(below: next),
            duplicates: counter.state.duplicates, depths: depths, lost: lost)
    }

    static func report(_ result: Result, fleet: Fleet, targets: Bool) {
        let cpu = result.gateway.end.cpuSeconds - result.gateway.start.cpuSeconds
        let user = result.gateway.end.userSeconds - result.gateway.start.userSeconds
        let points = Double(result.recordsDelivered * fleet.points)
        let producedPoints = Double(result.produced * fleet.points)
        let microseconds = cpu * 1e6 / max(1, producedPoints)
        let simulatorCPU = result.simulator.end.cpuSeconds - result.simulator.start.cpuSeconds
        func mib(_ kib: Int) -> String { format(Double(kib) / 1024) + " MiB" }
        StandardStreams.out(
            "points produced: \(Int(producedPoints / result.window))/s, delivered: \(Int(points / result.window))/s "
                + "(made in the window and at the broker by its end; \(fleet.points) a record; "
                + "expected \(Int(fleet.pointsPerSecond))/s)")
        StandardStreams.out(
            "gateway CPU: \(format(microseconds, 3)) us per point (user \(format(user, 2)) s + sys \(format(cpu - user, 2)) s "
                + "in \(format(result.window, 1)) s, "
                + "\(format(100 * cpu / result.window, 1))% of a core)" + (targets ? " (target <= 1.5 us)" : ""))
        StandardStreams.out(
            "gateway RSS: steady \(mib(result.gateway.end.rssKiB)), peak \(mib(result.gateway.end.peakKiB)), "
                + "\(result.gateway.end.threads) threads, \(result.gateway.end.fds) open fds"
                + (targets ? " (target steady <= 20 MiB)" : ""))
        StandardStreams.out(
            "every seq delivered: \(result.missing == 0 && result.lost == 0 ? "yes" : "NO") "
                + "(\(result.missing) missing, \(Int(result.lost)) lost or dropped, \(result.duplicates) duplicates)")
        if let startup = result.startupSeconds {
            StandardStreams.out("start-up to the first record at the broker: \(format(startup * 1000, 0)) ms")
        }
        if let first = result.depths.first, let last = result.depths.last {
            let half = result.depths.count / 2
            let early = result.depths.prefix(max(1, half)).reduce(0, +) / Double(max(1, half))
            let late = result.depths.suffix(max(1, half)).reduce(0, +) / Double(max(1, half))
            let flat = late <= early + Double(fleet.devices) * 2000 / Double(fleet.pollIntervalMs)
            StandardStreams.out(
                "buffer depth: \(Int(first)) -> \(Int(last)) records (mean first half \(Int(early)), second half \(Int(late))); "
                    + "keeps up: \(flat && producedPoints >= 0.97 * fleet.pointsPerSecond * result.window ? "yes" : "NO")"
            )
        }
        StandardStreams.out(
            "simulator (apart): \(format(100 * simulatorCPU / result.window, 1))% of a core, "
                + "\(format(simulatorCPU * 1e6 / max(1, producedPoints), 3)) us per point")
    }

    /// The gateway connected to the broker with one device polled hourly (a configuration needs
    /// something to read; after its first poll there is nothing to do): its threads' wake-ups a second.
    static func idleRun(seconds duration: Double) throws {
        let scratch = "/tmp/railgate-idle-\(getpid())"
        _ = system("rm -rf \(scratch) && mkdir -p \(scratch)")
        defer { _ = system("rm -rf \(scratch)") }
        let brokerPort = freePort()
        try write(
            "\(scratch)/mosquitto.conf",
            "listener \(brokerPort) 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n")
        let broker = try Child("/usr/sbin/mosquitto", ["-c", "\(scratch)/mosquitto.conf"], output: "\(scratch)/m.log")
        defer { broker.stop() }
        try waitFor(20, "mosquitto") { connectLoopback(brokerPort).map { close($0) } != nil }
        let simulatorPort = freePort()
        let generator = try Child(
            "\(binaries)/railgate-sim",
            [
                "fleet-config", "--out", scratch, "--devices", "1", "--points", "10", "--poll-interval-ms", "3600000",
                "--port", "\(simulatorPort)", "--upstream", "mqtt://127.0.0.1:\(brokerPort)",
            ], output: "\(scratch)/fleet-config.log")
        try waitFor(20, "fleet-config") { !generator.isRunning }
        let simulator = try Child(
            "\(binaries)/railgate-sim",
            [
                "wagon", "--profile", "\(scratch)/profiles/f32-block-10.toml", "--units", "1-1", "--tcp",
                "127.0.0.1:\(simulatorPort)", "--tick-ms", "60000",
            ], output: "\(scratch)/sim.log")
        defer { simulator.stop() }
        try waitFor(20, "the simulator: \(simulator.printed)") { simulator.printed.contains("serving") }
        let counter = try SeqCounter(port: brokerPort)
        let gateway = try Child(
            "\(binaries)/railgate", ["run", "--config", "\(scratch)/railgate.toml"], output: "\(scratch)/gateway.log")
        defer { gateway.stop(SIGTERM) }
        try waitFor(30, "the idle gateway's first record: \(gateway.printed)") { counter.state.distinct > 0 }
        usleep(2_000_000)
        guard gateway.isRunning else { throw BenchError(description: "the idle gateway ended: \(gateway.printed)") }
        let start = ProcSample.read(gateway.pid)
        usleep(UInt32(duration * 1_000_000))
        let end = ProcSample.read(gateway.pid)
        let elapsed = end.at - start.at
        StandardStreams.out(
            "\n== Idle: one device polled hourly (after its first poll), connected to the broker, \(Int(duration)) s")
        StandardStreams.out(
            "wake-ups: \(format(Double(end.switches - start.switches) / elapsed, 1))/s over \(end.threads) threads "
                + "(context switches, /proc/PID/task/*/status; target: a few); "
                + "CPU \(format((end.cpuSeconds - start.cpuSeconds) * 1000 / elapsed, 2)) ms/s; RSS \(format(Double(end.rssKiB) / 1024)) MiB"
        )
        guard getenv("RAILGATE_BENCH_SHOW") != nil else { return }
        for task in ProcSample.entries("/proc/\(gateway.pid)/task").sorted() {
            let files = LocalFiles()
            let name = (files.read("/proc/\(gateway.pid)/task/\(task)/comm") ?? "?").split(separator: "\n").first ?? "?"
            let status = files.read("/proc/\(gateway.pid)/task/\(task)/status") ?? ""
            let switches = status.split(separator: "\n").filter { $0.contains("ctxt_switches") }
                .compactMap { Int($0.split(whereSeparator: { $0 == " " || $0 == "\t" }).last ?? "") }.reduce(0, +)
            StandardStreams.out("  thread \(task) \(name): \(switches) switches in all")
        }
    }

    static func write(_ path: String, _ text: String) throws {
        guard let file = fopen(path, "w") else { throw BenchError(description: "cannot write \(path)") }
        let bytes = Array(text.utf8)
        let written = fwrite(bytes, 1, bytes.count, file)
        guard fclose(file) == 0, written == bytes.count else { throw BenchError(description: "cannot write \(path)") }
    }
}
