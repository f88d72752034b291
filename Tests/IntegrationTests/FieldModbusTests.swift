import Foundation
import RailgateCore
import RailgateModbus
import RailgateSystem
import Testing

/// The Python with pymodbus and pyserial that `make pydeps` (part of `make test`) sets up in
/// `.build/pyvenv`; `RAILGATE_PYTHON` names another one.
let pymodbusPython =
    ProcessInfo.processInfo.environment["RAILGATE_PYTHON"] ?? projectRoot + "/.build/pyvenv/bin/python"

/// pymodbus as an independent slave (Tests/IntegrationTests/Fixtures/pymodbus_slave.py): a TCP
/// server with the RTU framer, or a serial server with the ASCII framer on a pty.
final class PymodbusSlave: @unchecked Sendable {
    let process: TestProcess
    /// The TCP port (RTU over TCP), else 0.
    let port: Int

    init(mode: String, at place: String, unit: Int, scratch: Scratch) throws {
        guard FileManager.default.isExecutableFile(atPath: pymodbusPython) else {
            throw TimedOut(description: "no Python with pymodbus at \(pymodbusPython): run `make pydeps` first")
        }
        process = try TestProcess(
            pymodbusPython,
            [projectRoot + "/Tests/IntegrationTests/Fixtures/pymodbus_slave.py", mode, place, "\(unit)"],
            scratch: scratch, name: "pymodbus")
        let line = try process.waitForOutputLine(containing: "serving on", seconds: 60)
        port = Int(line.split(separator: " ")[2]) ?? 0
    }

    func kill() throws {
        process.signal(SIGKILL)
        _ = try process.waitForExit()
    }
}

/// A gateway configuration with one bus (`busKeys`) and unit 3 read with `field-types.toml`.
func fieldConfig(scratch: Scratch, busKeys: String, brokerPort: Int? = nil, pollMs: Int = 300) -> String {
    scratch.write(
        "gateway-field.toml",
        """
        [gateway]
        id = "KZ-WAG-FIELD"
        state_dir = "\(scratch.path)/state"
        control_socket = "\(scratch.path)/control.sock"
        profile_path = ["\(projectRoot)/Tests/IntegrationTests/Fixtures"]

        [buffer]
        sync_interval_ms = 100

        [upstream]
        url = "\(brokerPort.map { "mqtt://127.0.0.1:\($0)" } ?? "none")"
        batch_interval_ms = 100

        [[bus]]
        name = "field"
        timeout_ms = 1000
        \(busKeys)

        [[device]]
        name = "panel"
        bus = "field"
        unit = 3
        profile = "field-types"
        poll_interval_ms = \(pollMs)
        """)
}

/// What pymodbus_slave.py serves, as railgate must report it.
let pinnedFieldValues: [String: JSON] = [
    "flag_0": .bool(true), "flag_1": .bool(false), "flag_2": .bool(true), "flag_5": .bool(true),
    "flag_15": .bool(true), "cycles_high_u8": .unsigned(200), "code_low_i8": .integer(-5),
    "supply_f16": .number(24.5), "operations_bcd16": .unsigned(1234), "odometer_bcd32": .unsigned(12_345_678),
    "tiny_f16": .number(6e-08), "counter_u32": .unsigned(4_294_967_295), "low_u8": .unsigned(128),
    "high_i8": .integer(123),
]
let pinnedFieldErrors: [String: String] = ["nan_f16": "nan", "ninf_f16": "inf", "bad_bcd16": "invalid"]

/// Whether a sample record carries exactly the pinned values and errors.
func checkPinned(_ record: JSON) {
    for (name, expected) in pinnedFieldValues {
        let got = record["values"]?[name]
        if case .bool = expected {
            #expect(got == expected, "\(name): \(String(describing: got))")
        } else {
            #expect(
                got?.doubleValue != nil && got?.doubleValue == expected.doubleValue,
                "\(name): \(String(describing: got))")
        }
    }
    for (name, reason) in pinnedFieldErrors {
        #expect(record["errors"]?[name] == .string(reason), "\(name): \(String(describing: record["errors"]?[name]))")
    }
    for name in ["serial_number", "firmware_version"] {
        #expect(record["values"]?[name] == nil && record["errors"]?[name] == nil, "static \(name) in a sample")
    }
}

