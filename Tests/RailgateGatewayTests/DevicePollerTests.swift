import RailgateSystem
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

/// A device that refuses reads longer than `maxCount` with `code` (3, or 2 on some firmware),
/// and any read covering one of `badAddresses` with exception 2; register N holds N + 1000
/// unless `words` says otherwise.
final class LimitedDevice: ModbusTransport {
    let maxCount: Int
    let code: UInt8
    var badAddresses: Set<Int> = []
    var words: [Int: UInt16] = [:]
    var counts: [Int] = []

    init(maxCount: Int, code: UInt8) {
        self.maxCount = maxCount
        self.code = code
    }

    func read(_ table: RegisterTable, unit: Int, address: Int, count: Int) throws(ModbusError) -> [UInt16] {
        counts.append(count)
        if count > maxCount { throw ModbusError(kind: .exception(code), code: 0, operation: "read \(count)") }
        if !badAddresses.isDisjoint(with: address..<(address + count)) {
            throw ModbusError(kind: .exception(2), code: 0, operation: "read at \(address)")
        }
        return (address..<(address + count)).map { words[$0] ?? UInt16($0 + 1000) }
    }

    /// Requests made since the last call.
    func take() -> [Int] {
        defer { counts = [] }
        return counts
    }
}

@Suite("Refused reads are split and the split is learnt")
struct RequestSplittingTests {
    static func device(points: [PointDefinition], maxRegisters: Int? = nil) -> DeviceConfig {
        DeviceConfig(
            name: "box", bus: "line", unit: 1, profileName: "p", profile: DeviceProfile(model: "m", points: points),
            pollIntervalMs: 1000, maxRegistersPerRequest: maxRegisters)
    }

    static let sixty = (0..<60).map { PointDefinition(name: "r\($0)", table: .holding, address: $0, type: .u16) }

    func poll(
        _ poller: DevicePoller, _ transport: any ModbusTransport
    ) -> (values: [String: PointValue], errors: [String: String]) {
        let record = poller.poll(over: transport, retries: 0, at: Timestamp(millisecondsSinceEpoch: 0))
        guard case .sample(let values, let errors) = record.body else { return ([:], [:]) }
        return (
            Dictionary(uniqueKeysWithValues: values),
            Dictionary(uniqueKeysWithValues: errors.map { ($0.0, $0.1.description) })
        )
    }

