import Testing

@testable import RailgateCore

/// Files held in memory, for loading configurations without a disk.
struct MemoryFiles: ConfigFileSource {
    var files: [String: String]
    func read(_ path: String) -> String? { files[path] }
}

let axleProfile = """
    model = "AX-4"
    [[point]]
    name = "bearing_temp_1"
    table = "input"
    address = 0
    type = "i16"
    scale = 0.1
    unit = "degC"
    """

@Suite("Configuration")
struct ConfigTests {
    let validConfig = """
        [gateway]
        id = "KZ-WAG-00042"
        state_dir = "/tmp/rg"
        profile_path = ["profiles"]

        [upstream]
        url = "mqtt://127.0.0.1:1883"

        [[bus]]
        name = "line"
        transport = "rtu"
        device = "/dev/ttyS1"
        baud = 9600
        parity = "none"

        [[device]]
        name = "axlebox-1"
        bus = "line"
        unit = 7
        profile = "axle"
        """

    @Test("a valid configuration decodes with its defaults")
    func validConfiguration() throws {
        let loader = ConfigLoader(files: MemoryFiles(files: ["profiles/axle.toml": axleProfile]))
        let config = try loader.parse(validConfig, file: "gw.toml")
        #expect(config.gateway.id == "KZ-WAG-00042")
        #expect(config.upstream.endpoint == .mqtt(host: "127.0.0.1", port: 1883, tls: false))
        #expect(config.upstream.clientID == "railgate-KZ-WAG-00042")
        #expect(config.upstream.qos == 1)
        #expect(config.buffer.whenFull == .thin)
        #expect(
            config.buses[0].transport == .rtu(device: "/dev/ttyS1", baud: 9600, parity: .none, dataBits: 8, stopBits: 1)
        )
        #expect(config.buses[0].timeoutMs == 500)
        #expect(config.devices[0].profile.points[0].scale == 0.1)
        #expect(config.devices[0].pollIntervalMs == 1000)
    }

    @Test(
        "payload: compact/1 by default (issue 10); \"records\" and its deprecated synonym \"plain\" send records",
        arguments: [(nil, true), ("compact", true), ("records", false), ("plain", false)] as [(String?, Bool)])
    func payloadFormat(_ value: String?, _ compact: Bool) throws {
        let loader = ConfigLoader(files: MemoryFiles(files: ["profiles/axle.toml": axleProfile]))
        let text = validConfig.replacing(
            "url = \"mqtt://127.0.0.1:1883\"",
            with: "url = \"mqtt://127.0.0.1:1883\"" + (value.map { "\npayload = \"\($0)\"" } ?? ""))
        #expect(try loader.parse(text, file: "gw.toml").upstream.compactPayload == compact)
    }

    @Test("payload takes no other format")
    func unknownPayloadFormat() {
        let loader = ConfigLoader(files: MemoryFiles(files: ["profiles/axle.toml": axleProfile]))
        let text = validConfig.replacing(
            "url = \"mqtt://127.0.0.1:1883\"", with: "url = \"mqtt://127.0.0.1:1883\"\npayload = \"rows\"")
        #expect(throws: (any Error).self) { try loader.parse(text, file: "gw.toml") }
    }

    @Test("every mistake in a broken file is reported with its line")
    func brokenConfiguration() {
        let broken = """
            [gateway]
            id = "bad id!"
            log_level = "verbose"

            [buffer]
            max_bytes = "big"
            sync_intervall_ms = 100

            [upstream]
            url = "http://broker"
            qos = 2

            [[bus]]
            name = "line"
            transport = "rtu"
            device = "/dev/ttyS1"
            parity = "mark"
            port = 502

            [[device]]
            name = "axlebox-1"
            bus = "no-such-bus"
            unit = 7
            profile = "axle"

            [[device]]
            name = "axlebox-2"
            bus = "line"
            unit = 300
            profile = "missing-profile"

            [[device]]
            name = "axlebox-1"
            bus = "line"
            unit = 8
            profile = "axle"
            """
        let loader = ConfigLoader(files: MemoryFiles(files: ["/etc/railgate/profiles/axle.toml": axleProfile]))
        do {
            _ = try loader.parse(broken, file: "broken.toml")
            Issue.record("a broken configuration was accepted")
        } catch {
            let lines = Dictionary(grouping: error.problems, by: { $0.line ?? 0 })
            #expect(error.problems.allSatisfy { $0.file == "broken.toml" })
            #expect(lines[2]?.first?.message.contains("id") == true)
            #expect(lines[3]?.first?.message.contains("log_level") == true)
            #expect(lines[6]?.first?.message.contains("max_bytes must be an integer") == true)
            #expect(lines[7]?.first?.message.contains("unknown key 'sync_intervall_ms'") == true)
            #expect(lines[10]?.first?.message.contains("url") == true)
            #expect(lines[11]?.first?.message.contains("out of range") == true)
            #expect(lines[17]?.first?.message.contains("parity") == true)
            #expect(lines[18]?.first?.message.contains("port belongs to a tcp bus") == true)
            #expect(lines[22]?.first?.message.contains("bus 'no-such-bus'") == true)
            #expect(lines[29]?.first?.message.contains("out of range") == true)
            #expect(lines[30]?.first?.message.contains("profile 'missing-profile' not found") == true)
            #expect(lines[32]?.first?.message.contains("already used by the device on line 20") == true)
            #expect(lines[18]?.count == 1, "a misplaced key is reported once")
            #expect(!error.problems.contains { $0.message.contains("bus 'line'") }, "no cascade from the broken bus")
            #expect(error.problems.count == 12)
            #expect(error.problems[0].description.hasPrefix("broken.toml:2: "))
        }
    }

    @Test("a profile's own problems are reported against the profile file")
    func brokenProfile() {
        let profile = """
            model = "X"
            [[point]]
            name = "a"
            table = "coil"
            address = 0
            type = "u16"
            [[point]]
            name = "b"
            table = "holding"
            address = 65535
            type = "u32"
            colour = "red"
            [[point]]
            name = "a"
            table = "input"
            address = 1
            type = "f33"
            """
        let loader = ConfigLoader(files: MemoryFiles(files: ["profiles/axle.toml": profile]))
        do {
            _ = try loader.parse(validConfig, file: "gw.toml")
            Issue.record("a broken profile was accepted")
        } catch {
            let descriptions = error.problems.map(\.description)
            #expect(descriptions.contains { $0.hasPrefix("gw.toml:20: profile 'axle'") })
            #expect(descriptions.contains { $0.hasPrefix("profiles/axle.toml:6: a coil holds single bits") })
            #expect(descriptions.contains { $0.hasPrefix("profiles/axle.toml:10: u32 at address 65535 runs past") })
            #expect(descriptions.contains { $0.hasPrefix("profiles/axle.toml:12: unknown key 'colour'") })
            #expect(descriptions.contains { $0.hasPrefix("profiles/axle.toml:17: type = \"f33\"") })
        }
    }

    @Test("a TOML syntax error is one problem with its line")
    func syntaxError() {
        #expect(throws: ConfigErrors.self) {
            try ConfigLoader(files: MemoryFiles(files: [:])).parse("[gateway\nid = 1", file: "x.toml")
        }
    }

    @Test(
        "upstream urls",
        arguments: [
            ("none", UpstreamEndpoint.none),
            ("mqtt://broker", .mqtt(host: "broker", port: 1883, tls: false)),
            ("mqtts://broker.example.net", .mqtt(host: "broker.example.net", port: 8883, tls: true)),
            ("mqtt://10.0.0.1:2883", .mqtt(host: "10.0.0.1", port: 2883, tls: false)),
            ("mqtt://[::1]:1884", .mqtt(host: "::1", port: 1884, tls: false)),
        ])
    func urls(_ text: String, _ expected: UpstreamEndpoint) {
        #expect(UpstreamEndpoint(url: text) == expected)
    }

    @Test("bad upstream urls", arguments: ["http://x", "mqtt://", "mqtt://host:0", "mqtt://host:port", "tcp://h:1"])
    func badURLs(_ text: String) {
        #expect(UpstreamEndpoint(url: text) == nil)
    }
}

