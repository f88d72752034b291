import Logging
import RailgateCore
import RailgateGPIO
import RailgateSystem

/// A plain digital input as a `LineLogic`: the debouncer on one line.
struct InputLogic: LineLogic {
    let input: InputConfig
    private var debouncer: InputDebouncer

    init(input: InputConfig) {
        self.input = input
        debouncer = InputDebouncer(debounceMs: input.debounceMs)
    }

    var name: String { input.name }
    var subject: String { "input \(input.name)" }
    var chip: String { input.chip }
    var lines: [Int] { [input.line] }
    var activeLow: Bool { input.activeLow }
    var nextDeadlineMs: Int64? { debouncer.nextDeadlineMs }

    mutating func start(levels: [Int: Bool], atMs: Int64) -> [LineEvent] {
        debouncer = InputDebouncer(debounceMs: input.debounceMs)
        return events([debouncer.start(active: levels[input.line] ?? false, atMs: atMs)])
    }

    mutating func edge(line: Int, active: Bool, atMs: Int64) -> [LineEvent] {
        events(debouncer.edge(active: active, atMs: atMs))
    }

    mutating func tick(atMs: Int64) -> [LineEvent] { events(debouncer.tick(atMs: atMs)) }

    private func events(_ changes: [InputDebouncer.Change]) -> [LineEvent] {
        changes.map { change in
            LineEvent(
                event: change.event, fields: change.fields, priority: input.priority, atMs: change.atMs,
                state: change.event, fault: nil,
                warning: input.priority == .alarm && change.previous != nil ? change.event : nil)
        }
    }
}

/// Watches one `[[input]]` line on its own thread (the chip handling is `LineWatcher`'s, shared
/// with the barriers): an event record `active`/`inactive` on each debounced change.
final class InputWatcher: @unchecked Sendable {
    let input: InputConfig
    private let watcher: LineWatcher<InputLogic>
    /// The watch loop's proof of life for the systemd watchdog.
    var heartbeat: Heartbeat { watcher.heartbeat }

    init(input: InputConfig, sink: any RecordSink, logger: Logger) {
        self.input = input
        watcher = LineWatcher(logic: InputLogic(input: input), sink: sink, logger: logger)
    }

    func start(supervisor: Supervisor? = nil) throws(ThreadError) { try watcher.start(supervisor: supervisor) }

    func stop() { watcher.stop() }

    /// `{"name","state","chip","line","error"}` for `railgate status`; state is `active`,
    /// `inactive`, `unknown` (not read yet) or `unavailable`.
    func status() -> JSON {
        let (state, _, error) = watcher.snapshot()
        return .object([
            ("name", .string(input.name)), ("state", .string(state)), ("chip", .string(input.chip)),
            ("line", .integer(Int64(input.line))), ("error", error.map(JSON.string) ?? .null),
        ])
    }

    /// The input's level read once (for `run --once`): its first event.
    static func readOnce(_ input: InputConfig) throws(GPIOError) -> Record {
        let chip = try GPIOChips.open(input.chip)
        let watch = try chip.watch(lines: [input.line], activeLow: input.activeLow, consumer: "railgate-\(input.name)")
        defer { watch.release() }
        var debouncer = InputDebouncer(debounceMs: input.debounceMs)
        let first = debouncer.start(active: try watch.levels()[input.line] ?? false, atMs: 0)
        return Record(
            timestamp: WallClock.now(), source: input.name, body: .event(name: first.event, fields: first.fields),
            priority: input.priority)
    }
}
