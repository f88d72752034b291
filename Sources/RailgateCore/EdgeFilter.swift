/// Decides, per poll of one device, which values go upstream and which alarms to raise or clear.
///
/// - Deadband: a point with `deadband` is sent when it moved more than the deadband since it was
///   last sent, or when `max_silence_ms` passed (60 s if the profile gives none). Points without
///   a deadband are sent every poll. A point that lands in `errors` (a failed read, `nan`, `inf`,
///   an `invalid` sentinel) starts its deadband afresh: its next good value goes out at once,
///   whatever the value sent before the gap.
/// - Alarms: `alarm_above` is raised when the value goes above the threshold and cleared only when
///   it falls below `threshold - hysteresis`; `alarm_below` likewise upwards. A value hovering at
///   the threshold raises one alarm, not a flood. A point's value is always sent with an alarm
///   event, whatever its deadband. Failed reads change no alarm state.
///
/// Pure: time comes in as arguments. One filter per device, owned by its bus poller.
public struct EdgeFilter: Sendable {
    /// Which side of its threshold a point is alarming on.
    public enum AlarmSide: String, Sendable, Equatable {
        case above = "alarm_above"
        case below = "alarm_below"
    }

    /// The profile's points (its storage, shared, not copied).
    private let definitions: [PointDefinition]
    /// Where in `definitions` each point with a deadband or an alarm is, by name (the first of a
    /// name); the others go as they are, so a device without any needs no table at all.
    private let watched: [String: Int]
    private var lastSent: [String: (value: PointValue, atMs: Int64)] = [:]
    private var activeAlarms: [String: AlarmSide] = [:]

    /// `max_silence_ms` for points with a deadband and no `max_silence_ms` of their own.
    public static let defaultMaxSilenceMs = 60_000

    /// No point has a deadband or an alarm: every sample goes as it is (no per-value look-ups).
    private let passesEverything: Bool

    public init(profile: DeviceProfile) {
        definitions = profile.points
        func isWatched(_ point: PointDefinition) -> Bool {
            point.deadband != nil || point.alarmAbove != nil || point.alarmBelow != nil
        }
        passesEverything = !profile.points.contains(where: isWatched)
        var watched: [String: Int] = [:]
        if !passesEverything {
            var first: [String: Int] = [:]
            for (index, point) in profile.points.enumerated() where first[point.name] == nil {
                first[point.name] = index
            }
            watched = first.filter { isWatched(profile.points[$0.value]) }
        }
        self.watched = watched
    }

    /// The definition of the point `name` if it has a deadband or an alarm.
    private func watchedPoint(_ name: String) -> PointDefinition? { watched[name].map { definitions[$0] } }

    /// The alarms active now, by point.
    public var alarms: [String: AlarmSide] { activeAlarms }

    /// An alarm raised on one point, with the configuration it was raised under: what the daemon
    /// keeps in `state_dir` so that a restart or a reload neither raises it again nor loses its clear.
    public struct RaisedAlarm: Sendable, Equatable {
        public var point: String
        public var side: AlarmSide
        /// The point's `alarm_above` or `alarm_below` when it was raised.
        public var threshold: Double
        /// The point's hysteresis when it was raised (see `PointDefinition.hysteresis`).
        public var hysteresis: Double

        public init(point: String, side: AlarmSide, threshold: Double, hysteresis: Double) {
            self.point = point
            self.side = side
            self.threshold = threshold
            self.hysteresis = hysteresis
        }

        /// Whether `definition` still alarms on this side, at this threshold, with this hysteresis.
        public func stillApplies(to definition: PointDefinition) -> Bool {
            guard definition.name == point, definition.hysteresis == hysteresis else { return false }
            switch side {
            case .above: return definition.alarmAbove == threshold
            case .below: return definition.alarmBelow == threshold
            }
        }
    }

    /// The alarms active now, each with its threshold and hysteresis, in point name order.
    public var raisedAlarms: [RaisedAlarm] {
        activeAlarms.keys.sorted().compactMap { name in
            guard let side = activeAlarms[name], let point = watchedPoint(name) else { return nil }
            guard let threshold = side == .above ? point.alarmAbove : point.alarmBelow else { return nil }
            return RaisedAlarm(point: name, side: side, threshold: threshold, hysteresis: point.hysteresis)
        }
    }