@Suite("Configuration: Modbus units, reply_unit and connect_delay_ms")
struct ModbusUnitConfigTests {
    func config(transport: String, unit: Int, extraDevice: String = "", extraBus: String = "") -> String {
        let bus =
            transport == "tcp"
            ? "transport = \"tcp\"\nhost = \"10.0.0.9\"" : "transport = \"rtu\"\ndevice = \"/dev/ttyS1\""
        return """
            [gateway]
            id = "KZ-WAG-00042"
            state_dir = "/tmp/rg"
            profile_path = ["profiles"]

            [upstream]
            url = "none"

            [[bus]]
            name = "line"
            \(bus)
            \(extraBus)

            [[device]]
            name = "axlebox-1"
            bus = "line"
            unit = \(unit)
            profile = "axle"
            \(extraDevice)
            """
    }

    let loader = ConfigLoader(files: MemoryFiles(files: ["profiles/axle.toml": axleProfile]))

    @Test("TCP takes every unit id 0...255; a fixed reply unit and a connect delay are read")
    func tcpUnits() throws {
        for unit in [0, 1, 247, 248, 250, 254, 255] {
            let parsed = try loader.parse(config(transport: "tcp", unit: unit), file: "gw.toml")
            #expect(parsed.devices[0].unit == unit)
            #expect(parsed.devices[0].replyUnit == nil)
            #expect(parsed.buses[0].connectDelayMs == 0)
        }
        let parsed = try loader.parse(
            config(transport: "tcp", unit: 250, extraDevice: "reply_unit = 255", extraBus: "connect_delay_ms = 800"),
            file: "gw.toml")
        #expect(parsed.devices[0].replyUnit == 255)
        #expect(parsed.buses[0].connectDelayMs == 800)
    }

    @Test(
        "RTU: unit 0 is broadcast and 248-255 reserved, said with file and line; reply_unit is refused",
        arguments: [(0, "broadcast"), (248, "reserved"), (255, "reserved")])
    func rtuUnits(unit: Int, word: String) throws {
        #expect(throws: Never.self) { try loader.parse(config(transport: "rtu", unit: 247), file: "gw.toml") }
        do {
            _ = try loader.parse(config(transport: "rtu", unit: unit), file: "gw.toml")
            Issue.record("unit \(unit) accepted on RTU")
        } catch {
            #expect(error.problems.count == 1)
            #expect(error.problems.first?.description.hasPrefix("gw.toml:18: unit = \(unit)") == true, "\(error)")
            #expect(error.problems.first?.message.contains(word) == true, "\(error)")
        }
        do {
            _ = try loader.parse(config(transport: "rtu", unit: 7, extraDevice: "reply_unit = 0"), file: "gw.toml")
            Issue.record("reply_unit accepted on RTU")
        } catch {
            #expect(error.problems.map(\.line) == [20], "\(error)")
        }
    }
}
