/// A JSON value whose objects keep their keys in the order written, so payloads read the way
/// the contract shows them (`seq`, `ts`, `kind`, `source`, ...).
public indirect enum JSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case integer(Int64)
    case unsigned(UInt64)
    /// A double; non-finite values are written as `null` (JSON has no NaN or infinity).
    case number(Double)
    case string(String)
    case array([JSON])
    case object([(String, JSON)])

    public static func == (lhs: JSON, rhs: JSON) -> Bool { lhs.serialized == rhs.serialized }

    /// The compact serialisation, as text.
    public var serialized: String { String(decoding: bytes, as: UTF8.self) }

    /// The compact UTF-8 serialisation.
    public var bytes: [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(128)
        write(to: &output)
        return output
    }

    /// Appends the compact UTF-8 serialisation to `output`.
    public func write(to output: inout [UInt8]) {
        switch self {
        case .null: output += "null".utf8
        case .bool(let b): output += (b ? "true" : "false").utf8
        case .integer(let i):
            if i < 0 { output.append(UInt8(ascii: "-")) }
            JSON.writeDigits(i.magnitude, to: &output)
        case .unsigned(let u): JSON.writeDigits(u, to: &output)
        case .number(let d):
            if d.isFinite {
                var text = d.description
                text.withUTF8 { output.append(contentsOf: $0) }
            } else {
                output += "null".utf8
            }
        case .string(let s): JSON.writeString(s, to: &output)
        case .array(let elements):
            output.append(UInt8(ascii: "["))
            for (index, element) in elements.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                element.write(to: &output)
            }
            output.append(UInt8(ascii: "]"))
        case .object(let members):
            output.append(UInt8(ascii: "{"))
            for (index, (key, value)) in members.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                JSON.writeString(key, to: &output)
                output.append(UInt8(ascii: ":"))
                value.write(to: &output)
            }
            output.append(UInt8(ascii: "}"))
        }
    }

    static func writeDigits(_ value: UInt64, to output: inout [UInt8]) {
        var remaining = value
        let start = output.count
        repeat {
            output.append(UInt8(ascii: "0") + UInt8(remaining % 10))
            remaining /= 10
        } while remaining > 0
        output[start...].reverse()
    }

    static func writeString(_ text: String, to output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { bytes in
            // Fast path: most keys and values need no escaping at all.
            guard bytes.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else {
                output.append(contentsOf: bytes)
                return
            }
            for byte in bytes {
                switch byte {
                case UInt8(ascii: "\""): output += #"\""#.utf8
                case UInt8(ascii: "\\"): output += #"\\"#.utf8
                case UInt8(ascii: "\n"): output += #"\n"#.utf8
                case UInt8(ascii: "\r"): output += #"\r"#.utf8
                case UInt8(ascii: "\t"): output += #"\t"#.utf8
                case 0..<0x20:
                    let hex = Array("0123456789abcdef".utf8)
                    output += #"\u00"#.utf8
                    output += [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
                default: output.append(byte)
                }
            }
        }
        output.append(UInt8(ascii: "\""))
    }
}