    @Test(
        "60 registers, exception 3 above 50: 3 requests on the first poll, then 2 a poll", arguments: [UInt8(3), 2, 4])
    func sizeRefusal(_ code: UInt8) {
        let transport = LimitedDevice(maxCount: 50, code: code)
        let poller = DevicePoller(device: Self.device(points: Self.sixty), maxGap: 8, firstDue: .now())
        let first = poll(poller, transport)
        #expect(transport.take() == [60, 30, 30], "halving, not one request per point")
        #expect(first.errors.isEmpty)
        #expect(
            first.values.count == 60 && first.values["r0"] == .unsigned(1000) && first.values["r59"] == .unsigned(1059))
        for _ in 0..<3 {
            let later = poll(poller, transport)
            #expect(transport.take() == [30, 30])
            #expect(later.errors.isEmpty && later.values.count == 60 && later.values["r42"] == .unsigned(1042))
        }
        #expect(poller.requests.map(\.address) == [0, 30])
        #expect(poller.stats.errors == 0)
        #expect(
            poller.takePlanNotes() == [
                "device box (unit 1) refused holding 0-59: reading holding 0-29, holding 30-59 from now on"
            ])
        #expect(poller.takePlanNotes().isEmpty, "said once")
    }

    @Test("a smaller limit needs a few more halvings: 125 points, at most 20 registers a read")
    func deeperHalving() {
        let points = (0..<125).map { PointDefinition(name: "r\($0)", table: .input, address: $0, type: .u16) }
        let transport = LimitedDevice(maxCount: 20, code: 3)
        let poller = DevicePoller(device: Self.device(points: points), maxGap: 8, firstDue: .now())
        let first = poll(poller, transport)
        let firstCounts = transport.take()
        #expect(first.errors.isEmpty && first.values.count == 125)
        #expect(firstCounts.count < 30, "\(firstCounts.count) requests; one a point would be 126")
        _ = poll(poller, transport)
        let later = transport.take()
        #expect(later.allSatisfy { $0 <= 20 } && later.reduce(0, +) == 125)
        #expect(later.count == 8, "\(later)")
    }

    @Test("max_registers_per_request plans within the limit from the first poll")
    func configuredLimit() {
        let transport = LimitedDevice(maxCount: 50, code: 3)
        let poller = DevicePoller(
            device: Self.device(points: Self.sixty, maxRegisters: 50), maxGap: 8, firstDue: .now())
        #expect(poll(poller, transport).values.count == 60)
        #expect(transport.take() == [50, 10])
    }

    @Test("a genuinely bad address: exception:2 for that point only, the rest learnt in a few requests")
    func badAddress() {
        let transport = LimitedDevice(maxCount: 125, code: 3)
        transport.badAddresses = [37]
        let poller = DevicePoller(device: Self.device(points: Self.sixty), maxGap: 8, firstDue: .now())
        let first = poll(poller, transport)
        let firstCount = transport.take().count
        #expect(first.errors == ["r37": "exception:2"])
        #expect(
            first.values.count == 59 && first.values["r36"] == .unsigned(1036) && first.values["r38"] == .unsigned(1038)
        )
        #expect(firstCount == 13, "halving finds the address in about 2 log2(60) requests, not 61")
        var perPoll: [Int] = []
        for _ in 0..<3 {
            let later = poll(poller, transport)
            perPoll.append(transport.take().count)
            #expect(later.errors == ["r37": "exception:2"] && later.values.count == 59)
        }
        #expect(perPoll == [4, 4, 4], "learnt")
        // The answered pieces right of the bad address are joined again (22 <= 30 answered before).
        #expect(poller.requests.map { "\($0.address)x\($0.count)" } == ["0x30", "30x7", "37x1", "38x22"])
    }

    @Test("a device failing everything with exception 4 keeps its plan")
    func deviceFailure() {
        let transport = LimitedDevice(maxCount: 0, code: 4)
        let poller = DevicePoller(device: Self.device(points: Self.sixty), maxGap: 8, firstDue: .now())
        let result = poll(poller, transport)
        #expect(result.values.isEmpty && result.errors.count == 60 && result.errors["r5"] == "exception:4")
        #expect(poller.requests.count == 1 && poller.requests[0].count == 60, "no split learnt from exception 4 alone")
    }

    @Test("NaN, infinity and sentinels in a poll land in errors with their reasons")
    func nonFiniteInPoll() {
        let points = [
            PointDefinition(name: "t", table: .holding, address: 0, type: .f32),
            PointDefinition(name: "u", table: .holding, address: 2, type: .f64),
            PointDefinition(name: "s", table: .holding, address: 6, type: .i16, scale: 0.1, invalid: [0x7FFF]),
            PointDefinition(name: "ok", table: .holding, address: 7, type: .i16, scale: 0.1, invalid: [0x7FFF]),
        ]
        let transport = LimitedDevice(maxCount: 125, code: 3)
        transport.words = [0: 0x7FC0, 1: 0, 2: 0x7FF0, 3: 0, 4: 0, 5: 0, 6: 0x7FFF, 7: 215]
        let poller = DevicePoller(device: Self.device(points: points), maxGap: 8, firstDue: .now())
        let record = poller.poll(over: transport, retries: 0, at: Timestamp(millisecondsSinceEpoch: 0))
        #expect(
            record.text(seq: nil)
                == #"{"ts":"1970-01-01T00:00:00.000Z","kind":"sample","source":"box","values":{"ok":21.5},"errors":{"t":"nan","u":"inf","s":"invalid"}}"#
        )
        // Every read was answered: status and run --once say what the values were, not "read failed".
        #expect(poller.stats.lastError == "no reading: t nan, u inf, s invalid", "\(poller.stats.lastError ?? "nil")")
    }
}
