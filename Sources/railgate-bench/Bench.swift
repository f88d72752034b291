import CBenchBaseline
import CSQLite
import Glibc
import RailgateBuffer
import RailgateCore
import RailgateGateway
import RailgateModbus
import RailgateSystem

/// `make bench`: every figure is a ratio against a baseline run in the same invocation (these
/// machines are noisy), or an absolute figure where the issue sets an absolute target.
/// `railgate-bench crash-writer DIR` is the crash test's victim (see `CrashWriter`);
/// `railgate-bench scale` runs only the scale figures, `railgate-bench soak` the soak (`ScaleBench`).
@main
struct Bench {
    static func main() throws {
        let arguments = CommandLine.arguments
        if arguments.count == 3, arguments[1] == "crash-writer" {
            try CrashWriter.run(stateDirectory: arguments[2])
            return
        }
        if arguments.count == 2, arguments[1] == "upstream" {
            try UpstreamBench.run()
            try DrainBench.run()
            return
        }
        if arguments.count == 2, arguments[1] == "scale" {
            try ScaleBench.run()
            return
        }
        if arguments.count == 2, arguments[1] == "soak" {
            try ScaleBench.soak()
            return
        }
        StandardStreams.out(
            "railgate bench \(RailgateVersion.current), \(Timestamp(millisecondsSinceEpoch: WallClock.now().millisecondsSinceEpoch))"
        )
        try ModbusBench.run()
        try BufferBench.run()
        try UpstreamBench.run()
        try DrainBench.run()
        try ScaleBench.run()
    }
}

/// Seconds on the monotonic clock.
func seconds() -> Double { Double(MonotonicInstant.now().nanoseconds) / 1e9 }

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

func format(_ value: Double, _ decimals: Int = 2) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    return "\(rounded)"
}

/// Starts `body` on a detached pthread (the benchmark's in-process servers).
func detach(_ body: @escaping @Sendable () -> Void) {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var thread = pthread_t()
    pthread_create(
        &thread, nil,
        { argument in
            Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue().body()
            return nil
        }, Unmanaged.passRetained(Box(body)).toOpaque())
    pthread_detach(thread)
}

/// Modbus TCP poll throughput: railgate's poller (plan, reads, decoding, record) against a
/// plain C libmodbus loop reading the same registers from the same server.
enum ModbusBench {
    static func run() throws {
        let profiles = ["axle-bearing-sensor", "brake-load-sensor", "door-status-panel"]
        let locator = ProfileLocator(files: LocalFiles(), searchPath: ["Firmware-config/profiles"], besideFile: nil)
        StandardStreams.out("\n== Modbus: requests per poll cycle (max_gap 8) against the fewest possible")
        for name in profiles {
            let profile = try locator.load(name)
            let planned = ReadPlanner.plan(profile.points, maxGap: 8).count
            let fewest = ReadPlanner.plan(profile.points, maxGap: 65535).count
            let naive = profile.points.count
            StandardStreams.out(
                "\(name): \(planned) requests per cycle; fewest possible \(fewest); one per point would be \(naive)")
        }

        let profile = try locator.load("axle-bearing-sensor")
        let slave = try ModbusTCPSlave(host: "127.0.0.1", port: 0)
        let bank = try ModbusDataBank()
        for point in profile.points { bank.set(point.table, address: point.address, point.encode(.number(42))) }
        let port = slave.port
        nonisolated(unsafe) let server = (slave, bank)
        detach { server.0.serve(tickMs: 1000, tick: {}, shouldStop: { false }) { _ in .reply(server.1) } }

        let device = DeviceConfig(
            name: "axlebox-1", bus: "b", unit: 1, profileName: "axle-bearing-sensor", profile: profile,
            pollIntervalMs: 1000)
        let poller = DevicePoller(device: device, maxGap: 8, firstDue: .now())
        let requests = poller.requests.map { request in
            baseline_request(
                table: Int32(["coil": 0, "discrete": 1, "input": 2, "holding": 3][request.table.rawValue]!),
                address: Int32(request.address), count: Int32(request.count))
        }
        let connection = try ModbusConnection(endpoint: .tcp(host: "127.0.0.1", port: port), responseTimeoutMs: 1000)
        let cycles = 4000
        var baseline: [Double] = []
        var railgate: [Double] = []
        for _ in 0..<5 {
            let c = requests.withUnsafeBufferPointer {
                baseline_poll_loop("127.0.0.1", Int32(port), 1, $0.baseAddress, Int32($0.count), Int32(cycles))
            }
            guard c > 0 else { throw BenchError(description: "the C baseline loop failed") }
            baseline.append(Double(cycles) / c)
            let start = seconds()
            for _ in 0..<cycles {
                let record = poller.poll(over: connection, retries: 0, at: WallClock.now())
                if case .sample(_, let errors) = record.body, !errors.isEmpty {
                    throw BenchError(description: "poll failed: \(errors)")
                }
            }
            railgate.append(Double(cycles) / (seconds() - start))
        }
        connection.disconnect()
        let ratio = median(railgate) / median(baseline)
        StandardStreams.out(
            "\n== Modbus TCP poll throughput, axle-bearing-sensor (\(requests.count) requests a cycle), median of 5 x \(cycles) cycles"
        )
        StandardStreams.out(
            "plain C libmodbus loop: \(Int(median(baseline))) cycles/s (\(Int(median(baseline) * Double(requests.count))) requests/s)"
        )
        StandardStreams.out(
            "railgate poller:        \(Int(median(railgate))) cycles/s (\(Int(median(railgate) * Double(requests.count))) requests/s)"
        )
        StandardStreams.out("ratio railgate / C: \(format(ratio)) (target >= 0.9)")
        try refusedReads()
        try framedOverTCP(locator.load("door-status-panel"))
    }

