import Foundation
import Glibc
import RailgateCore
import Testing

/// `railgate doctor` against real faults made in the test: each gives its `fail` line with the
/// remedy and exit 69; a healthy configuration gives exit 0 and the golden human output.
@Suite("Doctor finds the fault", .serialized)
struct DoctorFaultTests {
    /// A gateway configuration: `bus` is the [[bus]] table's body, `upstream` the url and more.
    func config(
        _ scratch: Scratch, bus: String, unit: Int = 7, upstream: String = "url = \"none\"", gateChip: String? = nil,
        stateDir: String? = nil
    ) -> String {
        scratch.write(
            "doctor-\(UUID().uuidString.prefix(6)).toml",
            """
            [gateway]
            id = "KZ-WAG-DOCTOR"
            state_dir = "\(stateDir ?? scratch.path + "/state")"
            control_socket = "\(scratch.path)/control.sock"
            profile_path = ["Firmware-config/profiles"]
            [buffer]
            max_bytes = 67108864
            [upstream]
            \(upstream)
            [[bus]]
            name = "line"
            \(bus)
            [[device]]
            name = "axlebox-1"
            bus = "line"
            unit = \(unit)
            profile = "axle-bearing-sensor"
            poll_interval_ms = 1000
            """
                + (gateChip.map {
                    "\n[[gate]]\nname = \"north-barrier\"\nchip = \"\($0)\"\nopen_line = 17\nclosed_line = 18\n"
                } ?? "\n"))
    }

    func tcpBus(_ port: Int) -> String { "transport = \"tcp\"\nhost = \"127.0.0.1\"\nport = \(port)" }

    /// Runs doctor; returns its exit status and human output.
    func doctor(
        _ config: String, scratch: Scratch, environment: [String: String] = [:], extra: [String] = []
    ) throws -> (status: Int32, output: String) {
        let process = try TestProcess(
            Binaries.railgate, ["doctor", "--config", config] + extra, scratch: scratch, name: "doctor",
            environment: environment)
        let status = try process.waitForExit(seconds: 120)
        return (status, process.output)
    }

    /// The lines of `output` that start with `prefix`.
    func lines(_ output: String, _ prefix: String) -> [String] {
        output.split(separator: "\n").map(String.init).filter { $0.hasPrefix(prefix) }
    }

    @Test("a dead simulated device: the bus fails, naming the device it strands, with the remedy")
    func deadDevice() throws {
        let scratch = Scratch()
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let port = wagon.port
        try wagon.kill()
        let result = try doctor(config(scratch, bus: tcpBus(port)), scratch: scratch)
        #expect(result.status == 69, "\(result.output)")
        let failed = lines(result.output, "fail bus line:")
        #expect(failed.count == 1, "\(result.output)")
        #expect(failed.first?.contains("connect to tcp 127.0.0.1:\(port)") == true)
        #expect(failed.first?.contains("strands axlebox-1 (unit 7)") == true, "\(failed)")
        #expect(failed.first?.contains("fix: check the host and port") == true, "\(failed)")
    }

