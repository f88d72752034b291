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
    /// A float point read NaN (not a number: JSON has none, so it is never sent as a value).
    case nan
    /// A float point read +Inf or -Inf, or scaling overflowed to it.
    case inf
    /// The raw value is one of the point's `invalid` sentinels ("no sensor", "no reading").
    case invalid
    /// The slave answered exception 6 (slave device busy) or 5 (acknowledge) to every attempt
    /// (`busy_retries` + 1, `busy_retry_ms` apart).
    case busy

    public var description: String {
        switch self {
        case .timeout: "timeout"
        case .exception(let code): "exception:\(code)"
        case .crc: "crc"
        case .io: "io"
        case .nan: "nan"
        case .inf: "inf"
        case .invalid: "invalid"
        case .busy: "busy"
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

    /// Appends the record as the contract's JSON object to `output`, without building a JSON tree
    /// (this runs for every record entering the buffer). `seq` is omitted when nil (`run --once`).
    public func write(seq: UInt64?, to output: inout [UInt8]) {
        output.append(UInt8(ascii: "{"))
        if let seq {
            output += #""seq":"#.utf8
            JSON.writeDigits(seq, to: &output)
            output.append(UInt8(ascii: ","))
        }
        output += #""ts":""#.utf8
        timestamp.write(to: &output, withMilliseconds: true)
        switch body {
        case .sample(let values, let errors):
            output += #"","kind":"sample","source":"#.utf8
            JSON.writeString(source, to: &output)
            if !values.isEmpty {
                Record.writeObject("values", values, to: &output) { value, output in value.jsonValue.write(to: &output)
                }
            }
            if !errors.isEmpty {
                Record.writeObject("errors", errors, to: &output) { reason, output in
                    JSON.writeString(reason.description, to: &output)
                }
            }
        case .event(let name, let fields):
            output += #"","kind":"event","source":"#.utf8
            JSON.writeString(source, to: &output)
            output += #","event":"#.utf8
            JSON.writeString(name, to: &output)
            for (key, value) in fields {
                output.append(UInt8(ascii: ","))
                JSON.writeString(key, to: &output)
                output.append(UInt8(ascii: ":"))
                value.write(to: &output)
            }
            output += #","priority":"#.utf8
            JSON.writeString(priority.description, to: &output)
        }
        output.append(UInt8(ascii: "}"))
    }

    /// An upper bound of the encoded size in practice (numbers at most 24 characters, names and
    /// text without escapes), for the buffer to make room before encoding in place.
    public var sizeEstimate: Int {
        var size = 160 + source.utf8.count
        switch body {
        case .sample(let values, let errors):
            for (name, value) in values {
                size += name.utf8.count + 28
                if case .text(let text) = value { size += text.utf8.count * 6 }
            }
            for (name, _) in errors { size += name.utf8.count + 20 }
        case .event(let name, let fields):
            size += name.utf8.count + fields.reduce(0) { $0 + $1.0.utf8.count + 4 + $1.1.bytes.count }
        }
        return size
    }

    /// Appends `,"key":{"name":value,...}` for `members`, each value written by `writeValue`.
    private static func writeObject<Value>(
        _ key: String, _ members: [(String, Value)], to output: inout [UInt8],
        writeValue: (Value, inout [UInt8]) -> Void
    ) {
        output.append(UInt8(ascii: ","))
        JSON.writeString(key, to: &output)
        output += ":{".utf8
        for (index, (name, value)) in members.enumerated() {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            JSON.writeString(name, to: &output)
            output.append(UInt8(ascii: ":"))
            writeValue(value, &output)
        }
        output.append(UInt8(ascii: "}"))
    }

    /// The record's UTF-8 JSON (with its sequence number when given), as stored and sent upstream.
    public func encoded(seq: UInt64?) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(160)
        write(seq: seq, to: &output)
        return output
    }

    /// The record's JSON as text, for printing and logs.
    public func text(seq: UInt64?) -> String { String(decoding: encoded(seq: seq), as: UTF8.self) }
}
