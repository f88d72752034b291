import Glibc
import RailgateBuffer
import RailgateCore
import RailgateMQTT
import RailgateModbus
import RailgateSystem

/// The uplink end to end, with the release `railgate` daemon (built beside this binary) and a
/// local Mosquitto: the drain of a full buffer of 1,000,000 points (`payload = "records"` and `"compact"`)
/// against libmosquitto publishing the same plain batches (the baseline: what the broker and
/// the library take at most), CPU seconds per 10,000 points, and start-up to the first record
/// acknowledged.
enum DrainBench {
    static let points = 1_000_000
    static let pointsPerRecord = 8

    static func run() throws {
        let railgate = siblingBinary("railgate")
        guard access(railgate, X_OK) == 0, access("/usr/sbin/mosquitto", X_OK) == 0 else {
            StandardStreams.out(
                "\n== Uplink drain: skipped (needs \(railgate), `swift build -c release --product railgate`, and mosquitto)"
            )
            return
        }
        let directory = "/tmp/railgate-drain-\(getpid())"
        _ = system("rm -rf \(directory) && mkdir -p \(directory)")
        defer { _ = system("rm -rf \(directory)") }
        let broker = try Mosquitto(directory: directory)
        defer { broker.stop() }

        let lastSeq = try fill(stateDirectory: directory + "/filled")
        let records = lastSeq
        StandardStreams.out(
            "\n== Uplink drain: \(points) points (\(records) records of \(pointsPerRecord) values) from a full buffer to a local Mosquitto, QoS 1"
        )
        let baseline = try baselineRate(stateDirectory: directory + "/filled", port: broker.port)
        StandardStreams.out(
            "libmosquitto alone, the same plain batches, 10 in flight: \(Int(baseline)) points/s (baseline)")
        for (payload, compression) in [
            ("records", "none"), ("compact", "none"), ("records", "gzip"), ("compact", "gzip"),
        ] {
            let name = "\(payload)-\(compression)"
            let state = directory + "/drain-\(name)"
            _ = system("cp -a \(directory)/filled \(state)")
            let result = try drain(
                railgate: railgate, directory: directory, state: state, port: broker.port, payload: payload,
                compression: compression, lastSeq: lastSeq)
            _ = system("rm -rf \(state)")
            StandardStreams.out(
                "railgate, payload = \"\(payload)\", compression = \"\(compression)\": \(Int(result.rate)) points/s (target >= 200000), ratio to baseline "
                    + "\(format(result.rate / baseline)); \(format(result.cpuSeconds / Double(points) * 10_000, 4)) CPU s "
                    + "per 10,000 points; \(format(result.seconds)) s from connected to the last PUBACK")
        }
        try startup(railgate: railgate, directory: directory, port: broker.port)
    }

    /// The path of `name` in the directory this binary runs from.
    static func siblingBinary(_ name: String) -> String {
        let me = CommandLine.arguments[0]
        guard let slash = me.lastIndex(of: "/") else { return name }
        return String(me[..<slash]) + "/" + name
    }

    /// A buffer under `stateDirectory` holding `points` points as axle-bearing samples; returns
    /// the last seq.
    static func fill(stateDirectory: String) throws -> UInt64 {
        let buffer = try DiskBuffer(
            stateDirectory: stateDirectory, settings: BufferSettings(maxBytes: 1 << 30, syncIntervalMs: 60_000))
        let names = [
            "bearing_temp_1", "bearing_temp_2", "bearing_temp_3", "bearing_temp_4", "ambient_temp",
            "revolution_count", "channel_fault", "load",
        ]
        var levels = names.indices.map { 400 + $0 * 10 }
        var random = UInt64(7)
        var last: UInt64 = 0
        let start = WallClock.now().millisecondsSinceEpoch - Int64(points / pointsPerRecord) * 1000
        for index in 0..<(points / pointsPerRecord) {
            var values: [(String, PointValue)] = []
            for (point, name) in names.enumerated() {
                random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                levels[point] += Int(random >> 61) - 3
                switch point {
                case 5: values.append((name, .unsigned(UInt64(1_000_000 + index * 3))))
                case 6: values.append((name, .bool(random >> 40 & 1 == 1)))
                default: values.append((name, .number(Double(levels[point]) / 10)))
                }
            }
            last = try buffer.append(
                Record(
                    timestamp: Timestamp(millisecondsSinceEpoch: start + Int64(index) * 1000), source: "axlebox-1",
                    body: .sample(values: values, errors: [])))
        }
        try buffer.sync()
        buffer.close()
        return last
    }