    /// Poll throughput of the door-status-panel profile (16 flags, bytes, f16, BCD: one request a
    /// cycle) over RTU over TCP and ASCII over TCP, against the simulator's slave on loopback.
    /// libmodbus speaks neither, so there is no C baseline: the figures are for the record.
    static func framedOverTCP(_ profile: DeviceProfile) throws {
        StandardStreams.out("\n== Modbus RTU and ASCII over TCP, door-status-panel (one request a cycle), 2000 cycles")
        for framing in [ModbusFraming.rtu, .ascii] {
            let slave = try ModbusRTUSlave(listeningOn: "127.0.0.1", port: 0, framing: framing)
            let bank = try ModbusDataBank()
            for point in profile.points where point.type.registerMask == nil {
                bank.set(point.table, address: point.address, point.encode(.number(42)))
            }
            nonisolated(unsafe) let server = (slave, bank)
            detach { server.0.serve(tickMs: 1000, tick: {}, shouldStop: { false }) { _ in .reply(server.1) } }
            let device = DeviceConfig(
                name: "doors", bus: "b", unit: 1, profileName: "door-status-panel", profile: profile,
                pollIntervalMs: 1000)
            let poller = DevicePoller(device: device, maxGap: 8, firstDue: .now())
            let endpoint: ModbusEndpoint =
                framing == .rtu
                ? .rtuOverTCP(host: "127.0.0.1", port: slave.port) : .asciiOverTCP(host: "127.0.0.1", port: slave.port)
            let connection = try ModbusConnection(endpoint: endpoint, responseTimeoutMs: 1000)
            let cycles = 2000
            let start = seconds()
            for _ in 0..<cycles {
                let record = poller.poll(over: connection, retries: 0, at: WallClock.now())
                if case .sample(_, let errors) = record.body, !errors.isEmpty {
                    throw BenchError(description: "\(endpoint) poll failed: \(errors)")
                }
            }
            let rate = Double(cycles) / (seconds() - start)
            connection.disconnect()
            StandardStreams.out("\(endpoint): \(Int(rate)) cycles/s, \(poller.requests.count) request a cycle")
        }
    }

