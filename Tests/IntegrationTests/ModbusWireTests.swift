import Foundation
import RailgateCore
import RailgateModbus
import RailgateSystem
import Testing

/// A gateway configuration with one bus (`busKeys` after `name`) and `devices` reading the
/// `two-holdings` profile (holding 0 and holding 10: two requests a poll), upstream "none".
func wireConfig(
    scratch: Scratch, busKeys: String, devices: [(unit: Int, extra: String)], pollMs: Int = 200
) -> String {
    scratch.write(
        "two-holdings.toml",
        """
        model = "two registers, two requests"
        [[point]]
        name = "h0"
        table = "holding"
        address = 0
        type = "u16"
        [[point]]
        name = "h10"
        table = "holding"
        address = 10
        type = "u16"
        """)
    var text = """
        [gateway]
        id = "KZ-WAG-WIRE"
        state_dir = "\(scratch.path)/state"
        control_socket = "\(scratch.path)/control.sock"
        profile_path = ["\(scratch.path)"]

        [buffer]
        sync_interval_ms = 100

        [upstream]
        url = "none"

        [[bus]]
        name = "line"
        \(busKeys)

        """
    for device in devices {
        text += """
            [[device]]
            name = "unit-\(device.unit)"
            bus = "line"
            unit = \(device.unit)
            profile = "two-holdings"
            poll_interval_ms = \(pollMs)
            \(device.extra)

            """
    }
    return scratch.write("gateway-wire.toml", text)
}

func tcpBus(_ port: Int, _ extra: String = "") -> String {
    "transport = \"tcp\"\nhost = \"127.0.0.1\"\nport = \(port)\n\(extra)"
}

func rtuBus(_ device: String, _ extra: String = "") -> String {
    "transport = \"rtu\"\ndevice = \"\(device)\"\nbaud = 19200\nparity = \"even\"\n\(extra)"
}

/// The samples of `source` in the buffer of the daemon running in `scratch`, once there are `count`.
func samples(of source: String, count: Int, scratch: Scratch, seconds: Double = 60) throws -> [JSON] {
    try eventually("\(count) samples of \(source)", seconds: seconds, intervalMs: 200) {
        let records = try bufferedRecords(scratch.path + "/state", scratch: scratch).filter {
            $0["source"] == .string(source)
        }
        return records.count >= count ? records : nil
    }
}

/// Whether every value `record` carries is the one served (h0 and h10 of `unit` per `served`).
func onlyServedValues(_ record: JSON, unit: UInt8, served: ScriptedSlave.Served) -> Bool {
    for (name, address) in [("h0", 0), ("h10", 10)] {
        if let value = record["values"]?[name], value.doubleValue != Double(served.value(unit, address)) {
            return false
        }
    }
    return true
}

func isClean(_ record: JSON) -> Bool { record["errors"] == nil && record["values"]?["h0"] != nil }

