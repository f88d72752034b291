/// One line per record for people watching the gateway (the demo, `buffer dump --text`): the
/// time, the seq, the source, and the values with their units; alarms and gate or input events
/// are marked so they stand out. Pure, no I/O; the JSON forms stay the contract.
public enum RecordText {
    /// How a line should stand out on a terminal.
    public enum Emphasis: Sendable, Equatable {
        /// A sample.
        case normal
        /// A gate or input event (priority normal).
        case event
        /// Anything with priority `alarm`: alarms, gate faults, lost records.
        case alarm
    }

    /// The units of each source's points, `[source: [point: unit]]`, from a birth message
    /// (`{"sources":{"axlebox-1":{"points":{"bearing_temp_1":{"unit":"degC"}}}}}`).
    public static func units(fromBirth birth: JSON) -> [String: [String: String]] {
        guard case .object(let sources)? = birth["sources"] else { return [:] }
        var units: [String: [String: String]] = [:]
        for (source, description) in sources {
            guard case .object(let points)? = description["points"] else { continue }
            for (point, definition) in points {
                if let unit = definition["unit"]?.stringValue, !unit.isEmpty {
                    units[source, default: [:]][point] = unit
                }
            }
        }
        return units
    }

    /// The line for one record (a JSON object as in a batch or `buffer dump`), and how it should
    /// stand out. `units` as from `units(fromBirth:)`; points without a unit print bare.
    public static func line(
        _ record: JSON, units: [String: [String: String]] = [:]
    ) -> (
        text: String, emphasis: Emphasis
    ) {
        let source = record["source"]?.plainText ?? "?"
        let pointUnits = units[source] ?? [:]
        var time = record["ts"]?.stringValue ?? ""
        if let t = time.firstIndex(of: "T") { time = String(time[time.index(after: t)...]) }
        var head = time
        if let seq = record["seq"]?.intValue { head += "  seq \(seq)" }
        let isAlarm = record["priority"]?.stringValue == "alarm"

        guard record["kind"]?.stringValue == "event", let event = record["event"]?.stringValue else {
            var parts: [String] = []
            if case .object(let values)? = record["values"] {
                for (name, value) in values {
                    parts.append("\(name) \(HumanFormat.quantity(value.plainText, unit: pointUnits[name]))")
                }
            }
            if case .object(let errors)? = record["errors"], !errors.isEmpty {
                parts.append("FAILED " + errors.map { "\($0.0) \($0.1.plainText)" }.joined(separator: ", "))
            }
            return ("\(head)  \(pad(source, 16)) \(parts.joined(separator: ", "))", .normal)
        }

        let emphasis: Emphasis = isAlarm ? .alarm : .event
        let label: String
        var detail: String
        func quantity(_ key: String) -> String? {
            record[key].map {
                HumanFormat.quantity($0.plainText, unit: record["point"]?.stringValue.flatMap { pointUnits[$0] })
            }
        }
        switch event {
        case "alarm_above", "alarm_below":
            label = "ALARM"
            detail = "\(record["point"]?.plainText ?? "?") \(event == "alarm_above" ? "above" : "below")"
            if let threshold = quantity("threshold") { detail += " \(threshold)" }
            if let value = quantity("value") { detail += ": \(value)" }
        case "alarm_clear":
            label = "CLEAR"
            detail = "\(record["point"]?.plainText ?? "?") back"
            if let value = quantity("value") { detail += " to \(value)" }
            if let alarm = record["alarm"]?.stringValue { detail += " (\(alarm) cleared)" }
        case "opening", "open", "closing", "closed", "fault":
            label = event == "fault" ? "FAULT" : "GATE"
            detail = event == "fault" ? record["fault"]?.stringValue ?? "fault" : event
            var notes: [String] = []
            if let previous = record["previous"]?.stringValue { notes.append("was \(previous)") }
            if let travel = record["travel_ms"]?.doubleValue {
                notes.append("travel \(HumanFormat.milliseconds(travel))")
            }
            if let open = record["open_ms"]?.doubleValue { notes.append("open \(HumanFormat.milliseconds(open))") }
            if !notes.isEmpty { detail += " (\(notes.joined(separator: ", ")))" }
        case "active", "inactive":
            label = "INPUT"
            detail = event
            var notes: [String] = []
            if let previous = record["previous"]?.stringValue { notes.append("was \(previous)") }
            if let held = record["held_ms"]?.doubleValue { notes.append("held \(HumanFormat.milliseconds(held))") }
            if !notes.isEmpty { detail += " (\(notes.joined(separator: ", ")))" }
        default:
            label = isAlarm ? "ALARM" : "EVENT"
            detail = event
            if let from = record["from_seq"]?.intValue, let to = record["to_seq"]?.intValue {
                detail += " seqs \(HumanFormat.range(from, to))"
            }
            let shown: Set<String> = ["seq", "ts", "kind", "source", "event", "priority", "from_seq", "to_seq"]
            if case .object(let fields) = record {
                let rest = fields.filter { !shown.contains($0.0) }.map { "\($0.0) \($0.1.plainText)" }
                if !rest.isEmpty { detail += " (\(rest.joined(separator: ", ")))" }
            }
        }
        return ("\(head)  \(pad(source, 16)) \(pad(label, 5)) \(detail)", emphasis)
    }

    /// `text` wrapped in ANSI colours for a terminal: alarms bold red, events bold yellow.
    public static func coloured(_ text: String, _ emphasis: Emphasis) -> String {
        switch emphasis {
        case .normal: text
        case .event: "\u{1B}[1;33m\(text)\u{1B}[0m"
        case .alarm: "\u{1B}[1;31m\(text)\u{1B}[0m"
        }
    }

    private static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}
