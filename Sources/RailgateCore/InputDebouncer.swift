/// A plain digital input (`[[input]]`: a door contact, a tamper switch) turned into changes.
///
/// The level is debounced as a barrier's switches are: a change counts once the line has held
/// its new level for `debounce_ms`; a bounce shorter than that is ignored. Pure: time comes in
/// as monotonic milliseconds; the caller calls `tick` by `nextDeadlineMs` so that a debounce
/// ends without another edge.
public struct InputDebouncer: Sendable {
    /// A debounced change, as it becomes an event record: `active` or `inactive`.
    public struct Change: Sendable, Equatable {
        public var active: Bool
        /// nil for the first level after start.
        public var previous: Bool?
        /// How long the previous level held (ms); nil for the first level.
        public var heldMs: Int64?
        /// When it happened (monotonic ms): the moment the line changed, not when the debounce ended.
        public var atMs: Int64

        public var event: String { active ? "active" : "inactive" }

        /// The event's fields after `event` in the record: `previous` ("unknown" at start), `held_ms`.
        public var fields: [(String, JSON)] {
            var fields: [(String, JSON)] = [
                ("previous", .string(previous.map { $0 ? "active" : "inactive" } ?? "unknown"))
            ]
            if let heldMs { fields.append(("held_ms", .integer(heldMs))) }
            return fields
        }
    }

    public let debounceMs: Int64
    /// The debounced level; nil before `start`.
    public private(set) var active: Bool?
    private var sinceMs: Int64 = 0
    private var pending: (level: Bool, sinceMs: Int64)?

    public init(debounceMs: Int) {
        self.debounceMs = Int64(debounceMs)
    }

    /// Sets the level read when the line was requested; returns the first change.
    public mutating func start(active level: Bool, atMs: Int64) -> Change {
        active = level
        sinceMs = atMs
        pending = nil
        return Change(active: level, previous: nil, heldMs: nil, atMs: atMs)
    }

    /// A raw edge (already mapped through `active_low`): the changes that became due before it.
    public mutating func edge(active level: Bool, atMs: Int64) -> [Change] {
        let changes = tick(atMs: atMs)
        if level == active {
            pending = nil  // bounced back before the debounce ended
        } else if pending?.level != level {
            pending = (level, atMs)
        }
        return changes
    }

    /// Lets time pass: a pending level that has held for `debounce_ms` becomes the level.
    public mutating func tick(atMs now: Int64) -> [Change] {
        guard let pending, now - pending.sinceMs >= debounceMs, let previous = active else { return [] }
        self.pending = nil
        let change = Change(
            active: pending.level, previous: previous, heldMs: pending.sinceMs - sinceMs, atMs: pending.sinceMs)
        active = pending.level
        sinceMs = pending.sinceMs
        return [change]
    }

    /// When `tick` next has something to do, if ever.
    public var nextDeadlineMs: Int64? { pending.map { $0.sinceMs + debounceMs } }
}
