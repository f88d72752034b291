import Foundation
import Testing

@testable import RailgateCore
@testable import RailgateGateway

@Suite("Alarm state in state_dir")
struct AlarmStoreTests {
    let hot = PointDefinition(
        name: "bearing_temp_3", table: .input, address: 2, type: .i16, scale: 0.1, deadband: 0.5, alarmAbove: 90)
    let pressure = PointDefinition(
        name: "pressure", table: .holding, address: 1, type: .f32, alarmBelow: 3.5, alarmHysteresis: 0.2)

    func device(_ name: String, _ points: [PointDefinition]) -> DeviceConfig {
        DeviceConfig(
            name: name, bus: "line", unit: 2, profileName: "p", profile: DeviceProfile(model: "m", points: points),
            pollIntervalMs: 100)
    }

    func event(_ name: String, source: String = "axlebox-2", point: String = "bearing_temp_3") -> Record {
        var fields: [(String, JSON)] = [("point", .string(point)), ("value", .number(95))]
        if name != "alarm_clear" { fields.append(("threshold", .number(name == "alarm_above" ? 90 : 3.5))) }
        return Record(
            timestamp: Timestamp(millisecondsSinceEpoch: 0), source: source,
            body: .event(name: name, fields: fields), priority: .alarm)
    }

    func scratch() -> String {
        let path = NSTemporaryDirectory() + "railgate-alarms-" + UUID().uuidString.prefix(8)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("raised alarms survive a restart of the store; a clear removes them from the file")
    func survivesRestart() throws {
        let directory = scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = LogLines()
        let devices = [device("axlebox-2", [hot, pressure])]
        var store = AlarmStore(stateDirectory: directory, logger: log.logger)
        #expect(store.retain(devices: devices).isEmpty)
        #expect(store.record(event("alarm_above")))
        #expect(store.record(event("alarm_below", point: "pressure")))
        #expect(
            !store.record(
                Record(timestamp: .init(millisecondsSinceEpoch: 0), source: "x", body: .sample(values: [], errors: [])))
        )

        store = AlarmStore(stateDirectory: directory, logger: log.logger)
        let restored = store.retain(devices: devices)
        #expect(
            restored["axlebox-2"] == [
                .init(point: "bearing_temp_3", side: .above, threshold: 90, hysteresis: 0.5),
                .init(point: "pressure", side: .below, threshold: 3.5, hysteresis: 0.2),
            ])
        store.record(event("alarm_clear"))
        store = AlarmStore(stateDirectory: directory, logger: log.logger)
        #expect(store.retain(devices: devices)["axlebox-2"]?.map(\.point) == ["pressure"])
        #expect(!FileManager.default.fileExists(atPath: directory + "/alarms.json.new"))
        #expect(log.all.allSatisfy { !$0.hasPrefix("error") }, "\(log.all)")
    }

    @Test("an alarm whose device, point, threshold or hysteresis changed is dropped with a warning")
    func changedConfigurationDropsAlarm() throws {
        let directory = scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let log = LogLines()
        let store = AlarmStore(stateDirectory: directory, logger: log.logger)
        _ = store.retain(devices: [device("axlebox-2", [hot, pressure]), device("axlebox-3", [hot])])
        store.record(event("alarm_above"))
        store.record(event("alarm_below", point: "pressure"))
        store.record(event("alarm_above", source: "axlebox-3"))
        var hotter = hot
        hotter.alarmAbove = 95
        let kept = store.retain(devices: [device("axlebox-2", [hotter, pressure])])
        #expect(kept["axlebox-2"]?.map(\.point) == ["pressure"])
        #expect(kept["axlebox-3"] == nil)
        #expect(log.all.filter { $0.contains("is no longer kept") }.count == 2, "\(log.all)")
        let reopened = AlarmStore(stateDirectory: directory, logger: log.logger)
        #expect(reopened.alarms["axlebox-3"] == nil, "the file was rewritten without the dropped alarms")
    }

    @Test(
        "a damaged alarm file is logged and ignored, never a crash",
        arguments: [
            "", "{", "null", "{\"version\":2,\"alarms\":[]}", "{\"version\":1}",
            "{\"version\":1,\"alarms\":[{\"device\":\"d\",\"point\":\"p\",\"side\":\"sideways\",\"threshold\":1,\"hysteresis\":1}]}",
            "{\"version\":1,\"alarms\":[{\"device\":\"d\"}]}", "\u{0}\u{1}\u{2}garbage",
        ])
    func damagedFile(_ contents: String) throws {
        let directory = scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try contents.write(toFile: directory + "/alarms.json", atomically: false, encoding: .utf8)
        let log = LogLines()
        let store = AlarmStore(stateDirectory: directory, logger: log.logger)
        #expect(store.alarms.isEmpty)
        #expect(log.all.contains { $0.contains("is damaged") && $0.contains("ignored") }, "\(log.all)")
        // It is replaced by a good one at the next change.
        _ = store.retain(devices: [device("axlebox-2", [hot])])
        store.record(event("alarm_above"))
        #expect(AlarmStore(stateDirectory: directory, logger: log.logger).alarms["axlebox-2"]?.count == 1)
    }

    @Test(
        "an alarm file nested 100,000 deep is damaged, not a stack overflow (a recursive reader died at 10,000)",
        arguments: ["[", "{\"a\":"])
    func deeplyNestedFile(_ opening: String) throws {
        let directory = scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try String(repeating: opening, count: 100_000).write(
            toFile: directory + "/alarms.json", atomically: false, encoding: .utf8)
        let log = LogLines()
        let store = AlarmStore(stateDirectory: directory, logger: log.logger)
        #expect(store.alarms.isEmpty)
        #expect(log.all.contains { $0.contains("is damaged") && $0.contains("nested deeper than") }, "\(log.all)")
    }

    @Test("a directory where the alarm file should be is reported, and the daemon runs on")
    func directoryInTheWay() throws {
        let directory = scratch()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try FileManager.default.createDirectory(atPath: directory + "/alarms.json", withIntermediateDirectories: true)
        let log = LogLines()
        let store = AlarmStore(stateDirectory: directory, logger: log.logger)
        _ = store.retain(devices: [device("axlebox-2", [hot])])
        store.record(event("alarm_above"))
        #expect(store.alarms["axlebox-2"]?.count == 1, "kept in memory")
        #expect(log.all.contains { $0.contains("not a readable file") }, "\(log.all)")
        #expect(log.all.contains { $0.contains("cannot save the alarm state") }, "\(log.all)")
    }
}
