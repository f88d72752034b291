import Foundation
import RailgateCore
import RailgateSystem
import Testing

@Suite("Commands", .serialized)
struct CommandTests {
    static let brokenConfig = """
        [gateway]
        id = "KZ WAG"
        log_level = "loud"

        [buffer]
        max_bytes = -1

        [upstream]
        url = "amqp://broker"
        batch_max_recrods = 10

        [[bus]]
        name = "line"
        transport = "tcp"
        host = "127.0.0.1"
        baud = 9600

        [[device]]
        name = "axlebox-1"
        bus = "line2"
        unit = 7
        profile = "no-such-profile"
        """

    @Test("check and run report every problem with file and line, exit 78")
    func brokenConfig() throws {
        let scratch = Scratch()
        let file = scratch.write("broken.toml", Self.brokenConfig)
        let expected = [2, 3, 6, 9, 10, 16, 20, 22].map { "\(file):\($0): " }
        for arguments in [["check", "--config", file], ["run", "--config", file]] {
            let result = try TestProcess.run(Binaries.railgate, arguments, scratch: scratch)
            #expect(result.status == 78, "\(arguments[0])")
            let lines = result.error.split(separator: "\n").map(String.init)
            for prefix in expected {
                #expect(lines.contains { $0.hasPrefix(prefix) }, "\(arguments[0]) misses \(prefix): \(result.error)")
            }
            #expect(lines.count == expected.count, "one line per problem: \(result.error)")
        }
        let json = try TestProcess.run(Binaries.railgate, ["check", "--config", file, "--json"], scratch: scratch)
        #expect(json.status == 78)
        let document = try JSONReader.parse(json.output)
        #expect(document["ok"] == .bool(false))
        #expect(document["problems"]?.arrayValue?.compactMap { $0["line"]?.intValue } == [2, 3, 6, 9, 10, 16, 20, 22])
    }