    /// Points a second through libmosquitto alone: the buffer's records in plain batches of 500
    /// (as the daemon makes them), published QoS 1 with at most 10 unacknowledged.
    static func baselineRate(stateDirectory: String, port: Int) throws -> Double {
        let buffer = try DiskBuffer(
            stateDirectory: stateDirectory, settings: BufferSettings(maxBytes: 1 << 30, syncIntervalMs: 60_000))
        let builder = BatchBuilder(gatewayID: "KZ-WAG-BENCH")
        var payloads: [[UInt8]] = []
        var after: UInt64 = 0
        while true {
            let records = buffer.records(after: after, limits: BatchLimits(maxRecords: 500, maxBytes: 262_144 - 40))
            guard let last = records.last else { break }
            payloads.append(builder.batch(of: records).payload)
            after = last.seq
        }
        buffer.close()
        let state = ConditionLock()
        nonisolated(unsafe) var connected = false
        nonisolated(unsafe) var acknowledged = 0
        let client = try MQTTClient(clientID: "bench-baseline") { event in
            switch event {
            case .connected(0, _):
                state.withLock {
                    connected = true
                    state.broadcast()
                }
            case .published:
                state.withLock {
                    acknowledged += 1
                    state.broadcast()
                }
            default: break
            }
        }
        try client.start(host: "127.0.0.1", port: port, keepaliveSeconds: 30)
        defer { client.disconnect() }
        try state.withLock { () throws(BenchError) in
            let deadline = MonotonicInstant.now().adding(milliseconds: 10_000)
            while !connected {
                guard MonotonicInstant.now() < deadline else { throw BenchError(description: "baseline: no CONNACK") }
                state.wait(until: deadline)
            }
        }
        let start = seconds()
        for (index, payload) in payloads.enumerated() {
            state.withLock {
                while index - acknowledged >= 10 { state.wait(until: MonotonicInstant.now().adding(milliseconds: 100)) }
            }
            _ = try client.publish(topic: "railgate/KZ-WAG-BENCH/telemetry", payload: payload, qos: 1)
        }
        state.withLock {
            while acknowledged < payloads.count { state.wait(until: MonotonicInstant.now().adding(milliseconds: 100)) }
        }
        return Double(points) / (seconds() - start)
    }

    struct DrainResult {
        var rate: Double
        var seconds: Double
        var cpuSeconds: Double
    }

    /// Runs the daemon on the full buffer in `state` until the broker acknowledged `lastSeq`.
    static func drain(
        railgate: String, directory: String, state: String, port: Int, payload: String, compression: String,
        lastSeq: UInt64
    ) throws -> DrainResult {
        let socket = "\(directory)/control-\(payload)-\(compression).sock"
        let config = "\(directory)/drain-\(payload)-\(compression).toml"
        try write(
            config,
            """
            [gateway]
            id = "KZ-WAG-BENCH"
            state_dir = "\(state)"
            control_socket = "\(socket)"
            profile_path = ["Firmware-config/profiles"]
            log_level = "warning"

            [buffer]
            max_bytes = 1073741824

            [upstream]
            url = "mqtt://127.0.0.1:\(port)"
            payload = "\(payload)"
            compression = "\(compression)"

            ## A device that never answers (a gateway needs something to read): an error sample now
            ## and then, after the backlog.
            [[bus]]
            name = "line"
            transport = "tcp"
            host = "127.0.0.1"
            port = \(freePort())

            [[device]]
            name = "absent"
            bus = "line"
            unit = 1
            profile = "axle-bearing-sensor"
            poll_interval_ms = 3600000

            """)
        let daemon = try Child(
            railgate, ["run", "--config", config], output: "\(directory)/drain-\(payload)-\(compression).log")
        defer { daemon.stop(SIGTERM) }
        var connectedAt: Double?
        var cpuAtConnect = 0.0
        let deadline = seconds() + 600
        while seconds() < deadline {
            guard daemon.isRunning else { throw BenchError(description: "railgate exited: see \(directory)") }
            let status = (try? JSONReader.parse(ControlClient.request("status", socket: socket))) ?? .null
            if connectedAt == nil, status["upstream"]?["state"] == .string("connected") {
                connectedAt = seconds()
                cpuAtConnect = ProcSample.read(daemon.pid).cpuSeconds
            }
            if let acked = status["upstream"]?["acked_seq"]?.intValue, acked >= Int(lastSeq), let connectedAt {
                let elapsed = seconds() - connectedAt
                return DrainResult(
                    rate: Double(points) / elapsed, seconds: elapsed,
                    cpuSeconds: ProcSample.read(daemon.pid).cpuSeconds - cpuAtConnect)
            }
            usleep(20_000)
        }
        throw BenchError(description: "the drain did not finish in 600 s")
    }