@Suite("Modbus as the field wires it: RTU over TCP, ASCII, new types, static points", .serialized)
struct FieldModbusTests {
    @Test("pymodbus RTU over TCP: every new type carries its pinned value; static points in no sample")
    func pymodbusRTUOverTCP() throws {
        let scratch = Scratch()
        let slave = try PymodbusSlave(mode: "rtu-over-tcp", at: "0", unit: 3, scratch: scratch)
        let config = fieldConfig(
            scratch: scratch, busKeys: "transport = \"rtu-over-tcp\"\nhost = \"127.0.0.1\"\nport = \(slave.port)")
        let once = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        let record = try JSONReader.parse(String(once.output.split(separator: "\n").first ?? ""))
        #expect(record["source"] == .string("panel"), "\(once.output) \(once.error)")
        checkPinned(record)
        let read = try TestProcess.run(
            Binaries.railgate,
            [
                "modbus", "read", "--rtu-over-tcp", "127.0.0.1:\(slave.port)", "--unit", "3", "--address", "4",
                "--type", "bcd32", "--json",
            ],
            scratch: scratch)
        #expect(read.status == 0, "\(read.error)")
        #expect(try JSONReader.parse(read.output)["values"]?.arrayValue?.first?["value"]?.doubleValue == 12_345_678)
        try slave.kill()
    }

    @Test("pymodbus ASCII on a pty: every new type carries its pinned value")
    func pymodbusASCII() throws {
        let scratch = Scratch()
        let line = try PtyPair(scratch: scratch)
        let slave = try PymodbusSlave(mode: "ascii", at: line.slaveSide, unit: 3, scratch: scratch)
        // 8N1: pyserial cannot set 7E1 on a pty (tcsetattr: EINVAL); the framing is what is tested.
        let config = fieldConfig(
            scratch: scratch,
            busKeys: "transport = \"ascii\"\ndevice = \"\(line.masterSide)\"\nparity = \"none\"\ndata_bits = 8")
        let once = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        let record = try JSONReader.parse(String(once.output.split(separator: "\n").first ?? ""))
        #expect(record["source"] == .string("panel"), "\(once.output) \(once.error)")
        checkPinned(record)
        let scan = try TestProcess.run(
            Binaries.railgate,
            [
                "modbus", "scan", "--ascii", line.masterSide, "--parity", "none", "--data-bits", "8", "--units", "2-4",
                "--json",
            ],
            scratch: scratch)
        #expect(scan.output.contains("\"unit\":3"), "\(scan.output) \(scan.error)")
        try slave.kill()
    }