    @Test("a configuration that cannot be read says why: missing, a directory, not readable; exit 78")
    func unreadableConfig() throws {
        let scratch = Scratch()
        let unreadable = scratch.write("secret.toml", "[gateway]\n")
        chmod(unreadable, 0)
        var cases = [
            (scratch.path + "/missing.toml", "No such file or directory"), (scratch.path, "is a directory"),
        ]
        // root reads a file whatever its mode: the permission case only shows as another user.
        if geteuid() != 0 { cases.append((unreadable, "Permission denied")) }
        for (path, reason) in cases {
            let result = try TestProcess.run(Binaries.railgate, ["check", "--config", path], scratch: scratch)
            #expect(result.status == 78, "\(path)")
            #expect(
                result.error.contains("\(path): cannot read the configuration file: \(reason)"), "\(result.error)")
        }
    }

    @Test("check accepts the shipped example configurations")
    func examplesAreValid() throws {
        let scratch = Scratch()
        for example in ["Firmware-config/examples/demo.toml", "Firmware-config/examples/wagon.toml"] {
            let result = try TestProcess.run(Binaries.railgate, ["check", "--config", example], scratch: scratch)
            #expect(result.status == 0, "\(example): \(result.error)")
        }
    }

    @Test("run --once prints one record per device, and exits 69 when a device is silent")
    func once() throws {
        let scratch = Scratch()
        let simulator = try WagonSimulator(
            profile: "brake-load-sensor", units: "3", scratch: scratch, extra: ["--set", "load=61.25"])
        let good = gatewayConfig(
            scratch: scratch, brokerPort: nil, devices: [("brake-load", simulator.port, 3, "brake-load-sensor")])
        var result = try TestProcess.run(Binaries.railgate, ["run", "--config", good, "--once"], scratch: scratch)
        #expect(result.status == 0, "\(result.error)")
        let record = try JSONReader.parse(result.output.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(record["source"] == .string("brake-load"))
        #expect(record["values"]?["load"] == .number(61.25))
        #expect(record["seq"] == nil)

        let silent = gatewayConfig(
            scratch: scratch, brokerPort: nil, devices: [("brake-load", simulator.port, 9, "brake-load-sensor")])
        result = try TestProcess.run(Binaries.railgate, ["run", "--config", silent, "--once"], scratch: scratch)
        #expect(result.status == 69)
        #expect(try JSONReader.parse(result.output.trimmingCharacters(in: .whitespacesAndNewlines))["errors"] != nil)
    }

    @Test("status answers over the control socket; garbage is refused and the daemon keeps running")
    func statusAndGarbage() throws {
        let scratch = Scratch()
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let metricsPort = freePort()
        let config = gatewayConfig(
            scratch: scratch, brokerPort: nil, devices: [("axlebox-1", simulator.port, 7, "axle-bearing-sensor")],
            metricsPort: metricsPort)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        let socket = scratch.path + "/control.sock"
        let status = try eventually("two polls in the daemon's status", seconds: 60) { () -> JSON? in
            let status = try daemonStatus(scratch)
            return (status["devices"]?.arrayValue?.first?["polls"]?.intValue ?? 0) >= 2 ? status : nil
        }
        #expect(status["gateway"] == .string("KZ-WAG-TEST"))
        #expect(status["upstream"]?["state"] == .string("disabled"))
        #expect((status["buffer"]?["records"]?.intValue ?? 0) >= 2, "url = none keeps everything buffered")
        #expect(status["devices"]?.arrayValue?.first?["name"] == .string("axlebox-1"))
        #expect(status["devices"]?.arrayValue?.first?["errors"] == .integer(0))
        #expect(status["buffer"]?["next_seq"] != nil && status["uptime_s"] != nil && status["gates"] != nil)
        // durable_seq: what is on flash; never past the last seq handed out, caught up by a group commit.
        let handed = (status["buffer"]?["next_seq"]?.intValue ?? 0) - 1
        #expect((status["buffer"]?["durable_seq"]?.intValue ?? .max) <= handed)
        _ = try eventually("durable_seq reaching seq \(handed)", seconds: 30) { () -> Bool? in
            (try daemonStatus(scratch)["buffer"]?["durable_seq"]?.intValue ?? 0) >= handed ? true : nil
        }

        // Garbage: binary junk, an unknown command, and a client that says nothing.
        for junk in ["\u{01}\u{02}\u{FF}\n", "reboot now\n", ""] {
            let reply = try rawControlRequest(socket: socket, junk)
            #expect(reply.contains("\"error\""), "reply to \(junk.debugDescription): \(reply)")
        }
        let human = try TestProcess.run(Binaries.railgate, ["status", "--socket", socket], scratch: scratch)
        #expect(human.status == 0)
        #expect(human.output.contains("axlebox-1"))
        #expect(gateway.isRunning)

        let metrics = try httpGet(port: metricsPort, path: "/metrics")
        #expect(metrics.hasPrefix("HTTP/1.0 200 OK"))
        #expect(metrics.contains("railgate_device_polls_total{device=\"axlebox-1\",bus=\"bus-\(simulator.port)\"}"))
        #expect(metrics.contains("railgate_bus_utilisation_ratio{bus=\"bus-\(simulator.port)\"}"))
        #expect(metrics.contains("railgate_buffer_records "))
        #expect(try httpGet(port: metricsPort, path: "/other").hasPrefix("HTTP/1.0 404"))

        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        let down = try TestProcess.run(Binaries.railgate, ["status", "--socket", socket], scratch: scratch)
        #expect(down.status == 69)

        let stats = try TestProcess.run(
            Binaries.railgate, ["buffer", "stats", "--state-dir", scratch.path + "/state", "--json"], scratch: scratch)
        #expect(stats.status == 0, "\(stats.error)")
        let buffered = try JSONReader.parse(stats.output)
        #expect((buffered["records"]?.intValue ?? 0) >= 2)
        let dump = try TestProcess.run(
            Binaries.railgate, ["buffer", "dump", "--state-dir", scratch.path + "/state", "--limit", "2"],
            scratch: scratch)
        #expect(dump.output.split(separator: "\n").count == 2)
        #expect(try JSONReader.parse(String(dump.output.split(separator: "\n")[0]))["seq"] == .integer(1))
        _ = simulator
    }

    /// A plain HTTP GET on loopback, returning the whole response.
    func httpGet(port: Int, path: String) throws -> String {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw TimedOut(description: "cannot connect to the metrics port") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        _ = "GET \(path) HTTP/1.0\r\n\r\n".withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { break }
            response += buffer[0..<count]
        }
        return String(decoding: response, as: UTF8.self)
    }

    /// Sends `text` on the control socket and returns the reply.
    func rawControlRequest(socket path: String, _ text: String) throws -> String {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        guard UnixSocket.connect(fd, to: path) else { throw TimedOut(description: "cannot connect to \(path)") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if !text.isEmpty { _ = text.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) } }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        return count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self) : ""
    }
}

