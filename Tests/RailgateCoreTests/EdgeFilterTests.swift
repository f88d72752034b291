import Testing

@testable import RailgateCore

@Suite("Deadband and alarms")
struct EdgeFilterTests {
    let profile = DeviceProfile(
        model: "AX-4",
        points: [
            PointDefinition(
                name: "temp", table: .input, address: 0, type: .i16, scale: 0.1, deadband: 0.5, maxSilenceMs: 10_000,
                alarmAbove: 90),
            PointDefinition(
                name: "pressure", table: .holding, address: 1, type: .f32, alarmBelow: 3.5, alarmHysteresis: 0.2),
            PointDefinition(name: "door", table: .coil, address: 0, type: .bool),
        ])

    func poll(_ temp: Double?, pressure: Double = 5, door: Bool = false) -> Record {
        var values: [(String, PointValue)] = []
        var errors: [(String, ReadFailure)] = []
        if let temp { values.append(("temp", .number(temp))) } else { errors.append(("temp", .timeout)) }
        values += [("pressure", .number(pressure)), ("door", .bool(door))]
        return Record(
            timestamp: Timestamp(millisecondsSinceEpoch: 0), source: "axlebox-1",
            body: .sample(values: values, errors: errors))
    }

    func names(_ record: Record?) -> [String] {
        guard case .sample(let values, _)? = record?.body else { return [] }
        return values.map(\.0)
    }

    func events(_ records: [Record]) -> [String] {
        records.compactMap {
            if case .event(let name, let fields) = $0.body {
                return name + ":" + (fields.first { $0.0 == "point" }?.1.plainText ?? "")
            }
            return nil
        }
    }

    @Test("a deadband sends only moves larger than it, and at least every max_silence_ms")
    func deadband() {
        var filter = EdgeFilter(profile: profile)
        #expect(names(filter.process(poll(40.0), nowMs: 0).sample) == ["temp", "pressure", "door"])
        #expect(names(filter.process(poll(40.4), nowMs: 1000).sample) == ["pressure", "door"])
        #expect(
            names(filter.process(poll(39.6), nowMs: 2000).sample) == ["pressure", "door"],
            "0.4 below the last sent value")
        #expect(names(filter.process(poll(40.6), nowMs: 3000).sample) == ["temp", "pressure", "door"])
        #expect(names(filter.process(poll(40.6), nowMs: 12_999).sample) == ["pressure", "door"])
        #expect(
            names(filter.process(poll(40.6), nowMs: 13_000).sample) == ["temp", "pressure", "door"], "silence ended")
    }

    @Test("a sample with nothing left to send is dropped, one with errors is kept")
    func emptySamples() {
        let quiet = DeviceProfile(
            model: "x", points: [PointDefinition(name: "temp", table: .input, address: 0, type: .i16, deadband: 1)])
        var filter = EdgeFilter(profile: quiet)
        let one = Record(
            timestamp: .init(millisecondsSinceEpoch: 0), source: "d",
            body: .sample(values: [("temp", .number(20))], errors: []))
        #expect(filter.process(one, nowMs: 0).sample != nil)
        #expect(filter.process(one, nowMs: 1000).sample == nil)
        let failed = Record(
            timestamp: .init(millisecondsSinceEpoch: 0), source: "d",
            body: .sample(values: [], errors: [("temp", .crc)]))
        #expect(filter.process(failed, nowMs: 2000).sample == failed)
    }

    @Test("alarm_above raises once, holds through the hysteresis band, clears below it")
    func alarmAboveWithHysteresis() {
        var filter = EdgeFilter(profile: profile)
        var raised: [String] = []
        // A hot box hovering around 90 degC: 89.9, 90.2, 89.8, 90.1, ... then cooling down.
        for (step, temp) in [85, 89.9, 90.2, 89.8, 90.1, 89.7, 90.3, 89.6, 89.4, 90.4].enumerated() {
            let result = filter.process(poll(temp), nowMs: Int64(step) * 1000)
            raised += events(result.events)
            if temp == 90.2 {
                #expect(names(result.sample).contains("temp"), "the alarming value is sent whatever the deadband")
                #expect(result.events.first?.priority == .alarm)
            }
        }
        // Hysteresis is the deadband (0.5): clears below 89.5 only.
        #expect(raised == ["alarm_above:temp", "alarm_clear:temp", "alarm_above:temp"])
        #expect(filter.alarms == ["temp": .above])
    }

    @Test("alarm_below with its own hysteresis; failed reads change nothing")
    func alarmBelow() {
        var filter = EdgeFilter(profile: profile)
        var raised: [String] = []
        for pressure in [5.0, 3.4, 3.6, 3.69, 3.4, 3.71, 3.3] {
            raised += events(filter.process(poll(40, pressure: pressure), nowMs: 0).events)
        }
        #expect(raised == ["alarm_below:pressure", "alarm_clear:pressure", "alarm_below:pressure"])
        let hot = filter.process(poll(95, pressure: 3.3), nowMs: 0)
        #expect(events(hot.events) == ["alarm_above:temp"])
        #expect(filter.process(poll(nil, pressure: 3.3), nowMs: 0).events.isEmpty)
        #expect(filter.alarms["temp"] == .above)
    }

    @Test("alarm events carry point, value, threshold and alarm priority")
    func eventShape() {
        var filter = EdgeFilter(profile: profile)
        let event = filter.process(poll(93.1), nowMs: 0).events[0]
        #expect(
            event.text(seq: 5)
                == #"{"seq":5,"ts":"1970-01-01T00:00:00.000Z","kind":"event","source":"axlebox-1","event":"alarm_above","point":"temp","value":93.1,"threshold":90.0,"priority":"alarm"}"#
        )
    }

    @Test("default hysteresis")
    func defaultHysteresis() {
        #expect(
            PointDefinition(name: "t", table: .input, address: 0, type: .i16, scale: 0.1, alarmAbove: 90).hysteresis
                == 1.8)
        #expect(PointDefinition(name: "t", table: .input, address: 0, type: .u16, alarmBelow: 0).hysteresis == 1)
    }
}
