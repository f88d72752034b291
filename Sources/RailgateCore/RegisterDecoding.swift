/// The four Modbus data tables a point can live in.
public enum RegisterTable: String, Sendable, CaseIterable, Hashable {
    case coil, discrete, input, holding

    /// Coils and discrete inputs hold bits; input and holding registers hold 16-bit words.
    public var holdsBits: Bool { self == .coil || self == .discrete }

    /// The most items one read request may ask for (Modbus application protocol, 6.1-6.4).
    public var maxItemsPerRequest: Int { holdsBits ? 2000 : 125 }
}

/// The type a point's registers are decoded as (`type` in a profile).
public enum ValueType: Sendable, Hashable, CustomStringConvertible {
    case bool, u16, i16, u32, i32, u64, i64, f32, f64
    /// `string:N`: N registers, two characters each, high byte first.
    case string(registers: Int)

    /// Parses a profile's `type` value: `u16`, `f32`, `string:8`, ...
    public init?(_ text: String) {
        switch text {
        case "bool": self = .bool
        case "u16": self = .u16
        case "i16": self = .i16
        case "u32": self = .u32
        case "i32": self = .i32
        case "u64": self = .u64
        case "i64": self = .i64
        case "f32": self = .f32
        case "f64": self = .f64
        default:
            guard text.hasPrefix("string:"), let count = Int(text.dropFirst(7)), (1...125).contains(count) else {
                return nil
            }
            self = .string(registers: count)
        }
    }

    public var description: String {
        switch self {
        case .bool: "bool"
        case .u16: "u16"
        case .i16: "i16"
        case .u32: "u32"
        case .i32: "i32"
        case .u64: "u64"
        case .i64: "i64"
        case .f32: "f32"
        case .f64: "f64"
        case .string(let n): "string:\(n)"
        }
    }

    /// Registers (or bits, for a bool in a bit table) the value occupies.
    public var registerCount: Int {
        switch self {
        case .bool, .u16, .i16: 1
        case .u32, .i32, .f32: 2
        case .u64, .i64, .f64: 4
        case .string(let n): n
        }
    }

    /// Whether `order` applies (it does for values of more than one register).
    public var isMultiRegisterNumber: Bool {
        switch self {
        case .u32, .i32, .f32, .u64, .i64, .f64: true
        default: false
        }
    }

    /// Whether the decoded value is a number that `scale`, `offset`, deadbands and alarms apply to.
    public var isNumeric: Bool {
        switch self {
        case .bool, .string: false
        default: true
        }
    }
}

/// How the big-endian bytes A B C D (E F G H) of a multi-register value are laid out in registers.
public enum WordOrder: String, Sendable, CaseIterable, Hashable {
    /// Registers in order, each high byte first.
    case abcd = "ABCD"
    /// Registers in reverse order (low word first), each high byte first.
    case cdab = "CDAB"
    /// Registers in order, each low byte first.
    case badc = "BADC"
    /// Fully little-endian.
    case dcba = "DCBA"

    var wordsReversed: Bool { self == .cdab || self == .dcba }
    var bytesSwapped: Bool { self == .badc || self == .dcba }

    /// The value's big-endian bytes from registers laid out in this order.
    public func bigEndianBytes(from registers: some Collection<UInt16>) -> [UInt8] {
        let words = wordsReversed ? Array(registers.reversed()) : Array(registers)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(words.count * 2)
        for word in words {
            let high = UInt8(word >> 8)
            let low = UInt8(word & 0xFF)
            if bytesSwapped { bytes += [low, high] } else { bytes += [high, low] }
        }
        return bytes
    }

    /// Registers laid out in this order for a value's big-endian bytes (the inverse of `bigEndianBytes`).
    public func registers(fromBigEndian bytes: [UInt8]) -> [UInt16] {
        var words: [UInt16] = []
        words.reserveCapacity(bytes.count / 2)
        for pair in stride(from: 0, to: bytes.count, by: 2) {
            let first = UInt16(bytes[pair])
            let second = UInt16(bytes[pair + 1])
            words.append(bytesSwapped ? (second << 8 | first) : (first << 8 | second))
        }
        return wordsReversed ? words.reversed() : words
    }
}

/// A decoded point value as it goes upstream.
public enum PointValue: Sendable, Equatable, CustomStringConvertible {
    case bool(Bool)
    case integer(Int64)
    case unsigned(UInt64)
    case number(Double)
    case text(String)

    /// The value as a Double, for deadbands and alarms; nil for text.
    public var numeric: Double? {
        switch self {
        case .bool(let b): b ? 1 : 0
        case .integer(let i): Double(i)
        case .unsigned(let u): Double(u)
        case .number(let d): d
        case .text: nil
        }
    }

    public var description: String {
        switch self {
        case .bool(let b): "\(b)"
        case .integer(let i): "\(i)"
        case .unsigned(let u): "\(u)"
        case .number(let d): "\(d)"
        case .text(let s): s
        }
    }

    public var jsonValue: JSON {
        switch self {
        case .bool(let b): .bool(b)
        case .integer(let i): .integer(i)
        case .unsigned(let u): .unsigned(u)
        case .number(let d): .number(d)
        case .text(let s): .string(s)
        }
    }
}

