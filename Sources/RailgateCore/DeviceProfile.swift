/// One point of a device profile: where it lives, how to decode it, and what to do at the edge.
public struct PointDefinition: Sendable, Equatable {
    public var name: String
    public var table: RegisterTable
    /// 0-based register or bit address.
    public var address: Int
    public var type: ValueType
    public var order: WordOrder
    public var scale: Double
    public var offset: Double
    public var unit: String?
    /// Send only changes larger than this (nil: every poll).
    public var deadband: Double?
    /// With a deadband: send at least this often.
    public var maxSilenceMs: Int?
    public var alarmAbove: Double?
    public var alarmBelow: Double?
    /// How far back over the threshold clears an alarm (see `hysteresis` for the default).
    public var alarmHysteresis: Double?
    /// `invalid`: raw bit patterns (see `RegisterCodec.rawPattern`) that mean "no reading"; such a
    /// read is reported in `errors` as `invalid`, never as a value.
    public var invalid: [UInt64]
    /// `poll = "once"`: a static point (serial number, firmware version) read at start and after
    /// each reconnect, reported in the birth message under its source and in no sample.
    public var pollOnce: Bool

    public init(
        name: String, table: RegisterTable, address: Int, type: ValueType, order: WordOrder = .abcd,
        scale: Double = 1, offset: Double = 0, unit: String? = nil, deadband: Double? = nil,
        maxSilenceMs: Int? = nil, alarmAbove: Double? = nil, alarmBelow: Double? = nil, alarmHysteresis: Double? = nil,
        invalid: [UInt64] = [], pollOnce: Bool = false
    ) {
        self.name = name
        self.table = table
        self.address = address
        self.type = type
        self.order = order
        self.scale = scale
        self.offset = offset
        self.unit = unit
        self.deadband = deadband
        self.maxSilenceMs = maxSilenceMs
        self.alarmAbove = alarmAbove
        self.alarmBelow = alarmBelow
        self.alarmHysteresis = alarmHysteresis
        self.invalid = invalid
        self.pollOnce = pollOnce
    }

    /// Registers (or bits) the point occupies: `address ..< address + count`.
    public var count: Int { table.holdsBits ? 1 : type.registerCount }

    /// The engineering value of the point's registers (or bit, as 0/1).
    public func decode(_ registers: some Collection<UInt16>) -> PointValue {
        if table.holdsBits { return .bool(registers.first! != 0) }
        return RegisterCodec.value(registers, as: type, order: order, scale: scale, offset: offset)
    }

    /// What a poll reports for the point's registers: its engineering value, or why there is none:
    /// `invalid` when the raw pattern is one of the point's sentinels, `nan` or `inf` when a float
    /// (or a scaled value) is not finite. Numbers that go upstream are always finite.
    /// Packed BCD with a nibble above 9 is `invalid` too.
    public func reading(_ registers: some Collection<UInt16>) -> Result<PointValue, ReadFailure> {
        read(registers)
    }

    /// `reading` for a slice of a reply, as the poller passes it: specialised here, so a poll
    /// decodes without generic dispatch (called once per point per poll).
    public func reading(_ registers: ArraySlice<UInt16>) -> Result<PointValue, ReadFailure> {
        read(registers)
    }

    fileprivate func read<Registers: Collection<UInt16>>(_ registers: Registers) -> Result<PointValue, ReadFailure> {
        Self.read(registers, table: table, type: type, order: order, scale: scale, offset: offset, invalid: invalid)
    }

    /// `reading` from the fields it needs, so a loop over an array of points reads them in place.
    fileprivate static func read<Registers: Collection<UInt16>>(
        _ registers: Registers, table: RegisterTable, type: ValueType, order: WordOrder, scale: Double, offset: Double,
        invalid: [UInt64]
    ) -> Result<PointValue, ReadFailure> {
        if table.holdsBits { return .success(.bool(registers.first! != 0)) }
        if !invalid.isEmpty, type.sentinelBits != nil,
            invalid.contains(RegisterCodec.rawPattern(registers, as: type, order: order))
        {
            return .failure(.invalid)
        }
        if type.isBCD,
            RegisterCodec.bcd(
                RegisterCodec.rawPattern(registers, as: type, order: order), digits: 4 * type.registerCount)
                == nil
        {
            return .failure(.invalid)
        }
        let value = RegisterCodec.value(registers, as: type, order: order, scale: scale, offset: offset)
        if case .number(let number) = value, !number.isFinite { return .failure(number.isNaN ? .nan : .inf) }
        return .success(value)
    }