    /// Requests per poll for 60 consecutive holding registers on a device that answers exception 3
    /// (illegal data value) to reads of more than 50, served over Modbus TCP by the simulator's
    /// slave (`ModbusTCPSlave`, as `railgate-sim wagon --scenario long-reads-refused.toml`).
    static func refusedReads() throws {
        let points = (0..<60).map { PointDefinition(name: "r\($0)", table: .holding, address: $0, type: .u16) }
        let slave = try ModbusTCPSlave(host: "127.0.0.1", port: 0)
        let bank = try ModbusDataBank()
        bank.set(.holding, address: 0, (0..<60).map { UInt16(1000 + $0) })
        let port = slave.port
        nonisolated(unsafe) let server = (slave, bank)
        detach {
            server.0.serve(tickMs: 1000, tick: {}, shouldStop: { false }) { request in
                request.count > 50 ? .exception(3) : .reply(server.1)
            }
        }
        let device = DeviceConfig(
            name: "meter", bus: "b", unit: 1, profileName: "sixty", profile: DeviceProfile(model: "m", points: points),
            pollIntervalMs: 1000)
        let poller = DevicePoller(device: device, maxGap: 8, firstDue: .now())
        let connection = try ModbusConnection(endpoint: .tcp(host: "127.0.0.1", port: port), responseTimeoutMs: 1000)
        var perPoll: [Int] = []
        for _ in 0..<20 {
            let before = poller.stats.requests
            let record = poller.poll(over: connection, retries: 0, at: WallClock.now())
            guard case .sample(let values, let errors) = record.body, errors.isEmpty,
                values.enumerated().allSatisfy({ $0.element.1 == .unsigned(UInt64(1000 + $0.offset)) })
            else { throw BenchError(description: "the refused-reads poll read wrong: \(record.text(seq: nil))") }
            perPoll.append(poller.stats.requests - before)
        }
        connection.disconnect()
        StandardStreams.out(
            "\n== Modbus: 60 holding registers, device answers exception 3 to reads over 50 registers")
        StandardStreams.out(
            "requests per poll: first poll \(perPoll[0]), later polls \(median(perPoll.dropFirst().map(Double.init))) (target 2); one request per point would be 61"
        )
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
}

/// The durable buffer against SQLite in WAL mode with the same batching and sync (a commit,
/// with fsync, every second), appending ~100-byte records.
enum BufferBench {
    static let runSeconds = 3.0
    static let rounds = 3

    /// Appends for `runSeconds` with a group commit every second; the rate and the count.
    static func appendRun(directory: String) throws -> (Double, Int) {
        let buffer = try DiskBuffer(
            stateDirectory: directory, settings: BufferSettings(maxBytes: 1 << 30, syncIntervalMs: 1000))
        var appended = 0
        let start = seconds()
        while seconds() - start < runSeconds {
            for _ in 0..<1000 {
                try buffer.append(record(appended))
                appended += 1
            }
        }
        try buffer.sync()
        let rate = Double(appended) / (seconds() - start)
        buffer.close()
        return (rate, appended)
    }

    /// SQLite in WAL mode, synchronous=FULL, one transaction committed each second.
    static func sqliteRun(path: String) -> Double {
        var database: OpaquePointer?
        sqlite3_open(path, &database)
        defer { sqlite3_close(database) }
        sqlite3_exec(
            database,
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE records(seq INTEGER PRIMARY KEY, priority INTEGER, payload BLOB);",
            nil, nil, nil)
        var statement: OpaquePointer?
        sqlite3_prepare_v2(
            database, "INSERT INTO records(seq, priority, payload) VALUES (?, 0, ?)", -1, &statement, nil)
        defer { sqlite3_finalize(statement) }
        var inserted = 0
        let start = seconds()
        var lastCommit = start
        sqlite3_exec(database, "BEGIN", nil, nil, nil)
        while seconds() - start < runSeconds {
            for _ in 0..<1000 {
                let payload = record(inserted).encoded(seq: UInt64(inserted + 1))
                sqlite3_bind_int64(statement, 1, Int64(inserted + 1))
                _ = payload.withUnsafeBytes {
                    railgate_sqlite_bind_blob_copy(statement, 2, $0.baseAddress, Int32($0.count))
                }
                sqlite3_step(statement)
                sqlite3_reset(statement)
                inserted += 1
            }
            if seconds() - lastCommit >= 1 {
                sqlite3_exec(database, "COMMIT; BEGIN", nil, nil, nil)
                lastCommit = seconds()
            }
        }
        sqlite3_exec(database, "COMMIT", nil, nil, nil)
        return Double(inserted) / (seconds() - start)
    }

