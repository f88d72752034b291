import Foundation
import RailgateBuffer
import RailgateCore
import RailgateSystem
import Testing

/// Golden tests of the text people read: `status`, `modbus read`, `buffer stats`, the usage line
/// of a failed subcommand, `railgate-sim --version`, completions and man pages. Where the output
/// holds what varies from run to run (ports, paths, counts, times) it is masked first.
@Suite("Human output", .serialized)
struct HumanOutputTests {
    /// Replaces what varies between runs: the scratch path, then every number (a run of digits,
    /// with its decimals) by `N`, then runs of spaces by one (column widths follow the numbers).
    static func masked(_ text: String, scratch: Scratch) -> String {
        var text = text.replacingOccurrences(of: scratch.path, with: "SCRATCH")
        text = text.replacingOccurrences(of: #"[0-9]+(\.[0-9]+)?"#, with: "N", options: .regularExpression)
        text = text.replacingOccurrences(of: #" +"#, with: " ", options: .regularExpression)
        return text
    }

    @Test("status: a fixed daemon document renders exactly (aligned columns, units, ranges, plurals)")
    func statusGolden() throws {
        let scratch = Scratch()
        let document = """
            {"gateway":"KZ-WAG-00042","version":"0.1.0","gpio_backend":"libgpiod 1.6.3 (v1 API)","uptime_s":3725.4,\
            "buffer":{"records":5,"bytes":4927,"first_seq":12,"next_seq":17,"durable_seq":16,"dropped":3,\
            "dropped_normal":2,"dropped_alarm":1,"max_bytes":16777216,"waiting_in_memory":0,"disk_error":null,\
            "lost_records":0,"lost_seqs":0,"last_loss":null},\
            "upstream":{"state":"connected","acked_seq":11,"batches":1,"in_flight":5,"url":"mqtt://127.0.0.1:1883",\
            "last_error":null,"undeliverable":0},\
            "buses":[{"name":"wagon-rs485","endpoint":"rtu /dev/ttyS1 19200 8E1","utilisation":0.123},\
            {"name":"doors","endpoint":"tcp 192.0.2.20:502","utilisation":0.004}],\
            "devices":[{"name":"axlebox-bogie-a","bus":"wagon-rs485","polls":1234,"errors":0,"last_error":null,\
            "answering":true,"requests":3702},{"name":"brake","bus":"wagon-rs485","polls":7,"errors":7,\
            "last_error":"timeout","answering":false,"requests":21}],\
            "gates":[{"name":"north-barrier","state":"closed","fault":null,"chip":"gpiochip0","error":null}],\
            "inputs":[{"name":"cabinet-door","state":"unavailable","chip":"gpiochip1","line":5,\
            "error":"chip gpiochip1 not found"}]}
            """
        let server = try OneReplySocket(path: scratch.path + "/control.sock", reply: document)
        let result = try TestProcess.run(Binaries.railgate, ["status", "--socket", server.path], scratch: scratch)
        #expect(result.status == 0, "\(result.error)")
        #expect(server.received == "status")
        let expected = """
            gateway   KZ-WAG-00042, railgate 0.1.0, up 1h02m, GPIO libgpiod 1.6.3 (v1 API)
            buffer    5 records (4.8 KiB of 16 MiB, 0%), seqs 12-16, next seq 17, on flash through seq 16, 3 dropped (2 normal, 1 alarm)
            upstream  connected mqtt://127.0.0.1:1883, acknowledged through seq 11, 1 batch, 5 in flight

            bus          endpoint                  line busy
            wagon-rs485  rtu /dev/ttyS1 19200 8E1        12%
            doors        tcp 192.0.2.20:502               0%

            device           bus          polls  errors  requests  state
            axlebox-bogie-a  wagon-rs485   1234       0      3702  answering
            brake            wagon-rs485      7       7        21  NOT ANSWERING  last error: timeout

            gate           state   chip
            north-barrier  closed  gpiochip0

            input         state        chip       line
            cabinet-door  unavailable  gpiochip1  5  (chip gpiochip1 not found)

            """
        #expect(result.output == expected, "got:\n\(result.output)")
    }

    @Test("status and buffer stats against a real daemon: the same layout, numbers masked")
    func statusAndBufferStatsFromDaemon() throws {
        let scratch = Scratch()
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let config = gatewayConfig(
            scratch: scratch, brokerPort: nil, devices: [("axlebox-1", simulator.port, 7, "axle-bearing-sensor")])
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        _ = try eventually("three polls in the daemon's status", seconds: 60) { () -> Bool? in
            (try daemonStatus(scratch)["devices"]?.arrayValue?.first?["polls"]?.intValue ?? 0) >= 3 ? true : nil
        }
        let status = try TestProcess.run(
            Binaries.railgate, ["status", "--socket", scratch.path + "/control.sock"], scratch: scratch)
        #expect(status.status == 0, "\(status.error)")
        let port = "\(simulator.port)"
        let expectedStatus = """
            gateway KZ-WAG-TEST, railgate N.N, up DURATION, GPIO libgpiod N.N (vN API)
            buffer N records (SIZE of SIZE, N%), seqs N-N, next seq N, on flash through seq N, none dropped
            upstream disabled, nothing acknowledged yet, N batches

            bus endpoint line busy
            bus-N tcp N.N:N N%

            device bus polls errors requests state
            axlebox-N bus-N N N N answering

            """
        let statusText = Self.masked(status.output, scratch: scratch)
            .replacingOccurrences(of: #"up [^,]+,"#, with: "up DURATION,", options: .regularExpression)
            .replacingOccurrences(of: #"N(\.N)? (B|KiB|MiB)"#, with: "SIZE", options: .regularExpression)
        #expect(
            statusText.replacingOccurrences(of: #"on flash through seq N, "#, with: "", options: .regularExpression)
                == expectedStatus.replacingOccurrences(of: "on flash through seq N, ", with: ""),
            "got:\n\(status.output)")
        // The columns line up: each header starts where its column starts in the rows.
        let lines = status.output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if let header = lines.firstIndex(where: { $0.hasPrefix("device ") }), header + 1 < lines.count {
            let row = lines[header + 1]
            #expect(row.hasPrefix("axlebox-1 "))
            let busColumn = lines[header].range(of: "bus")!.lowerBound.utf16Offset(in: lines[header])
            #expect(row.range(of: "bus-\(port)")?.lowerBound.utf16Offset(in: row) == busColumn, "\(row)")
            let stateColumn = lines[header].range(of: "state")!.lowerBound.utf16Offset(in: lines[header])
            #expect(row.range(of: "answering")?.lowerBound.utf16Offset(in: row) == stateColumn, "\(row)")
        } else {
            Issue.record("no device table: \(status.output)")
        }

        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        let stats = try TestProcess.run(
            Binaries.railgate, ["buffer", "stats", "--state-dir", scratch.path + "/state"], scratch: scratch)
        #expect(stats.status == 0, "\(stats.error)")
        let statsText = Self.masked(stats.output, scratch: scratch)
            .replacingOccurrences(of: #"N-N-NTN:N:NZ"#, with: "TIME", options: .regularExpression)
            .replacingOccurrences(of: #"\(N[smhd](N[smh])? ago\)"#, with: "(AGE ago)", options: .regularExpression)
            .replacingOccurrences(
                of: #"about N[smhd](N[smh])? more"#, with: "about DURATION more", options: .regularExpression
            )
            .replacingOccurrences(of: #"N(\.N)? (B|KiB|MiB)/h"#, with: "RATE", options: .regularExpression)
            .replacingOccurrences(of: #"N(\.N)? (B|KiB|MiB|GiB)"#, with: "SIZE", options: .regularExpression)
        let expectedStats = """
            records N unacknowledged, seqs N-N, nothing acknowledged yet, next seq N
            size SIZE of SIZE (N%)
            dropped none
            oldest TIME (AGE ago)
            rate the unacknowledged records span under a minute, too little to measure how fast the free space (SIZE) would fill

            """
        // A few seconds of records: no rate (OutageRoomTests has the rate over a minute and more).
        #expect(statsText == expectedStats, "got:\n\(stats.output)")
        _ = simulator
    }

    /// One record a second for two minutes; and 25 a second for 80 s, where the last 1,000 seqs
    /// span only 40 s (the rate once stayed unmeasured above 16.7 records a second).
    @Test(
        "buffer stats: the rate over a minute or more of records waiting (n records, n - 1 intervals), the hours left",
        arguments: [(121, 1000), (2001, 40)] as [(Int, Int64)])
    func bufferStatsRate(count: Int, intervalMs: Int64) throws {
        let scratch = Scratch()
        let state = scratch.path + "/state"
        let buffer = try DiskBuffer(
            stateDirectory: state, settings: BufferSettings(maxBytes: 4 << 20, syncIntervalMs: 60_000))
        let spanMs = Int64(count - 1) * intervalMs
        let start = WallClock.now().millisecondsSinceEpoch - spanMs
        var bytesAfterFirst = 0
        for index in 0..<count {
            let record = Record(
                timestamp: Timestamp(millisecondsSinceEpoch: start + Int64(index) * intervalMs), source: "axlebox-1",
                body: .sample(values: [("bearing_temp_1", .number(40 + Double(index) / 10))], errors: []))
            let seq = try buffer.append(record)
            // Each record's bytes and its frame (20 bytes), as `buffer stats` counts them.
            if index > 0 { bytesAfterFirst += record.encoded(seq: seq).count + 20 }
        }
        try buffer.sync()
        buffer.close()

        let stats = try TestProcess.run(
            Binaries.railgate, ["buffer", "stats", "--state-dir", state, "--json"], scratch: scratch)
        let json = try JSONReader.parse(stats.output)
        let rate = try #require(json["bytes_per_hour"]?.doubleValue, "\(json.serialized)")
        #expect(abs(rate - Double(bytesAfterFirst) * 3_600_000 / Double(spanMs)) < 1, "\(json.serialized)")
        let free = try #require(json["free_bytes"]?.intValue)
        let hoursLeft = try #require(json["hours_left"]?.doubleValue)
        #expect(abs(hoursLeft - Double(free) / rate) < 1e-6)
        #expect(json["stored_records"] == .integer(Int64(count)) && json["records"] == .integer(Int64(count)))

        let text = try TestProcess.run(Binaries.railgate, ["buffer", "stats", "--state-dir", state], scratch: scratch)
        let line = try #require(text.output.split(separator: "\n").first { $0.hasPrefix("rate ") }, "\(text.output)")
        #expect(line.contains("recently; the free space (") && line.contains(") holds about "), "\(line)")
    }

    @Test(
        "a daemon that closes without answering (stopping): status says so and exits 69, never an empty answer",
        arguments: [[], ["--json"]])
    func statusWithoutAnswer(extra: [String]) throws {
        let scratch = Scratch()
        let server = try OneReplySocket(path: scratch.path + "/control.sock", reply: nil)
        let result = try TestProcess.run(
            Binaries.railgate, ["status", "--socket", server.path] + extra, scratch: scratch)
        #expect(server.received == "status")
        #expect(result.status == 69, "\(result.output)")
        #expect(result.output.isEmpty, "\(result.output)")
        #expect(result.error.contains("the daemon closed the connection without answering"), "\(result.error)")
    }

    @Test("modbus read: heading, aligned rows with address, registers in hex and value")
    func modbusReadGolden() throws {
        let scratch = Scratch()
        let simulator = try WagonSimulator(
            profile: "axle-bearing-sensor", units: "7", scratch: scratch,
            extra: ["--raw", "holding:100=415,0xFFFE,12", "--raw", "holding:110=0x0000,0x4148,0x0000,0xC2F6"])
        func read(_ arguments: [String]) throws -> String {
            let result = try TestProcess.run(
                Binaries.railgate,
                ["modbus", "read", "--tcp", "127.0.0.1:\(simulator.port)", "--unit", "7"] + arguments, scratch: scratch)
            #expect(result.status == 0, "\(arguments): \(result.error)")
            return result.output.replacingOccurrences(of: ":\(simulator.port)", with: ":PORT")
        }
        #expect(
            try read(["--holding", "--address", "100", "--count", "3", "--type", "i16"]) == """
                unit 7 on tcp 127.0.0.1:PORT: holding registers 100-102 as i16
                address  registers  value
                    100  0x019F       415
                    101  0xFFFE        -2
                    102  0x000C        12

                """)
        #expect(
            try read(["--address", "110", "--count", "2", "--type", "f32", "--order", "CDAB"]) == """
                unit 7 on tcp 127.0.0.1:PORT: holding registers 110-113 as f32 CDAB
                address  registers       value
                    110  0x0000 0x4148    12.5
                    112  0x0000 0xC2F6  -123.0

                """)
        #expect(
            try read(["--address", "100", "--type", "u16"]) == """
                unit 7 on tcp 127.0.0.1:PORT: holding register 100 as u16
                address  registers  value
                    100  0x019F       415

                """)

        // A bad option: the error, then the usage of `modbus read` (not of railgate), exit 64.
        let bad = try TestProcess.run(
            Binaries.railgate, ["modbus", "read", "--tcp", "127.0.0.1:\(simulator.port)", "--bogus", "3"],
            scratch: scratch)
        #expect(bad.status == 64)
        #expect(bad.error.contains("Unknown option '--bogus'"), "\(bad.error)")
        #expect(bad.error.contains("Usage: railgate modbus read (--tcp HOST[:PORT]"), "\(bad.error)")
        #expect(bad.error.contains("See 'railgate modbus read --help'"), "\(bad.error)")
        // A bad --units to scan is refused before any request, with scan's usage.
        let scan = try TestProcess.run(
            Binaries.railgate, ["modbus", "scan", "--tcp", "127.0.0.1:\(simulator.port)", "--units", "9-3"],
            scratch: scratch)
        #expect(scan.status == 64)
        #expect(scan.error.contains("Usage: railgate modbus scan"), "\(scan.error)")
        _ = simulator
    }

    @Test("modbus read --profile: every point with its name, registers and value with its unit")
    func modbusReadProfileGolden() throws {
        let scratch = Scratch()
        let simulator = try WagonSimulator(
            profile: "brake-load-sensor", units: "3", scratch: scratch,
            extra: [
                "--set", "brake_pipe_pressure=5.0", "--set", "brake_cylinder_pressure=0.5", "--set", "load=61.25",
                "--set", "brake_application_count=944", "--set", "door_left_open=false", "--set",
                "door_right_open=true",
            ])
        let arguments = [
            "modbus", "read", "--tcp", "127.0.0.1:\(simulator.port)", "--unit", "3", "--profile", "brake-load-sensor",
            "--profile-path", "Firmware-config/profiles",
        ]
        let result = try TestProcess.run(Binaries.railgate, arguments, scratch: scratch)
        #expect(result.status == 0, "\(result.error)")
        #expect(
            result.output.replacingOccurrences(of: ":\(simulator.port)", with: ":PORT") == """
                unit 3 on tcp 127.0.0.1:PORT: BPL-2 brake pipe pressure and load sensor, 6 points in 3 requests
                point                    table    address  registers      value
                brake_pipe_pressure      holding        0  0x0000 0x40A0  5.0 bar
                brake_cylinder_pressure  holding        2  0x0000 0x3F00  0.5 bar
                load                     holding        4  0x17ED         61.25 t
                brake_application_count  holding        6  0x0000 0x03B0  944 count
                door_left_open           coil           0                 false
                door_right_open          coil           1                 true

                """)
        let json = try TestProcess.run(Binaries.railgate, arguments + ["--json"], scratch: scratch)
        let document = try JSONReader.parse(json.output)
        #expect(document["points"]?.arrayValue?.count == 6)
        #expect(document["points"]?.arrayValue?[2]["value"] == .number(61.25))
        #expect(document["points"]?.arrayValue?[2]["unit"] == .string("t"))
        // A silent unit: every point failed with its reason, exit 69.
        let silent = try TestProcess.run(
            Binaries.railgate,
            arguments.map { $0 == "3" ? "9" : $0 } + ["--timeout-ms", "200"], scratch: scratch)
        #expect(silent.status == 69)
        #expect(silent.output.contains("6 points in 3 requests, 6 failed"), "\(silent.output)")
        #expect(
            silent.output.contains("load                     holding        4             FAILED "), "\(silent.output)")
        _ = simulator
    }

    @Test("railgate-sim records: the demo's view, one line per record with units from the birth message")
    func recordsView() throws {
        let scratch = Scratch()
        let input = scratch.write(
            "sub.txt",
            """
            railgate/G/status {"state":"online","gateway":"G","sources":{"axlebox-2":{"kind":"modbus","points":{"bearing_temp_3":{"unit":"degC","type":"i16"}}},"north-barrier":{"kind":"gate"}}}
            railgate/G/telemetry {"gateway":"G","records":[{"seq":7,"ts":"2026-11-29T02:40:00.123Z","kind":"sample","source":"axlebox-2","values":{"bearing_temp_3":88.5}},{"seq":8,"ts":"2026-11-29T02:40:01.000Z","kind":"event","source":"axlebox-2","point":"bearing_temp_3","event":"alarm_above","value":90.3,"threshold":90,"priority":"alarm"},{"seq":9,"ts":"2026-11-29T02:40:02.000Z","kind":"event","source":"north-barrier","event":"open","previous":"opening","travel_ms":2000,"priority":"normal"}]}
            {"seq":10,"ts":"2026-11-29T02:40:03.000Z","kind":"sample","source":"axlebox-2","values":{"bearing_temp_3":91}}

            """)
        let result = try TestProcess.run(
            "/bin/sh", ["-c", "'\(Binaries.simulator)' records < '\(input)'"], scratch: scratch)
        #expect(result.status == 0, "\(result.error)")
        #expect(
            result.output == """
                gateway G online: 2 sources (axlebox-2, north-barrier)
                02:40:00.123Z  seq 7  axlebox-2        bearing_temp_3 88.5 degC
                02:40:01.000Z  seq 8  axlebox-2        ALARM bearing_temp_3 above 90 degC: 90.3 degC
                02:40:02.000Z  seq 9  north-barrier    GATE  open (was opening, travel 2.0 s)
                02:40:03.000Z  seq 10  axlebox-2        bearing_temp_3 91 degC

                """, "not a terminal: no colour codes")
    }

    @Test("railgate-sim records: a compact/1 batch (payload = \"compact\") prints the same lines as the plain batch")
    func recordsViewCompact() throws {
        let scratch = Scratch()
        let input = scratch.write(
            "sub.txt",
            """
            railgate/G/status {"state":"online","gateway":"G","sources":{"axlebox-1":{"kind":"modbus","points":{"bearing_temp_1":{"unit":"degC","type":"i16"},"bearing_temp_2":{"unit":"degC","type":"i16"}}}}}
            railgate/G/telemetry {"gateway":"G","format":"compact/1","sources":[["axlebox-1","bearing_temp_1","bearing_temp_2","door_open"]],"records":[[1042,1795920000123,0,41.5,39.8,false],[1,1002,0,41.6,null,["timeout"]],{"seq":1044,"ts":"2026-11-29T02:40:02.500Z","kind":"event","source":"axlebox-1","point":"bearing_temp_1","event":"alarm_above","value":93.1,"threshold":90,"priority":"alarm"},[2,1001,0,41.7]]}
            railgate/G/telemetry {"gateway":"G","format":"compact/1","sources":[["axlebox-1"]],"records":[[1,2,9]]}

            """)
        let result = try TestProcess.run(
            "/bin/sh", ["-c", "'\(Binaries.simulator)' records < '\(input)'"], scratch: scratch)
        #expect(result.status == 0, "\(result.error)")
        let lines = result.output.split(separator: "\n").map(String.init)
        #expect(lines.count == 6, "\(result.output)")
        #expect(
            lines.dropFirst().first?.hasSuffix(
                "seq 1042  axlebox-1        bearing_temp_1 41.5 degC, bearing_temp_2 39.8 degC, door_open false")
                == true, "\(result.output)")
        #expect(
            lines.contains {
                $0.contains("seq 1043") && $0.contains("bearing_temp_1 41.6 degC")
                    && $0.contains("FAILED door_open timeout")
            }, "\(result.output)")
        #expect(
            lines.contains { $0.contains("seq 1044") && $0.contains("ALARM bearing_temp_1 above 90 degC: 93.1 degC") },
            "\(result.output)")
        #expect(
            lines.contains { $0.contains("seq 1045") && $0.contains("bearing_temp_1 41.7 degC") }, "\(result.output)")
        // A damaged compact batch (a source index out of range) says so with the topic, never '?'.
        #expect(lines.last?.hasPrefix("railgate/G/telemetry: invalid compact batch") == true, "\(result.output)")
        #expect(!result.output.contains("?"), "\(result.output)")
    }

    @Test("railgate-sim --version, and railgate --version, print the version")
    func versions() throws {
        let scratch = Scratch()
        let simulator = try TestProcess.run(Binaries.simulator, ["--version"], scratch: scratch)
        #expect(simulator.status == 0)
        #expect(simulator.output == RailgateVersion.current + "\n")
        let railgate = try TestProcess.run(Binaries.railgate, ["--version"], scratch: scratch)
        #expect(railgate.status == 0)
        #expect(railgate.output.hasPrefix(RailgateVersion.current + ", GPIO: "))
    }

    @Test("completions for bash, zsh and fish (what make completions runs) name every subcommand")
    func completions() throws {
        let scratch = Scratch()
        let subcommands = [
            (Binaries.railgate, ["run", "check", "status", "modbus", "gpio", "buffer", "doctor", "scan", "stats"]),
            (Binaries.simulator, ["wagon", "gate", "gate-set", "records"]),
        ]
        for (binary, names) in subcommands {
            for shell in ["bash", "zsh", "fish"] {
                let result = try TestProcess.run(binary, ["--generate-completion-script", shell], scratch: scratch)
                #expect(result.status == 0)
                #expect(result.output.count > 1000, "\(binary) \(shell)")
                for name in names {
                    #expect(result.output.contains(name), "\(binary) \(shell) completion misses \(name)")
                }
            }
        }
        let bash = try TestProcess.run(
            "/bin/bash",
            ["-c", "source <('\(Binaries.railgate)' --generate-completion-script bash) && complete -p railgate"],
            scratch: scratch)
        #expect(bash.output.contains("complete -o filenames -F _railgate railgate"), "\(bash.error)")
    }

    @Test(
        "make man's pages exist, are valid man pages and document every subcommand with its examples",
        .enabled(
            if: FileManager.default.fileExists(atPath: projectRoot + "/.build/man/railgate.1"),
            "no .build/man: make man (make test runs it) writes the pages"))
    func manPages() throws {
        let scratch = Scratch()
        for (tool, names) in [
            ("railgate", ["run", "check", "status", "modbus", "gpio", "buffer", "doctor", "Examples:"]),
            ("railgate-sim", ["wagon", "gate", "gate-set", "records", "Examples:"]),
        ] {
            let path = projectRoot + "/.build/man/\(tool).1"
            let page = try String(contentsOfFile: path, encoding: .utf8)
            #expect(page.contains(".Dt \(tool.uppercased()) 1"))
            for name in names { #expect(page.contains(name), "\(tool).1 misses \(name)") }
            let rendered = try TestProcess.run("/usr/bin/man", ["-l", path], scratch: scratch)
            #expect(rendered.status == 0, "\(rendered.error)")
            #expect(rendered.output.contains("SYNOPSIS"))
        }
        for file in ["railgate.bash", "_railgate", "railgate.fish", "railgate-sim.bash", "_railgate-sim"] {
            let size =
                (try? FileManager.default.attributesOfItem(atPath: projectRoot + "/.build/completions/" + file))?[
                    .size] as? Int
            #expect((size ?? 0) > 1000, "make completions wrote \(file)")
        }
    }
}