    @Test("a wrong baud rate on a serial line: the scan finds the one the device answers at, and says how long it took")
    func wrongBaudRate() throws {
        let scratch = Scratch()
        let line = try SerialLine(scratch: scratch)
        defer { line.stop() }
        let sim = try TestProcess(
            Binaries.simulator,
            [
                "wagon", "--profile", "axle-bearing-sensor", "--unit", "7", "--rtu", line.slaveSide, "--baud", "9600",
                "--parity", "even",
            ],
            scratch: scratch, name: "sim")
        _ = try sim.waitForOutputLine(containing: "serving")
        let bus = """
            transport = "rtu"
            device = "\(line.masterSide)"
            baud = 19200
            parity = "even"
            timeout_ms = 300
            retries = 0
            """
        let started = Date()
        let result = try doctor(config(scratch, bus: bus), scratch: scratch)
        let took = Date().timeIntervalSince(started)
        #expect(result.status == 69, "\(result.output)")
        let failed = lines(result.output, "fail bus line:").first ?? ""
        #expect(failed.contains("silent at 19200 8E1"), "\(result.output)")
        #expect(failed.contains("axlebox-1 (unit 7) answers at 9600 8E1"), "\(result.output)")
        #expect(failed.contains("scan of 1 setting took"), "\(result.output)")
        #expect(failed.contains("fix: set baud = 9600, parity = \"even\" in [[bus]] line"), "\(result.output)")
        #expect(lines(result.output, "fail device axlebox-1:").first?.contains("answers at 9600 8E1") == true)
        #expect(took < 30, "doctor took \(took) s")

        // The same line at the right rate: the device answers, no scan, exit 0.
        let right = bus.replacingOccurrences(of: "baud = 19200", with: "baud = 9600")
        let healthy = try doctor(config(scratch, bus: right), scratch: scratch)
        #expect(healthy.status == 0, "\(healthy.output)")
        #expect(lines(healthy.output, "ok   device axlebox-1: unit 7 answers in").count == 1, "\(healthy.output)")
        #expect(!healthy.output.contains("scan"), "\(healthy.output)")
    }

    @Test("a silent line with no answer at any setting: the hints (A/B, termination) and a bounded scan")
    func silentLine() throws {
        let scratch = Scratch()
        let line = try SerialLine(scratch: scratch)
        defer { line.stop() }
        let bus = """
            transport = "rtu"
            device = "\(line.masterSide)"
            baud = 19200
            parity = "even"
            timeout_ms = 200
            retries = 0
            """
        let started = Date()
        let result = try doctor(config(scratch, bus: bus), scratch: scratch, extra: ["--scan-seconds", "3"])
        let took = Date().timeIntervalSince(started)
        #expect(result.status == 69, "\(result.output)")
        let failed = lines(result.output, "fail bus line:")
        #expect(failed.contains { $0.contains("stopped at --scan-seconds 3") && $0.contains("swap A/B") }, "\(failed)")
        #expect(failed.contains { $0.contains("strands axlebox-1 (unit 7)") }, "\(failed)")
        // Two scans of 3 s each, the probe and the start: well under 20 s even on a loaded box.
        #expect(took < 20, "doctor took \(took) s")
    }

    @Test(
        "a silent line with many devices: the baud rate scan stops at --scan-seconds, not after every device at a setting, and counts the settings there are"
    )
    func silentLineManyDevices() throws {
        let scratch = Scratch()
        let line = try SerialLine(scratch: scratch)
        defer { line.stop() }
        let bus = """
            transport = "rtu"
            device = "\(line.masterSide)"
            baud = 19200
            parity = "even"
            timeout_ms = 100
            retries = 0
            """
        // 20 silent devices: asking each at one setting takes at least 20 x 150 ms = 3 s.
        let base = try String(contentsOfFile: config(scratch, bus: bus), encoding: .utf8)
        let devices = (11...29).map {
            "[[device]]\nname = \"axlebox-\($0)\"\nbus = \"line\"\nunit = \($0)\nprofile = \"axle-bearing-sensor\"\n"
        }
        let file = scratch.write("doctor-many.toml", base + devices.joined(separator: "\n"))
        let result = try doctor(file, scratch: scratch, extra: ["--scan-seconds", "1"])
        #expect(result.status == 69, "\(result.output)")
        let scan = try #require(lines(result.output, "fail bus line: no answer at").first, "\(result.output)")
        #expect(scan.contains("of 23 other baud rates/parities"), "\(scan)")
        #expect(scan.contains("stopped at --scan-seconds 1"), "\(scan)")
        // "scan took 1.2 s": the deadline plus at most one try, never a whole setting's 3 s.
        let took = try #require(scan.firstMatch(of: /scan took (\d+)\.(\d) s/), "\(scan)")
        #expect(Int(took.1)! * 10 + Int(took.2)! < 30, "\(scan)")
    }