    /// Takes `alarms` as already raised (kept from before a restart or a reload): no event is
    /// emitted for them again, and the clear comes when the value goes back. An alarm whose point
    /// is gone or whose threshold or hysteresis changed is not taken, and returned.
    @discardableResult
    public mutating func restore(_ alarms: [RaisedAlarm]) -> [RaisedAlarm] {
        var refused: [RaisedAlarm] = []
        for alarm in alarms {
            guard let point = watchedPoint(alarm.point), alarm.stillApplies(to: point) else {
                refused.append(alarm)
                continue
            }
            activeAlarms[alarm.point] = alarm.side
        }
        return refused
    }

    /// Filters one poll's sample and returns the sample to send (nil if nothing in it is worth
    /// sending) and the alarm events it caused, in point order.
    /// - Parameters:
    ///   - nowMs: a monotonic clock reading in milliseconds, for deadband silence.
    public mutating func process(_ sample: Record, nowMs: Int64) -> (sample: Record?, events: [Record]) {
        guard case .sample(let values, let errors) = sample.body else { return (sample, []) }
        if passesEverything { return (values.isEmpty && errors.isEmpty ? nil : sample, []) }
        var kept: [(String, PointValue)] = []
        var events: [Record] = []
        for (name, value) in values {
            guard let point = watchedPoint(name) else {
                kept.append((name, value))
                continue
            }
            let transition = alarmTransition(point, value)
            if let (eventName, fields) = transition {
                events.append(
                    Record(
                        timestamp: sample.timestamp, source: sample.source,
                        body: .event(
                            name: eventName, fields: [("point", .string(name)), ("value", value.jsonValue)] + fields),
                        priority: .alarm))
            }
            if transition != nil || isDue(point, value, nowMs: nowMs) {
                kept.append((name, value))
                // Only a deadband looks back at what was sent.
                if point.deadband != nil { lastSent[name] = (value, nowMs) }
            }
        }
        // Upstream saw no value for these: the next good one is news, however close to the last.
        for (name, _) in errors { lastSent[name] = nil }
        guard !kept.isEmpty || !errors.isEmpty else { return (nil, events) }
        var filtered = sample
        filtered.body = .sample(values: kept, errors: errors)
        return (filtered, events)
    }

    private func isDue(_ point: PointDefinition, _ value: PointValue, nowMs: Int64) -> Bool {
        guard let deadband = point.deadband else { return true }
        guard let previous = lastSent[point.name] else { return true }
        if nowMs - previous.atMs >= Int64(point.maxSilenceMs ?? Self.defaultMaxSilenceMs) { return true }
        guard let current = value.numeric, let before = previous.value.numeric else { return value != previous.value }
        return abs(current - before) > deadband
    }

    /// The event to emit for `value`, if it raises or clears an alarm, updating the state.
    private mutating func alarmTransition(_ point: PointDefinition, _ value: PointValue) -> (String, [(String, JSON)])?
    {
        guard let number = value.numeric, point.alarmAbove != nil || point.alarmBelow != nil else { return nil }
        let hysteresis = point.hysteresis
        switch activeAlarms[point.name] {
        case .above?:
            guard let threshold = point.alarmAbove, number < threshold - hysteresis else { return nil }
            activeAlarms[point.name] = nil
            return ("alarm_clear", [("alarm", .string(AlarmSide.above.rawValue)), ("threshold", .number(threshold))])
        case .below?:
            guard let threshold = point.alarmBelow, number > threshold + hysteresis else { return nil }
            activeAlarms[point.name] = nil
            return ("alarm_clear", [("alarm", .string(AlarmSide.below.rawValue)), ("threshold", .number(threshold))])
        case nil:
            if let threshold = point.alarmAbove, number > threshold {
                activeAlarms[point.name] = .above
                return (AlarmSide.above.rawValue, [("threshold", .number(threshold))])
            }
            if let threshold = point.alarmBelow, number < threshold {
                activeAlarms[point.name] = .below
                return (AlarmSide.below.rawValue, [("threshold", .number(threshold))])
            }
            return nil
        }
    }
}

extension PointDefinition {
    /// How far back over its threshold a value must go to clear an alarm: `alarm_hysteresis`, or
    /// the deadband, or 2% of the threshold's magnitude (at least one step of `scale`).
    public var hysteresis: Double {
        if let alarmHysteresis { return alarmHysteresis }
        if let deadband, deadband > 0 { return deadband }
        let threshold = abs(alarmAbove ?? alarmBelow ?? 0)
        return max(threshold * 0.02, abs(scale))
    }
}
