import RailgateCore

/// One frame of `railgate top`: the daemon's status document laid out for a terminal of
/// `width` x `height` characters (an 80x24 serial console at least), ASCII only. Pure: the
/// caller draws the lines; styling is applied after each line is cut to the width.
enum TopScreen {
    /// The frame's lines, at most `height`, each at most `width` characters before styling.
    /// - Parameters:
    ///   - status: the daemon's `status` document, or nil when it did not answer (`problem` says why).
    ///   - clock: the wall-clock time shown in the title (`15:42:07`).
    ///   - live: a screen redrawn in place: filled to `height` with the key help at the bottom.
    ///     A printed frame (not a terminal, or `--iterations`) ends after its last line instead.
    static func render(
        status: JSON?, problem: String?, width: Int, height: Int, intervalText: String, clock: String,
        style: Style, live: Bool = true
    ) -> [String] {
        let width = max(20, width)
        let height = max(8, height)
        var lines: [(String, EventText.Emphasis?)] = []
        func line(_ text: String, _ emphasis: EventText.Emphasis? = nil) { lines.append((text, emphasis)) }

        let gateway = status?["gateway"]?.plainText ?? "?"
        let uptime = status?["uptime_s"]?.doubleValue.map { "up \(duration($0))" } ?? ""
        let title = "railgate top  \(gateway)  \(uptime)  \(clock) UTC  every \(intervalText)"
        guard let status else {
            var frame = [style.reverse(cut(title, width).padding(to: width))]
            frame.append(style.apply(cut("daemon: \(problem ?? "no answer"); retrying", width), .alarm))
            if live { frame.append(cut("q quits", width)) }
            return frame
        }

        // The link and the buffer: two lines.
        let upstream = status["upstream"]
        var link = "link    \(upstream?["state"]?.plainText ?? "?")"
        if let url = upstream?["url"]?.stringValue { link += " \(url)" }
        link += "  sent \(rate(upstream?["sent_per_s"]))"
        if let inFlight = upstream?["in_flight"]?.intValue, inFlight > 0 { link += "  \(inFlight) in flight" }
        let linkDown = upstream?["state"]?.stringValue.map { $0 != "connected" && $0 != "disabled" } ?? false
        let buffer = status["buffer"]
        let records = buffer?["records"]?.intValue ?? 0
        var store = "buffer  \(EventText.plural(records, "record"))"
        store += "  \(bytes(buffer?["bytes"]?.intValue ?? 0)) of \(bytes(buffer?["max_bytes"]?.intValue ?? 0))"
        store += "  oldest " + (buffer?["oldest_age_s"]?.doubleValue.map(duration) ?? "-")
        store += "  stored \(rate(buffer?["stored_per_s"]))"
        let dropped = buffer?["dropped"]?.intValue ?? 0
        if dropped > 0 { store += "  DROPPED \(dropped)" }
        if let disk = buffer?["disk_error"]?.stringValue { store += "  DISK: \(disk)" }
        if let upstreamError = upstream?["last_error"]?.stringValue, linkDown { link += "  (\(upstreamError))" }

        // Gates and inputs, flowed on lines of their own.
        let gates = (status["gates"]?.arrayValue ?? []).map { gate -> String in
            var text = "\(gate["name"]?.plainText ?? "?") \(gate["state"]?.plainText.uppercased() ?? "?")"
            if let fault = gate["fault"]?.stringValue { text += " (\(fault))" }
            return text
        }
        let inputs = (status["inputs"]?.arrayValue ?? []).map {
            "\($0["name"]?.plainText ?? "?") \($0["state"]?.plainText ?? "?")"
        }
        let gateFault = (status["gates"]?.arrayValue ?? []).contains {
            $0["state"]?.stringValue == "fault" || $0["state"]?.stringValue == "unavailable"
        }
        let gateLines = gates.isEmpty ? [] : flow(gates, prefix: "gates   ", width: width)
        let inputLines = inputs.isEmpty ? [] : flow(inputs, prefix: "inputs  ", width: width)

        // Alarms: a header and one line each (the value now from the device's points).
        let devices = status["devices"]?.arrayValue ?? []
        let alarms = status["alarms"]?.arrayValue ?? []
        var alarmLines: [String] = []
        for alarm in alarms {
            let device = alarm["device"]?.plainText ?? "?"
            let point = alarm["point"]?.plainText ?? "?"
            let side = alarm["side"]?.stringValue == "alarm_below" ? "below" : "above"
            let now = devices.first { $0["name"]?.stringValue == device }?["points"]?.arrayValue?.first {
                $0["name"]?.stringValue == point
            }
            let value = now.map(pointValue) ?? "?"
            alarmLines.append(
                "  \(device) \(point) \(value), \(side) \(alarm["threshold"].map { EventText.valueText($0, unit: now?["unit"]?.stringValue) } ?? "?")"
            )
        }

        // Rows: title, link, buffer, devices header, gates, inputs, alarms, events, footer.
        let events = status["recent_events"]?.arrayValue ?? []
        let shownAlarms = min(alarmLines.count, 4)
        let alarmRows = 1 + max(shownAlarms, alarmLines.isEmpty ? 0 : 1) + (alarmLines.count > shownAlarms ? 1 : 0)
        let eventMinimum = events.isEmpty ? 0 : 1 + min(2, events.count)
        let fixed = 3 + 1 + gateLines.count + inputLines.count + alarmRows + eventMinimum + 1
        let deviceRows = max(0, height - fixed)

        line(title)
        line(link, linkDown ? .alarm : nil)
        line(store, dropped > 0 || buffer?["disk_error"]?.stringValue != nil ? .alarm : nil)
        line("DEVICES \(devices.count)  (latency of the last poll, share of the last 20 polls that failed)")
        // Each device: one line, then its values flowed on the rows left, shared out one row at
        // a time among the devices that need more, so every device shows some values.
        let shownDevices = devices.count <= deviceRows ? devices.count : max(0, deviceRows - 1)
        let valueItems = devices.prefix(shownDevices).map { device in
            (device["points"]?.arrayValue ?? []).map { point in
                "\(point["name"]?.plainText ?? "?") \(pointValue(point))"
            }
        }
        let needed = valueItems.map { $0.isEmpty ? 0 : flow($0, prefix: "  ", width: width).count }
        var budgets = [Int](repeating: 0, count: shownDevices)
        var spare = deviceRows - shownDevices
        while spare > 0,
            let index = budgets.indices.filter({ budgets[$0] < needed[$0] }).min(by: {
                budgets[$0] < budgets[$1]
            })
        {
            budgets[index] += 1
            spare -= 1
        }
        for (index, device) in devices.prefix(shownDevices).enumerated() {
            let answering = device["answering"] != .bool(false)
            var head = (device["name"]?.plainText ?? "?").padding(to: 16)
            head += answering ? "ok  " : "DOWN"
            head +=
                "  lat " + (device["latency_ms"]?.doubleValue.map { "\(Int($0.rounded()))ms" } ?? "-").padding(to: 7)
            head +=
                "  err "
                + (device["error_rate"]?.doubleValue.map { "\(Int(($0 * 100).rounded()))%" } ?? "-")
                .padding(to: 5)
            head += "  polls \(device["polls"]?.plainText ?? "0")"
            if !answering, let error = device["last_error"]?.stringValue { head += "  \(error)" }
            line(head, answering ? nil : .alarm)
            for text in flow(valueItems[index], prefix: "  ", width: width, maxLines: budgets[index]) { line(text) }
        }
        if shownDevices < devices.count {
            line("  ... \(EventText.plural(devices.count - shownDevices, "more device"))")
        }
        for text in gateLines { line(text, gateFault ? .alarm : .gate) }
        for text in inputLines { line(text) }
        if alarmLines.isEmpty {
            line("alarms  none")
        } else {
            line("ALARMS  \(alarmLines.count) active", .alarm)
            for text in alarmLines.prefix(shownAlarms) { line(text, .alarm) }
            if alarmLines.count > shownAlarms { line("  ... \(alarmLines.count - shownAlarms) more", .alarm) }
        }
        let eventRows = height - 1 - lines.count
        if !events.isEmpty, eventRows >= 2 {
            line("recent events")
            for event in events.suffix(eventRows - 1) {
                if let (text, emphasis) = EventText.render(event) { line("  " + text, emphasis) }
            }
        }
        if live {
            while lines.count < height - 1 { line("") }
            line("q quits (Ctrl-C too)")
        }
        return lines.prefix(height).enumerated().map { index, entry in
            let text = cut(entry.0, width)
            if index == 0 { return style.reverse(text.padding(to: width)) }
            return entry.1.map { style.apply(text, $0) } ?? text
        }
    }

