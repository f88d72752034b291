import ArgumentParser
import Glibc
import RailgateCore
import RailgateSystem

/// `railgate-sim records`: prints what a gateway publishes as one line per record, for the
/// demo and for people watching a broker. Reads `TOPIC PAYLOAD` lines (`mosquitto_sub -F
/// '%t %p'`): a birth message on `.../status` gives the points' units, each batch on
/// `.../telemetry` becomes its records' lines. A line that is JSON alone is taken as one record
/// or one batch (`railgate buffer dump`, or a stream of records from the daemon). A `compact/1`
/// batch (`payload = "compact"`) is decoded first (`CompactBatch.decode`).
struct RecordsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "records",
        abstract: "Print telemetry batches read on standard input as one line per record, with units.",
        discussion: """
            Alarms print in bold red and gate and input events in bold yellow on a terminal (not with \
            NO_COLOR set, or --no-colour). Each line is written at once.

            Examples:
              mosquitto_sub -h 127.0.0.1 -t 'railgate/#' -F '%t %p' | railgate-sim records
              railgate buffer dump --state-dir /var/lib/railgate | railgate-sim records
            """)

    @Flag(name: [.customLong("no-colour"), .customLong("no-color")], help: "Never colour the lines.")
    var noColour = false

    func run() throws {
        let colour = !noColour && isatty(1) == 1 && getenv("NO_COLOR") == nil
        var units: [String: [String: String]] = [:]
        func show(_ record: JSON) {
            let (text, emphasis) = RecordText.line(record, units: units)
            StandardStreams.out(colour ? RecordText.coloured(text, emphasis) : text)
        }
        while let line = readLine() {
            var topic = ""
            var payload = Substring(line)
            if !line.hasPrefix("{"), let space = line.firstIndex(of: " ") {
                topic = String(line[..<space])
                payload = line[line.index(after: space)...]
            }
            guard var document = try? JSONReader.parse(String(payload)) else {
                if !payload.isEmpty { StandardStreams.out("\(topic.isEmpty ? "" : topic + ": ")\(payload)") }
                continue
            }
            // A `payload = "compact"` batch: its records as the plain batch carries them.
            if document["format"]?.stringValue == "compact/1" {
                do {
                    document = try JSONReader.parse(
                        String(decoding: try CompactBatch.decode(Array(payload.utf8)), as: UTF8.self))
                } catch {
                    StandardStreams.out("\(topic.isEmpty ? "" : topic + ": ")\(error)")
                    continue
                }
            }
            if document["state"] != nil {
                units = RecordText.units(fromBirth: document)
                let state = document["state"]?.plainText ?? "?"
                var text = "gateway \(document["gateway"]?.plainText ?? "?") \(state)"
                if case .object(let sources)? = document["sources"] {
                    text +=
                        ": " + HumanFormat.count(sources.count, "source") + " ("
                        + sources.map(\.0).joined(separator: ", ") + ")"
                }
                StandardStreams.out(colour ? RecordText.coloured(text, .event) : text)
            } else if let records = document["records"]?.arrayValue {
                records.forEach(show)
            } else {
                show(document)
            }
        }
    }
}
