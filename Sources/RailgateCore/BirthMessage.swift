/// The version railgate reports in its birth message and `--version`.
public enum RailgateVersion {
    public static let current = "0.1.0"
}

/// The retained `status` messages: the birth message describing the sources, and the will.
public enum StatusMessage {
    /// `{"state":"online",...,"sources":{...}}`, published retained on every connect.
    /// - Parameter statics: the last reading of each device's `poll = "once"` points (by device
    ///   name, in profile order): a source carries the good ones in `"static"` (values as in a
    ///   sample) and the failed ones in `"static_errors"` (reasons as in a sample's `errors`).
    public static func birth(
        config: GatewayConfig, started: Timestamp,
        statics: [String: [(name: String, reading: Result<PointValue, ReadFailure>)]] = [:]
    ) -> JSON {
        var sources: [(String, JSON)] = []
        // Devices of one profile share its points' object (a fleet of 100 devices of 100 points
        // holds one copy, not 100). Profiles loaded once share storage: comparing them is cheap.
        var described: [(profile: DeviceProfile, points: JSON)] = []
        for device in config.devices {
            let points: JSON
            if let known = described.first(where: { $0.profile == device.profile }) {
                points = known.points
            } else {
                points = .object(
                    device.profile.points.map { point in
                        var fields: [(String, JSON)] = []
                        if let unit = point.unit { fields.append(("unit", .string(unit))) }
                        fields.append(("type", .string(point.table.holdsBits ? "bool" : point.type.description)))
                        if point.pollOnce { fields.append(("poll", .string("once"))) }
                        return (point.name, .object(fields))
                    })
                described.append((device.profile, points))
            }
            var fields: [(String, JSON)] = [
                ("kind", .string("modbus")), ("model", .string(device.profile.model)), ("points", points),
            ]
            if let readings = statics[device.name] {
                var values: [(String, JSON)] = []
                var errors: [(String, JSON)] = []
                for (name, reading) in readings {
                    switch reading {
                    case .success(let value): values.append((name, value.jsonValue))
                    case .failure(let reason): errors.append((name, .string(reason.description)))
                    }
                }
                fields.append(("static", .object(values)))
                if !errors.isEmpty { fields.append(("static_errors", .object(errors))) }
            }
            sources.append((device.name, .object(fields)))
        }
        for gate in config.gates {
            sources.append((gate.name, .object([("kind", .string("gate"))])))
        }
        for input in config.inputs {
            sources.append(
                (input.name, .object([("kind", .string("input")), ("priority", .string(input.priority.description))])))
        }
        return .object([
            ("state", .string("online")), ("gateway", .string(config.gateway.id)),
            ("version", .string(RailgateVersion.current)), ("started", .string(started.secondsDescription)),
            ("sources", .object(sources)),
        ])
    }

    /// How much the buffer holds when the birth message goes out.
    public struct BufferDepth: Sendable, Equatable {
        /// Records not yet acknowledged by the broker.
        public var records: Int
        /// Seconds since the oldest of them was taken (nil when there is none).
        public var oldestAgeSeconds: Int64?

        public init(records: Int, oldestAgeSeconds: Int64?) {
            self.records = records
            self.oldestAgeSeconds = oldestAgeSeconds
        }
    }

    /// `birth` with `"buffer":{"records":N,"oldest_age_s":S}` after `started` (`oldest_age_s`
    /// null when the buffer is empty): the backlog the gateway starts draining on this connect.
    public static func withBuffer(_ birth: JSON, _ depth: BufferDepth) -> JSON {
        guard case .object(var members) = birth else { return birth }
        let buffer = JSON.object([
            ("records", .integer(Int64(depth.records))),
            ("oldest_age_s", depth.oldestAgeSeconds.map { JSON.integer($0) } ?? .null),
        ])
        members.removeAll { $0.0 == "buffer" }
        let at = (members.firstIndex { $0.0 == "started" }).map { $0 + 1 } ?? members.count
        members.insert(("buffer", buffer), at: at)
        return .object(members)
    }

    /// The will the broker publishes when the gateway vanishes.
    public static let offline = JSON.object([("state", .string("offline"))])
}

/// The upstream topic names for one gateway.
public struct Topics: Sendable, Equatable {
    public var telemetry: String
    public var status: String

    public init(prefix: String, gatewayID: String) {
        telemetry = "\(prefix)/\(gatewayID)/telemetry"
        status = "\(prefix)/\(gatewayID)/status"
    }
}
