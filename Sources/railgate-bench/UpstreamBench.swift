import Glibc
import RailgateCore
import RailgateGateway
import RailgateMQTT
import RailgateModbus
import RailgateSystem

/// Bytes on the wire per value, plain JSON and gzip, for each shipped profile: the daemon's own
/// path (poller, record encoding, batch envelope, gzip) over Modbus TCP, with values that move
/// like a sensor's (a random walk in the profile's resolution) and polls 1 s apart with jitter,
/// in batches of 5 polls (the example wagon's 1 s polls and 5 s batch interval), of 25, and as a
/// backlog drain cuts them (the defaults `batch_max_records = 500`, `batch_max_bytes = 262144`);
/// `compact/1` (`payload = "compact"`, the default; each batch checked to decode to the plain
/// one) and the record objects (`payload = "records"`).
enum UpstreamBench {
    static func run() throws {
        let locator = ProfileLocator(files: LocalFiles(), searchPath: ["Firmware-config/profiles"], besideFile: nil)
        StandardStreams.out("\n== Upstream: bytes on the wire per value (targets: plain <= 25, gzip <= 3)")
        for name in ["axle-bearing-sensor", "brake-load-sensor", "door-status-panel"] {
            let profile = try locator.load(name)
            let slave = try ModbusTCPSlave(host: "127.0.0.1", port: 0)
            let bank = try ModbusDataBank()
            let port = slave.port
            nonisolated(unsafe) let server = (slave, bank)
            detach { server.0.serve(tickMs: 1000, tick: {}, shouldStop: { false }) { _ in .reply(server.1) } }
            let device = DeviceConfig(
                name: "axlebox-1", bus: "b", unit: 1, profileName: name, profile: profile, pollIntervalMs: 1000)
            let poller = DevicePoller(device: device, maxGap: 8, firstDue: .now())
            let connection = try ModbusConnection(
                endpoint: .tcp(host: "127.0.0.1", port: port), responseTimeoutMs: 1000)
            var random = UInt64(42)
            func next() -> Double {
                random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return Double(random >> 11) / Double(1 << 53)
            }
            var levels = profile.points.map { _ in 20 + next() * 60 }
            var records: [(seq: UInt64, bytes: [UInt8])] = []
            var values = 0
            for cycle in 0..<1000 {
                for (index, point) in profile.points.enumerated() {
                    levels[index] += (next() - 0.5) * 2
                    let value: PointValue =
                        point.table.holdsBits
                        ? .bool(next() < 0.1)
                        : point.type.description.hasPrefix("string") ? .text("AX4-00042") : .number(levels[index])
                    bank.set(point.table, address: point.address, point.encode(value))
                }
                var record = poller.poll(over: connection, retries: 0, at: WallClock.now())
                record.timestamp = Timestamp(
                    millisecondsSinceEpoch: 1_795_910_400_000 + Int64(cycle) * 1000 + Int64(cycle * 37 % 11))
                if case .sample(let read, _) = record.body { values += read.count }
                records.append((UInt64(1_000_000 + cycle), record.encoded(seq: UInt64(1_000_000 + cycle))))
            }
            connection.disconnect()
            if getenv("RAILGATE_BENCH_SHOW") != nil {
                StandardStreams.out(String(decoding: records[records.count - 1].bytes, as: UTF8.self))
            }
            let builder = BatchBuilder(gatewayID: "KZ-WAG-00042")
            var compact = CompactBatchEncoder(
                gatewayID: "KZ-WAG-00042", pointOrder: ["axlebox-1": profile.points.map(\.name)])
            // Batches as the uplink cuts a backlog: at most 500 records whose stored bytes,
            // joined by commas, fit 262144 less the envelope (`DiskBuffer.records(after:limits:)`).
            var drainBatches: [[(seq: UInt64, bytes: [UInt8])]] = []
            var drainBytes = 0
            for record in records {
                if let last = drainBatches.last, last.count < 500,
                    drainBytes + 1 + record.bytes.count <= 262_144 - builder.overhead
                {
                    drainBatches[drainBatches.count - 1].append(record)
                    drainBytes += 1 + record.bytes.count
                } else {
                    drainBatches.append([record])
                    drainBytes = record.bytes.count
                }
            }
            func polls(_ perBatch: Int) -> [[(seq: UInt64, bytes: [UInt8])]] {
                stride(from: 0, to: records.count, by: perBatch).map {
                    Array(records[$0..<min(records.count, $0 + perBatch)])
                }
            }
            let cuts = [
                ("batches of 5 polls", polls(5)), ("batches of 25 polls", polls(25)),
                ("drain batches (500 records)", drainBatches),
            ]
            for (label, batches) in cuts {
                var plain = 0
                var gzip = 0
                var compactPlain = 0
                var compactGzip = 0
                for batch in batches {
                    let payload = builder.batch(of: batch).payload
                    plain += payload.count
                    gzip += try Gzip.compress(payload).count
                    let small = compact.payload(of: batch)
                    guard try CompactBatch.decode(small) == payload else {
                        throw BenchError(description: "compact batch of \(name) does not decode to the plain one")
                    }
                    compactPlain += small.count
                    compactGzip += try Gzip.compress(small).count
                }
                func perValue(_ bytes: Int) -> String { format(Double(bytes) / Double(values)) }
                StandardStreams.out(
                    "\(name), \(label) (\(values) values): payload = \"compact\" (default): plain "
                        + "\(perValue(compactPlain)) bytes/value, gzip \(perValue(compactGzip)); payload = \"records\": "
                        + "plain \(perValue(plain)), gzip \(perValue(gzip))")
            }
        }
    }
}
