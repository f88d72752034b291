import Testing

@testable import RailgateCore

@Suite("Alarm state export and restore")
struct AlarmRestoreTests {
    let profile = DeviceProfile(
        model: "AX-4",
        points: [
            PointDefinition(
                name: "temp", table: .input, address: 0, type: .i16, scale: 0.1, deadband: 0.5, alarmAbove: 90),
            PointDefinition(
                name: "pressure", table: .holding, address: 1, type: .f32, alarmBelow: 3.5, alarmHysteresis: 0.2),
        ])

    func poll(_ temp: Double, pressure: Double = 5) -> Record {
        Record(
            timestamp: Timestamp(millisecondsSinceEpoch: 0), source: "axlebox-1",
            body: .sample(values: [("temp", .number(temp)), ("pressure", .number(pressure))], errors: []))
    }

    func events(_ records: [Record]) -> [String] {
        records.compactMap { if case .event(let name, _) = $0.body { name } else { nil } }
    }

    @Test("a restored alarm is not raised again, and its clear still comes")
    func restoredAlarm() {
        var before = EdgeFilter(profile: profile)
        #expect(events(before.process(poll(95, pressure: 3), nowMs: 0).events) == ["alarm_above", "alarm_below"])
        let saved = before.raisedAlarms
        #expect(
            saved == [
                .init(point: "pressure", side: .below, threshold: 3.5, hysteresis: 0.2),
                .init(point: "temp", side: .above, threshold: 90, hysteresis: 0.5),
            ])

        var after = EdgeFilter(profile: profile)
        #expect(after.restore(saved).isEmpty)
        #expect(after.alarms == ["temp": .above, "pressure": .below])
        #expect(events(after.process(poll(96, pressure: 3), nowMs: 0).events).isEmpty, "no second alarm")
        #expect(events(after.process(poll(40, pressure: 5), nowMs: 100).events) == ["alarm_clear", "alarm_clear"])
        #expect(after.raisedAlarms.isEmpty)
    }

    @Test("an alarm is not restored when its point is gone or its threshold or hysteresis changed")
    func changedSettings() {
        var filter = EdgeFilter(profile: profile)
        let refused = filter.restore([
            .init(point: "temp", side: .above, threshold: 85, hysteresis: 0.5),
            .init(point: "temp", side: .below, threshold: 90, hysteresis: 0.5),
            .init(point: "pressure", side: .below, threshold: 3.5, hysteresis: 0.3),
            .init(point: "gone", side: .above, threshold: 1, hysteresis: 0.1),
        ])
        #expect(refused.count == 4)
        #expect(filter.alarms.isEmpty)
        #expect(events(filter.process(poll(95), nowMs: 0).events) == ["alarm_above"], "raised afresh")
    }
}