    /// Registers holding `value`: the inverse of `decode`, for simulators. A `bit`, `u8` or `i8`
    /// point fills only its `type.registerMask` of the register; a simulator merges it with the
    /// register's other points.
    public func encode(_ value: PointValue) -> [UInt16] {
        if table.holdsBits { return [value.numeric.map { $0 != 0 ? 1 : 0 } ?? 0] }
        return RegisterCodec.registers(for: value, as: type, order: order, scale: scale, offset: offset)
    }
}

/// A device type: its model name and points (`Firmware-config/profiles/NAME.toml`).
extension DeviceProfile {
    /// Decodes the points at `indices` from one reply: `registers` read from `address` on. Each
    /// point's reading goes to `results[index]`. The poller's per-point loop, here so each point
    /// is read in place rather than copied (about a third of a poll's instructions otherwise).
    public func readings(
        _ indices: [Int], from registers: [UInt16], at address: Int,
        into results: inout [Result<PointValue, ReadFailure>?]
    ) {
        points.withUnsafeBufferPointer { points in
            for index in indices {
                let start = points[index].address - address
                let count = points[index].table.holdsBits ? 1 : points[index].type.registerCount
                results[index] = PointDefinition.read(
                    registers[start..<(start + count)], table: points[index].table,
                    type: points[index].type, order: points[index].order, scale: points[index].scale,
                    offset: points[index].offset, invalid: points[index].invalid)
            }
        }
    }
}

public struct DeviceProfile: Sendable, Equatable {
    public var model: String
    public var points: [PointDefinition]
    /// The file it was read from, for messages.
    public var file: String
    /// `max_registers_per_request`: the most registers this model answers in one read (nil: 125).
    public var maxRegistersPerRequest: Int?
    /// `max_bits_per_request`: the most coils or discrete inputs in one read (nil: 2000).
    public var maxBitsPerRequest: Int?

    public init(
        model: String, points: [PointDefinition], file: String = "<profile>", maxRegistersPerRequest: Int? = nil,
        maxBitsPerRequest: Int? = nil
    ) {
        self.model = model
        self.points = points
        self.file = file
        self.maxRegistersPerRequest = maxRegistersPerRequest
        self.maxBitsPerRequest = maxBitsPerRequest
    }

    /// The largest point of `table`'s kind (registers or bits) and its name, for checking limits.
    public func largestPoint(holdingBits: Bool) -> PointDefinition? {
        points.filter { $0.table.holdsBits == holdingBits }.max { $0.count < $1.count }
    }

    /// Parses and validates a profile; throws `ConfigErrors` listing every problem.
    public static func parse(_ text: String, file: String) throws(ConfigErrors) -> DeviceProfile {
        try decode(TOMLParser.parse(text, file: file), file: file)
    }

    /// Parses and validates the bytes of a profile file (invalid UTF-8 is a `FILE:LINE` problem).
    public static func parse(bytes: [UInt8], file: String) throws(ConfigErrors) -> DeviceProfile {
        try decode(TOMLParser.parse(bytes: bytes, file: file), file: file)
    }