    @Test("poll = \"once\" points are in the birth message under their source, and in no sample")
    func staticPointsInBirth() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        let slave = try PymodbusSlave(mode: "rtu-over-tcp", at: "0", unit: 3, scratch: scratch)
        let config = fieldConfig(
            scratch: scratch, busKeys: "transport = \"rtu-over-tcp\"\nhost = \"127.0.0.1\"\nport = \(slave.port)",
            brokerPort: broker.port)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { messages in
            let births = messages.filter { $0.topic.hasSuffix("/status") }.compactMap(\.json)
            return births.contains { $0["sources"]?["panel"]?["static"] != nil }
                && subscriber.records.filter { $0["source"] == .string("panel") }.count >= 3
        }
        let birth = try #require(
            subscriber.messages.filter { $0.topic.hasSuffix("/status") }.compactMap(\.json).last {
                $0["sources"]?["panel"]?["static"] != nil
            })
        let panel = birth["sources"]?["panel"]
        #expect(panel?["static"]?["serial_number"]?.doubleValue == 20_261_385)
        #expect(panel?["static"]?["firmware_version"]?.doubleValue == 312)
        #expect(panel?["points"]?["serial_number"]?["poll"] == .string("once"))
        #expect(panel?["points"]?["flag_15"]?["type"] == .string("bit"))
        let samples = subscriber.records.filter { $0["source"] == .string("panel") }
        for sample in samples { checkPinned(sample) }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        try slave.kill()
    }

    @Test("the simulator speaks ASCII over TCP and merges 16 flags and two bytes into their registers")
    func simulatorASCIIOverTCP() throws {
        let scratch = Scratch()
        let pins = [
            "door_left_open=1", "door_right_open=0", "door_locked=1", "brake_applied=0", "handbrake_on=1",
            "sensor_fault=1", "door_cycles_today=200", "fault_code=-5", "supply_voltage=24.5",
            "door_operations=1234", "odometer_km=12345678", "serial_number=20261385", "firmware_version=312",
        ].flatMap { ["--set", $0] }
        let simulator = try WagonSimulator(
            arguments: ["wagon", "--profile", "door-status-panel", "--ascii-over-tcp", "127.0.0.1:0"], units: "3",
            scratch: scratch, extra: pins + ["--trace"])
        let config = scratch.write(
            "gateway-panel.toml",
            """
            [gateway]
            id = "KZ-WAG-PANEL"
            state_dir = "\(scratch.path)/state"
            profile_path = ["\(projectRoot)/Firmware-config/profiles"]
            [upstream]
            url = "none"
            [[bus]]
            name = "panel-server"
            transport = "ascii-over-tcp"
            host = "127.0.0.1"
            port = \(simulator.port)
            [[device]]
            name = "doors"
            bus = "panel-server"
            unit = 3
            profile = "door-status-panel"
            """)
        let once = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        #expect(once.status == 0, "\(once.error)")
        let record = try JSONReader.parse(String(once.output.split(separator: "\n").first ?? ""))
        let expected: [String: JSON] = [
            "door_left_open": .bool(true), "door_right_open": .bool(false), "door_locked": .bool(true),
            "brake_applied": .bool(false), "handbrake_on": .bool(true), "sensor_fault": .bool(true),
            "door_cycles_today": .unsigned(200), "fault_code": .integer(-5), "supply_voltage": .number(24.5),
            "door_operations": .unsigned(1234), "odometer_km": .unsigned(12_345_678),
        ]
        for (name, value) in expected {
            let got = record["values"]?[name]
            if case .bool = value {
                #expect(got == value, "\(name): \(String(describing: got))")
            } else {
                #expect(got?.doubleValue == value.doubleValue, "\(name): \(String(describing: got))")
            }
        }
        #expect(record["errors"] == nil, "\(String(describing: record["errors"]))")
        #expect(record["values"]?["serial_number"] == nil)
        // One request for the 11 polled points (holding 0-5); `run --once` reads no static points.
        let traced = try eventually("the simulator's trace") { () -> [String]? in
            let lines = simulator.tracedRequests
            return lines.isEmpty ? nil : lines
        }
        #expect(traced == ["request unit=3 fc=3 address=0 count=6"])
        try simulator.kill()
    }

    @Test("a device answering busy (exception 6) is asked busy_retries more times, busy_retry_ms apart, then busy")
    func busyDevice() throws {
        let scratch = Scratch()
        let scenario = scratch.write(
            "busy.toml", "[[fault]]\nkind = \"exception\"\ncode = 6\ntable = \"holding\"\naddress = 0\n")
        let simulator = try WagonSimulator(
            arguments: ["wagon", "--profile", "door-status-panel", "--rtu-over-tcp", "127.0.0.1:0"], units: "3",
            scratch: scratch, extra: ["--scenario", scenario, "--trace"])
        let config = scratch.write(
            "gateway-busy.toml",
            """
            [gateway]
            id = "KZ-WAG-BUSY"
            state_dir = "\(scratch.path)/state"
            profile_path = ["\(projectRoot)/Firmware-config/profiles"]
            [upstream]
            url = "none"
            [[bus]]
            name = "panel-server"
            transport = "rtu-over-tcp"
            host = "127.0.0.1"
            port = \(simulator.port)
            retries = 1
            busy_retries = 2
            busy_retry_ms = 150
            [[device]]
            name = "doors"
            bus = "panel-server"
            unit = 3
            profile = "door-status-panel"
            """)
        let started = MonotonicInstant.now()
        let once = try TestProcess.run(Binaries.railgate, ["run", "--config", config, "--once"], scratch: scratch)
        let elapsedMs = MonotonicInstant.now().milliseconds(since: started)
        let record = try JSONReader.parse(String(once.output.split(separator: "\n").first ?? ""))
        guard case .object(let errors)? = record["errors"] else {
            Issue.record("no errors: \(once.output)")
            return
        }
        #expect(Set(errors.map { $0.1.stringValue ?? "?" }) == ["busy"], "\(once.output)")
        #expect(errors.count == 11)
        #expect(elapsedMs >= 300, "two waits of 150 ms")
        let traced = try eventually("three requests traced") { () -> [String]? in
            let lines = simulator.tracedRequests
            return lines.count >= 3 ? lines : nil
        }
        // Busy retries, not `retries`: 1 + busy_retries requests.
        #expect(traced == Array(repeating: "request unit=3 fc=3 address=0 count=6", count: 3))
        try simulator.kill()
    }

    @Test("static points are read again after a reconnect: a swapped device shows its own serial number")
    func staticPointsAfterReconnect() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        let port = freePort()
        func simulator(serial: Int) throws -> WagonSimulator {
            try WagonSimulator(
                arguments: ["wagon", "--profile", "door-status-panel", "--rtu-over-tcp", "127.0.0.1:\(port)"],
                units: "3", scratch: scratch, extra: ["--set", "serial_number=\(serial)"])
        }
        var panel = try simulator(serial: 1111)
        let config = scratch.write(
            "gateway-swap.toml",
            """
            [gateway]
            id = "KZ-WAG-SWAP"
            state_dir = "\(scratch.path)/state"
            control_socket = "\(scratch.path)/control.sock"
            profile_path = ["\(projectRoot)/Firmware-config/profiles"]
            [upstream]
            url = "mqtt://127.0.0.1:\(broker.port)"
            batch_interval_ms = 100
            [[bus]]
            name = "panel-server"
            transport = "rtu-over-tcp"
            host = "127.0.0.1"
            port = \(port)
            timeout_ms = 300
            max_backoff_ms = 500
            [[device]]
            name = "doors"
            bus = "panel-server"
            unit = 3
            profile = "door-status-panel"
            poll_interval_ms = 200
            """)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        func serials(_ messages: [Subscriber.Message]) -> [Double] {
            messages.filter { $0.topic.hasSuffix("/status") }.compactMap {
                $0.json?["sources"]?["doors"]?["static"]?["serial_number"]?.doubleValue
            }
        }
        try subscriber.waitUntil(seconds: 60) { serials($0).contains(1111) }
        try panel.kill()
        panel = try simulator(serial: 2222)
        try subscriber.waitUntil(seconds: 60) { serials($0).contains(2222) }
        #expect(serials(subscriber.messages).last == 2222)
        #expect(
            subscriber.records.filter { $0["source"] == .string("doors") }.allSatisfy {
                $0["values"]?["serial_number"] == nil && $0["errors"]?["serial_number"] == nil
            })
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        try panel.kill()
    }

    @Test("RTU over TCP: a late reply is drained, a mislabelled or appended one refused; the next read is right")
    func rtuOverTCPReplyChecks() throws {
        let slave = try ScriptedSlave(framing: .rtu, served: .hundredTwoHundred) { request, slave in
            switch request.index {
            case 0: [.wait(ms: 1500), .send(slave.reply(to: request))]
            case 2: [.send(slave.reply(to: request, unit: 2))]
            case 4: [.send(slave.reply(to: request) + slave.reply(to: request, values: [9999]))]
            default: [.send(slave.reply(to: request))]
            }
        }
        let connection = try ModbusConnection(
            endpoint: .rtuOverTCP(host: "127.0.0.1", port: slave.port), responseTimeoutMs: 1000)
        #expect(throws: ModbusError.self) { try connection.read(.holding, unit: 1, address: 0, count: 1) }
        // The late 100 arrived during the drain (1.5 s after the request, 0.5 s into a drain that
        // waits for 1 s of silence): this read gets its own 200.
        #expect(try connection.read(.holding, unit: 1, address: 10, count: 1) == [200])
        do {
            let values = try connection.read(.holding, unit: 1, address: 0, count: 1)
            Issue.record("unit 2's reply was taken for unit 1's: \(values)")
        } catch {
            #expect(error.kind == .badReply && error.operation.contains("reply from unit 2"), "\(error)")
        }
        #expect(try connection.read(.holding, unit: 1, address: 10, count: 1) == [200])
        var appended: [UInt16] = []
        do { appended = try connection.read(.holding, unit: 1, address: 0, count: 1) } catch {
            #expect(error.kind == .badReply, "\(error)")
        }
        #expect(appended == [100] || appended == [], "\(appended)")
        #expect(try connection.read(.holding, unit: 1, address: 10, count: 1) == [200])
        #expect(slave.connectionCount == 1)
        connection.disconnect()
        slave.stop()
    }

    @Test(
        "RTU over TCP: signals to the reading thread never cut a drain or the check for a late answer short",
        arguments: [false, true])
    func rtuOverTCPUnderSignals(glued: Bool) throws {
        // Request 0 is answered 1.5 s late. `glued`: the late answer and the answer to request 1
        // come in one write, after request 1 (as when a drain ended before the late answer): the
        // late 100 must never be taken for address 10's 200.
        let slave = try ScriptedSlave(framing: .rtu, served: .hundredTwoHundred) { request, slave in
            switch (request.index, glued) {
            case (0, false): [.wait(ms: 1500), .send(slave.reply(to: request))]
            case (0, true): []
            case (1, true): [.send(slave.reply(to: request, values: [100]) + slave.reply(to: request))]
            default: [.send(slave.reply(to: request))]
            }
        }
        let connection = try ModbusConnection(
            endpoint: .rtuOverTCP(host: "127.0.0.1", port: slave.port), responseTimeoutMs: 1000)
        let interrupter = ThreadInterrupter(signal: SIGUSR2, everyMs: 20)
        defer { interrupter.stop() }
        #expect(throws: ModbusError.self) { try connection.read(.holding, unit: 1, address: 0, count: 1) }
        var second: [UInt16] = []
        do { second = try connection.read(.holding, unit: 1, address: 10, count: 1) } catch {
            #expect(glued && error.kind == .badReply, "\(error)")
        }
        #expect(second == (glued ? [] : [200]), "the late answer taken for the next request's")
        #expect(try connection.read(.holding, unit: 1, address: 10, count: 1) == [200])
        #expect(try connection.read(.holding, unit: 1, address: 0, count: 1) == [100])
        #expect(interrupter.delivered > 50, "signals delivered: \(interrupter.delivered)")
        connection.disconnect()
        slave.stop()
    }

    @Test("RTU over TCP: a device server that closes the connection as a request arrives: reopened, asked once more")
    func rtuOverTCPReopened() throws {
        // Apart from the timing-bound checks above, with a response timeout long enough that a
        // loaded machine cannot turn the reopened connection's answer into a timeout.
        let slave = try ScriptedSlave(framing: .rtu, served: .hundredTwoHundred) { request, slave in
            request.index == 1 ? [.close] : [.send(slave.reply(to: request))]
        }
        let connection = try ModbusConnection(
            endpoint: .rtuOverTCP(host: "127.0.0.1", port: slave.port), responseTimeoutMs: 5000)
        #expect(try connection.read(.holding, unit: 1, address: 10, count: 1) == [200])
        #expect(try connection.read(.holding, unit: 1, address: 0, count: 1) == [100])
        #expect(slave.connectionCount == 2)
        #expect(slave.requests.map(\.connection) == [1, 1, 2], "\(slave.requests)")
        #expect(connection.connects == 2)
        connection.disconnect()
        slave.stop()
    }

    @Test("ASCII on a pty: a late reply is drained and one from another unit refused; the next read is right")
    func asciiReplyChecks() throws {
        let scratch = Scratch()
        let line = try PtyPair(scratch: scratch)
        let peer = try ScriptedASCIIPeer(device: line.slaveSide) { index, request in
            let body = [request[0], request[1], 2, 0, request[3] == 0 ? 100 : 200]
            switch index {
            case 0: return (1500, ModbusASCII.frame(body))
            case 2: return (0, ModbusASCII.frame([2] + body.dropFirst()))
            default: return (0, ModbusASCII.frame(body))
            }
        }
        let connection = try ModbusConnection(
            endpoint: .ascii(device: line.masterSide, baud: 19200, parity: .none, dataBits: 8, stopBits: 1),
            responseTimeoutMs: 1000)
        #expect(throws: ModbusError.self) { try connection.read(.holding, unit: 1, address: 0, count: 1) }
        #expect(try connection.read(.holding, unit: 1, address: 10, count: 1) == [200])
        do {
            let values = try connection.read(.holding, unit: 1, address: 0, count: 1)
            Issue.record("unit 2's reply was taken for unit 1's: \(values)")
        } catch {
            #expect(error.kind == .badReply && error.operation.contains("reply from unit 2"), "\(error)")
        }
        #expect(try connection.read(.holding, unit: 1, address: 0, count: 1) == [100])
        connection.disconnect()
        peer.stop()
    }
}

