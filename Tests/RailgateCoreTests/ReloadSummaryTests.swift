import Testing

@testable import RailgateCore

@Suite("Reload summary")
struct ReloadSummaryTests {
    let loader = ConfigLoader(files: MemoryFiles(files: ["profiles/axle.toml": axleProfile]))

    func config(
        devices: [(name: String, unit: Int, pollMs: Int)], url: String = "mqtt://127.0.0.1:1883"
    ) throws
        -> GatewayConfig
    {
        var text = """
            [gateway]
            id = "KZ-WAG-00042"
            state_dir = "/tmp/rg"
            profile_path = ["profiles"]
            [upstream]
            url = "\(url)"
            [[bus]]
            name = "line"
            transport = "tcp"
            host = "127.0.0.1"

            """
        for device in devices {
            text +=
                "[[device]]\nname = \"\(device.name)\"\nbus = \"line\"\nunit = \(device.unit)\nprofile = \"axle\"\n"
                + "poll_interval_ms = \(device.pollMs)\n"
        }
        return try loader.parse(text, file: "gw.toml")
    }

    @Test("devices added, removed and changed are named; counts of what runs now; the session kept")
    func changes() throws {
        let old = try config(devices: [("axlebox-1", 7, 1000), ("axlebox-2", 8, 1000), ("axlebox-3", 9, 1000)])
        let new = try config(devices: [("axlebox-1", 7, 1000), ("axlebox-3", 9, 500), ("axlebox-4", 10, 1000)])
        #expect(
            ReloadSummary.describe(from: old, to: new, upstreamKept: true)
                == "1 bus, 3 devices, 0 gates, 0 inputs; devices added: axlebox-4; devices removed: axlebox-2; "
                + "devices changed: axlebox-3; upstream kept (the MQTT session stays up)")
    }

    @Test("the same file again says nothing changed; a new upstream or none is said")
    func nothingChanged() throws {
        let old = try config(devices: [("axlebox-1", 7, 1000)])
        #expect(
            ReloadSummary.describe(from: old, to: old, upstreamKept: true)
                == "1 bus, 1 device, 0 gates, 0 inputs; no bus, device, gate or input changed; "
                + "upstream kept (the MQTT session stays up)")
        let moved = try config(devices: [("axlebox-1", 7, 1000)], url: "mqtt://10.0.0.2:1883")
        #expect(
            ReloadSummary.describe(from: old, to: moved, upstreamKept: false).hasSuffix(
                "; upstream changed (a new MQTT session)"))
        let none = try config(devices: [("axlebox-1", 7, 1000)], url: "none")
        #expect(
            ReloadSummary.describe(from: old, to: none, upstreamKept: false).hasSuffix(
                "; no upstream (records stay in the buffer)"))
    }
}
