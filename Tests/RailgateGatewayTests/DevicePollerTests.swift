import Testing

@testable import RailgateCore
@testable import RailgateGateway
@testable import RailgateModbus

/// A transport that answers from a script: per (table, address), an error or registers.
final class ScriptedTransport: ModbusTransport {
    var failures: [String: [ModbusError.Kind]] = [:]
    var log: [String] = []

    func read(_ table: RegisterTable, unit: Int, address: Int, count: Int) throws(ModbusError) -> [UInt16] {
        let key = "\(table.rawValue)@\(address)"
        log.append("\(key)x\(count)")
        if var queue = failures[key], !queue.isEmpty {
            let kind = queue.removeFirst()
            failures[key] = queue
            throw ModbusError(kind: kind, code: 0, operation: key)
        }
        if let bad = failures["bad-\(table.rawValue)"]?.first, case .exception(let code) = bad,
            (address..<(address + count)).contains(205)
        {
            throw ModbusError(kind: .exception(code), code: 0, operation: key)
        }
        return (0..<count).map { UInt16(address + $0) }
    }
}

@Suite("Device polling")
struct DevicePollerTests {
    let device = DeviceConfig(
        name: "box", bus: "line", unit: 7, profileName: "p",
        profile: DeviceProfile(
            model: "m",
            points: [
                PointDefinition(name: "a", table: .input, address: 0, type: .u16),
                PointDefinition(name: "b", table: .input, address: 1, type: .u16),
                PointDefinition(name: "c", table: .holding, address: 204, type: .u16),
                PointDefinition(name: "d", table: .holding, address: 205, type: .u16),
                PointDefinition(name: "e", table: .holding, address: 206, type: .u16),
            ]), pollIntervalMs: 1000)

    func poll(_ transport: ScriptedTransport, retries: Int = 2) -> (DevicePoller, Record.Body) {
        let poller = DevicePoller(device: device, maxGap: 8, firstDue: .now())
        let record = poller.poll(over: transport, retries: retries, at: Timestamp(millisecondsSinceEpoch: 0))
        return (poller, record.body)
    }

    func errors(_ body: Record.Body) -> [String: String] {
        guard case .sample(_, let errors) = body else { return [:] }
        return Dictionary(uniqueKeysWithValues: errors.map { ($0.0, $0.1.description) })
    }

    func values(_ body: Record.Body) -> [String] {
        guard case .sample(let values, _) = body else { return [] }
        return values.map(\.0)
    }

    @Test("a CRC error is retried and the poll succeeds")
    func retries() {
        let transport = ScriptedTransport()
        transport.failures["input@0"] = [.crc, .crc]
        let (poller, body) = poll(transport)
        #expect(values(body) == ["a", "b", "c", "d", "e"])
        #expect(transport.log == ["input@0x2", "input@0x2", "input@0x2", "holding@204x3"])
        #expect(poller.stats.errors == 0)
    }

    @Test("retries run out: the reason lands in errors and the counters")
    func retriesExhausted() {
        let transport = ScriptedTransport()
        transport.failures["holding@204"] = [.badReply, .badReply, .badReply]
        let (poller, body) = poll(transport)
        #expect(errors(body) == ["c": "io", "d": "io", "e": "io"])
        #expect(values(body) == ["a", "b"])
        #expect(poller.stats.errors == 1 && poller.stats.polls == 1 && poller.stats.consecutiveFailures == 0)
        #expect(poller.stats.lastError?.contains("holding@204") == true)
    }

    @Test("an exception is not retried, and an illegal address is isolated by splitting")
    func exceptionSplit() {
        let transport = ScriptedTransport()
        transport.failures["bad-holding"] = [.exception(2)]
        let (_, body) = poll(transport)
        #expect(errors(body) == ["d": "exception:2"])
        #expect(values(body) == ["a", "b", "c", "e"])
        #expect(
            transport.log == [
                "input@0x2", "holding@204x3", "holding@204x1", "holding@205x2", "holding@205x1", "holding@206x1",
            ])
    }

    @Test("a device silent on its first request is not asked the rest, and is backed off")
    func silentDevice() {
        let transport = ScriptedTransport()
        transport.failures["input@0"] = [.timeout]
        let (poller, body) = poll(transport, retries: 0)
        #expect(errors(body).values.allSatisfy { $0 == "timeout" } && errors(body).count == 5)
        #expect(transport.log == ["input@0x2"])
        #expect(poller.stats.consecutiveFailures == 1)

        let now = MonotonicInstant.now()
        for _ in 0..<5 {
            transport.failures["input@0"] = [.timeout]
            _ = poller.poll(over: transport, retries: 0, at: Timestamp(millisecondsSinceEpoch: 0))
        }
        poller.scheduleNext(after: now, now: now, maxBackoffMs: 5000)
        #expect(poller.nextDue.milliseconds(since: now) == 5000, "doubling, capped")
        _ = poller.poll(over: transport, retries: 0, at: Timestamp(millisecondsSinceEpoch: 0))
        poller.scheduleNext(after: now, now: now, maxBackoffMs: 5000)
        #expect(poller.nextDue.milliseconds(since: now) == 1000, "back on its interval once it answers")
    }

    @Test("a lost connection fails the whole poll at once")
    func connectionLost() {
        let transport = ScriptedTransport()
        transport.failures["input@0"] = [.connection]
        let (_, body) = poll(transport)
        #expect(errors(body).count == 5 && errors(body)["a"] == "io")
        #expect(transport.log.count == 1)
    }
}
