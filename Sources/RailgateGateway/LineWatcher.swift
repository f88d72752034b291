import Logging
import RailgateCore
import RailgateGPIO
import RailgateSystem

/// What a `LineWatcher` runs on the GPIO lines it holds: a barrier's state machine (`[[gate]]`)
/// or a digital input's debouncer (`[[input]]`).
protocol LineLogic: Sendable {
    /// The record source and the line consumer's suffix (`railgate-NAME`).
    var name: String { get }
    /// "gate NAME" or "input NAME", for log lines.
    var subject: String { get }
    var chip: String { get }
    var lines: [Int] { get }
    var activeLow: Bool { get }
    /// A fresh start from the levels read right after the lines were requested.
    mutating func start(levels: [Int: Bool], atMs: Int64) -> [LineEvent]
    /// A raw edge (active-low applied) at the kernel's time, on the monotonic clock in ms.
    mutating func edge(line: Int, active: Bool, atMs: Int64) -> [LineEvent]
    mutating func tick(atMs: Int64) -> [LineEvent]
    var nextDeadlineMs: Int64? { get }
}

/// One event a `LineLogic` produced, as it becomes a record and the watcher's status.
struct LineEvent {
    var event: String
    var fields: [(String, JSON)]
    var priority: Priority
    /// When it happened (monotonic ms).
    var atMs: Int64
    /// The status `state` after it, and the status `fault` (gates).
    var state: String
    var fault: String?
    /// Logged as a warning when set; otherwise "SUBJECT: EVENT" at info.
    var warning: String?
}

/// The chip handling shared by barriers and inputs: requests the lines for edge events on the
/// watcher's own thread (libgpiod or the simulated chip, behind `GPIOChip`), feeds the edges to
/// the logic and turns its events into records. A missing chip, a busy line or no permission is
/// logged once with its remedy, and the lines are requested again every `retryMs` (boards
/// hotplug expanders); the rest of the gateway runs on.
final class LineWatcher<Logic: LineLogic>: @unchecked Sendable {
    let prototype: Logic
    private let sink: any RecordSink
    private let logger: Logger
    private let worker = ServiceThread()
    private var lock: ConditionLock { worker.lock }
    private var state: String = "unknown"
    private var fault: String?
    private var lastError: String?
    static var retryMs: Int { 5000 }
    /// The watch loop's proof of life for the systemd watchdog.
    let heartbeat: Heartbeat

    init(logic: Logic, sink: any RecordSink, logger: Logger) {
        prototype = logic
        heartbeat = Heartbeat(name: logic.subject)
        self.sink = sink
        self.logger = logger
    }

    /// Starts watching on its own thread, supervised by `supervisor` (restarted if it ends).
    func start(supervisor: Supervisor? = nil) throws(ThreadError) {
        try worker.start(name: prototype.subject, supervisor: supervisor) { [self] in run() }
    }

    func stop() { worker.stop() }

    /// The status state (the last event's, "unavailable" while the lines cannot be had), the
    /// fault and the reason the lines cannot be had.
    func snapshot() -> (state: String, fault: String?, error: String?) {
        lock.withLock { (state, fault, lastError) }
    }

    private func run() {
        defer { heartbeat.ended() }
        var reported: String?
        while !worker.isStopping {
            heartbeat.expect(within: Self.retryMs)
            do throws(GPIOError) {
                try watch()
            } catch {
                let message = "\(prototype.subject): \(error)"
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
        let chip = try GPIOChips.open(prototype.chip)
        let watch = try chip.watch(
            lines: prototype.lines, activeLow: prototype.activeLow, consumer: "railgate-\(prototype.name)")
        defer { watch.release() }
        let levels = try watch.levels()
        var logic = prototype
        let wasUnavailable = lock.withLock { () -> Bool in
            defer { lastError = nil }
            return lastError != nil
        }
        if wasUnavailable { logger.notice("\(prototype.subject): chip \(prototype.chip) is back") }
        emit(logic.start(levels: levels, atMs: Self.nowMs()))
        while !worker.isStopping {
            heartbeat.expect(within: 500)
            let now = Self.nowMs()
            let wait = logic.nextDeadlineMs.map { max(0, min(500, $0 - now)) } ?? 500
            for edge in try watch.waitForEdges(timeoutMs: Int(wait)) {
                emit(logic.edge(line: edge.line, active: edge.active, atMs: edge.timestampNs / 1_000_000))
            }
            emit(logic.tick(atMs: Self.nowMs()))
        }
    }

    private func emit(_ events: [LineEvent]) {
        guard let last = events.last else { return }
        let wallNow = WallClock.now().millisecondsSinceEpoch
        let monotonicNow = Self.nowMs()
        for event in events {
            let record = Record(
                timestamp: Timestamp(millisecondsSinceEpoch: wallNow - (monotonicNow - event.atMs)),
                source: prototype.name, body: .event(name: event.event, fields: event.fields), priority: event.priority)
            if let warning = event.warning {
                logger.warning("\(prototype.subject): \(warning)")
            } else {
                logger.info("\(prototype.subject): \(event.event)")
            }
            sink.accept(record)
        }
        lock.withLock {
            state = last.state
            fault = last.fault
        }
    }

    static func nowMs() -> Int64 { MonotonicInstant.now().nanoseconds / 1_000_000 }
}