/// A scripted ASCII slave on a pty: for each request (':' to LF, decoded), `script(index, bytes)`
/// gives a delay in ms and the bytes to send.
final class ScriptedASCIIPeer: @unchecked Sendable {
    private let descriptor: Int32
    private let lock = ConditionLock()
    private var stopping = false
    private var thread: Thread?

    init(device: String, script: @escaping @Sendable (Int, [UInt8]) -> (Int, [UInt8])) throws {
        descriptor = open(device, O_RDWR | O_NOCTTY)
        guard descriptor >= 0 else { throw TimedOut(description: "cannot open \(device): \(errno)") }
        var settings = termios()
        tcgetattr(descriptor, &settings)
        cfmakeraw(&settings)
        tcsetattr(descriptor, TCSANOW, &settings)
        let thread = Thread { [self] in serve(script) }
        self.thread = thread
        thread.start()
    }

    private var isStopping: Bool { lock.withLock { stopping } }

    private func serve(_ script: (Int, [UInt8]) -> (Int, [UInt8])) {
        var pending: [UInt8] = []
        var index = 0
        var chunk = [UInt8](repeating: 0, count: 256)
        while !isStopping {
            var waiting = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&waiting, 1, 20) == 1 else { continue }
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            guard count > 0 else { continue }
            pending += chunk[0..<count]
            while let newline = pending.firstIndex(of: 0x0A) {
                let frame = Array(pending[...newline])
                pending.removeSubrange(...newline)
                guard let start = frame.firstIndex(of: UInt8(ascii: ":")),
                    let request = ModbusASCII.bytes(of: frame[start...])
                else { continue }
                let (delay, reply) = script(index, request)
                index += 1
                if delay > 0 { usleep(UInt32(delay) * 1000) }
                _ = reply.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            }
        }
    }

    func stop() {
        lock.withLock { stopping = true }
        while thread?.isFinished == false { usleep(10_000) }
        close(descriptor)
    }
}