/// A Unix socket that answers its first client's line with a fixed reply, from its own thread:
/// a daemon's control socket whose status document the test chooses (nil: it reads the line and
/// closes without answering, as a stopping daemon does).
final class OneReplySocket: @unchecked Sendable {
    let path: String
    private let lock = ConditionLock()
    private var line: String?
    private var thread: Thread?

    init(path: String, reply: String?) throws {
        self.path = path
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0, UnixSocket.bind(listener, to: path), listen(listener, 1) == 0 else {
            throw TimedOut(description: "cannot listen on \(path): errno \(errno)")
        }
        let thread = Thread { [self] in
            defer { close(listener) }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            defer { close(client) }
            var received: [UInt8] = []
            var byte: UInt8 = 0
            while recv(client, &byte, 1, 0) == 1, byte != 10 { received.append(byte) }
            lock.withLock {
                line = String(decoding: received, as: UTF8.self)
                lock.broadcast()
            }
            if let reply { ConnectedSocket.send(fd: client, reply + "\n") }
        }
        self.thread = thread
        thread.start()
    }

    /// The line the client sent (waits up to 10 s for it).
    var received: String? {
        let deadline = MonotonicInstant.now().adding(milliseconds: 10_000)
        return lock.withLock {
            while line == nil, MonotonicInstant.now() < deadline { lock.wait(until: deadline) }
            return line
        }
    }
}
