import Testing

@testable import RailgateCore

@Suite("Register decoding")
struct RegisterDecodingTests {
    /// Known register layouts of one value in each word order.
    struct Vector: CustomTestStringConvertible {
        var type: ValueType
        var order: WordOrder
        var registers: [UInt16]
        var expected: PointValue
        var testDescription: String { "\(type) \(order.rawValue) \(registers.map { String($0, radix: 16) })" }
    }

    static let vectors: [Vector] = [
        // 123.456 as f32 is 0x42F6E979.
        Vector(type: .f32, order: .abcd, registers: [0x42F6, 0xE979], expected: .number(123.456)),
        Vector(type: .f32, order: .cdab, registers: [0xE979, 0x42F6], expected: .number(123.456)),
        Vector(type: .f32, order: .badc, registers: [0xF642, 0x79E9], expected: .number(123.456)),
        Vector(type: .f32, order: .dcba, registers: [0x79E9, 0xF642], expected: .number(123.456)),
        // -2 as i32 is 0xFFFFFFFE.
        Vector(type: .i32, order: .abcd, registers: [0xFFFF, 0xFFFE], expected: .integer(-2)),
        Vector(type: .i32, order: .cdab, registers: [0xFFFE, 0xFFFF], expected: .integer(-2)),
        Vector(type: .i32, order: .badc, registers: [0xFFFF, 0xFEFF], expected: .integer(-2)),
        Vector(type: .i32, order: .dcba, registers: [0xFEFF, 0xFFFF], expected: .integer(-2)),
        Vector(type: .u32, order: .abcd, registers: [0x0102, 0x0304], expected: .unsigned(0x0102_0304)),
        Vector(type: .u32, order: .cdab, registers: [0x0304, 0x0102], expected: .unsigned(0x0102_0304)),
        Vector(type: .u32, order: .badc, registers: [0x0201, 0x0403], expected: .unsigned(0x0102_0304)),
        Vector(type: .u32, order: .dcba, registers: [0x0403, 0x0201], expected: .unsigned(0x0102_0304)),
        Vector(
            type: .u64, order: .abcd, registers: [0x0102, 0x0304, 0x0506, 0x0708],
            expected: .unsigned(0x0102_0304_0506_0708)),
        Vector(
            type: .u64, order: .cdab, registers: [0x0708, 0x0506, 0x0304, 0x0102],
            expected: .unsigned(0x0102_0304_0506_0708)),
        Vector(
            type: .u64, order: .badc, registers: [0x0201, 0x0403, 0x0605, 0x0807],
            expected: .unsigned(0x0102_0304_0506_0708)),
        Vector(
            type: .u64, order: .dcba, registers: [0x0807, 0x0605, 0x0403, 0x0201],
            expected: .unsigned(0x0102_0304_0506_0708)),
        Vector(type: .u64, order: .abcd, registers: [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], expected: .unsigned(.max)),
        // i64 extremes.
        Vector(type: .i64, order: .abcd, registers: [0x8000, 0, 0, 0], expected: .integer(.min)),
        Vector(type: .i64, order: .cdab, registers: [0, 0, 0, 0x8000], expected: .integer(.min)),
        Vector(type: .i64, order: .badc, registers: [0x0080, 0, 0, 0], expected: .integer(.min)),
        Vector(type: .i64, order: .dcba, registers: [0, 0, 0, 0x0080], expected: .integer(.min)),
        Vector(type: .i64, order: .abcd, registers: [0x7FFF, 0xFFFF, 0xFFFF, 0xFFFF], expected: .integer(.max)),
        Vector(type: .i64, order: .dcba, registers: [0xFFFF, 0xFFFF, 0xFFFF, 0xFF7F], expected: .integer(.max)),
        Vector(type: .i64, order: .cdab, registers: [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF], expected: .integer(-2)),
        // -123.456 as f64 is 0xC05EDD2F1A9FBE77.
        Vector(type: .f64, order: .abcd, registers: [0xC05E, 0xDD2F, 0x1A9F, 0xBE77], expected: .number(-123.456)),
        Vector(type: .f64, order: .cdab, registers: [0xBE77, 0x1A9F, 0xDD2F, 0xC05E], expected: .number(-123.456)),
        Vector(type: .f64, order: .badc, registers: [0x5EC0, 0x2FDD, 0x9F1A, 0x77BE], expected: .number(-123.456)),
        Vector(type: .f64, order: .dcba, registers: [0x77BE, 0x9F1A, 0x2FDD, 0x5EC0], expected: .number(-123.456)),
        // 16-bit types and bool ignore the order.
        Vector(type: .u16, order: .dcba, registers: [0xFFFF], expected: .unsigned(65535)),
        Vector(type: .i16, order: .abcd, registers: [0xFFFF], expected: .integer(-1)),
        Vector(type: .i16, order: .cdab, registers: [0x8000], expected: .integer(-32768)),
        Vector(type: .bool, order: .dcba, registers: [0x0100], expected: .bool(true)),
        Vector(type: .bool, order: .abcd, registers: [0], expected: .bool(false)),
        // Strings: two characters a register, high byte first; trailing NULs and spaces dropped.
        Vector(type: .string(registers: 2), order: .abcd, registers: [0x4158, 0x2D34], expected: .text("AX-4")),
        Vector(type: .string(registers: 3), order: .dcba, registers: [0x5A4B, 0x0020, 0x0000], expected: .text("KZ")),
        Vector(type: .string(registers: 2), order: .abcd, registers: [0x4120, 0x4200], expected: .text("A B")),
    ]