@Suite("Doctor", .serialized)
struct DoctorTests {
    @Test("doctor: all ok with everything up, with and without the daemon; a silent device fails with a remedy")
    func doctor() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        var wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let gate = try GateSimulator(scratch: scratch)
        let config = scratch.write(
            "doctor.toml",
            """
            [gateway]
            id = "KZ-WAG-DOCTOR"
            state_dir = "\(scratch.path)/state"
            control_socket = "\(scratch.path)/control.sock"
            profile_path = ["Firmware-config/profiles"]
            [buffer]
            max_bytes = 1048576
            [upstream]
            url = "mqtt://127.0.0.1:\(broker.port)"
            [[bus]]
            name = "line"
            transport = "tcp"
            host = "127.0.0.1"
            port = \(wagon.port)
            [[device]]
            name = "axlebox-1"
            bus = "line"
            unit = 7
            profile = "axle-bearing-sensor"
            poll_interval_ms = 200
            [[gate]]
            name = "north-barrier"
            chip = "\(gate.chip)"
            open_line = 17
            closed_line = 18
            [[input]]
            name = "cabinet-tamper"
            chip = "\(gate.chip)"
            line = 5
            """)
        func doctor() throws -> (status: Int32, checks: [String: [String]]) {
            let result = try TestProcess.run(
                Binaries.railgate, ["doctor", "--config", config, "--json"], scratch: scratch)
            var checks: [String: [String]] = [:]
            for check in (try JSONReader.parse(result.output))["checks"]?.arrayValue ?? [] {
                checks[check["subject"]?.stringValue ?? "?", default: []].append(check["status"]?.stringValue ?? "?")
            }
            return (result.status, checks)
        }

        var report = try doctor()
        #expect(report.status == 0, "\(report.checks)")
        #expect(report.checks["daemon"] == ["warn"])
        #expect(report.checks["device axlebox-1"] == ["ok"])
        #expect(report.checks["gate north-barrier"] == ["ok"])
        #expect(report.checks["input cabinet-tamper"] == ["ok"])
        // Reachable, and (without a daemon) a real MQTT session accepted.
        #expect(report.checks["upstream mqtt://127.0.0.1:\(broker.port)"] == ["ok", "ok"])

        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        report = try eventually("doctor seeing the daemon, its link and its gate", intervalMs: 200) {
            let report = try doctor()
            let seen =
                report.checks["daemon"] == ["ok"]
                && report.checks["upstream mqtt://127.0.0.1:\(broker.port)"] == ["ok", "ok"]
                && report.checks["gate north-barrier"] == ["ok"]
                && report.checks["input cabinet-tamper"] == ["ok"]
            return seen ? report : nil
        }
        #expect(report.status == 0, "\(report.checks)")
        #expect(report.checks["daemon"] == ["ok"])

        let port = wagon.port
        try wagon.kill()
        let human = try TestProcess.run(Binaries.railgate, ["doctor", "--config", config], scratch: scratch)
        #expect(human.status == 69)
        #expect(human.output.contains("fail bus line: connect to tcp 127.0.0.1:\(port)"))
        wagon = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch, port: port)
        _ = (gateway, wagon)
    }
}