/// Sends `signal` (with a no-op handler, no SA_RESTART) to the thread that made it, every
/// `everyMs`, until stopped: a blocking `poll` or `read` there returns EINTR, as when a child
/// process exits (SIGCHLD) or an operator sends SIGHUP. The signal is unblocked on that thread
/// until `stop()` (the test runner's threads block signals).
final class ThreadInterrupter: @unchecked Sendable {
    private let lock = ConditionLock()
    private var stopping = false
    private var count = 0
    private var thread: Thread?
    private var savedMask = sigset_t()

    init(signal number: Int32, everyMs: Int) {
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, number)
        pthread_sigmask(SIG_UNBLOCK, &unblock, &savedMask)
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(number, &action, nil)
        let target = pthread_self()
        let thread = Thread { [self] in
            while !lock.withLock({ stopping }) {
                if pthread_kill(target, number) == 0 { lock.withLock { count += 1 } }
                usleep(UInt32(everyMs) * 1000)
            }
        }
        self.thread = thread
        thread.start()
    }

    /// Signals sent so far.
    var delivered: Int { lock.withLock { count } }

    /// Stops the signals and restores the calling thread's signal mask; call it on that thread.
    func stop() {
        let wasRunning = lock.withLock {
            defer { stopping = true }
            return !stopping
        }
        guard wasRunning else { return }
        while thread?.isFinished == false { usleep(5000) }
        pthread_sigmask(SIG_SETMASK, &savedMask, nil)
    }
}
