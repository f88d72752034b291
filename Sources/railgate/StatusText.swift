import RailgateCore

/// Turns the daemon's status document into lines a technician reads at a glance.
enum StatusText {
    static func render(_ document: String) -> String {
        guard let status = try? JSONReader.parse(document) else { return document }
        if let error = status["error"]?.stringValue { return "daemon answered: \(error)" }
        var lines: [String] = []
        let uptime = Int(status["uptime_s"]?.doubleValue ?? 0)
        lines.append(
            "gateway   \(status["gateway"]?.plainText ?? "?")  version \(status["version"]?.plainText ?? "?")  up \(uptime / 3600)h\(uptime / 60 % 60)m\(uptime % 60)s"
                + (status["gpio_backend"]?.stringValue.map { "  GPIO \($0)" } ?? "")
        )
        if let buffer = status["buffer"] {
            var line =
                "buffer    \(buffer["records"]?.plainText ?? "?") records, \(buffer["bytes"]?.plainText ?? "?") bytes"
            line += ", seq \(buffer["first_seq"]?.plainText ?? "?")..<\(buffer["next_seq"]?.plainText ?? "?")"
            line += ", dropped \(buffer["dropped"]?.plainText ?? "0")"
            if let disk = buffer["disk_error"]?.stringValue { line += "  DISK ERROR: \(disk)" }
            lines.append(line)
        }
        if let upstream = status["upstream"] {
            var line = "upstream  \(upstream["state"]?.plainText ?? "?")"
            if let url = upstream["url"]?.stringValue { line += " \(url)" }
            line +=
                ", acked seq \(upstream["acked_seq"]?.plainText ?? "?"), \(upstream["batches"]?.plainText ?? "0") batches"
            if let error = upstream["last_error"]?.stringValue { line += "  (\(error))" }
            lines.append(line)
        }
        for bus in status["buses"]?.arrayValue ?? [] {
            let share = Int(((bus["utilisation"]?.doubleValue ?? 0) * 100).rounded())
            lines.append(
                "bus       \(bus["name"]?.plainText ?? "?")  \(bus["endpoint"]?.plainText ?? "")  line busy \(share)%")
        }
        for device in status["devices"]?.arrayValue ?? [] {
            var line =
                "device    \(device["name"]?.plainText ?? "?")  polls \(device["polls"]?.plainText ?? "0")  errors \(device["errors"]?.plainText ?? "0")"
            if device["answering"] == .bool(false) { line += "  NOT ANSWERING" }
            if let error = device["last_error"]?.stringValue { line += "  last error: \(error)" }
            lines.append(line)
        }
        for gate in status["gates"]?.arrayValue ?? [] {
            lines.append("gate      \(gate["name"]?.plainText ?? "?")  \(gate["state"]?.plainText ?? "?")")
        }
        for input in status["inputs"]?.arrayValue ?? [] {
            var line = "input     \(input["name"]?.plainText ?? "?")  \(input["state"]?.plainText ?? "?")"
            if let error = input["error"]?.stringValue { line += "  (\(error))" }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }
}