@Suite("Modbus on the wire: only the provable answer is used", .serialized)
struct ModbusWireTests {
    @Test(
        "RTU: a reply 700 ms late (timeout 500) is drained, never taken as the next answer",
        arguments: [(lateMs: 700, request: 2, retries: 0), (lateMs: 950, request: 5, retries: 1)])
    func rtuLateAnswer(lateMs: Int, request lateIndex: Int, retries: Int) throws {
        let scratch = Scratch()
        let line = try PtyPair(scratch: scratch)
        let slave = try ScriptedSlave(rtu: line.slaveSide, served: .hundredTwoHundred) { request, slave in
            request.index == lateIndex
                ? [.wait(ms: lateMs), .send(slave.reply(to: request))] : [.send(slave.reply(to: request))]
        }
        let config = wireConfig(
            scratch: scratch, busKeys: rtuBus(line.masterSide, "timeout_ms = 500\nretries = \(retries)"),
            devices: [(1, "")])
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let records = try samples(of: "unit-1", count: 12, scratch: scratch)
        #expect(records.allSatisfy { onlyServedValues($0, unit: 1, served: .hundredTwoHundred) }, "\(records)")
        if retries == 0 {
            #expect(
                records.contains {
                    $0["errors"]?["h0"] == .string("timeout") || $0["errors"]?["h10"] == .string("timeout")
                })
        } else {
            // The late request was asked again after the line fell silent, and that answer was used.
            let asked = slave.requests
            #expect(asked.count > lateIndex + 1 && asked[lateIndex + 1].address == asked[lateIndex].address)
            #expect(records.allSatisfy(isClean), "\(records)")
        }
        #expect(records.suffix(4).allSatisfy(isClean), "the polls after the late answer are right: \(records)")
        #expect(gateway.isRunning)
        slave.stop()
    }

    @Test(
        "RTU: an answer later than the drain (a slave with a 20 ms turnaround) is refused; the line gets back in step",
        arguments: [1150, 1350])
    func rtuAnswerLaterThanDrain(lateMs: Int) throws {
        let scratch = Scratch()
        let line = try PtyPair(scratch: scratch)
        // Holding 0 is answered `lateMs` late once (timeout 500: the drain ends at ~1000 ms, while
        // holding 10 is asked); every other request 20 ms after it arrived, as a real slave does.
        let slave = try ScriptedSlave(rtu: line.slaveSide, served: .hundredTwoHundred) { request, slave in
            [.wait(ms: request.index == 0 ? lateMs : 20), .send(slave.reply(to: request))]
        }
        let connection = try ModbusConnection(
            endpoint: .rtu(device: line.masterSide, baud: 19200, parity: .even, dataBits: 8, stopBits: 1),
            responseTimeoutMs: 500)
        var read: [String] = []
        for address in [0, 10, 0, 10, 0, 10] {
            do {
                read.append("h\(address)=\(try connection.read(.holding, unit: 1, address: address, count: 1))")
            } catch {
                #expect(error.kind == .timeout || error.kind == .badReply, "\(error)")
                read.append("h\(address)=error")
            }
        }
        // Never the other register's value; before the fix: h10=[100], h0=[200], ... for ever.
        #expect(read.allSatisfy { $0 == "h0=[100]" || $0 == "h10=[200]" || $0.hasSuffix("error") }, "\(read)")
        #expect(read.suffix(3) == ["h10=[200]", "h0=[100]", "h10=[200]"], "back in step: \(read)")
        connection.disconnect()
        slave.stop()
    }

    @Test("RTU: a frame repeated 5 ms after a good reply (20 ms turnaround, no inter-request delay) is never used")
    func rtuRepeatedFrameAfterGoodReply() throws {
        let scratch = Scratch()
        let line = try PtyPair(scratch: scratch)
        let slave = try ScriptedSlave(rtu: line.slaveSide, served: .hundredTwoHundred) { request, slave in
            request.index == 0
                ? [
                    .wait(ms: 20), .send(slave.reply(to: request)), .wait(ms: 5),
                    .send(slave.reply(to: request, values: [9999])),
                ]
                : [.wait(ms: 20), .send(slave.reply(to: request))]
        }
        let connection = try ModbusConnection(
            endpoint: .rtu(device: line.masterSide, baud: 19200, parity: .even, dataBits: 8, stopBits: 1),
            responseTimeoutMs: 500)
        var read: [String] = []
        for address in [0, 10, 0, 10, 0, 10] {
            do {
                read.append("h\(address)=\(try connection.read(.holding, unit: 1, address: address, count: 1))")
            } catch {
                read.append("h\(address)=error")
            }
        }
        // Nothing on an RTU line tells the repeated frame from the next answer: the next request
        // is already out when it arrives, and from then on each answer is taken for the next
        // request's (h10=[9999], h0=[200], h10=[100], ...). Only a silence check after every reply
        // longer than the slave's turnaround would catch it; `inter_request_delay_ms` of at least
        // the turnaround limits it to one wrong value. Known, not fixed: see the verify report.
        withKnownIssue("RTU: a repeated frame puts the line one reply out of step", isIntermittent: true) {
            #expect(read.allSatisfy { $0 == "h0=[100]" || $0 == "h10=[200]" || $0.hasSuffix("error") }, "\(read)")
        }
        connection.disconnect()
        slave.stop()
    }

    @Test(
        "TCP: units 248-255 and 0 are addressed as such, by modbus read and by the poller",
        arguments: [250, 248, 255, 0])
    func fullUnitRange(unit: Int) throws {
        let scratch = Scratch()
        let slave = try ScriptedSlave()
        let read = try TestProcess.run(
            Binaries.railgate,
            ["modbus", "read", "--tcp", "127.0.0.1:\(slave.port)", "--unit", "\(unit)", "--count", "2", "--json"],
            scratch: scratch)
        #expect(read.status == 0, "\(read.error)")
        let document = try JSONReader.parse(read.output)
        let expected = [0, 1].map { ScriptedSlave.Served.standard.value(UInt8(unit), $0) }
        #expect(document["registers"]?.arrayValue?.compactMap { $0.intValue.map(UInt16.init) } == expected)
        #expect(slave.requests.map(\.unit) == [UInt8(unit)])

        // The device before it on the bus is unit 1: its id must not stick.
        let config = wireConfig(scratch: scratch, busKeys: tcpBus(slave.port), devices: [(1, ""), (unit, "")])
        let once = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        #expect(once.status == 0, "\(once.error)")
        let records = try once.output.split(separator: "\n").map { try JSONReader.parse(String($0)) }
        let record = try #require(records.first { $0["source"] == .string("unit-\(unit)") })
        #expect(isClean(record) && onlyServedValues(record, unit: UInt8(unit), served: .standard))
        #expect(Set(slave.requests.dropFirst().map(\.unit)) == [1, UInt8(unit)])
    }

    @Test("TCP: a reply from another unit is an error, never that unit's data; reply_unit accepts a fixed one")
    func wrongUnit() throws {
        let scratch = Scratch()
        // Unit 1's requests are answered by "unit 2"; unit 3 answers right.
        let slave = try ScriptedSlave { request, slave in
            [.send(slave.reply(to: request, unit: request.unit == 1 ? 2 : request.unit))]
        }
        let config = wireConfig(
            scratch: scratch, busKeys: tcpBus(slave.port, "retries = 1"), devices: [(1, ""), (3, "")])
        let once = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        #expect(once.status == 69)
        let records = try once.output.split(separator: "\n").map { try JSONReader.parse(String($0)) }
        let wrong = try #require(records.first { $0["source"] == .string("unit-1") })
        #expect(wrong["values"] == nil && wrong["errors"]?["h0"] == .string("io"), "\(wrong.serialized)")
        #expect(once.error.contains("reply from unit 2 to a request for unit 1"), "\(once.error)")
        let right = try #require(records.first { $0["source"] == .string("unit-3") })
        #expect(isClean(right) && onlyServedValues(right, unit: 3, served: .standard))

        // A gateway that answers every unit as unit 0 or 255: with reply_unit, matched by transaction id.
        for fixed in [0, 255] {
            let gateway = try ScriptedSlave { request, slave in [.send(slave.reply(to: request, unit: UInt8(fixed)))] }
            for replyUnit in [nil, fixed] {
                let config = wireConfig(
                    scratch: scratch, busKeys: tcpBus(gateway.port, "retries = 0"),
                    devices: [(250, replyUnit.map { "reply_unit = \($0)" } ?? "")])
                let once = try TestProcess.run(
                    Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
                let record = try JSONReader.parse(once.output.trimmingCharacters(in: .whitespacesAndNewlines))
                if replyUnit == nil {
                    #expect(record["values"] == nil, "\(record.serialized)")
                } else {
                    #expect(isClean(record) && onlyServedValues(record, unit: 250, served: .standard))
                }
            }
        }
    }

    @Test(
        "TCP: an answer after the timeout is skipped by its transaction id; the next read gets its own",
        arguments: [700, 450])
    func tcpLateAnswer(lateMs: Int) throws {
        let slave = try ScriptedSlave(served: .hundredTwoHundred) { request, slave in
            request.index == 0
                ? [.wait(ms: lateMs), .send(slave.reply(to: request))] : [.send(slave.reply(to: request))]
        }
        let connection = try ModbusConnection(
            endpoint: .tcp(host: "127.0.0.1", port: slave.port), responseTimeoutMs: lateMs - 200)
        do {
            let values = try connection.read(.holding, unit: 1, address: 0, count: 1)
            Issue.record("a late answer was in time: \(values)")
        } catch {
            #expect(error.kind == .timeout)
        }
        // Sent at once: the late answer to holding 0 (100) arrives first, while this one waits.
        #expect(try connection.read(.holding, unit: 1, address: 10, count: 1) == [200])
        #expect(try connection.read(.holding, unit: 1, address: 0, count: 1) == [100])
        #expect(slave.connectionCount == 1)
        #expect(slave.requests.map(\.transactionId) == [1, 2, 3])
        connection.disconnect()
    }

    @Test("RTU: a reply from another slave address, or with a frame appended, is never used; the next read is right")
    func rtuForeignFrames() throws {
        let scratch = Scratch()
        let line = try PtyPair(scratch: scratch)
        let slave = try ScriptedSlave(rtu: line.slaveSide, served: .hundredTwoHundred) { request, slave in
            switch request.index {
            case 0: [.send(slave.reply(to: request, unit: 2))]
            case 2: [.send(slave.reply(to: request) + slave.reply(to: request, values: [9999]))]
            default: [.send(slave.reply(to: request))]
            }
        }
        let connection = try ModbusConnection(
            endpoint: .rtu(device: line.masterSide, baud: 19200, parity: .even, dataBits: 8, stopBits: 1),
            responseTimeoutMs: 300)
        do {
            let values = try connection.read(.holding, unit: 1, address: 0, count: 1)
            Issue.record("unit 2's reply was taken for unit 1's: \(values)")
        } catch {
            #expect(error.kind == .badReply && error.operation.contains("reply from unit 2"), "\(error)")
        }
        #expect(try connection.read(.holding, unit: 1, address: 10, count: 1) == [200])
        // Either refused (both frames read at once) or the first taken; never 9999, now or next.
        var read: [[UInt16]] = []
        for address in [0, 10, 0] {
            do {
                read.append(try connection.read(.holding, unit: 1, address: address, count: 1))
            } catch {
                #expect(error.kind == .badReply, "\(error)")
                read.append([])
            }
        }
        #expect(read[0] == [100] || read[0] == [], "\(read)")
        #expect(Array(read.dropFirst()) == [[200], [100]], "\(read)")
        connection.disconnect()
        slave.stop()
    }

    @Test("RTU: a trickled reply times out at timeout_ms; the drain is bounded and the next read is right")
    func rtuTrickle() throws {
        let scratch = Scratch()
        let line = try PtyPair(scratch: scratch)
        let slave = try ScriptedSlave(rtu: line.slaveSide, served: .hundredTwoHundred) { request, slave in
            request.index == 0 ? [.trickle(slave.reply(to: request), everyMs: 150)] : [.send(slave.reply(to: request))]
        }
        let connection = try ModbusConnection(
            endpoint: .rtu(device: line.masterSide, baud: 19200, parity: .even, dataBits: 8, stopBits: 1),
            responseTimeoutMs: 200)
        let started = MonotonicInstant.now()
        do {
            let values = try connection.read(.holding, unit: 1, address: 0, count: 1)
            Issue.record("a trickled reply was accepted: \(values)")
        } catch {
            #expect(error.kind == .timeout, "\(error)")
        }
        // 7 bytes, 150 ms apart: the whole reply takes ~1 s; the drain runs until 200 ms of silence after it.
        let took = MonotonicInstant.now().milliseconds(since: started)
        #expect(took >= 900 && took <= 3500, "timeout and drain (at most 10 timeouts) took \(took) ms")
        #expect(try connection.read(.holding, unit: 1, address: 10, count: 1) == [200])
        connection.disconnect()
        slave.stop()
    }

    @Test(
        "TCP: a connection closed as a request arrives is reopened and asked once more, once",
        arguments: [1, 1000])
    func tcpCloseOnRequest(closingConnections: Int) throws {
        // The first request of each of the first `closingConnections` connections is dropped with it.
        let slave = try ScriptedSlave { request, slave in
            let firstOnIt = slave.requests.filter { $0.connection == request.connection }.count == 1
            return firstOnIt && request.connection <= closingConnections ? [.close] : [.send(slave.reply(to: request))]
        }
        let connection = try ModbusConnection(
            endpoint: .tcp(host: "127.0.0.1", port: slave.port), responseTimeoutMs: 500)
        do {
            let values = try connection.read(.holding, unit: 1, address: 3, count: 1)
            #expect(closingConnections == 1, "read \(values) although every connection is dropped")
            #expect(values == [ScriptedSlave.Served.standard.value(1, 3)])
            #expect(slave.connectionCount == 2)
        } catch {
            #expect(closingConnections > 1, "\(error)")
            #expect(error.kind == .connection, "\(error)")
            #expect(slave.requests.count == 2, "asked again once, not more")
        }
        connection.disconnect()
        slave.stop()
    }

    @Test(
        "TCP: a second frame after a correct reply is never used by the next poll",
        arguments: [0, 1])
    func appendedFrame(tidStep: UInt16) throws {
        let scratch = Scratch()
        // The appended frame repeats the transaction id, or carries the NEXT one (what the next request will use).
        let slave = try ScriptedSlave { request, slave in
            [
                .send(
                    slave.reply(to: request)
                        + slave.reply(to: request, values: [9999], transactionId: request.transactionId &+ tidStep))
            ]
        }
        let config = wireConfig(scratch: scratch, busKeys: tcpBus(slave.port, "retries = 0"), devices: [(1, "")])
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let records = try samples(of: "unit-1", count: 10, scratch: scratch)
        #expect(
            records.allSatisfy { isClean($0) && onlyServedValues($0, unit: 1, served: .standard) },
            "\(records)")
        #expect(slave.connectionCount == 1)
        _ = gateway
    }

    @Test(
        "a reply trickling in byte by byte times out at timeout_ms, not after the last byte",
        arguments: [(everyMs: 400, timeoutMs: 300), (everyMs: 100, timeoutMs: 300)])
    func trickle(everyMs: Int, timeoutMs: Int) throws {
        let scratch = Scratch()
        let slave = try ScriptedSlave { request, slave in [.trickle(slave.reply(to: request), everyMs: everyMs)] }
        let started = Date()
        let read = try TestProcess.run(
            Binaries.railgate,
            ["modbus", "read", "--tcp", "127.0.0.1:\(slave.port)", "--timeout-ms", "\(timeoutMs)", "--unit", "1"],
            scratch: scratch)
        let elapsed = Date().timeIntervalSince(started)
        #expect(read.status == 69, "\(read.output) \(read.error)")
        #expect(read.error.contains("timed out"), "\(read.error)")
        // 11 bytes at 400 ms would be accepted after 4.4 s; the process itself takes some startup time.
        #expect(elapsed < 2.5, "took \(elapsed) s")
        slave.stop()
    }

    @Test(
        "inter_request_delay_ms holds between any two requests of the line, whichever devices",
        arguments: ["rtu", "tcp"])
    func pacing(transport: String) throws {
        let scratch = Scratch()
        let line = transport == "rtu" ? try PtyPair(scratch: scratch) : nil
        let slave = try line.map { try ScriptedSlave(rtu: $0.slaveSide) } ?? ScriptedSlave()
        let busKeys =
            line.map { rtuBus($0.masterSide, "inter_request_delay_ms = 300") }
            ?? tcpBus(slave.port, "inter_request_delay_ms = 300")
        let config = wireConfig(scratch: scratch, busKeys: busKeys, devices: [(1, ""), (2, "")], pollMs: 100)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        _ = try eventually("12 requests", seconds: 60) { slave.requests.count >= 12 ? true : nil }
        let requests = slave.requests
        let replies = Dictionary(uniqueKeysWithValues: slave.replies.map { ($0.index, $0.sent) })
        #expect(Set(requests.map(\.unit)) == [1, 2])
        var switches = 0
        for (previous, next) in zip(requests, requests.dropFirst()) {
            let sent = try #require(replies[previous.index])
            let gap = next.arrived.milliseconds(since: sent)
            #expect(
                gap >= 300, "request \(next.index) (unit \(next.unit)) \(gap) ms after the reply to \(previous.index)")
            if previous.unit != next.unit { switches += 1 }
        }
        #expect(switches >= 2, "the gaps between devices were measured")

        // A stop is not held up by a long pause.
        gateway.signal(SIGTERM)
        let stopping = Date()
        #expect(try gateway.waitForExit(seconds: 30) == 0)
        #expect(Date().timeIntervalSince(stopping) < 2)
    }

    @Test("a stop cuts a 9 s inter-request pause short")
    func stopDuringPause() throws {
        let scratch = Scratch()
        let slave = try ScriptedSlave()
        let config = wireConfig(
            scratch: scratch, busKeys: tcpBus(slave.port, "inter_request_delay_ms = 9000"), devices: [(1, "")])
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        _ = try eventually("a first request", seconds: 60) { slave.requests.count >= 1 ? true : nil }
        usleep(300_000)
        gateway.signal(SIGTERM)
        let stopping = Date()
        #expect(try gateway.waitForExit(seconds: 30) == 0)
        #expect(Date().timeIntervalSince(stopping) < 2)
        #expect(slave.requests.count == 1)
        // The interrupted poll left no error record behind.
        let records = try bufferedRecords(scratch.path + "/state", scratch: scratch)
        #expect(records.allSatisfy { $0["errors"] == nil }, "\(records)")
    }

    @Test(
        "a device that ignores the first 800 ms of a TCP connection: connect_delay_ms, and no reconnect on timeouts",
        arguments: [1000, 0])
    func ignoresFirstRequests(connectDelayMs: Int) throws {
        let scratch = Scratch()
        let slave = try ScriptedSlave { request, slave in
            request.sinceConnectMs < 800 ? [] : [.send(slave.reply(to: request))]
        }
        let config = wireConfig(
            scratch: scratch,
            busKeys: tcpBus(
                slave.port, "timeout_ms = 300\nretries = 0\nmax_backoff_ms = 500\nconnect_delay_ms = \(connectDelayMs)"),
            devices: [(1, "")])
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let records = try samples(of: "unit-1", count: 10, scratch: scratch)
        #expect(records.allSatisfy { onlyServedValues($0, unit: 1, served: .standard) })
        if connectDelayMs > 0 {
            #expect(records.prefix(10).allSatisfy(isClean), "\(records)")
        } else {
            #expect(records.prefix(10).filter(isClean).count >= 6, "\(records)")
        }
        #expect(slave.connectionCount == 1)
        _ = gateway
    }

    @Test(
        "a device that closes idle TCP connections: reopened within the poll, no error, no log flood",
        arguments: [(idleMs: 2000, pollMs: 3000, polls: 4), (idleMs: 500, pollMs: 800, polls: 6)])
    func idleClose(idleMs: Int, pollMs: Int, polls: Int) throws {
        let scratch = Scratch()
        let slave = try ScriptedSlave(tcpClosingIdleAfterMs: idleMs)
        let config = wireConfig(
            scratch: scratch, busKeys: tcpBus(slave.port, "timeout_ms = 500\nretries = 0"), devices: [(1, "")],
            pollMs: pollMs)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let records = try samples(of: "unit-1", count: polls, scratch: scratch)
        #expect(
            records.allSatisfy { isClean($0) && onlyServedValues($0, unit: 1, served: .standard) },
            "\(records)")
        #expect(slave.connectionCount >= polls - 1, "the slave closed the idle connections")
        #expect(!gateway.errorOutput.contains("not answering"), "\(gateway.errorOutput)")
    }

    @Test("a missing serial device: run --once, modbus read and the daemon's status say why, the log says it once")
    func missingSerialDevice() throws {
        let scratch = Scratch()
        let config = wireConfig(scratch: scratch, busKeys: rtuBus("/dev/ttyUSB7"), devices: [(1, ""), (2, "")])
        let once = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        #expect(once.status == 69)
        #expect(once.error.contains("/dev/ttyUSB7") && once.error.contains("plugged in"), "\(once.error)")
        let read = try TestProcess.run(
            Binaries.railgate, ["modbus", "read", "--rtu", "/dev/ttyUSB7"], scratch: scratch)
        #expect(read.status == 69)
        #expect(read.error.contains("plugged in"), "\(read.error)")

        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let device = try eventually("status with the reason", seconds: 60) { () -> JSON? in
            let status = try daemonStatus(scratch)
            let device = status["devices"]?.arrayValue?.first { $0["name"] == .string("unit-1") }
            return (device?["polls"]?.intValue ?? 0) >= 3 ? device : nil
        }
        #expect(device["last_error"]?.stringValue?.contains("plugged in") == true, "\(device.serialized)")
        let text = try TestProcess.run(
            Binaries.railgate, ["status", "--socket", scratch.path + "/control.sock"], scratch: scratch)
        #expect(text.output.contains("/dev/ttyUSB7"), "\(text.output)")
        let lines = gateway.errorOutput.split(separator: "\n").filter {
            $0.contains("unit-1") && $0.contains("ttyUSB7")
        }
        #expect(lines.count == 1, "\(gateway.errorOutput)")
    }
}