    static func record(_ index: Int) -> Record {
        Record(
            timestamp: Timestamp(millisecondsSinceEpoch: 1_795_910_400_000 + Int64(index)), source: "axlebox-1",
            body: .sample(
                values: [("bearing_temp_1", .number(41.5 + Double(index % 10))), ("door", .bool(false))], errors: []))
    }

    static func run() throws {
        let directory = "/tmp/railgate-bench-\(getpid())"
        _ = system("rm -rf \(directory) && mkdir -p \(directory)")
        defer { _ = system("rm -rf \(directory)") }
        let payloadSize = record(1).encoded(seq: 1_000_000).count

        // Alternating rounds of each, so a noisy neighbour hits both alike; medians compared.
        var railgateRates: [Double] = []
        var sqliteRates: [Double] = []
        var syscallBytes = 0
        var storageBytes = 0
        var payloadBytes = 0
        for round in 0..<rounds {
            let written0 = ProcessIO.read()
            let (rate, appended) = try appendRun(directory: directory + "/rg\(round)")
            let written1 = ProcessIO.read()
            railgateRates.append(rate)
            syscallBytes += written1.written - written0.written
            storageBytes += written1.storage - written0.storage
            payloadBytes += appended * payloadSize
            sqliteRates.append(sqliteRun(path: directory + "/bench\(round).sqlite"))
            _ = system("rm -rf \(directory)/rg\(round) \(directory)/bench\(round).sqlite*")
        }
        let railgateRate = median(railgateRates)
        let sqliteRate = median(sqliteRates)

        StandardStreams.out(
            "\n== Buffer append, \(payloadSize)-byte records, sync every second, median of \(rounds) alternating rounds of \(Int(runSeconds)) s"
        )
        StandardStreams.out("SQLite WAL (synchronous=FULL, commit each second): \(Int(sqliteRate)) records/s")
        StandardStreams.out("railgate DiskBuffer:                               \(Int(railgateRate)) records/s")
        StandardStreams.out("ratio railgate / SQLite: \(format(railgateRate / sqliteRate)) (target >= 2)")
        StandardStreams.out(
            "bytes written per byte of record: \(format(Double(syscallBytes) / Double(payloadBytes), 3)) (write(2) bytes, target <= 1.3)"
        )
        if storageBytes > 0 {
            StandardStreams.out(
                "  as the block layer counted them: \(format(Double(storageBytes) / Double(payloadBytes), 3))")
        }

        try latencyRun(directory: directory + "/latency")

        // Opening a full 64 MiB buffer (the recovery scan), page cache warm and, where allowed, cold.
        let full = directory + "/full"
        let settings = BufferSettings(maxBytes: 64 << 20, syncIntervalMs: 60_000)
        let filling = try DiskBuffer(stateDirectory: full, settings: settings)
        var index = 0
        while filling.stats().dropped == 0 { for _ in 0..<1000 { try filling.append(record(index)); index += 1 } }
        let records = filling.stats().records
        filling.close()
        StandardStreams.out("\n== Opening a full 64 MiB buffer (\(records) records)")
        func timeOpen() throws -> Double {
            let start = seconds()
            let reopened = try DiskBuffer(stateDirectory: full, settings: settings)
            let elapsed = seconds() - start
            reopened.close()
            return elapsed
        }
        if dropCaches() {
            StandardStreams.out("cold page cache: \(format(try timeOpen(), 3)) s (target < 1 s)")
        }
        let warm = try (0..<3).map { _ in try timeOpen() }
        StandardStreams.out("warm page cache, median of 3: \(format(median(warm), 3)) s (target < 1 s)")
    }

