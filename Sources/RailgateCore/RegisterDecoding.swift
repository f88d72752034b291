/// The four Modbus data tables a point can live in.
public enum RegisterTable: String, Sendable, CaseIterable, Hashable {
    case coil, discrete, input, holding

    /// Coils and discrete inputs hold bits; input and holding registers hold 16-bit words.
    public var holdsBits: Bool { self == .coil || self == .discrete }

    /// The most items one read request may ask for (Modbus application protocol, 6.1-6.4).
    public var maxItemsPerRequest: Int { holdsBits ? 2000 : 125 }
}

/// Which half of a register an 8-bit point is (`byte = "high" | "low"`).
public enum RegisterByte: String, Sendable, Hashable, CaseIterable {
    case high, low
}

/// The type a point's registers are decoded as (`type` in a profile).
public enum ValueType: Sendable, Hashable, CustomStringConvertible {
    case bool, u16, i16, u32, i32, u64, i64, f32, f64
    /// `string:N`: N registers, two characters each (high byte first, or low byte first with
    /// `order = "BADC"`), cut at the first NUL.
    case string(registers: Int)
    /// `bit` with `bit = 0..15`: one bit of a holding or input register (0 the least
    /// significant), read as a boolean; several flags of one register share its read.
    case bit(Int)
    /// `u8` / `i8` with `byte = "high" | "low"`: one byte of a register.
    case u8(RegisterByte)
    case i8(RegisterByte)
    /// IEEE 754 half precision (binary16) in one register.
    case f16
    /// Packed BCD: 4 decimal digits in one register (0...9999), 8 in two (0...99999999); a
    /// nibble above 9 is no reading (`invalid`).
    case bcd16, bcd32

    /// Parses a profile's `type` value: `u16`, `f32`, `string:8`, ... `bit`, `u8` and `i8` take
    /// their bit or byte from the profile's `bit` and `byte` keys (they parse here as bit 0 and
    /// the low byte); `modbus read --type` also takes `bit:N`, `u8:high`, `i8:low`.
    public init?(_ text: String) {
        switch text {
        case "bit": self = .bit(0)
        case "u8": self = .u8(.low)
        case "i8": self = .i8(.low)
        case "f16": self = .f16
        case "bcd16": self = .bcd16
        case "bcd32": self = .bcd32
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
            if text.hasPrefix("bit:"), let bit = Int(text.dropFirst(4)), (0...15).contains(bit) {
                self = .bit(bit)
                return
            }
            for (prefix, make) in [("u8:", ValueType.u8), ("i8:", ValueType.i8)] where text.hasPrefix(prefix) {
                guard let half = RegisterByte(rawValue: String(text.dropFirst(3))) else { return nil }
                self = make(half)
                return
            }
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
        case .bit: "bit"
        case .u8: "u8"
        case .i8: "i8"
        case .f16: "f16"
        case .bcd16: "bcd16"
        case .bcd32: "bcd32"
        }
    }

    /// The profile's spelling of the type for messages: `bit 3`, `u8 (high byte)`, else `description`.
    public var detail: String {
        switch self {
        case .bit(let bit): "bit \(bit)"
        case .u8(let half), .i8(let half): "\(description) (\(half.rawValue) byte)"
        default: description
        }
    }

    /// The bits of its register a point of this type uses, for types that share a register
    /// (`bit`, `u8`, `i8`); nil when the point owns its registers.
    public var registerMask: UInt16? {
        switch self {
        case .bit(let bit): 1 << UInt16(bit)
        case .u8(let half), .i8(let half): half == .high ? 0xFF00 : 0x00FF
        default: nil
        }
    }

    /// Registers (or bits, for a bool in a bit table) the value occupies.
    public var registerCount: Int {
        switch self {
        case .bool, .u16, .i16, .bit, .u8, .i8, .f16, .bcd16: 1
        case .u32, .i32, .f32, .bcd32: 2
        case .u64, .i64, .f64: 4
        case .string(let n): n
        }
    }

    /// Whether the type is a number of two or four registers (every `order` applies to it).
    public var isMultiRegisterNumber: Bool {
        switch self {
        case .u32, .i32, .f32, .u64, .i64, .f64, .bcd32: true
        default: false
        }
    }

