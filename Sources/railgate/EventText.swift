import Glibc
import RailgateCore

/// Turns the records and events the daemon streams (`follow`) into one line each that a
/// technician reads at a glance: values with their units, alarms and gate events standing out.
enum EventText {
    /// How a line stands out.
    enum Emphasis: Equatable {
        case plain, gate, alarm, cleared, notice
    }

    /// The barrier states a gate's events are named after.
    static let gateStates: Set<String> = ["closed", "opening", "open", "closing", "fault", "unknown"]

    /// The line for one streamed JSON document, and how it should stand out; nil for the
    /// stream's hello line (`kind` = `following`).
    static func render(_ document: JSON) -> (text: String, emphasis: Emphasis)? {
        let kind = document["kind"]?.stringValue
        if kind == "following" { return nil }
        if kind == "dropped" {
            let count = document["count"]?.intValue ?? 0
            return ("-- \(plural(count, "record")) not shown: this client read too slowly --", .notice)
        }
        if let error = document["error"]?.stringValue { return ("daemon answered: \(error)", .notice) }
        let time = clock(document["ts"]?.stringValue)
        let source = (document["source"]?.stringValue ?? "?").padding(to: 14)
        let body: String
        let emphasis: Emphasis
        if kind == "sample" {
            body = sample(document)
            emphasis = .plain
        } else {
            (body, emphasis) = event(document)
        }
        return ("\(time)  \(source) \(body)", emphasis)
    }

    /// `name value unit` for each value, then `name: reason` for each point that failed.
    static func sample(_ document: JSON) -> String {
        var parts: [String] = []
        let units = document["units"]
        if case .object(let values)? = document["values"] {
            for (name, value) in values {
                parts.append("\(name) \(valueText(value, unit: units?[name]?.stringValue))")
            }
        }
        if case .object(let errors)? = document["errors"] {
            for (name, reason) in errors { parts.append("\(name): \(reason.plainText)") }
        }
        return parts.joined(separator: "  ")
    }

    /// A value with its unit (`41.5 degC`), integers without a decimal point.
    static func valueText(_ value: JSON, unit: String?) -> String {
        var text: String
        if let number = value.doubleValue, value.stringValue == nil {
            text = number == number.rounded() && abs(number) < 1e15 ? String(Int64(number)) : value.plainText
        } else {
            text = value.plainText
        }
        if let unit, !unit.isEmpty { text += " \(unit)" }
        return text
    }

    static func event(_ document: JSON) -> (String, Emphasis) {
        let name = document["event"]?.stringValue ?? "?"
        let previous = document["previous"]?.stringValue
        let unit = document["unit"]?.stringValue
        let point = document["point"]?.stringValue ?? "?"
        let value = document["value"].map { valueText($0, unit: unit) } ?? "?"
        let threshold = document["threshold"].map { valueText($0, unit: unit) } ?? "?"
        switch name {
        case "alarm_above", "alarm_below":
            let side = name == "alarm_above" ? "above" : "below"
            return ("ALARM \(point) \(value), \(side) \(threshold)", .alarm)
        case "alarm_clear":
            let side = document["alarm"]?.stringValue == "alarm_below" ? "below" : "above"
            return ("alarm cleared: \(point) \(value) (was \(side) \(threshold))", .cleared)
        case "fault":
            let fault = document["fault"]?.stringValue ?? "?"
            return ("GATE FAULT \(fault) (was \(previous ?? "unknown"))", .alarm)
        case _ where gateStates.contains(name) && previous != nil:
            var text = "gate \(name.uppercased()) (was \(previous ?? "unknown"))"
            if let travel = document["travel_ms"]?.intValue { text += ", travel \(seconds(travel))" }
            if let open = document["open_ms"]?.intValue { text += ", open for \(seconds(open))" }
            return (text, .gate)
        case "active", "inactive":
            let alarm = document["priority"]?.stringValue == "alarm"
            return (
                "input \(name.uppercased()) (was \(previous ?? "unknown"))", alarm && name == "active" ? .alarm : .gate
            )
        default:
            let skipped: Set<String> = ["seq", "ts", "kind", "source", "event", "priority"]
            var text = "event \(name)"
            if case .object(let members) = document {
                for (key, value) in members where !skipped.contains(key) { text += " \(key)=\(value.plainText)" }
            }
            return (text, document["priority"]?.stringValue == "alarm" ? .alarm : .plain)
        }
    }

    /// `12:03:04.123` from an ISO 8601 timestamp (UTC, as records carry it).
    static func clock(_ timestamp: String?) -> String {
        guard let timestamp, let t = timestamp.firstIndex(of: "T") else { return "--:--:--.---" }
        return String(timestamp[timestamp.index(after: t)...].prefix { $0 != "Z" }.prefix(12)).padding(to: 12)
    }

    /// `1.2 s` from milliseconds.
    static func seconds(_ milliseconds: Int) -> String {
        "\(milliseconds / 1000).\(milliseconds % 1000 / 100) s"
    }

    /// `1 record`, `3 records`.
    static func plural(_ count: Int, _ noun: String) -> String { "\(count) \(noun)\(count == 1 ? "" : "s")" }
}

/// ANSI styling, used only when standard output is a terminal and `NO_COLOR` is not set.
struct Style {
    let enabled: Bool

    /// Colour when `fd` is a terminal and `NO_COLOR` is unset or empty (no-color.org).
    static func forOutput(_ fd: Int32 = 1) -> Style {
        let noColor = getenv("NO_COLOR").map { String(cString: $0) } ?? ""
        return Style(enabled: isatty(fd) == 1 && noColor.isEmpty)
    }

    func apply(_ text: String, _ emphasis: EventText.Emphasis) -> String {
        guard enabled else { return text }
        let code: String
        switch emphasis {
        case .plain: return text
        case .gate: code = "1;36"
        case .alarm: code = "1;31"
        case .cleared: code = "32"
        case .notice: code = "33"
        }
        return "\u{1B}[\(code)m\(text)\u{1B}[0m"
    }

    func bold(_ text: String) -> String { enabled ? "\u{1B}[1m\(text)\u{1B}[0m" : text }
    func reverse(_ text: String) -> String { enabled ? "\u{1B}[7m\(text)\u{1B}[0m" : text }
}

extension String {
    /// Padded with spaces to `width` characters (never cut).
    func padding(to width: Int) -> String {
        count >= width ? self : self + String(repeating: " ", count: width - count)
    }
}