    @Test("a TCP device whose host name does not resolve: the bus fails saying so, not 'Connection refused'")
    func unresolvableHost() throws {
        let scratch = Scratch()
        let bus = "transport = \"tcp\"\nhost = \"no-such-host.invalid\"\nport = 502"
        let result = try doctor(config(scratch, bus: bus), scratch: scratch)
        #expect(result.status == 69, "\(result.output)")
        let failed = try #require(lines(result.output, "fail bus line:").first, "\(result.output)")
        #expect(failed.contains("resolve no-such-host.invalid"), "\(failed)")
        #expect(!failed.contains("Connection refused"), "\(failed)")
        #expect(failed.contains("strands axlebox-1 (unit 7)"), "\(failed)")
        #expect(failed.contains("fix: check the host name and DNS"), "\(failed)")
    }

    @Test(
        "a serial device the service user cannot open: the bus fails naming owner, group and mode, and the usermod remedy",
        .enabled(
            if: getuid() == 0 && FileManager.default.fileExists(atPath: "/usr/sbin/runuser"), "needs root and runuser"))
    func serialDeviceNotOpenable() throws {
        let scratch = Scratch()
        chmod(scratch.path, 0o755)
        let device = scratch.write("ttyUSB0", "")
        let dialout = try #require(getgrnam("dialout")?.pointee.gr_gid, "no dialout group")
        chown(device, 0, dialout)
        chmod(device, 0o660)
        let file = config(scratch, bus: "transport = \"rtu\"\ndevice = \"\(device)\"\nbaud = 19200")
        chmod(file, 0o644)
        // doctor as nobody, on a box without a railgate user: the user running it is the one checked.
        let process = try TestProcess(
            "/usr/sbin/runuser", ["-u", "nobody", "--", Binaries.railgate, "doctor", "--config", file],
            scratch: scratch, name: "doctor")
        let status = try process.waitForExit(seconds: 60)
        #expect(status == 69, "\(process.output) \(process.errorOutput)")
        if getpwnam("railgate") == nil {
            let failed = lines(process.output, "fail bus line: \(device) (owner root, group dialout, mode 660)").first
            #expect(failed?.contains("cannot be opened by nobody") == true, "\(process.output)")
            #expect(failed?.contains("strands axlebox-1 (unit 7)") == true, "\(process.output)")
            #expect(failed?.contains("fix: usermod -aG dialout nobody") == true, "\(process.output)")
        }
    }

