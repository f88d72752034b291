import RailgateCore

/// Every type, word order and byte of `RegisterDecoding` over arbitrary register words, with any
/// scale, offset and `invalid` sentinels. Holds: decoding never traps; a reading that succeeds
/// is finite; the raw pattern fits the type's bits; integers, floats and packed BCD read with
/// scale 1 and offset 0 encode back to the very same register bits (the simulator's inverse).
enum RegisterHarness {
    static func check(_ bytes: [UInt8]) -> [String] {
        var input = FuzzInput(bytes)
        let type = valueType(input.byte(), input.byte())
        let order = WordOrder.allCases[Int(input.byte() % 4)]
        let flags = input.byte()
        let table: RegisterTable =
            flags & 1 == 0 ? (flags & 2 == 0 ? .holding : .input) : (flags & 2 == 0 ? .coil : .discrete)
        let scale = flags & 4 == 0 ? 1 : Double(bitPattern: input.u64())
        let offset = flags & 8 == 0 ? 0 : Double(bitPattern: input.u64())
        let invalid = (0..<Int(flags >> 4 & 3)).map { _ in input.u64() }
        let registers = (0..<type.registerCount).map { _ in input.u16() }
        let point = PointDefinition(
            name: "p", table: table, address: 0, type: table.holdsBits ? .bool : type, order: order, scale: scale,
            offset: offset, invalid: invalid)
        var violations = Violations()
        let words = Array(registers.prefix(point.count))
        let describe = { "\(point.type) \(order.rawValue) scale \(scale) offset \(offset) registers \(words)" }

        switch point.reading(words) {
        case .success(let value):
            if case .number(let number) = value {
                violations.check(number.isFinite, "a reading that is not finite: \(number), " + describe())
            }
        case .failure:
            break
        }
        let encoded = point.encode(point.decode(words))
        violations.check(encoded.count == point.count, "encoded to \(encoded.count) registers: " + describe())
        if !table.holdsBits, let bits = type.sentinelBits {
            let pattern = RegisterCodec.rawPattern(words, as: type, order: order)
            violations.check(
                bits == 64 || pattern >> bits == 0, "raw pattern \(pattern) past \(bits) bits: " + describe())
        }
        // The inverse, where decoding loses nothing: scale 1, offset 0, a meaningful order.
        guard !table.holdsBits, type.allowedOrders.contains(order) else { return violations.messages }
        let raw = RegisterCodec.raw(words, as: type, order: order)
        let exact: Bool
        switch (type, raw) {
        case (.string, _), (.bool, _): exact = false
        case (_, .number(let number)): exact = number.isFinite && !type.isBCD
        default: exact = true
        }
        guard exact else { return violations.messages }
        let back = RegisterCodec.registers(for: raw, as: type, order: order)
        let mask = type.registerMask ?? 0xFFFF
        violations.check(
            back.count == words.count && zip(back, words).allSatisfy { $0 & mask == $1 & mask },
            "\(raw) encodes back as \(back): " + describe())
        return violations.messages
    }

    /// Every `ValueType`, with its bit, byte or length from `detail`.
    static func valueType(_ selector: UInt8, _ detail: UInt8) -> ValueType {
        switch selector % 16 {
        case 0: .bool
        case 1: .u16
        case 2: .i16
        case 3: .u32
        case 4: .i32
        case 5: .u64
        case 6: .i64
        case 7: .f32
        case 8: .f64
        case 9: .string(registers: 1 + Int(detail) % 125)
        case 10: .bit(Int(detail) % 16)
        case 11: .u8(detail & 1 == 0 ? .low : .high)
        case 12: .i8(detail & 1 == 0 ? .low : .high)
        case 13: .f16
        case 14: .bcd16
        default: .bcd32
        }
    }
}
