import Logging
import RailgateCore
import RailgateGPIO
import RailgateSystem

/// Watches one barrier's limit switches on its own thread: requests the two lines for edge
/// events (libgpiod or the simulated chip, behind `GPIOChip`), runs the barrier state machine
/// and turns each transition into an event record. A missing chip, a busy line or no
/// permission is logged once with its remedy, and the gate is retried every `retryMs`
/// (boards hotplug expanders); the rest of the gateway runs on.
final class GateWatcher: @unchecked Sendable {
    let gate: GateConfig
    private let sink: any RecordSink
    private let logger: Logger
    private let worker = ServiceThread()
    private var lock: ConditionLock { worker.lock }
    private var state: String = "unknown"
    private var fault: String?
    private var lastError: String?
    static let retryMs = 5000
    /// The watch loop's proof of life for the systemd watchdog.
    let heartbeat: Heartbeat

    init(gate: GateConfig, sink: any RecordSink, logger: Logger) {
        self.gate = gate
        heartbeat = Heartbeat(name: "gate \(gate.name)")
        self.sink = sink
        self.logger = logger
    }

    /// Starts watching on the gate's own thread, supervised by `supervisor` (restarted if it ends).
    func start(supervisor: Supervisor? = nil) throws(ThreadError) {
        try worker.start(name: "gate \(gate.name)", supervisor: supervisor) { [self] in run() }
    }

    func stop() { worker.stop() }

    /// `{"name","state","fault","chip","error"}` for `railgate status`.
    func status() -> JSON {
        lock.withLock {
            .object([
                ("name", .string(gate.name)), ("state", .string(state)), ("fault", fault.map(JSON.string) ?? .null),
                ("chip", .string(gate.chip)), ("error", lastError.map(JSON.string) ?? .null),
            ])
        }
    }

    private func run() {
        defer { heartbeat.ended() }
        var reported: String?
        while !worker.isStopping {
            heartbeat.expect(within: Self.retryMs)
            do throws(GPIOError) {
                try watch()
            } catch {
                let message = "gate \(gate.name): \(error)"
                if message != reported { logger.error("\(message); retrying every \(Self.retryMs / 1000) s") }
                reported = message
                lock.withLock {
                    state = "unavailable"
                    lastError = error.description
                }
                _ = worker.wait(until: MonotonicInstant.now().adding(milliseconds: Self.retryMs))
            }
        }
    }

    private func watch() throws(GPIOError) {
        let (watch, openActive, closedActive) = try GPIOChips.requestLimitSwitches(
            of: gate, consumer: "railgate-\(gate.name)")
        defer { watch.release() }
        var machine = BarrierStateMachine(debounceMs: gate.debounceMs, travelTimeoutMs: gate.travelTimeoutMs)
        let wasUnavailable = lock.withLock { () -> Bool in
            defer { lastError = nil }
            return lastError != nil
        }
        if wasUnavailable { logger.notice("gate \(gate.name): chip \(gate.chip) is back") }
        emit(machine.start(openActive: openActive, closedActive: closedActive, atMs: Self.nowMs()))
        while !worker.isStopping {
            heartbeat.expect(within: 500)
            let now = Self.nowMs()
            let wait = machine.nextDeadlineMs.map { max(0, min(500, $0 - now)) } ?? 500
            for edge in try watch.waitForEdges(timeoutMs: Int(wait)) {
                let limit: BarrierStateMachine.Limit = edge.line == gate.openLine ? .open : .closed
                emit(machine.edge(limit, active: edge.active, atMs: edge.timestampNs / 1_000_000))
            }
            emit(machine.tick(atMs: Self.nowMs()))
        }
    }

    private func emit(_ transitions: [BarrierStateMachine.Transition]) {
        guard !transitions.isEmpty else { return }
        let wallNow = WallClock.now().millisecondsSinceEpoch
        let monotonicNow = Self.nowMs()
        for transition in transitions {
            let record = Record(
                timestamp: Timestamp(millisecondsSinceEpoch: wallNow - (monotonicNow - transition.atMs)),
                source: gate.name,
                body: .event(name: transition.state.rawValue, fields: transition.fields), priority: transition.priority)
            if transition.state == .fault {
                logger.warning(
                    "gate \(gate.name): fault \(transition.fault?.rawValue ?? "?") (was \(transition.previous?.rawValue ?? "unknown"))"
                )
            } else {
                logger.info("gate \(gate.name): \(transition.state.rawValue)")
            }
            sink.accept(record)
        }
        lock.withLock {
            state = transitions.last!.state.rawValue
            fault = transitions.last!.fault?.rawValue
        }
    }

    static func nowMs() -> Int64 { MonotonicInstant.now().nanoseconds / 1_000_000 }

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