    @Test("a unit id that changed: the scan finds the new one and names it in the remedy")
    func unitIdChanged() throws {
        let scratch = Scratch()
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "9", scratch: scratch)
        let result = try doctor(config(scratch, bus: tcpBus(wagon.port), unit: 7), scratch: scratch)
        #expect(result.status == 69, "\(result.output)")
        #expect(lines(result.output, "fail device axlebox-1: unit 7 does not answer").count == 1, "\(result.output)")
        let scan = lines(result.output, "fail bus line: unit id scan:").first ?? ""
        #expect(scan.contains("unit 9 answers and is not configured"), "\(result.output)")
        #expect(scan.contains("the unit id of axlebox-1 changed from 7 to 9: set unit = 9"), "\(scan)")
        _ = wagon
    }

    @Test("a missing GPIO chip: the gate fails with the chips that are there and the remedy")
    func missingChip() throws {
        let scratch = Scratch()
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let result = try doctor(
            config(scratch, bus: tcpBus(wagon.port), gateChip: "gpiochip9"), scratch: scratch)
        #expect(result.status == 69, "\(result.output)")
        let failed = lines(result.output, "fail gate north-barrier: GPIO chip gpiochip9 not found").first ?? ""
        #expect(failed.contains("fix: "), "\(result.output)")
        _ = wagon
    }

    @Test("a gate line held by another program: the gate fails naming the holder (its consumer name) and the remedy")
    func heldLine() throws {
        let scratch = Scratch()
        let gate = try GateSimulator(scratch: scratch)
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let watch = try TestProcess(
            Binaries.railgate, ["gpio", "watch", "--chip", gate.chip, "--line", "18"], scratch: scratch, name: "watch")
        defer {
            watch.signal(SIGTERM)
            _ = try? watch.waitForExit()
        }
        let file = config(scratch, bus: tcpBus(wagon.port), gateChip: gate.chip)
        let failed = try eventually("doctor seeing line 18 held") {
            let result = try doctor(file, scratch: scratch)
            return lines(result.output, "fail gate north-barrier: GPIO chip \(gate.chip) line 18 is held by").first
                .map { (result.status, $0) }
        }
        #expect(failed.0 == 69)
        #expect(failed.1.contains("held by 'railgate-watch'; fix: a `railgate gpio watch` holds it"), "\(failed.1)")
        _ = wagon
    }

    @Test("a stopped broker: the upstream fails, records stay buffered, with the remedy")
    func stoppedBroker() throws {
        let scratch = Scratch()
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let broker = try Broker(scratch: scratch)
        let port = broker.port
        try broker.stop()
        let result = try doctor(
            config(scratch, bus: tcpBus(wagon.port), upstream: "url = \"mqtt://127.0.0.1:\(port)\""),
            scratch: scratch)
        #expect(result.status == 69, "\(result.output)")
        let failed = lines(result.output, "fail upstream mqtt://127.0.0.1:\(port): cannot reach the broker").first
        #expect(failed?.contains("fix: check the broker runs") == true, "\(result.output)")
        _ = wagon
    }

    @Test(
        "an expired client certificate: the upstream fails naming the date, and the broker refuses the handshake",
        .enabled(if: FileManager.default.fileExists(atPath: "/usr/bin/openssl"), "needs openssl for test certificates"))
    func expiredClientCertificate() throws {
        let scratch = Scratch()
        let files = try TLSTests().certificates(scratch)
        let path = scratch.path
        for arguments in [
            [
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(path)/client.key", "-out", "\(path)/client.csr",
                "-subj", "/CN=railgate-KZ-WAG-DOCTOR",
            ],
            // Valid until yesterday: -days -1 puts notAfter a day before now.
            [
                "x509", "-req", "-in", "\(path)/client.csr", "-CA", files.ca, "-CAkey", "\(path)/ca.key",
                "-CAcreateserial", "-out", "\(path)/client.pem", "-days", "-1",
            ],
        ] {
            let made = try TestProcess.run("/usr/bin/openssl", arguments, scratch: scratch)
            #expect(made.status == 0, "openssl \(arguments[0]): \(made.error)")
        }
        let broker = try Broker(scratch: scratch, tls: files, tlsOptions: ["require_certificate true"])
        let tlsPort = try #require(broker.tlsPort)
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let upstream = """
            url = "mqtts://127.0.0.1:\(tlsPort)"
            ca_file = "\(files.ca)"
            cert_file = "\(path)/client.pem"
            key_file = "\(path)/client.key"
            """
        let result = try doctor(config(scratch, bus: tcpBus(wagon.port), upstream: upstream), scratch: scratch)
        #expect(result.status == 69, "\(result.output)")
        let failed = lines(result.output, "fail upstream mqtts://127.0.0.1:\(tlsPort): cert_file \(path)/client.pem")
        #expect(failed.first?.contains("CN=railgate-KZ-WAG-DOCTOR") == true, "\(result.output)")
        #expect(failed.first?.contains("expired on") == true, "\(result.output)")
        #expect(failed.first?.contains("fix: install a renewed certificate") == true, "\(result.output)")
        // The real session shows the broker refusing it.
        let session = lines(result.output, "fail upstream mqtts://127.0.0.1:\(tlsPort): no MQTT session").first
        #expect(session != nil, "\(result.output)")
        _ = (broker, wagon)
    }

    @Test("a read-only state directory: the state_dir fails (nothing can be buffered) with the remedy")
    func readOnlyStateDirectory() throws {
        let scratch = Scratch()
        let state = scratch.path + "/readonly-state"
        mkdir(state, 0o755)
        let mounted = try TestProcess.run(
            "/bin/mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", state], scratch: scratch)
        try #require(mounted.status == 0, "a read-only tmpfs needs mount (root): \(mounted.error)")
        defer { _ = try? TestProcess.run("/bin/umount", [state], scratch: scratch) }
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let result = try doctor(config(scratch, bus: tcpBus(wagon.port), stateDir: state), scratch: scratch)
        #expect(result.status == 69, "\(result.output)")
        let failed = lines(result.output, "fail state_dir: \(state) does not take a file: Read-only file system").first
        #expect(failed?.contains("fix: the file system is mounted read-only") == true, "\(result.output)")
        _ = wagon
    }

    @Test("a clock set to 1970 (test hook RAILGATE_TEST_HOOK_CLOCK): the clock fails with the remedy")
    func clockIn1970() throws {
        let scratch = Scratch()
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let result = try doctor(
            config(scratch, bus: tcpBus(wagon.port)), scratch: scratch,
            environment: ["RAILGATE_TEST_HOOK_CLOCK": "86400"])
        #expect(result.status == 69, "\(result.output)")
        let failed = lines(result.output, "fail clock: reads 1970-01-02T00:00:00Z, before 2024").first
        #expect(failed?.contains("fix: set the time source") == true, "\(result.output)")

        // --json: the same finding as one check with status, subject, seen and remedy.
        let json = try doctor(
            config(scratch, bus: tcpBus(wagon.port)), scratch: scratch,
            environment: ["RAILGATE_TEST_HOOK_CLOCK": "86400"], extra: ["--json"])
        #expect(json.status == 69)
        let document = try JSONReader.parse(json.output)
        #expect(document["ok"] == .bool(false))
        let clock = document["checks"]?.arrayValue?.first { $0["subject"] == .string("clock") }
        #expect(clock?["status"] == .string("fail"), "\(json.output)")
        #expect(clock?["seen"]?.stringValue?.hasPrefix("reads 1970-01-02T00:00:00Z") == true, "\(json.output)")
        #expect(clock?["remedy"]?.stringValue?.hasPrefix("set the time source") == true, "\(json.output)")
        _ = wagon
    }

    @Test(
        "a daemon polling a serial line at the wrong baud rate: doctor leaves the line to it, fails the device and the bus"
    )
    func daemonOnASilentLine() throws {
        let scratch = Scratch()
        let line = try SerialLine(scratch: scratch)
        defer { line.stop() }
        let sim = try TestProcess(
            Binaries.simulator,
            [
                "wagon", "--profile", "axle-bearing-sensor", "--unit", "7", "--rtu", line.slaveSide, "--baud", "9600",
                "--parity", "even",
            ],
            scratch: scratch, name: "sim")
        _ = try sim.waitForOutputLine(containing: "serving")
        let file = config(
            scratch,
            bus:
                "transport = \"rtu\"\ndevice = \"\(line.masterSide)\"\nbaud = 19200\nparity = \"even\"\ntimeout_ms = 200"
        )
        let gateway = try TestProcess(Binaries.railgate, ["run", "--config", file], scratch: scratch, name: "railgate")
        defer {
            gateway.signal(SIGTERM)
            _ = try? gateway.waitForExit()
        }
        try eventually("the daemon finding the device silent", seconds: 60) {
            try daemonStatus(scratch)["devices"]?.arrayValue?.first?["answering"] == .bool(false) ? () : nil
        }
        let result = try doctor(file, scratch: scratch)
        #expect(result.status == 69, "\(result.output)")
        #expect(
            lines(result.output, "ok   bus line: \(line.masterSide) present, openable by").first?.contains(
                "the daemon polls it") == true, "\(result.output)")
        let device = lines(result.output, "fail device axlebox-1: unit 7 not answering").first ?? ""
        #expect(device.contains("stop the daemon (systemctl stop railgate) and run doctor again"), "\(result.output)")
        #expect(
            lines(result.output, "fail bus line: no device on it answers; strands axlebox-1 (unit 7)").count == 1,
            "\(result.output)")
        // doctor did not probe the line beside the daemon: no scan ran.
        #expect(!result.output.contains("scan of") && !result.output.contains("unit id scan"), "\(result.output)")
    }

    @Test(
        "the service's watchdog: fresh under systemd's WatchdogSec (ok, with the period), then a stalled bus loop fails"
    )
    func watchdogFreshThenStalled() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let file = gatewayConfig(
            scratch: scratch, brokerPort: broker.port,
            devices: [("axlebox-1", simulator.port, 7, "axle-bearing-sensor")], pollMs: 200)
        let stallFile = scratch.path + "/stall"
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", file], scratch: scratch, name: "railgate",
            environment: [
                "NOTIFY_SOCKET": "", "WATCHDOG_USEC": "2000000", "RAILGATE_TEST_HOOK_STALL_FILE": stallFile,
            ])
        defer {
            gateway.signal(SIGTERM)
            _ = try? gateway.waitForExit()
        }
        try eventually("the daemon polling the device") {
            (try daemonStatus(scratch)["devices"]?.arrayValue?.first?["polls"]?.intValue ?? 0) > 0 ? () : nil
        }
        var result = try doctor(file, scratch: scratch)
        let fresh = lines(result.output, "ok   watchdog: systemd watchdog every 2 s; no service loop is overdue")
        #expect(fresh.count == 1, "\(result.output)")
        #expect(lines(result.output, "ok   daemon: running for").first?.contains("pid \(gateway.pid)") == true)

        // The bus loop takes the hook and hangs: once its heartbeat is overdue, doctor fails it.
        #expect(FileManager.default.createFile(atPath: stallFile, contents: Data()))
        let bus = "bus bus-\(simulator.port)"
        result = try eventually("doctor naming the stalled loop", seconds: 60, intervalMs: 500) {
            let result = try doctor(file, scratch: scratch)
            return lines(result.output, "fail watchdog: stalled: \(bus)").isEmpty ? nil : result
        }
        #expect(result.status == 69, "\(result.output)")
        #expect(lines(result.output, "fail watchdog:").first?.contains("fix: systemd restarts it") == true)
    }

    /// While the link is up the buffer files hold mostly acknowledged records, waiting for their
    /// segment to go: the files' bytes over the few unacknowledged records made each record seem
    /// many kilobytes long and the outage room 10-20 times too short.
    @Test("the outage room counts records at the size they take on disk, not the files' bytes over the few waiting")
    func outageRoomAtRecordSize() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let file = gatewayConfig(
            scratch: scratch, brokerPort: broker.port, devices: [("axlebox-1", wagon.port, 7, "axle-bearing-sensor")],
            pollMs: 100)
        let gateway = try TestProcess(Binaries.railgate, ["run", "--config", file], scratch: scratch, name: "railgate")
        try eventually("100 records acknowledged", seconds: 60, intervalMs: 200) {
            (try daemonStatus(scratch)["upstream"]?["acked_seq"]?.intValue ?? 0) >= 100 ? () : nil
        }
        try broker.stop()
        try eventually("5 records waiting", seconds: 60, intervalMs: 200) {
            (try daemonStatus(scratch)["buffer"]?["records"]?.intValue ?? 0) >= 5 ? () : nil
        }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)

        let stats = try TestProcess.run(
            Binaries.railgate, ["buffer", "stats", "--state-dir", scratch.path + "/state", "--json"], scratch: scratch)
        let json = try JSONReader.parse(stats.output)
        let bytes = try #require(json["bytes"]?.intValue)
        let stored = try #require(json["stored_records"]?.intValue)
        let waiting = try #require(json["records"]?.intValue)
        let room = try #require(json["free_bytes"]?.intValue)
        // A fresh buffer that never filled: every seq from 1 is still in its files.
        #expect(stored == json["last_seq"]?.intValue, "\(stats.output)")
        #expect(waiting >= 5 && stored >= 100 + waiting, "\(stats.output)")

        let result = try doctor(file, scratch: scratch)
        let line = try #require(
            result.output.split(separator: "\n").first { $0.contains("buffer:") && $0.contains("room for") },
            "\(result.output)")
        let match = try #require(line.firstMatch(of: /room for (\S+) of outage at (\d+) records\/h/), "\(line)")
        let hours = try #require(Self.hours(String(match.1)), "\(line)")
        #expect(match.2 == "36000", "the configured poll rate, 10 a second: \(line)")
        let expected = Double(room) / (36000 * Double(max(64, bytes / stored)))
        #expect(abs(hours - expected) <= max(expected * 0.02, 1.0 / 60), "\(line); expected \(expected) h")
        _ = wagon
    }

    /// Hours from a duration as doctor prints it (`3d04h`, `1h02m`, `3m05s`, `42 s`).
    static func hours(_ text: String) -> Double? {
        if let match = text.wholeMatch(of: /(\d+)d(\d+)h/) { return Double(match.1)! * 24 + Double(match.2)! }
        if let match = text.wholeMatch(of: /(\d+)h(\d+)m/) { return Double(match.1)! + Double(match.2)! / 60 }
        if let match = text.wholeMatch(of: /(\d+)m(\d+)s/) { return (Double(match.1)! * 60 + Double(match.2)!) / 3600 }
        return nil
    }

    @Test(
        "a healthy configuration: exit 0, no scan, and the human output matches the golden file (variable parts masked)"
    )
    func healthyGolden() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let gate = try GateSimulator(scratch: scratch)
        mkdir(scratch.path + "/state", 0o755)
        let file = config(
            scratch, bus: tcpBus(wagon.port), upstream: "url = \"mqtt://127.0.0.1:\(broker.port)\"",
            gateChip: gate.chip)
        let started = Date()
        let result = try doctor(file, scratch: scratch)
        let took = Date().timeIntervalSince(started)
        #expect(result.status == 0, "\(result.output)")
        #expect(took < 15, "a healthy doctor took \(took) s")
        let masked = Self.mask(
            result.output,
            replacing: [
                (file, "$CONFIG"), (scratch.path, "$SCRATCH"), (":\(broker.port)", ":$BROKER_PORT"),
                (":\(wagon.port)", ":$WAGON_PORT"),
            ])
        let golden = try String(
            contentsOfFile: "Tests/IntegrationTests/Fixtures/doctor-healthy.golden", encoding: .utf8)
        #expect(masked == golden, "doctor's output changed; masked output:\n\(masked)")
        _ = (broker, wagon, gate)
    }

    /// The output with the test's paths and ports named, and the parts that vary from run to run
    /// (the clock's reading, latencies, free space, durations) replaced by `_`.
    static func mask(_ output: String, replacing names: [(String, String)]) -> String {
        var text = output
        for (value, name) in names { text = text.replacingOccurrences(of: value, with: name) }
        let patterns: [(String, String)] = [
            // ok or warn by whether this machine's clock is synchronised.
            (#"(?m)^\w+ +clock: .*$"#, "____ clock: _"),
            (#"answers in \d+ ms"#, "answers in _ ms"),
            (#"\d+(\.\d)? (B|KiB|MiB|GiB) free on disk"#, "_ free on disk"),
            (#"room for [^ ]+ of outage"#, "room for _ of outage"),
            (#"session \(\d+(\.\d)? m?s\)"#, "session (_)"),
        ]
        for (pattern, template) in patterns {
            text = text.replacingOccurrences(of: pattern, with: template, options: .regularExpression)
        }
        return text
    }
}