    private static func decode(_ root: TOMLTable, file: String) throws(ConfigErrors) -> DeviceProfile {
        let log = ProblemLog(file: file)
        var reader = TableReader(root, context: "the profile", log: log)
        let model = reader.string("model", required: true) ?? ""
        let maxRegisters = reader.integer(
            "max_registers_per_request", in: 1...RegisterTable.holding.maxItemsPerRequest, as: Int.self)
        let maxBits = reader.integer(
            "max_bits_per_request", in: 1...RegisterTable.coil.maxItemsPerRequest, as: Int.self)
        let pointTables = reader.tables("point")
        reader.finish()
        if pointTables.isEmpty { log.report(nil, "the profile defines no [[point]]") }

        var points: [PointDefinition] = []
        var seen: [String: Int] = [:]
        for table in pointTables {
            guard let point = parsePoint(table, log: log) else { continue }
            if let first = seen[point.name] {
                log.report(table.line, "point '\(point.name)' is defined twice (first on line \(first))")
                continue
            }
            seen[point.name] = table.line
            points.append(point)
        }
        let profile = DeviceProfile(
            model: model, points: points, file: file, maxRegistersPerRequest: maxRegisters, maxBitsPerRequest: maxBits)
        if let maxRegisters, let point = profile.largestPoint(holdingBits: false), point.count > maxRegisters {
            log.report(
                reader.line(of: "max_registers_per_request"),
                "max_registers_per_request = \(maxRegisters) is less than point '\(point.name)' needs (\(point.type): \(point.count) registers in one read)"
            )
        }
        if !log.problems.isEmpty { throw ConfigErrors(log.problems) }
        return profile
    }