@Suite("Reload and compression", .serialized)
struct ReloadTests {
    @Test("SIGHUP reloads a valid configuration without dropping the link; an invalid one is refused")
    func reload() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port)
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7-8", scratch: scratch)
        let one = [("axlebox-1", simulator.port, 7, "axle-bearing-sensor")]
        let config = gatewayConfig(scratch: scratch, brokerPort: broker.port, devices: one)
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        func devices() throws -> [String] {
            let result = try TestProcess.run(
                Binaries.railgate, ["status", "--socket", scratch.path + "/control.sock", "--json"], scratch: scratch)
            return (try? JSONReader.parse(result.output))?["devices"]?.arrayValue?.compactMap {
                $0["name"]?.stringValue
            } ?? []
        }
        func waitForDevices(_ expected: [String]) throws {
            try eventually("devices \(expected) in the status") { try devices() == expected ? () : nil }
        }
        try waitForDevices(["axlebox-1"])

        // A broken file: refused with its problems, the running configuration keeps polling.
        let valid = try String(contentsOfFile: config, encoding: .utf8)
        try
            (valid
            + "\n[[device]]\nname = \"axlebox-2\"\nbus = \"nowhere\"\nunit = 8\nprofile = \"axle-bearing-sensor\"\n")
            .write(toFile: config, atomically: true, encoding: .utf8)
        gateway.signal(SIGHUP)
        _ = try waitForLog(gateway, "reload refused: keeping the running configuration")
        #expect(gateway.errorOutput.contains("names bus 'nowhere', which is not defined"))
        #expect(try devices() == ["axlebox-1"])
        #expect(gateway.isRunning)

        // A good one: applied without a restart, the buffer and its seqs carry on.
        let two = one + [("axlebox-2", simulator.port, 8, "axle-bearing-sensor")]
        _ = gatewayConfig(scratch: scratch, brokerPort: broker.port, devices: two)
        gateway.signal(SIGHUP)
        try waitForDevices(["axlebox-1", "axlebox-2"])
        // The log says what the reload changed.
        _ = try waitForLog(
            gateway,
            "reloaded: 1 bus, 2 devices, 0 gates, 0 inputs; devices added: axlebox-2; upstream kept (the MQTT session stays up)"
        )
        try subscriber.waitUntil(seconds: 30) { messages in
            messages.contains { $0.json?["sources"]?["axlebox-2"] != nil }
        }
        #expect(
            !subscriber.messages.contains { $0.json?["state"] == .string("offline") },
            "the link stayed up across the reload")
        try subscriber.waitUntil(seconds: 30) { _ in
            subscriber.records.contains { $0["source"] == .string("axlebox-2") }
        }
        gateway.signal(SIGTERM)
        #expect(try gateway.waitForExit() == 0)
        #expect(
            contiguous(seqs(subscriber.records)) && seqs(subscriber.records).min() == 1,
            "one seq sequence across the reload")
    }

    @Test("compression = gzip sends gzip batches (magic 1f 8b) that inflate to the JSON batch")
    func gzip() throws {
        let scratch = Scratch()
        let broker = try Broker(scratch: scratch)
        let subscriber = try Subscriber(port: broker.port, topic: "railgate/+/telemetry")
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        let config = gatewayConfig(
            scratch: scratch, brokerPort: broker.port,
            devices: [("axlebox-1", simulator.port, 7, "axle-bearing-sensor")],
            extraUpstream: "compression = \"gzip\"")
        let gateway = try TestProcess(
            Binaries.railgate, ["run", "--config", config], scratch: scratch, name: "railgate")
        try subscriber.waitUntil(seconds: 60) { !$0.isEmpty }
        let payload = subscriber.messages[0].payload
        #expect(Array(payload.prefix(2)) == [0x1F, 0x8B])
        let file = scratch.path + "/batch.gz"
        _ = FileManager.default.createFile(atPath: file, contents: Data(payload))
        let inflated = try TestProcess.run("/bin/gzip", ["-dc", file], scratch: scratch)
        #expect(inflated.status == 0)
        // compact/1 by default (issue 10), inside the gzip member.
        #expect(try JSONReader.parse(inflated.output)["format"] == .string("compact/1"))
        let batch = try #require(plainBatch(Array(inflated.output.utf8)))
        #expect(batch["gateway"] == .string("KZ-WAG-TEST"))
        #expect(batch["records"]?.arrayValue?.first?["seq"] == .integer(1))
        _ = gateway
    }

    func waitForLog(_ process: TestProcess, _ text: String) throws -> String {
        try eventually("the log line '\(text)'", intervalMs: 50) {
            process.errorOutput.contains(text) ? process.errorOutput : nil
        }
    }
}