    /// A point's value with its unit, or its error.
    static func pointValue(_ point: JSON) -> String {
        if let value = point["value"] { return EventText.valueText(value, unit: point["unit"]?.stringValue) }
        return "!" + (point["error"]?.plainText ?? "?")
    }

    /// `items` two spaces apart on lines of at most `width`, the first line starting with
    /// `prefix` and the others indented as far. With `maxLines`, at most that many lines, the
    /// last ending with `+N more` when items did not fit.
    static func flow(_ items: [String], prefix: String, width: Int, maxLines: Int = .max) -> [String] {
        guard maxLines > 0, !items.isEmpty else { return [] }
        var lines: [String] = []
        var current: [String] = []
        let indent = String(repeating: " ", count: prefix.count)
        func text(_ parts: [String]) -> String { (lines.isEmpty ? prefix : indent) + parts.joined(separator: "  ") }
        for (index, item) in items.enumerated() {
            if !current.isEmpty, text(current + [item]).count > width {
                if lines.count == maxLines - 1 {
                    // The last line allowed: what does not fit is counted.
                    var rest = items.count - index
                    while current.count > 1, text(current + ["+\(rest) more"]).count > width {
                        current.removeLast()
                        rest += 1
                    }
                    lines.append(text(current + ["+\(rest) more"]))
                    return lines
                }
                lines.append(text(current))
                current = []
            }
            current.append(item)
        }
        lines.append(text(current))
        return lines
    }

    /// `text` cut to `width` characters.
    static func cut(_ text: String, _ width: Int) -> String { text.count <= width ? text : String(text.prefix(width)) }

    /// `42s`, `5m03s`, `1h02m`, `2d03h`.
    static func duration(_ seconds: Double) -> String {
        let whole = Int(max(0, seconds))
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        if whole < 60 { return "\(whole)s" }
        if whole < 3600 { return "\(whole / 60)m\(two(whole % 60))s" }
        if whole < 86_400 { return "\(whole / 3600)h\(two(whole / 60 % 60))m" }
        return "\(whole / 86_400)d\(two(whole / 3600 % 24))h"
    }

    /// `512 B`, `4.0 KiB`, `64.0 MiB`.
    static func bytes(_ count: Int) -> String {
        if count < 1024 { return "\(count) B" }
        let units = ["KiB", "MiB", "GiB", "TiB"]
        var value = Double(count) / 1024
        var index = 0
        while value >= 1024, index < units.count - 1 {
            value /= 1024
            index += 1
        }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[index])"
    }

    /// `3.2/s`, or `-` before there is a rate.
    static func rate(_ value: JSON?) -> String {
        guard let rate = value?.doubleValue else { return "-" }
        let tenths = Int((rate * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)/s"
    }
}