/// Pure decoding of raw registers into engineering values, and the inverse for simulators.
public enum RegisterCodec {
    /// The raw (unscaled) value of `registers` read as `type` in `order`.
    /// - Precondition: `registers.count == type.registerCount`.
    public static func raw(_ registers: some Collection<UInt16>, as type: ValueType, order: WordOrder) -> PointValue {
        precondition(registers.count == type.registerCount, "wrong register count for \(type)")
        switch type {
        case .bool:
            return .bool(registers.first! != 0)
        case .u16:
            return .unsigned(UInt64(registers.first!))
        case .i16:
            return .integer(Int64(Int16(bitPattern: registers.first!)))
        case .string:
            var bytes = WordOrder.abcd.bigEndianBytes(from: registers)
            while let last = bytes.last, last == 0 || last == 0x20 { bytes.removeLast() }
            return .text(String(decoding: bytes, as: UTF8.self))
        case .u32, .i32, .f32, .u64, .i64, .f64:
            let bits = order.bigEndianBytes(from: registers).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            switch type {
            case .u32, .u64: return .unsigned(bits)
            case .i32: return .integer(Int64(Int32(bitPattern: UInt32(truncatingIfNeeded: bits))))
            case .i64: return .integer(Int64(bitPattern: bits))
            case .f32: return .number(widen(Float(bitPattern: UInt32(truncatingIfNeeded: bits))))
            default: return .number(Double(bitPattern: bits))
            }
        }
    }

    /// The engineering value: `raw * scale + offset` for numbers, rounded to the decimals that
    /// `scale` and `offset` carry so that 415 * 0.1 reads 41.5 and not 41.50000000000001.
    /// An integer with scale 1 and offset 0 stays an exact integer.
    public static func value(
        _ registers: some Collection<UInt16>, as type: ValueType, order: WordOrder, scale: Double, offset: Double
    ) -> PointValue {
        let raw = raw(registers, as: type, order: order)
        guard type.isNumeric, scale != 1 || offset != 0, let number = raw.numeric else { return raw }
        let scaled = number * scale + offset
        switch type {
        case .f32, .f64: return .number(scaled)
        default: return .number(round(scaled, decimals: max(decimals(of: scale), decimals(of: offset))))
        }
    }

    /// Registers holding `value` (an engineering value) as `type` in `order`: the inverse of
    /// `value(...)`, used by the simulator. Out-of-range values saturate.
    public static func registers(
        for value: PointValue, as type: ValueType, order: WordOrder, scale: Double = 1, offset: Double = 0
    ) -> [UInt16] {
        if case .string(let count) = type {
            var bytes = Array(value.description.utf8.prefix(count * 2))
            bytes += [UInt8](repeating: 0, count: count * 2 - bytes.count)
            return WordOrder.abcd.registers(fromBigEndian: bytes)
        }
        let engineering = value.numeric ?? 0
        let raw = type.isNumeric ? (engineering - offset) / scale : engineering
        let bits: UInt64
        switch type {
        case .bool: return [raw != 0 ? 1 : 0]
        case .u16: return [UInt16(clamping: Int64(saturating: raw.rounded()))]
        case .i16: return [UInt16(bitPattern: Int16(clamping: Int64(saturating: raw.rounded())))]
        case .u32: bits = UInt64(UInt32(clamping: Int64(saturating: raw.rounded())))
        case .i32: bits = UInt64(UInt32(bitPattern: Int32(clamping: Int64(saturating: raw.rounded()))))
        case .u64:
            if case .unsigned(let exact) = value, scale == 1, offset == 0 {
                bits = exact
            } else {
                bits = raw <= 0 ? 0 : (raw >= 0x1p64 ? .max : UInt64(raw.rounded()))
            }
        case .i64:
            if case .integer(let exact) = value, scale == 1, offset == 0 {
                bits = UInt64(bitPattern: exact)
            } else {
                bits = UInt64(bitPattern: Int64(saturating: raw.rounded()))
            }
        case .f32: bits = UInt64(Float(raw).bitPattern)
        case .f64: bits = raw.bitPattern
        case .string: fatalError("handled above")
        }
        let byteCount = type.registerCount * 2
        let bytes = (0..<byteCount).map { UInt8(truncatingIfNeeded: bits >> (8 * UInt64(byteCount - 1 - $0))) }
        return order.registers(fromBigEndian: bytes)
    }

    /// A Float widened through its shortest decimal form, so 123.456f reads 123.456, not 123.45600128173828.
    static func widen(_ value: Float) -> Double {
        guard value.isFinite else { return Double(value) }
        return Double(value.description) ?? Double(value)
    }

    /// Decimal places a configured factor carries (0.1 -> 1, 0.05 -> 2, 10 -> 0), at most 9.
    static func decimals(of factor: Double) -> Int {
        var scaled = abs(factor)
        for places in 0...9 {
            if abs(scaled - scaled.rounded()) < 1e-9 * max(1, scaled) { return places }
            scaled *= 10
        }
        return 9
    }

    static func round(_ value: Double, decimals: Int) -> Double {
        guard value.isFinite, decimals < 9 else { return value }
        var power = 1.0
        for _ in 0..<decimals { power *= 10 }
        return (value * power).rounded() / power
    }
}

extension Int64 {
    /// Converts, saturating at the bounds and mapping NaN to 0.
    init(saturating value: Double) {
        if value.isNaN {
            self = 0
        } else if value >= 0x1p63 {
            self = .max
        } else if value <= -0x1p63 {
            self = .min
        } else {
            self = Int64(value)
        }
    }
}
