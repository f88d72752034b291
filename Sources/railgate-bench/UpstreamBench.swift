import Glibc
import RailgateCore
import RailgateGateway
import RailgateMQTT
import RailgateModbus
import RailgateSystem

/// Bytes on the wire per value, plain JSON and gzip, for each shipped profile: the daemon's own
/// path (poller, record encoding, batch envelope, gzip) over Modbus TCP, with values that move
/// like a sensor's (a random walk in the profile's resolution), in batches of 5 polls (the
/// example wagon's 1 s polls and 5 s batch interval) and of 25; plain and `compact/1`
/// (`payload = "compact"`, each batch checked to decode to the plain one).
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
            for cycle in 0..<200 {
                for (index, point) in profile.points.enumerated() {
                    levels[index] += (next() - 0.5) * 2
                    let value: PointValue =
                        point.table.holdsBits
                        ? .bool(next() < 0.1)
                        : point.type.description.hasPrefix("string") ? .text("AX4-00042") : .number(levels[index])
                    bank.set(point.table, address: point.address, point.encode(value))
                }
                let record = poller.poll(over: connection, retries: 0, at: WallClock.now())
                if case .sample(let read, _) = record.body { values += read.count }
                records.append((UInt64(1_000_000 + cycle), record.encoded(seq: UInt64(1_000_000 + cycle))))
            }
            connection.disconnect()
            if getenv("RAILGATE_BENCH_SHOW") != nil {
                StandardStreams.out(String(decoding: records[records.count - 1].bytes, as: UTF8.self))
            }
            let builder = BatchBuilder(gatewayID: "KZ-WAG-00042")
            let compact = CompactBatchEncoder(
                gatewayID: "KZ-WAG-00042", pointOrder: ["axlebox-1": profile.points.map(\.name)])
            for perBatch in [5, 25] {
                var plain = 0
                var gzip = 0
                var compactPlain = 0
                var compactGzip = 0
                for start in stride(from: 0, to: records.count, by: perBatch) {
                    let batch = Array(records[start..<min(records.count, start + perBatch)])
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
                    "\(name), batches of \(perBatch) polls (\(values) values): plain \(perValue(plain)) bytes/value, "
                        + "gzip \(perValue(gzip)); payload = \"compact\": \(perValue(compactPlain)), gzip \(perValue(compactGzip))"
                )
            }
        }
    }
}