    private static func parsePoint(_ table: TOMLTable, log: ProblemLog) -> PointDefinition? {
        var reader = TableReader(table, context: "[[point]]", log: log)
        let problemsBefore = log.problems.count
        let name = reader.string("name", required: true)
        if let name, !Names.isValid(name) {
            log.report(reader.line(of: "name"), "point name '\(name)' must match [A-Za-z0-9._-]{1,64}")
        }
        let tableName = reader.choice("table", RegisterTable.allCases.map(\.rawValue), required: true)
        let address = reader.integer("address", in: 0...65535, required: true, as: Int.self)
        let typeText = reader.string("type", required: true)
        var type = typeText.flatMap(ValueType.init)
        if let typeText, type == nil {
            log.report(
                reader.line(of: "type"),
                "type = \"\(typeText)\" is not one of bool, bit, u8, i8, u16, i16, u32, i32, u64, i64, f16, f32, f64, bcd16, bcd32, string:N (N 1...125)"
            )
        }
        let orderText = reader.choice("order", WordOrder.allCases.map(\.rawValue))
        let scale = reader.double("scale") ?? 1
        let offset = reader.double("offset") ?? 0
        let unit = reader.string("unit")
        let deadband = reader.double("deadband")
        let maxSilence = reader.integer("max_silence_ms", in: 1...86_400_000, as: Int.self)
        let alarmAbove = reader.double("alarm_above")
        let alarmBelow = reader.double("alarm_below")
        let hysteresis = reader.double("alarm_hysteresis")
        let invalidList = reader.integerArray("invalid")
        let bit = reader.integer("bit", in: 0...15, as: Int.self)
        let byteText = reader.choice("byte", RegisterByte.allCases.map(\.rawValue))
        let pollText = reader.choice("poll", ["every", "once"])
        reader.finish()
        switch type {
        case .bit:
            if let bit {
                type = .bit(bit)
            } else {
                log.report(reader.line(of: "type"), "type = \"bit\" needs bit = 0..15 (0 the least significant)")
            }
        case .u8, .i8:
            if let half = byteText.flatMap(RegisterByte.init(rawValue:)) {
                type = type == .u8(.low) ? .u8(half) : .i8(half)
            } else if byteText == nil {
                log.report(reader.line(of: "type"), "type = \"\(typeText ?? "")\" needs byte = \"high\" or \"low\"")
            }
        default:
            if bit != nil { log.report(reader.line(of: "bit"), "bit applies to type = \"bit\" only") }
            if byteText != nil { log.report(reader.line(of: "byte"), "byte applies to type = \"u8\" or \"i8\" only") }
        }
        if let hysteresis, hysteresis < 0 {
            log.report(reader.line(of: "alarm_hysteresis"), "alarm_hysteresis must not be negative")
        }
        if hysteresis != nil, alarmAbove == nil, alarmBelow == nil {
            log.report(reader.line(of: "alarm_hysteresis"), "alarm_hysteresis needs alarm_above or alarm_below")
        }

        if scale == 0 { log.report(reader.line(of: "scale"), "scale must not be 0") }
        if let deadband, deadband < 0 { log.report(reader.line(of: "deadband"), "deadband must not be negative") }
        if let alarmAbove, let alarmBelow, alarmBelow >= alarmAbove {
            log.report(
                reader.line(of: "alarm_below"),
                "alarm_below (\(alarmBelow)) must be lower than alarm_above (\(alarmAbove))")
        }
        if let tableName, let table = RegisterTable(rawValue: tableName), let type {
            if table.holdsBits, type != .bool {
                log.report(reader.line(of: "type"), "a \(tableName) holds single bits: type must be \"bool\"")
            }
            if pollText == "once", deadband != nil || alarmAbove != nil || alarmBelow != nil {
                log.report(
                    reader.line(of: "poll"),
                    "poll = \"once\" reports the point in the birth message only: deadband and alarms do not apply")
            }
            if let address, !table.holdsBits, address + type.registerCount > 65536 {
                log.report(reader.line(of: "address"), "\(type) at address \(address) runs past register 65535")
            }
            if !type.isNumeric, deadband != nil || alarmAbove != nil || alarmBelow != nil || scale != 1 || offset != 0 {
                log.report(
                    reader.line(of: "type"),
                    "scale, offset, deadband and alarms apply to numeric types only, not \(type)")
            }
            if let orderText, let order = WordOrder(rawValue: orderText), !type.allowedOrders.contains(order) {
                let allowed = type.allowedOrders.map(\.rawValue).joined(separator: ", ")
                log.report(
                    reader.line(of: "order"),
                    "order = \"\(orderText)\" has no meaning for \(type) (it takes \(allowed))")
            }
        }
        var invalid: [UInt64] = []
        if let invalidList, let type {
            if let bits = type.sentinelBits, tableName.flatMap(RegisterTable.init(rawValue:))?.holdsBits != true {
                for (number, line) in invalidList {
                    if let pattern = sentinelPattern(number, bits: bits, signed: type.isSignedInteger) {
                        invalid.append(pattern)
                    } else {
                        let range =
                            type.isSignedInteger
                            ? "\(-(Int64(1) << (bits - 1)))...0x\(String((UInt64(1) << bits) - 1, radix: 16, uppercase: true))"
                            : "0...0x\(String((UInt64(1) << bits) - 1, radix: 16, uppercase: true))"
                        log.report(line, "invalid value \(number) does not fit \(type)'s raw \(bits) bits (\(range))")
                    }
                }
            } else {
                log.report(reader.line(of: "invalid"), "invalid applies to number types on registers only, not \(type)")
            }
        }
        guard log.problems.count == problemsBefore, let name, let tableName,
            let table = RegisterTable(rawValue: tableName),
            let address, let type
        else { return nil }
        return PointDefinition(
            name: name, table: table, address: address, type: type,
            order: orderText.flatMap(WordOrder.init(rawValue:)) ?? .abcd, scale: scale, offset: offset, unit: unit,
            deadband: deadband, maxSilenceMs: maxSilence, alarmAbove: alarmAbove, alarmBelow: alarmBelow,
            alarmHysteresis: hysteresis, invalid: invalid, pollOnce: pollText == "once")
    }

    /// The raw pattern a sentinel from the profile stands for: a 16- or 32-bit pattern
    /// (0...0xFFFF, 0...0xFFFFFFFF), or for a signed type also its signed value (-32768 for an
    /// i16's 0x8000); any 64-bit integer for 64-bit types (negative ones as two's complement,
    /// since TOML integers stop at 2^63-1). Nil when it does not fit.
    static func sentinelPattern(_ number: Int64, bits: Int, signed: Bool) -> UInt64? {
        if bits == 64 { return UInt64(bitPattern: number) }
        let mask = (UInt64(1) << bits) - 1
        if number >= 0 { return UInt64(number) <= mask ? UInt64(number) : nil }
        guard signed, number >= -(Int64(1) << (bits - 1)) else { return nil }
        return UInt64(bitPattern: number) & mask
    }
}

/// The naming rule shared by gateway ids, sources and points: `[A-Za-z0-9._-]{1,64}`.
public enum Names {
    public static func isValid(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy {
                ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A)
                    || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-")
            }
    }
}