@Suite("TLS upstream", .serialized)
struct TLSTests {
    /// A throwaway CA and a server certificate for 127.0.0.1, made with the openssl command.
    func certificates(_ scratch: Scratch) throws -> (ca: String, certificate: String, key: String) {
        let path = scratch.path
        scratch.write("san.ext", "subjectAltName=IP:127.0.0.1\n")
        for arguments in [
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(path)/ca.key", "-out", "\(path)/ca.pem",
                "-days", "1", "-subj", "/CN=railgate test CA",
            ],
            [
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(path)/server.key", "-out", "\(path)/server.csr",
                "-subj", "/CN=127.0.0.1",
            ],
            [
                "x509", "-req", "-in", "\(path)/server.csr", "-CA", "\(path)/ca.pem", "-CAkey", "\(path)/ca.key",
                "-CAcreateserial",
                "-out", "\(path)/server.pem", "-days", "1", "-extfile", "\(path)/san.ext",
            ],
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(path)/other.key", "-out",
                "\(path)/other-ca.pem", "-days", "1", "-subj", "/CN=some other CA",
            ],
        ] {
            let result = try TestProcess.run("/usr/bin/openssl", arguments, scratch: scratch)
            guard result.status == 0 else {
                throw TimedOut(description: "openssl \(arguments[0]) failed: \(result.error)")
            }
        }
        return ("\(path)/ca.pem", "\(path)/server.pem", "\(path)/server.key")
    }

    @Test(
        "mqtts:// with ca_file delivers over TLS; a broker the CA does not vouch for is refused and reported",
        .enabled(
            if: FileManager.default.fileExists(atPath: "/usr/bin/openssl"),
            "needs the openssl command to make test certificates"))
    func tls() throws {
        let scratch = Scratch()
        let files = try certificates(scratch)
        let broker = try Broker(scratch: scratch, tls: files)
        let tlsPort = try #require(broker.tlsPort)
        let subscriber = try Subscriber(port: broker.port, topic: "railgate/+/telemetry")
        let simulator = try WagonSimulator(profile: "axle-bearing-sensor", units: "7", scratch: scratch)
        for (caFile, trusted) in [(files.ca, true), (scratch.path + "/other-ca.pem", false)] {
            var config = try String(
                contentsOfFile: gatewayConfig(
                    scratch: scratch, brokerPort: 1, devices: [("axlebox-1", simulator.port, 7, "axle-bearing-sensor")]),
                encoding: .utf8)
            config = config.replacingOccurrences(
                of: "mqtt://127.0.0.1:1\"", with: "mqtts://127.0.0.1:\(tlsPort)\"\nca_file = \"\(caFile)\"")
            let file = scratch.write("tls.toml", config)
            let gateway = try TestProcess(
                Binaries.railgate, ["run", "--config", file], scratch: scratch, name: "railgate")
            if trusted {
                try subscriber.waitUntil(seconds: 60) { _ in subscriber.records.count >= 2 }
                #expect(subscriber.records.first?["source"] == .string("axlebox-1"))
            } else {
                let upstream = try eventually("the refused handshake in the status", intervalMs: 200) { () -> JSON? in
                    let upstream = try daemonStatus(scratch)["upstream"] ?? .null
                    return upstream["last_error"]?.stringValue != nil ? upstream : nil
                }
                #expect(upstream["state"] != .string("connected"), "\(upstream.serialized)")
                #expect(upstream["last_error"]?.stringValue != nil)
            }
            gateway.signal(SIGTERM)
            #expect(try gateway.waitForExit() == 0)
        }
    }
}
