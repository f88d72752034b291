import ArgumentParser
import RailgateCore
import RailgateSystem

struct EventsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "The daemon's recent events, or (--follow) every record and event as it is stored.",
        discussion: """
            Works while the daemon holds the GPIO lines and the Modbus buses: what it reads is \
            streamed through its control socket. One line per record, values with their units; \
            alarms and gate events stand out (in colour on a terminal unless NO_COLOR is set). \
            A client that reads too slowly misses records, never slows the daemon: a line says \
            how many it missed.

            Examples:
              railgate events --config /etc/railgate/railgate.toml --follow
              railgate events --follow --json | jq 'select(.kind == "event")'
            """)

    @OptionGroup var daemon: DaemonOptions

    @Flag(help: "Stream every record and event as the daemon stores it, until Ctrl-C.")
    var follow = false

    @Flag(help: "Print the daemon's JSON lines as they come (records as stored, with their seq and units).")
    var json = false

    @Option(help: "With --follow: exit after this many records and events.")
    var count: Int?

    func validate() throws {
        if let count, count < 1 { throw ValidationError("--count must be 1 or more") }
        if count != nil, !follow { throw ValidationError("--count goes with --follow") }
    }

    func run() throws {
        let socket = try daemon.socketPath()
        let style = Style.forOutput()
        func show(_ document: JSON, raw: String) {
            if json {
                StandardStreams.out(raw)
            } else if let (text, emphasis) = EventText.render(document) {
                StandardStreams.out(style.apply(text, emphasis))
            }
        }
        guard follow else {
            let reply: String
            do {
                reply = try ControlClient.request("status", socket: socket)
            } catch {
                throw unreachable(socket, error)
            }
            let status = (try? JSONReader.parse(reply)) ?? .null
            if let error = status["error"]?.stringValue {
                StandardStreams.error("railgate events: the daemon answered: \(error)")
                throw Exit.unavailable
            }
            let events = status["recent_events"]?.arrayValue ?? []
            if events.isEmpty, !json { StandardStreams.error("no events since the daemon started") }
            for event in events { show(event, raw: event.serialized) }
            return
        }
        var seen = 0
        var refused: String?
        do {
            try ControlClient.stream("follow", socket: socket) { line in
                guard let document = try? JSONReader.parse(line) else { return true }
                if let error = document["error"]?.stringValue {
                    refused = error
                    return false
                }
                if document["kind"]?.stringValue == "following" {
                    if !json {
                        StandardStreams.error(
                            "following gateway \(document["gateway"]?.plainText ?? "?") at \(socket) (Ctrl-C ends)")
                    }
                    return true
                }
                show(document, raw: line)
                if document["kind"]?.stringValue != "dropped" { seen += 1 }
                return count.map { seen < $0 } ?? true
            }
        } catch {
            throw unreachable(socket, error)
        }
        if let refused {
            StandardStreams.error("railgate events: the daemon refused to stream: \(refused)")
            throw Exit.unavailable
        }
        if count.map({ seen < $0 }) ?? true {
            StandardStreams.error("railgate events: the daemon closed the stream (stopped or restarting)")
            throw Exit.unavailable
        }
    }

    private func unreachable(_ socket: String, _ error: any Error) -> ExitCode {
        StandardStreams.error(
            "railgate events: cannot reach the daemon at \(socket): \(error). Is railgate running (systemctl status railgate)?"
        )
        return Exit.unavailable
    }
}
