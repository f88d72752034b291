import RailgateSystem
import Testing

@testable import RailgateCore
@testable import RailgateGateway
@testable import RailgateModbus

/// Profiles held in memory.
private struct InMemoryFiles: ConfigFileSource {
    var files: [String: String]
    func read(_ path: String) -> String? { files[path] }
}

/// A configuration with `device`'s profile points, for the birth message.
private func config(of device: DeviceConfig) throws -> GatewayConfig {
    let profile = """
        model = "m"
        [[point]]
        name = "a"
        table = "input"
        address = 0
        type = "u16"
        [[point]]
        name = "door"
        table = "input"
        address = 1
        type = "bit"
        bit = 2
        [[point]]
        name = "serial"
        table = "input"
        address = 100
        type = "u32"
        poll = "once"
        """
    let parsed = try ConfigLoader(files: InMemoryFiles(files: ["profiles/p.toml": profile])).parse(
        """
        [gateway]
        id = "g"
        state_dir = "/tmp/x"
        profile_path = ["profiles"]
        [upstream]
        url = "none"
        [[bus]]
        name = "line"
        transport = "rtu-over-tcp"
        host = "127.0.0.1"
        [[device]]
        name = "panel"
        bus = "line"
        unit = 3
        profile = "p"
        """, file: "g.toml")
    #expect(parsed.devices[0].profile.points == device.profile.points)
    return parsed
}

@Suite("Busy devices and static points")
struct BusyAndStaticTests {
    let device = DeviceConfig(
        name: "panel", bus: "line", unit: 3, profileName: "p",
        profile: DeviceProfile(
            model: "m",
            points: [
                PointDefinition(name: "a", table: .input, address: 0, type: .u16),
                PointDefinition(name: "door", table: .input, address: 1, type: .bit(2)),
                PointDefinition(name: "serial", table: .input, address: 100, type: .u32, pollOnce: true),
            ]), pollIntervalMs: 1000)

    /// A policy that records its waits instead of sleeping.
    final class Waits: @unchecked Sendable {
        var count = 0
        func policy(retries: Int) -> BusyPolicy {
            BusyPolicy(retries: retries, waitMs: 50) { [self] _ in
                count += 1
                return true
            }
        }
    }

    @Test("exception 6 and 5 are asked again after a wait, and are no failure while retries last", arguments: [6, 5])
    func busyRetried(code: Int) {
        let transport = ScriptedTransport()
        transport.failures["input@0"] = [.exception(UInt8(code)), .exception(UInt8(code))]
        let waits = Waits()
        let poller = DevicePoller(device: device, maxGap: 8, firstDue: .now())
        let record = poller.poll(
            over: transport, retries: 0, busy: waits.policy(retries: 2), at: Timestamp(millisecondsSinceEpoch: 0))
        guard case .sample(let values, let errors) = record.body else {
            Issue.record("not a sample")
            return
        }
        #expect(values.map(\.0) == ["a", "door"] && errors.isEmpty)
        #expect(transport.log == ["input@0x2", "input@0x2", "input@0x2"])
        #expect(waits.count == 2)
        #expect(poller.stats.errors == 0)
    }

    @Test("busy once the retries are spent: reason busy, not halved")
    func busySpent() {
        let transport = ScriptedTransport()
        transport.failures["input@0"] = [.exception(6), .exception(6), .exception(6), .exception(6)]
        let waits = Waits()
        let poller = DevicePoller(device: device, maxGap: 8, firstDue: .now())
        let record = poller.poll(
            over: transport, retries: 2, busy: waits.policy(retries: 3), at: Timestamp(millisecondsSinceEpoch: 0))
        guard case .sample(_, let errors) = record.body else {
            Issue.record("not a sample")
            return
        }
        #expect(errors.map { "\($0.0)=\($0.1)" } == ["a=busy", "door=busy"])
        #expect(transport.log.count == 4 && waits.count == 3)
        #expect(poller.stats.errors == 1)
    }

    @Test("poll = once points are read apart, by readStatic, and are in no sample")
    func staticApart() throws {
        let gateway = try config(of: device)
        let transport = ScriptedTransport()
        let poller = DevicePoller(device: device, maxGap: 8, firstDue: .now())
        #expect(poller.requests.map(\.address) == [0] && poller.staticRequests.map(\.address) == [100])
        let record = poller.poll(over: transport, retries: 0, at: Timestamp(millisecondsSinceEpoch: 0))
        guard case .sample(let values, let errors) = record.body else {
            Issue.record("not a sample")
            return
        }
        // ScriptedTransport serves each register's address: input 1 = 0b01 (bit 2 clear).
        #expect(values.map(\.0) == ["a", "door"] && errors.isEmpty)
        #expect(values.last?.1 == .bool(false))
        #expect(transport.log == ["input@0x2"])
        #expect(!poller.staticComplete)
        let readings = poller.readStatic(over: transport, retries: 0)
        #expect(transport.log.last == "input@100x2")
        #expect(readings?.map(\.name) == ["serial"])
        #expect(readings?.first?.reading == .success(.unsigned(100 << 16 | 101)))
        #expect(poller.staticComplete)

        let birth = StatusMessage.birth(
            config: gateway, started: Timestamp(millisecondsSinceEpoch: 0),
            statics: ["panel": readings!])
        let panel = birth["sources"]?["panel"]
        #expect(panel?["static"]?["serial"] == .unsigned(100 << 16 | 101))
        #expect(panel?["points"]?["serial"]?["poll"] == .string("once"))
        #expect(panel?["points"]?["door"]?["type"] == .string("bit"))
        #expect(panel?["static_errors"] == nil)

        transport.failures["input@100"] = [.timeout]
        let failed = poller.readStatic(over: transport, retries: 0)!
        let again = StatusMessage.birth(
            config: gateway, started: Timestamp(millisecondsSinceEpoch: 0),
            statics: ["panel": failed])
        #expect(again["sources"]?["panel"]?["static_errors"]?["serial"] == .string("timeout"))
    }
}