    @Test("every type in every order decodes known vectors", arguments: vectors)
    func decodesKnownVectors(_ vector: Vector) {
        #expect(RegisterCodec.raw(vector.registers, as: vector.type, order: vector.order) == vector.expected)
    }

    @Test("encoding is the inverse of decoding", arguments: vectors)
    func encodesKnownVectors(_ vector: Vector) {
        let encoded = RegisterCodec.registers(for: vector.expected, as: vector.type, order: vector.order)
        #expect(RegisterCodec.raw(encoded, as: vector.type, order: vector.order) == vector.expected)
        if vector.type.isMultiRegisterNumber || vector.type == .u16 || vector.type == .i16 {
            #expect(encoded == vector.registers)
        }
    }

    @Test("scale and offset give clean engineering values")
    func scaling() {
        #expect(RegisterCodec.value([415], as: .i16, order: .abcd, scale: 0.1, offset: 0) == .number(41.5))
        #expect(
            RegisterCodec.value([UInt16(bitPattern: -183)], as: .i16, order: .abcd, scale: 0.1, offset: 0)
                == .number(-18.3))
        #expect(RegisterCodec.value([100], as: .u16, order: .abcd, scale: 0.5, offset: -40) == .number(10))
        #expect(RegisterCodec.value([4803], as: .u16, order: .abcd, scale: 0.01, offset: 0) == .number(48.03))
        #expect(RegisterCodec.value([7], as: .u16, order: .abcd, scale: 1, offset: 0) == .unsigned(7))
        #expect(RegisterCodec.value([0x42F6, 0xE979], as: .f32, order: .abcd, scale: 2, offset: 0) == .number(246.912))
    }

    @Test("scaled values survive the simulator's encoding", arguments: WordOrder.allCases)
    func scaledRoundTrip(_ order: WordOrder) {
        for type in [ValueType.i16, .u16, .i32, .u32, .i64, .f32, .f64] {
            let point = PointDefinition(
                name: "p", table: .holding, address: 0, type: type, order: order, scale: 0.1, offset: 5)
            let registers = point.encode(.number(42.3))
            #expect(point.decode(registers).numeric.map { abs($0 - 42.3) < 1e-4 } == true, "\(type) \(order)")
        }
    }

    @Test("bits decode as booleans whatever the type")
    func bits() {
        let coil = PointDefinition(name: "door", table: .coil, address: 3, type: .bool)
        #expect(coil.decode([1]) == .bool(true))
        #expect(coil.encode(.bool(true)) == [1])
        #expect(coil.count == 1)
    }

    @Test("type names parse and print the same")
    func typeNames() {
        for name in ["bool", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "string:8", "string:1"] {
            #expect(ValueType(name)?.description == name)
        }
        for bad in ["float", "string:0", "string:126", "string:", "U16", ""] { #expect(ValueType(bad) == nil) }
        #expect(ValueType("string:10")?.registerCount == 10)
    }
}