    /// The `order` values meaningful for this type (`check` refuses the others):
    /// - 32- and 64-bit numbers: all four.
    /// - `u16`, `i16`: `ABCD` (high byte first) and `BADC`/`DCBA` (low byte first, the same for
    ///   one register); `CDAB` swaps words, which one register does not have.
    /// - `string:N`: `ABCD` and `BADC`/`DCBA` (low byte of each register first); text is always
    ///   read in register address order, so `CDAB` has no meaning.
    /// - `bool`: `ABCD` only (any non-zero register or bit is true; bytes have no order).
    /// - `bit`, `u8`, `i8`: `ABCD` only (`bit` and `byte` name the bits of the register itself).
    /// - `f16`, `bcd16`: like `u16`; `bcd32`: all four, like `u32`.
    public var allowedOrders: [WordOrder] {
        switch self {
        case .bool, .bit, .u8, .i8: [.abcd]
        case .u16, .i16, .string, .f16, .bcd16: [.abcd, .badc, .dcba]
        case .u32, .i32, .f32, .u64, .i64, .f64, .bcd32: WordOrder.allCases
        }
    }

    /// Bits of the raw pattern `invalid` sentinels are compared with: 16, 32 or 64; nil where
    /// sentinels do not apply (`bool`, `string:N`).
    public var sentinelBits: Int? {
        switch self {
        case .u8, .i8: 8
        case .u16, .i16, .f16, .bcd16: 16
        case .u32, .i32, .f32, .bcd32: 32
        case .u64, .i64, .f64: 64
        case .bool, .string, .bit: nil
        }
    }

    /// Whether the raw pattern is signed, so that `invalid` may also give the signed value
    /// (`-32768` for an `i16`'s `0x8000`).
    public var isSignedInteger: Bool {
        switch self {
        case .i8, .i16, .i32, .i64: true
        default: false
        }
    }

    /// Whether the type is packed BCD, whose raw pattern may hold a nibble that is no digit.
    public var isBCD: Bool { self == .bcd16 || self == .bcd32 }

