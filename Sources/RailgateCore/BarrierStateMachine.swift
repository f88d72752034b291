/// Turns a barrier's two limit switches into its state: `closed`, `opening`, `open`, `closing`,
/// or `fault` (`travel_timeout` when no limit is reached within the travel timeout,
/// `both_limits` when both switches are active at once), and recovers from a fault as soon as
/// the switches make sense again.
///
/// Switch levels are debounced: a change counts once the line has held its new level for
/// `debounce_ms`; a bounce shorter than that is ignored. Pure: time comes in as monotonic
/// milliseconds; the caller calls `tick` by `nextDeadlineMs` so that debounce and travel
/// timeouts fire without an edge.
public struct BarrierStateMachine: Sendable {
    public enum State: String, Sendable, Equatable {
        case closed, opening, open, closing, fault
    }

    public enum Fault: String, Sendable, Equatable {
        case travelTimeout = "travel_timeout"
        case bothLimits = "both_limits"
    }

    /// One of the two limit switches.
    public enum Limit: Sendable {
        case open, closed
    }

    /// A state change, as it becomes an event record.
    public struct Transition: Sendable, Equatable {
        public var state: State
        /// nil for the first state after start.
        public var previous: State?
        public var fault: Fault?
        /// On `closed`: how long the barrier was not closed (left closed until closed again).
        public var openMs: Int64?
        /// On `open` and `closed`: how long the travel took.
        public var travelMs: Int64?
        /// When it happened (monotonic ms): the moment the switch changed, not when the debounce ended.
        public var atMs: Int64

        /// The event's fields after `event` in the record, as the contract orders them.
        public var fields: [(String, JSON)] {
            var fields: [(String, JSON)] = [("previous", previous.map { .string($0.rawValue) } ?? .string("unknown"))]
            if let fault { fields.append(("fault", .string(fault.rawValue))) }
            if let openMs { fields.append(("open_ms", .integer(openMs))) }
            if let travelMs { fields.append(("travel_ms", .integer(travelMs))) }
            return fields
        }

        public var priority: Priority { state == .fault ? .alarm : .normal }
    }

    private struct Switch {
        var stable = false
        var pending: (level: Bool, sinceMs: Int64)?
    }

    public let debounceMs: Int64
    public let travelTimeoutMs: Int64
    public private(set) var state: State?
    public private(set) var fault: Fault?
    private var openSwitch = Switch()
    private var closedSwitch = Switch()
    private var leftClosedAtMs: Int64?
    private var travelStartMs: Int64?

    public init(debounceMs: Int, travelTimeoutMs: Int) {
        self.debounceMs = Int64(debounceMs)
        self.travelTimeoutMs = Int64(travelTimeoutMs)
    }

    /// Sets the initial levels (read when the lines were requested) and returns the first state.
    /// With neither switch active the barrier is taken to be closing: if no limit is reached in
    /// the travel timeout, that is a fault.
    public mutating func start(openActive: Bool, closedActive: Bool, atMs: Int64) -> [Transition] {
        openSwitch = Switch(stable: openActive)
        closedSwitch = Switch(stable: closedActive)
        state = nil
        fault = nil
        let transition: Transition
        switch (openActive, closedActive) {
        case (true, true): transition = move(to: .fault, fault: .bothLimits, at: atMs)
        case (true, false): transition = move(to: .open, at: atMs)
        case (false, true): transition = move(to: .closed, at: atMs)
        case (false, false):
            travelStartMs = atMs
            transition = move(to: .closing, at: atMs)
        }
        return [transition]
    }

    /// A raw edge on one switch (already mapped through `active_low`).
    public mutating func edge(_ limit: Limit, active: Bool, atMs: Int64) -> [Transition] {
        let transitions = tick(atMs: atMs)
        switch limit {
        case .open: Self.record(&openSwitch, active, atMs)
        case .closed: Self.record(&closedSwitch, active, atMs)
        }
        return transitions
    }

    /// Lets time pass: settles debounced switches and fires the travel timeout.
    public mutating func tick(atMs now: Int64) -> [Transition] {
        var transitions: [Transition] = []
        // Settle switches in the order their changes happened; changes at the same moment together.
        while true {
            let due = [openSwitch.pending?.sinceMs, closedSwitch.pending?.sinceMs].compactMap { $0 }
                .filter { now - $0 >= debounceMs }
            guard let moment = due.min() else { break }
            if let timeout = travelTimeout(before: moment) { transitions.append(timeout) }
            if let pending = openSwitch.pending, pending.sinceMs == moment {
                openSwitch = Switch(stable: pending.level)
            }
            if let pending = closedSwitch.pending, pending.sinceMs == moment {
                closedSwitch = Switch(stable: pending.level)
            }
            transitions += evaluate(at: moment)
        }
        if let timeout = travelTimeout(before: now + 1) { transitions.append(timeout) }
        return transitions
    }

    /// When `tick` next has something to do (a debounce ending or a travel timeout), if ever.
    public var nextDeadlineMs: Int64? {
        var deadlines: [Int64] = []
        if let pending = openSwitch.pending { deadlines.append(pending.sinceMs + debounceMs) }
        if let pending = closedSwitch.pending { deadlines.append(pending.sinceMs + debounceMs) }
        if state == .opening || state == .closing, let start = travelStartMs {
            deadlines.append(start + travelTimeoutMs)
        }
        return deadlines.min()
    }

    // MARK: Internals

    private static func record(_ limitSwitch: inout Switch, _ active: Bool, _ atMs: Int64) {
        if active == limitSwitch.stable {
            limitSwitch.pending = nil  // bounced back before the debounce ended
        } else if limitSwitch.pending?.level != active {
            limitSwitch.pending = (active, atMs)
        }
    }

    /// The travel timeout, if it expired before `limitMs` while travelling.
    private mutating func travelTimeout(before limitMs: Int64) -> Transition? {
        guard state == .opening || state == .closing, let start = travelStartMs, start + travelTimeoutMs < limitMs
        else { return nil }
        return move(to: .fault, fault: .travelTimeout, at: start + travelTimeoutMs)
    }

    private mutating func evaluate(at time: Int64) -> [Transition] {
        switch (openSwitch.stable, closedSwitch.stable) {
        case (true, true):
            return fault == .bothLimits ? [] : [move(to: .fault, fault: .bothLimits, at: time)]
        case (false, true):
            return state == .closed ? [] : [move(to: .closed, at: time)]
        case (true, false):
            return state == .open ? [] : [move(to: .open, at: time)]
        case (false, false):
            switch state {
            case .closed?:
                leftClosedAtMs = time
                travelStartMs = time
                return [move(to: .opening, at: time)]
            case .open?:
                travelStartMs = time
                return [move(to: .closing, at: time)]
            default:
                // Mid-travel, or a fault whose switches released: wait for a limit.
                return []
            }
        }
    }

    private mutating func move(to next: State, fault reason: Fault? = nil, at time: Int64) -> Transition {
        var transition = Transition(state: next, previous: state, fault: reason, openMs: nil, travelMs: nil, atMs: time)
        if next == .open || next == .closed, let start = travelStartMs, state == .opening || state == .closing {
            transition.travelMs = time - start
        }
        if next == .closed, let left = leftClosedAtMs {
            transition.openMs = time - left
            leftClosedAtMs = nil
        }
        if next != .opening && next != .closing { travelStartMs = nil }
        state = next
        fault = reason
        return transition
    }
}
