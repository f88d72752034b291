import RailgateCore
import RailgateModbus

/// Faults a simulated slave injects, read from a scenario file (`Simulators/scenarios/*.toml`):
///
///     [[fault]]
///     units = [2]        # which unit ids (all if absent)
///     kind = "dead"      # dead | exception | slow | crc | short
///     after_s = 3.0      # starts this long after the simulator started (0 if absent)
///     for_s = 4.0        # lasts this long (for ever if absent)
///     code = 2           # exception: the exception code
///     delay_ms = 300     # slow: how late the reply comes
///     table = "holding"  # optional: only requests of this table...
///     address = 42       # ...that cover this address
///     count_above = 50   # optional: only requests for more items than this (a device that
///                        # refuses long reads: kind = "exception", code = 3)
///
/// and moves points' values, to drive alarms (a bearing heating into a hot box):
///
///     [[ramp]]
///     point = "bearing_temp_3"
///     units = [2]        # all if absent
///     to = 95.0          # engineering value reached...
///     after_s = 30.0     # ...starting this long after the simulator started...
///     over_s = 60.0      # ...over this long (then held there); a ramp from or to nan or
///                        # inf jumps at after_s (a sensor dropping out or coming back)
struct FaultScenario {
    /// A point's value moving linearly to `target`, then held.
    struct Ramp {
        var point: String
        var units: Set<Int>?
        var target: Double
        var afterSeconds: Double
        var overSeconds: Double
    }

    enum Kind: Equatable {
        case dead
        case exception(UInt8)
        case slow(milliseconds: Int)
        case damaged(ReplyDamage)
    }

    struct Fault {
        var units: Set<Int>?
        var kind: Kind
        var afterSeconds: Double
        var forSeconds: Double?
        var table: RegisterTable?
        var address: Int?
        var countAbove: Int?

        func applies(to request: ModbusIndication, at elapsed: Double) -> Bool {
            guard elapsed >= afterSeconds, forSeconds.map({ elapsed < afterSeconds + $0 }) ?? true else { return false }
            if let units, !units.contains(request.unit) { return false }
            if let table, request.readTable != table { return false }
            if let countAbove, request.count <= countAbove { return false }
            if let address, !(request.address..<(request.address + max(1, request.count))).contains(address) {
                return false
            }
            return true
        }
    }

    var faults: [Fault] = []
    var ramps: [Ramp] = []

    /// The first fault that applies to `request` now, if any.
    func fault(for request: ModbusIndication, at elapsed: Double) -> Kind? {
        faults.first { $0.applies(to: request, at: elapsed) }?.kind
    }

    /// Reads a scenario file; problems come back as `ConfigErrors` with lines.
    static func parse(_ text: String, file: String) throws(ConfigErrors) -> FaultScenario {
        let root = try TOMLParser.parse(text, file: file)
        var problems: [ConfigProblem] = []
        var scenario = FaultScenario()
        for key in root.keys where key != "fault" && key != "ramp" {
            problems.append(ConfigProblem(file: file, line: root[key]?.line, message: "unknown key '\(key)'"))
        }
        if case .array(let entries)? = root["ramp"]?.kind {
            for case .table(let table) in entries.map(\.kind) {
                // `to` may be NaN or infinite: that is how a sensor dropout is simulated.
                guard let point = table.string("point"), let target = table.number("to") else {
                    problems.append(
                        ConfigProblem(file: file, line: table.line, message: "a [[ramp]] needs point and to"))
                    continue
                }
                var units: Set<Int>?
                if case .array(let list)? = table["units"]?.kind {
                    units = Set(list.compactMap { if case .integer(let unit) = $0.kind { Int(unit) } else { nil } })
                }
                scenario.ramps.append(
                    Ramp(
                        point: point, units: units, target: target,
                        afterSeconds: table.number("after_s", within: 0...31_536_000, file: file, problems: &problems)
                            ?? 0,
                        overSeconds: max(
                            0.001, table.number("over_s", within: 0...31_536_000, file: file, problems: &problems) ?? 10
                        )))
            }
            // A later ramp on the same point takes over from an earlier one.
            scenario.ramps.sort { $0.afterSeconds < $1.afterSeconds }
        }
        guard case .array(let entries)? = root["fault"]?.kind else {
            if !problems.isEmpty { throw ConfigErrors(problems) }
            return scenario
        }
        for entry in entries {
            guard case .table(let table) = entry.kind else { continue }
            let text = table.string
            let known: Set = [
                "units", "kind", "after_s", "for_s", "code", "delay_ms", "table", "address", "count_above",
            ]
            for key in table.keys where !known.contains(key) {
                problems.append(
                    ConfigProblem(file: file, line: table[key]?.line, message: "unknown key '\(key)' in [[fault]]"))
            }
            var units: Set<Int>?
            if case .array(let list)? = table["units"]?.kind {
                units = Set(
                    list.compactMap { if case .integer(let unit) = $0.kind { return Int(unit) } else { return nil } })
            }
            let kind: Kind
            switch text("kind") {
            case "dead": kind = .dead
            case "exception":
                kind = .exception(
                    UInt8(table.number("code", within: 1...255, whole: true, file: file, problems: &problems) ?? 4))
            case "slow":
                kind = .slow(
                    milliseconds: Int(
                        table.number("delay_ms", within: 0...600_000, whole: true, file: file, problems: &problems)
                            ?? 1000))
            case "crc": kind = .damaged(.badCRC)
            case "short": kind = .damaged(.truncated)
            default:
                problems.append(
                    ConfigProblem(
                        file: file, line: table["kind"]?.line ?? table.line,
                        message: "kind must be dead, exception, slow, crc or short"))
                continue
            }
            var tableFilter: RegisterTable?
            if let name = text("table") {
                tableFilter = RegisterTable(rawValue: name)
                if tableFilter == nil {
                    problems.append(
                        ConfigProblem(
                            file: file, line: table["table"]?.line,
                            message: "table must be coil, discrete, input or holding"))
                }
            }
            scenario.faults.append(
                Fault(
                    units: units, kind: kind,
                    afterSeconds: table.number("after_s", within: 0...31_536_000, file: file, problems: &problems) ?? 0,
                    forSeconds: table.number("for_s", within: 0...31_536_000, file: file, problems: &problems),
                    table: tableFilter,
                    address: table.number("address", within: 0...65_535, whole: true, file: file, problems: &problems)
                        .map { Int($0) },
                    countAbove: table.number(
                        "count_above", within: 0...65_535, whole: true, file: file, problems: &problems
                    ).map { Int($0) }))
        }
        if !problems.isEmpty { throw ConfigErrors(problems) }
        return scenario
    }
}