    /// Append latency while the buffer commits every 100 ms and, full, thins and compacts its
    /// oldest segments: each append timed on its own, in a 16 MiB buffer filled four times over.
    static func latencyRun(directory: String) throws {
        let settings = BufferSettings(maxBytes: 16 << 20, syncIntervalMs: 100, whenFull: .thin)
        let buffer = try DiskBuffer(stateDirectory: directory, settings: settings)
        let payloadSize = record(1).encoded(seq: 1_000_000).count + 20
        let count = 4 * settings.maxBytes / payloadSize
        var nanoseconds = [Int64](repeating: 0, count: count)
        let start = seconds()
        for index in 0..<count {
            let before = MonotonicInstant.now()
            try buffer.append(record(index))
            nanoseconds[index] = MonotonicInstant.now().nanoseconds - before.nanoseconds
        }
        let elapsed = seconds() - start
        let stats = buffer.stats()
        buffer.close()
        nanoseconds.sort()
        func milliseconds(_ value: Int64) -> String { format(Double(value) / 1_000_000, 3) + " ms" }
        StandardStreams.out(
            "\n== Append latency while syncing every 100 ms and compacting a full 16 MiB buffer (\(count) records)")
        StandardStreams.out(
            "p50 \(milliseconds(nanoseconds[count / 2])), p99 \(milliseconds(nanoseconds[count * 99 / 100])), "
                + "max \(milliseconds(nanoseconds[count - 1])) (target: p99 < 1 ms); "
                + "\(Int(Double(count) / elapsed)) records/s, \(stats.dropped) thinned or dropped; "
                + "\(nanoseconds.filter { $0 > 1_000_000 }.count) appends over 1 ms")
    }

    /// Drops the page cache (root only); false where not allowed.
    static func dropCaches() -> Bool {
        sync()
        let fd = open("/proc/sys/vm/drop_caches", O_WRONLY)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return write(fd, "3\n", 2) == 2
    }
}

/// This process's I/O counters from /proc/self/io.
struct ProcessIO {
    var written: Int
    var storage: Int

    static func read() -> ProcessIO {
        let text = LocalFiles().read("/proc/self/io") ?? ""
        func field(_ name: String) -> Int {
            text.split(separator: "\n").first { $0.hasPrefix(name + ":") }.flatMap {
                Int($0.split(separator: " ").last ?? "")
            } ?? 0
        }
        return ProcessIO(written: field("wchar"), storage: field("write_bytes"))
    }
}

/// The crash test's victim: appends records to the buffer as fast as it can, commits every 64
/// records and prints "synced SEQ" after each commit (unbuffered, so the line is out before
/// the next append). It starts with "start SEQ", the first seq it will append. It never stops
/// by itself: the test SIGKILLs it.
enum CrashWriter {
    static func run(stateDirectory: String) throws {
        let buffer = try DiskBuffer(
            stateDirectory: stateDirectory, settings: BufferSettings(maxBytes: 1 << 30, syncIntervalMs: 3_600_000))
        StandardStreams.out("start \(buffer.stats().nextSeq)")
        var index = 0
        while true {
            var last: UInt64 = 0
            for _ in 0..<64 {
                index += 1
                // Varying sizes and priorities, so frames do not line up on any boundary.
                let record =
                    index % 17 == 0
                    ? Record(
                        timestamp: WallClock.now(), source: "axlebox-\(index % 3)",
                        body: .event(
                            name: "alarm_above",
                            fields: [("point", .string("bearing_temp_\(index % 4)")), ("value", .number(90.5))]),
                        priority: .alarm)
                    : Record(
                        timestamp: WallClock.now(), source: "axlebox-\(index % 3)",
                        body: .sample(
                            values: (0..<(1 + index % 5)).map {
                                ("bearing_temp_\($0)", .number(40 + Double(index % 100) / 10))
                            }, errors: []))
                last = try buffer.append(record)
            }
            try buffer.sync()
            StandardStreams.out("synced \(last)")
        }
    }
}