    /// Whether the decoded value is a number that `scale`, `offset`, deadbands and alarms apply to.
    public var isNumeric: Bool {
        switch self {
        case .bool, .string, .bit: false
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
    /// The raw bit pattern of a number: its big-endian bytes after `order` as one unsigned integer
    /// (the register itself for a 16-bit type in `ABCD`). `invalid` sentinels are compared with it.
    /// - Precondition: `registers.count == type.registerCount`, a number type.
    public static func rawPattern(_ registers: some Collection<UInt16>, as type: ValueType, order: WordOrder) -> UInt64
    {
        precondition(registers.count == type.registerCount, "wrong register count for \(type)")
        switch type {
        case .u8(let half), .i8(let half):
            let word = registers.first!
            return UInt64(half == .high ? word >> 8 : word & 0xFF)
        case .bit(let bit):
            return UInt64(registers.first! >> UInt16(bit) & 1)
        default: break
        }
        if type.registerCount == 1 {
            let word = registers.first!
            return UInt64(order.bytesSwapped ? word.byteSwapped : word)
        }
        // The big-endian bytes of `bigEndianBytes(from:)` as one integer, without building them:
        // registers in order fill it from the top, reversed from the bottom.
        var pattern: UInt64 = 0
        var shift: UInt64 = 0
        for register in registers {
            let word = UInt64(order.bytesSwapped ? register.byteSwapped : register)
            if order.wordsReversed {
                pattern |= word << shift
                shift += 16
            } else {
                pattern = pattern << 16 | word
            }
        }
        return pattern
    }

    /// The raw (unscaled) value of `registers` read as `type` in `order`. Strings: see `text(_:order:)`.
    /// - Precondition: `registers.count == type.registerCount`.
    public static func raw(_ registers: some Collection<UInt16>, as type: ValueType, order: WordOrder) -> PointValue {
        precondition(registers.count == type.registerCount, "wrong register count for \(type)")
        switch type {
        case .bool:
            return .bool(registers.first! != 0)
        case .bit:
            return .bool(rawPattern(registers, as: type, order: order) != 0)
        case .string:
            return .text(text(registers, order: order))
        case .bcd16, .bcd32:
            // An invalid nibble reads NaN here; `PointDefinition.reading` reports it as `invalid`.
            let bits = rawPattern(registers, as: type, order: order)
            return bcd(bits, digits: type.registerCount * 4).map { .unsigned($0) } ?? .number(.nan)
        case .f16:
            let bits = rawPattern(registers, as: type, order: order)
            let half = Float16(bitPattern: UInt16(truncatingIfNeeded: bits))
            // Through its shortest decimal form, so 0x3555 reads 0.3333, not 0.333251953125.
            return .number(half.isFinite ? Double(half.description) ?? Double(half) : Double(half))
        case .u8, .i8, .u16, .i16, .u32, .i32, .f32, .u64, .i64, .f64:
            let bits = rawPattern(registers, as: type, order: order)
            switch type {
            case .u8: return .unsigned(bits)
            case .i8: return .integer(Int64(Int8(bitPattern: UInt8(truncatingIfNeeded: bits))))
            case .u16: return .unsigned(bits)
            case .i16: return .integer(Int64(Int16(bitPattern: UInt16(truncatingIfNeeded: bits))))
            case .u32, .u64: return .unsigned(bits)
            case .i32: return .integer(Int64(Int32(bitPattern: UInt32(truncatingIfNeeded: bits))))
            case .i64: return .integer(Int64(bitPattern: bits))
            case .f32: return .number(widen(Float(bitPattern: UInt32(truncatingIfNeeded: bits))))
            default: return .number(Double(bitPattern: bits))
            }
        }
    }

    /// The number packed BCD digits stand for (`0x1234` -> 1234), or nil when a nibble is above 9.
    public static func bcd(_ pattern: UInt64, digits: Int) -> UInt64? {
        var value: UInt64 = 0
        for index in stride(from: digits - 1, through: 0, by: -1) {
            let digit = pattern >> UInt64(4 * index) & 0xF
            guard digit <= 9 else { return nil }
            value = value * 10 + digit
        }
        return value
    }

    /// The text of a `string:N` point as devices send it: two bytes a register, high byte first
    /// (`ABCD`) or low byte first (`BADC`, `DCBA`), registers in address order; cut at the first
    /// NUL; trailing spaces and 0xFF padding dropped. Bytes that are valid UTF-8 are read as UTF-8;
    /// otherwise every byte is read as ISO 8859-1 (Latin-1), so no byte is lost or replaced by
    /// U+FFFD (old field devices write Latin-1 names: 0xC4 reads "Ä").
    public static func text(_ registers: some Collection<UInt16>, order: WordOrder) -> String {
        var bytes = (order.bytesSwapped ? WordOrder.badc : WordOrder.abcd).bigEndianBytes(from: registers)
        if let nul = bytes.firstIndex(of: 0) { bytes.removeSubrange(nul...) }
        while let last = bytes.last, last == 0x20 || last == 0xFF { bytes.removeLast() }
        if let utf8 = String(validating: bytes, as: UTF8.self) { return utf8 }
        var latin1 = String.UnicodeScalarView()
        latin1.append(contentsOf: bytes.map { Unicode.Scalar($0) })
        return String(latin1)
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
        case .f16, .f32, .f64: return .number(scaled)
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
            return (order.bytesSwapped ? WordOrder.badc : WordOrder.abcd).registers(fromBigEndian: bytes)
        }
        let engineering = value.numeric ?? 0
        let raw = type.isNumeric ? (engineering - offset) / scale : engineering
        let bits: UInt64
        switch type {
        case .bool: return [raw != 0 ? 1 : 0]
        case .bit(let bit): return [raw != 0 ? 1 << UInt16(bit) : 0]
        case .u8(let half), .i8(let half):
            let byte =
                type.isSignedInteger
                ? UInt16(UInt8(bitPattern: Int8(clamping: Int64(saturating: raw.rounded()))))
                : UInt16(UInt8(clamping: Int64(saturating: raw.rounded())))
            return [half == .high ? byte << 8 : byte]
        case .f16: bits = UInt64(Float16(raw).bitPattern)
        case .bcd16, .bcd32:
            let digits = type.registerCount * 4
            var number = UInt64(clamping: Int64(saturating: raw.rounded()))
            var packed: UInt64 = 0
            for index in 0..<digits {
                packed |= (number % 10) << UInt64(4 * index)
                number /= 10
            }
            bits = packed
        case .u16: bits = UInt64(UInt16(clamping: Int64(saturating: raw.rounded())))
        case .i16: bits = UInt64(UInt16(bitPattern: Int16(clamping: Int64(saturating: raw.rounded()))))
        case .u32: bits = UInt64(UInt32(clamping: Int64(saturating: raw.rounded())))
        case .i32: bits = UInt64(UInt32(bitPattern: Int32(clamping: Int64(saturating: raw.rounded()))))
        case .u64:
            if case .unsigned(let exact) = value, scale == 1, offset == 0 {
                bits = exact
            } else {
                bits = UInt64(saturating: raw.rounded())
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
        var text = value.description
        return text.withUTF8 { exactDecimal($0) } ?? Double(text) ?? Double(value)
    }

    /// Powers of ten a Double holds exactly (10^0 ... 10^22).
    private static let exactPowersOfTen: [Double] = {
        var powers: [Double] = [1]
        for _ in 1...22 { powers.append(powers[powers.count - 1] * 10) }
        return powers
    }()

    /// The Double nearest to a decimal `[-]DIGITS[.DIGITS][e[+-]DIGITS]` of at most 15
    /// significant digits and a power of ten within 10^±22, computed as `Double(text)` (strtod)
    /// would: both the digits and the power are exact Doubles, so one multiplication or division
    /// rounds correctly (Clinger's fast path). Nil for anything else (the caller asks strtod).
    static func exactDecimal(_ text: UnsafeBufferPointer<UInt8>) -> Double? {
        var digits: UInt64 = 0
        var significant = 0
        var exponent = 0
        var afterPoint = false
        var sawDigit = false
        var index = 0
        let negative = text.count > 0 && text[0] == UInt8(ascii: "-")
        if negative { index = 1 }
        while index < text.count {
            let byte = text[index]
            index += 1
            if byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
                sawDigit = true
                if digits != 0 || byte != UInt8(ascii: "0") { significant += 1 }
                guard significant <= 15 else { return nil }
                digits = digits * 10 + UInt64(byte - UInt8(ascii: "0"))
                if afterPoint { exponent -= 1 }
            } else if byte == UInt8(ascii: "."), !afterPoint {
                afterPoint = true
            } else if byte == UInt8(ascii: "e") || byte == UInt8(ascii: "E") {
                var sign = 1
                if index < text.count, text[index] == UInt8(ascii: "-") || text[index] == UInt8(ascii: "+") {
                    sign = text[index] == UInt8(ascii: "-") ? -1 : 1
                    index += 1
                }
                var power = 0
                var powerDigits = 0
                while index < text.count, text[index] >= UInt8(ascii: "0"), text[index] <= UInt8(ascii: "9") {
                    power = power * 10 + Int(text[index] - UInt8(ascii: "0"))
                    powerDigits += 1
                    guard powerDigits <= 4 else { return nil }
                    index += 1
                }
                guard powerDigits > 0, index == text.count else { return nil }
                exponent += sign * power
                break
            } else {
                return nil
            }
        }
        guard sawDigit, (-22...22).contains(exponent) else { return nil }
        let magnitude =
            exponent < 0
            ? Double(digits) / exactPowersOfTen[-exponent] : Double(digits) * exactPowersOfTen[exponent]
        return negative ? -magnitude : magnitude
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

extension UInt64 {
    /// Converts, saturating at the bounds and mapping NaN to 0 (a NaN or a value past the
    /// bounds must never trap: the simulator encodes whatever its signal model computes).
    init(saturating value: Double) {
        if value.isNaN || value <= 0 {
            self = 0
        } else if value >= 0x1p64 {
            self = .max
        } else {
            self = UInt64(value)
        }
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