    /// Start-up to the first record at the broker: the daemon, a fresh state directory, one
    /// axle-bearing sensor on Modbus TCP polled every second; median of 5 starts.
    static func startup(railgate: String, directory: String, port: Int) throws {
        let locator = ProfileLocator(files: LocalFiles(), searchPath: ["Firmware-config/profiles"], besideFile: nil)
        let profile = try locator.load("axle-bearing-sensor")
        let slave = try ModbusTCPSlave(host: "127.0.0.1", port: 0)
        let bank = try ModbusDataBank()
        for point in profile.points { bank.set(point.table, address: point.address, point.encode(.number(42))) }
        let slavePort = slave.port
        nonisolated(unsafe) let server = (slave, bank)
        detach { server.0.serve(tickMs: 1000, tick: {}, shouldStop: { false }) { _ in .reply(server.1) } }

        let state = ConditionLock()
        nonisolated(unsafe) var subscribed = false
        nonisolated(unsafe) var arrivals: [Double] = []
        let subscriber = try MQTTClient(clientID: "bench-first-record") { event in
            switch event {
            case .connected(0, _):
                state.withLock {
                    subscribed = true
                    state.broadcast()
                }
            case .message:
                state.withLock {
                    arrivals.append(seconds())
                    state.broadcast()
                }
            default: break
            }
        }
        try subscriber.start(host: "127.0.0.1", port: port, keepaliveSeconds: 30)
        defer { subscriber.disconnect() }
        state.withLock { while !subscribed { state.wait(until: MonotonicInstant.now().adding(milliseconds: 100)) } }
        try subscriber.subscribe("railgate/KZ-WAG-FIRST/telemetry", qos: 1)
        usleep(200_000)
        var times: [Double] = []
        for run in 0..<5 {
            let config = "\(directory)/first-\(run).toml"
            try write(
                config,
                """
                [gateway]
                id = "KZ-WAG-FIRST"
                state_dir = "\(directory)/first-\(run)"
                control_socket = "\(directory)/first-\(run).sock"
                profile_path = ["Firmware-config/profiles"]
                log_level = "warning"

                [upstream]
                url = "mqtt://127.0.0.1:\(port)"

                [[bus]]
                name = "line"
                transport = "tcp"
                host = "127.0.0.1"
                port = \(slavePort)

                [[device]]
                name = "axlebox-1"
                bus = "line"
                unit = 1
                profile = "axle-bearing-sensor"
                poll_interval_ms = 1000

                """)
            let before = state.withLock { arrivals.count }
            let started = seconds()
            let daemon = try Child(railgate, ["run", "--config", config], output: "\(directory)/first-\(run).log")
            let arrived: Double? = state.withLock {
                let deadline = MonotonicInstant.now().adding(milliseconds: 20_000)
                while arrivals.count == before, MonotonicInstant.now() < deadline { state.wait(until: deadline) }
                return arrivals.count > before ? arrivals[before] : nil
            }
            daemon.stop(SIGTERM)
            guard let arrived else { throw BenchError(description: "start-up run \(run): no record within 20 s") }
            times.append(arrived - started)
        }
        StandardStreams.out(
            "\n== Start-up to the first record at the broker (release build, fresh state, one Modbus TCP device)")
        StandardStreams.out(
            "median of 5: \(Int(median(times) * 1000)) ms, fastest \(Int(times.min()! * 1000)) ms, slowest "
                + "\(Int(times.max()! * 1000)) ms (target < 300 ms)")
    }

    static func write(_ path: String, _ text: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw BenchError(description: "cannot write \(path)") }
        defer { close(fd) }
        StandardStreams.write(fd: fd, text)
    }
}

/// A Mosquitto on a free loopback port, no queue limit, no persistence.
final class Mosquitto {
    let port: Int
    private let child: Child

    init(directory: String) throws {
        port = freePort()
        let config = directory + "/mosquitto.conf"
        try DrainBench.write(
            config,
            "listener \(port) 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\nuser root\n"
        )
        child = try Child("/usr/sbin/mosquitto", ["-c", config], output: directory + "/mosquitto.log")
        let deadline = seconds() + 20
        while !listening() {
            guard child.isRunning, seconds() < deadline else {
                throw BenchError(description: "mosquitto did not start: \(directory)/mosquitto.log")
            }
            usleep(20_000)
        }
    }

    /// A loopback TCP port nobody listens on right now (bound to 0 and released).

    private func listening() -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        } == 0
    }

    func stop() { child.stop(SIGTERM) }
}
