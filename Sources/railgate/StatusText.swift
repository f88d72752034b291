import RailgateCore

/// Turns the daemon's status document into lines a technician reads at a glance: a line each
/// for the gateway, its buffer and its uplink, then a table each for buses, devices, gates and
/// inputs (aligned columns, units, ranges as `12-16`). Not a contract: `status --json` is.
enum StatusText {
    static func render(_ document: String) -> String {
        guard let status = try? JSONReader.parse(document) else { return document }
        if let error = status["error"]?.stringValue { return "daemon answered: \(error)" }
        var lines: [String] = []
        func field(_ label: String, _ text: String) { lines.append(label.padding(to: 10) + text) }

        var gateway = "\(status["gateway"]?.plainText ?? "?"), railgate \(status["version"]?.plainText ?? "?")"
        gateway += ", up \(HumanFormat.duration(seconds: status["uptime_s"]?.doubleValue ?? 0))"
        if let backend = status["gpio_backend"]?.stringValue { gateway += ", GPIO \(backend)" }
        field("gateway", gateway)

        if let buffer = status["buffer"] { bufferLines(buffer, field) }
        if let upstream = status["upstream"] { upstreamLines(upstream, field) }

        let buses = status["buses"]?.arrayValue ?? []
        if !buses.isEmpty {
            var rows = [["bus", "endpoint", "line busy"]]
            for bus in buses {
                rows.append([
                    bus["name"]?.plainText ?? "?", bus["endpoint"]?.plainText ?? "",
                    HumanFormat.percent(bus["utilisation"]?.doubleValue ?? 0, of: 1),
                ])
            }
            lines.append("")
            lines += HumanFormat.columns(rows, rightAligned: [2])
        }

        let devices = status["devices"]?.arrayValue ?? []
        if !devices.isEmpty {
            var rows = [["device", "bus", "polls", "errors", "requests", "state"]]
            for device in devices {
                var state = device["answering"] == .bool(false) ? "NOT ANSWERING" : "answering"
                if let error = device["last_error"]?.stringValue { state += "  last error: \(error)" }
                rows.append([
                    device["name"]?.plainText ?? "?", device["bus"]?.plainText ?? "",
                    device["polls"]?.plainText ?? "0", device["errors"]?.plainText ?? "0",
                    device["requests"]?.plainText ?? "", state,
                ])
            }
            lines.append("")
            lines += HumanFormat.columns(rows, rightAligned: [2, 3, 4])
        }

        let gates = status["gates"]?.arrayValue ?? []
        if !gates.isEmpty {
            var rows = [["gate", "state", "chip"]]
            for gate in gates {
                var state = gate["state"]?.plainText ?? "?"
                if let fault = gate["fault"]?.stringValue { state += " FAULT \(fault)" }
                var chip = gate["chip"]?.plainText ?? ""
                if let error = gate["error"]?.stringValue { chip += "  (\(error))" }
                rows.append([gate["name"]?.plainText ?? "?", state, chip])
            }
            lines.append("")
            lines += HumanFormat.columns(rows)
        }

        let inputs = status["inputs"]?.arrayValue ?? []
        if !inputs.isEmpty {
            var rows = [["input", "state", "chip", "line"]]
            for input in inputs {
                var line = input["line"]?.plainText ?? ""
                if let error = input["error"]?.stringValue { line += "  (\(error))" }
                rows.append([
                    input["name"]?.plainText ?? "?", input["state"]?.plainText ?? "?", input["chip"]?.plainText ?? "",
                    line,
                ])
            }
            lines.append("")
            lines += HumanFormat.columns(rows)
        }
        return lines.joined(separator: "\n")
    }

    private static func bufferLines(_ buffer: JSON, _ field: (String, String) -> Void) {
        let records = buffer["records"]?.intValue ?? 0
        let nextSeq = buffer["next_seq"]?.intValue ?? 0
        var line = HumanFormat.count(records, "record")
        if let bytes = buffer["bytes"]?.intValue {
            line += " (\(HumanFormat.bytes(bytes))"
            if let max = buffer["max_bytes"]?.intValue, max > 0 {
                line += " of \(HumanFormat.bytes(max)), \(HumanFormat.percent(Double(bytes), of: Double(max)))"
            }
            line += ")"
        }
        if records > 0, let first = buffer["first_seq"]?.intValue, nextSeq > first {
            line += ", \(first == nextSeq - 1 ? "seq" : "seqs") \(HumanFormat.range(first, nextSeq - 1))"
        }
        line += ", next seq \(nextSeq)"
        if let durable = buffer["durable_seq"]?.intValue, durable > 0 { line += ", on flash through seq \(durable)" }
        let dropped = buffer["dropped"]?.intValue ?? 0
        if dropped == 0 {
            line += ", none dropped"
        } else {
            line +=
                ", \(dropped) dropped (\(buffer["dropped_normal"]?.plainText ?? "?") normal, \(buffer["dropped_alarm"]?.plainText ?? "?") alarm)"
        }
        field("buffer", line)
        if let waiting = buffer["waiting_in_memory"]?.intValue, waiting > 0 {
            field("", "\(HumanFormat.count(waiting, "record")) waiting in memory for the disk")
        }
        if let disk = buffer["disk_error"]?.stringValue { field("", "DISK ERROR: \(disk)") }
        if let lost = buffer["lost_seqs"]?.intValue, lost > 0 {
            var text = "LOST \(HumanFormat.count(lost, "seq")) since start"
            if let loss = buffer["last_loss"], let from = loss["from_seq"]?.intValue, let to = loss["to_seq"]?.intValue
            {
                text += ", the last seqs \(HumanFormat.range(from, to)) (\(loss["reason"]?.plainText ?? "?"))"
            }
            field("", text)
        }
    }

    private static func upstreamLines(_ upstream: JSON, _ field: (String, String) -> Void) {
        var line = upstream["state"]?.plainText ?? "?"
        if let url = upstream["url"]?.stringValue { line += " \(url)" }
        let acked = upstream["acked_seq"]?.intValue ?? 0
        line += acked > 0 ? ", acknowledged through seq \(acked)" : ", nothing acknowledged yet"
        line += ", " + HumanFormat.count(upstream["batches"]?.intValue ?? 0, "batch", plural: "batches")
        if let inFlight = upstream["in_flight"]?.intValue, inFlight > 0 { line += ", \(inFlight) in flight" }
        field("upstream", line)
        if let undeliverable = upstream["undeliverable"]?.intValue, undeliverable > 0 {
            field("", "\(HumanFormat.count(undeliverable, "record")) set aside as undeliverable")
        }
        if let error = upstream["last_error"]?.stringValue { field("", "last error: \(error)") }
    }
}
