import Logging
import RailgateCore
import RailgateGPIO
import RailgateSystem

/// A barrier's limit switches as a `LineLogic`: the barrier state machine on two lines.
struct BarrierLogic: LineLogic {
    let gate: GateConfig
    private var machine: BarrierStateMachine

    init(gate: GateConfig) {
        self.gate = gate
        machine = BarrierStateMachine(debounceMs: gate.debounceMs, travelTimeoutMs: gate.travelTimeoutMs)
    }

    var name: String { gate.name }
    var subject: String { "gate \(gate.name)" }
    var chip: String { gate.chip }
    var lines: [Int] { [gate.openLine, gate.closedLine] }
    var activeLow: Bool { gate.activeLow }
    var nextDeadlineMs: Int64? { machine.nextDeadlineMs }

    mutating func start(levels: [Int: Bool], atMs: Int64) -> [LineEvent] {
        machine = BarrierStateMachine(debounceMs: gate.debounceMs, travelTimeoutMs: gate.travelTimeoutMs)
        return events(
            machine.start(
                openActive: levels[gate.openLine] ?? false, closedActive: levels[gate.closedLine] ?? false, atMs: atMs))
    }

    mutating func edge(line: Int, active: Bool, atMs: Int64) -> [LineEvent] {
        events(machine.edge(line == gate.openLine ? .open : .closed, active: active, atMs: atMs))
    }

    mutating func tick(atMs: Int64) -> [LineEvent] { events(machine.tick(atMs: atMs)) }

    private func events(_ transitions: [BarrierStateMachine.Transition]) -> [LineEvent] {
        transitions.map { transition in
            LineEvent(
                event: transition.state.rawValue, fields: transition.fields, priority: transition.priority,
                atMs: transition.atMs, state: transition.state.rawValue, fault: transition.fault?.rawValue,
                warning: transition.state == .fault
                    ? "fault \(transition.fault?.rawValue ?? "?") (was \(transition.previous?.rawValue ?? "unknown"))"
                    : nil)
        }
    }
}

/// Watches one barrier's limit switches on its own thread (the chip handling is `LineWatcher`'s,
/// shared with `[[input]]`): runs the barrier state machine and turns each transition into an
/// event record.
final class GateWatcher: @unchecked Sendable {
    let gate: GateConfig
    private let watcher: LineWatcher<BarrierLogic>
    static var retryMs: Int { LineWatcher<BarrierLogic>.retryMs }
    /// The watch loop's proof of life for the systemd watchdog.
    var heartbeat: Heartbeat { watcher.heartbeat }

    init(gate: GateConfig, sink: any RecordSink, logger: Logger) {
        self.gate = gate
        watcher = LineWatcher(logic: BarrierLogic(gate: gate), sink: sink, logger: logger)
    }

    /// Starts watching on the gate's own thread, supervised by `supervisor` (restarted if it ends).
    func start(supervisor: Supervisor? = nil) throws(ThreadError) { try watcher.start(supervisor: supervisor) }

    func stop() { watcher.stop() }

    /// `{"name","state","fault","chip","error"}` for `railgate status`.
    func status() -> JSON {
        let (state, fault, error) = watcher.snapshot()
        return .object([
            ("name", .string(gate.name)), ("state", .string(state)), ("fault", fault.map(JSON.string) ?? .null),
            ("chip", .string(gate.chip)), ("error", error.map(JSON.string) ?? .null),
        ])
    }

    /// The barrier's state read once (for `run --once`): its initial-state event.
    static func readOnce(_ gate: GateConfig) throws(GPIOError) -> Record {
        let (watch, openActive, closedActive) = try GPIOChips.requestLimitSwitches(
            of: gate, consumer: "railgate-\(gate.name)")
        watch.release()
        var machine = BarrierStateMachine(debounceMs: gate.debounceMs, travelTimeoutMs: gate.travelTimeoutMs)
        let first = machine.start(openActive: openActive, closedActive: closedActive, atMs: 0)[0]
        return Record(
            timestamp: WallClock.now(), source: gate.name,
            body: .event(name: first.state.rawValue, fields: first.fields), priority: first.priority)
    }
}
