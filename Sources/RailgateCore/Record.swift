/// How urgently a record must reach the operator, and how long the buffer keeps it when full.
public enum Priority: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case normal = 0
    case alarm = 1

    public var description: String { self == .alarm ? "alarm" : "normal" }
}

/// Why a point could not be read in a poll, as written in a sample's `errors`.
public enum ReadFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// The slave did not answer within the bus timeout.
    case timeout
    /// The slave answered with a Modbus exception code.
    case exception(UInt8)
    /// The reply's CRC did not match (RTU).
    case crc
    /// Anything else: connection lost or refused, short or malformed reply.
    case io

    public var description: String {
        switch self {
        case .timeout: "timeout"
        case .exception(let code): "exception:\(code)"
        case .crc: "crc"
        case .io: "io"
        }
    }
}

/// One record: a poll of a device (`sample`) or something that happened (`event`).
/// It gets its `seq` when it enters the buffer; `encoded(seq:)` renders it for upstream.
public struct Record: Sendable, Equatable {
    /// What the record carries.
    public enum Body: Sendable, Equatable {
        /// The points read good in this poll and those that failed, in profile order.
        case sample(values: [(String, PointValue)], errors: [(String, ReadFailure)])
        /// An event name (`closed`, `alarm_above`, ...) and its extra fields in order.
        case event(name: String, fields: [(String, JSON)])

        public static func == (lhs: Body, rhs: Body) -> Bool {
            switch (lhs, rhs) {
            case (.sample(let lv, let le), .sample(let rv, let re)):
                lv.map(\.0) == rv.map(\.0) && lv.map(\.1) == rv.map(\.1) && le.map(\.0) == re.map(\.0)
                    && le.map(\.1) == re.map(\.1)
            case (.event(let ln, let lf), .event(let rn, let rf)):
                ln == rn && JSON.object(lf) == JSON.object(rf)
            default: false
            }
        }
    }

    public var timestamp: Timestamp
    /// The device or gate the record is about.
    public var source: String
    public var body: Body
    public var priority: Priority

    public init(timestamp: Timestamp, source: String, body: Body, priority: Priority = .normal) {
        self.timestamp = timestamp
        self.source = source
        self.body = body
        self.priority = priority
    }

    /// Whether this is a sample (the buffer thins samples first when full).
    public var isSample: Bool {
        if case .sample = body { return true }
        return false
    }

    /// The record as the contract's JSON object; `seq` is omitted when nil (`run --once`).
    public func json(seq: UInt64?) -> JSON {
        var members: [(String, JSON)] = []
        if let seq { members.append(("seq", .unsigned(seq))) }
        members.append(("ts", .string(timestamp.description)))
        switch body {
        case .sample(let values, let errors):
            members.append(("kind", .string("sample")))
            members.append(("source", .string(source)))
            if !values.isEmpty { members.append(("values", .object(values.map { ($0.0, $0.1.jsonValue) }))) }
            if !errors.isEmpty { members.append(("errors", .object(errors.map { ($0.0, .string($0.1.description)) }))) }
        case .event(let name, let fields):
            members.append(("kind", .string("event")))
            members.append(("source", .string(source)))
            members.append(("event", .string(name)))
            members.append(contentsOf: fields)
            members.append(("priority", .string(priority.description)))
        }
        return .object(members)
    }

    /// The record's UTF-8 JSON with its sequence number, as stored in the buffer and sent upstream.
    public func encoded(seq: UInt64) -> [UInt8] { Array(json(seq: seq).serialized.utf8) }
}
