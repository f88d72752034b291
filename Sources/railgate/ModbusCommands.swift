import ArgumentParser
import RailgateCore
import RailgateModbus
import RailgateSystem

struct ModbusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "modbus", abstract: "One-off Modbus reads and bus scans, like mbpoll.",
        discussion: """
            Examples:
              railgate modbus read --tcp 192.0.2.10 --unit 7 --input --count 4 --type i16
              railgate modbus scan --rtu /dev/ttyS1 --parity even --units 1-32
            """,
        subcommands: [ModbusReadCommand.self, ModbusScanCommand.self])
}

/// How to reach the bus: `--tcp HOST[:PORT]`, `--rtu-over-tcp HOST[:PORT]`, `--ascii-over-tcp
/// HOST[:PORT]`, or `--rtu DEVICE` / `--ascii DEVICE` with its line settings.
struct BusOptions: ParsableArguments {
    @Option(help: "Modbus TCP slave or gateway, HOST[:PORT] (port 502 by default).")
    var tcp: String?

    @Option(help: "Serial device of an RS-485 line, e.g. /dev/ttyS1.")
    var rtu: String?

    @Option(
        name: .customLong("rtu-over-tcp"),
        help: "Serial device server passing RTU frames through TCP, HOST[:PORT] (port 502 by default).")
    var rtuOverTCP: String?

    @Option(help: "Serial device of a Modbus ASCII line (7 data bits unless --data-bits).")
    var ascii: String?

    @Option(name: .customLong("ascii-over-tcp"), help: "Device server passing Modbus ASCII through TCP, HOST[:PORT].")
    var asciiOverTCP: String?

    @Option(help: "RTU baud rate.")
    var baud: Int = 19200

    @Option(help: "RTU parity: none, even or odd.")
    var parity: BusTransport.Parity = .even

    @Option(name: .customLong("data-bits"), help: "Data bits (8 for RTU, 7 for ASCII by default).")
    var dataBits: Int?

    @Option(name: .customLong("stop-bits"), help: "RTU stop bits: 1 or 2.")
    var stopBits: Int = 1

    @Option(name: .customLong("timeout-ms"), help: "Response timeout in milliseconds.")
    var timeoutMs: Int?

    func validate() throws {
        guard [tcp, rtu, rtuOverTCP, ascii, asciiOverTCP].compactMap({ $0 }).count == 1 else {
            throw ValidationError(
                "give exactly one of --tcp, --rtu-over-tcp, --ascii-over-tcp HOST[:PORT] or --rtu, --ascii DEVICE")
        }
        for (flag, value) in [("--tcp", tcp), ("--rtu-over-tcp", rtuOverTCP), ("--ascii-over-tcp", asciiOverTCP)] {
            if let value, HostPort.split(value, defaultPort: 502) == nil {
                throw ValidationError("\(flag) wants HOST[:PORT], got '\(value)'")
            }
        }
        guard [1, 2].contains(stopBits) else { throw ValidationError("--stop-bits must be 1 or 2") }
        if let dataBits, !(5...8).contains(dataBits) { throw ValidationError("--data-bits must be 5...8") }
    }

    /// Whether frames carry a slave address (RTU, ASCII): unit ids 0...247.
    var isLineFraming: Bool { tcp == nil }

    var endpoint: ModbusEndpoint {
        if let tcp {
            let (host, port) = HostPort.split(tcp, defaultPort: 502)!
            return .tcp(host: host, port: port)
        }
        if let rtuOverTCP {
            let (host, port) = HostPort.split(rtuOverTCP, defaultPort: 502)!
            return .rtuOverTCP(host: host, port: port)
        }
        if let asciiOverTCP {
            let (host, port) = HostPort.split(asciiOverTCP, defaultPort: 502)!
            return .asciiOverTCP(host: host, port: port)
        }
        if let ascii {
            return .ascii(device: ascii, baud: baud, parity: parity, dataBits: dataBits ?? 7, stopBits: stopBits)
        }
        return .rtu(device: rtu!, baud: baud, parity: parity, dataBits: dataBits ?? 8, stopBits: stopBits)
    }

    func connect(defaultTimeoutMs: Int) throws -> ModbusConnection {
        do {
            let connection = try ModbusConnection(endpoint: endpoint, responseTimeoutMs: timeoutMs ?? defaultTimeoutMs)
            try connection.connect()
            return connection
        } catch {
            StandardStreams.error("railgate modbus: \(error)")
            throw Exit.unavailable
        }
    }
}

extension BusTransport.Parity: ExpressibleByArgument {}

struct ModbusReadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "read", abstract: "Read registers or bits once and decode them.",
        usage: """
            railgate modbus read (--tcp HOST[:PORT] | --rtu DEVICE |
                                  --rtu-over-tcp HOST[:PORT] | --ascii DEVICE |
                                  --ascii-over-tcp HOST[:PORT])
                                 [--baud N] [--parity P] [--unit N]
                                 [--coils | --discrete | --input | --holding]
                                 [--address A] [--count N] [--type T] [--order O]
                                 [--timeout-ms MS] [--json]
            railgate modbus read (--tcp HOST[:PORT] | ...) [--unit N] --profile NAME|FILE
                                 [--profile-path DIR ...] [--json]
            """,
        discussion: """
            Addresses are 0-based, as in profiles (mbpoll's -r is 1-based: -r 1 is address 0). Each value \
            is printed with its address and the registers it was decoded from, in hex.

            Examples:
              railgate modbus read --tcp 192.0.2.10 --unit 7 --input --count 4 --type i16
              railgate modbus read --rtu /dev/ttyS1 --baud 19200 --parity even \\
                  --unit 12 --address 0 --type f32 --order CDAB
              railgate modbus read --rtu-over-tcp 192.0.2.20:4001 --unit 3 --type bit:15
              railgate modbus read --tcp 192.0.2.10 --unit 7 --coils --count 8 --json
              railgate modbus read --rtu /dev/ttyS1 --unit 7 --profile axle-bearing-sensor
            """)

    @OptionGroup var bus: BusOptions

    @Option(help: "Unit id (slave address).")
    var unit: Int = 1

    @Flag(help: "Which table to read.")
    var table: TableFlag = .holding

    @Option(help: "First 0-based address.")
    var address: Int = 0

    @Option(help: "How many values (of --type) to read.")
    var count: Int = 1

    @Option(
        help: """
            Decode as: bool u16 i16 u32 i32 u64 i64 f32 f64 string:N bit:N u8:high u8:low i8:high i8:low \
            f16 bcd16 bcd32.
            """)
    var type: String = "u16"

    @Option(help: "Word order of multi-register values: ABCD CDAB BADC DCBA.")
    var order: String = "ABCD"

    @Option(
        help: """
            Read every point of this device profile (a name on --profile-path, or a file) and print \
            each with its name and unit, instead of --address/--count/--type.
            """)
    var profile: String?

    @Option(name: .customLong("profile-path"), help: "Directory to look profile names up in (repeatable).")
    var profilePath: [String] = ["/etc/railgate/profiles", "/usr/share/railgate/profiles", "Firmware-config/profiles"]

    @Flag(help: "Print one JSON document.")
    var json = false

    enum TableFlag: String, EnumerableFlag {
        case coils, discrete, input, holding

        var table: RegisterTable {
            switch self {
            case .coils: .coil
            case .discrete: .discrete
            case .input: .input
            case .holding: .holding
            }
        }
    }

    func validate() throws {
        guard (0...255).contains(unit) else { throw ValidationError("--unit must be 0...255") }
        if profile != nil {
            guard type == "u16", count == 1, address == 0, order == "ABCD" else {
                throw ValidationError(
                    "--profile reads the profile's points: leave out --address, --count, --type, --order")
            }
            if bus.isLineFraming, unit > 247 {
                throw ValidationError("--unit \(unit): an RTU or ASCII slave address is 0...247")
            }
            return
        }
        guard let valueType = ValueType(type) else {
            throw ValidationError(
                "--type '\(type)' is not one of bool u16 i16 u32 i32 u64 i64 f32 f64 string:N bit:N u8:high|low i8:high|low f16 bcd16 bcd32"
            )
        }
        if ["bit", "u8", "i8"].contains(type) {
            throw ValidationError(
                type == "bit"
                    ? "--type bit needs its bit: bit:N (N 0...15, 0 the least significant)"
                    : "--type \(type) needs its byte: \(type):high or \(type):low")
        }
        guard WordOrder(rawValue: order) != nil else {
            throw ValidationError("--order must be ABCD, CDAB, BADC or DCBA")
        }
        guard (0...255).contains(unit) else { throw ValidationError("--unit must be 0...255") }
        if bus.isLineFraming, unit > 247 {
            throw ValidationError(
                "--unit \(unit): an RTU or ASCII slave address is 0...247 (0 is broadcast, nothing answers)")
        }
        guard count >= 1, (0...65535).contains(address) else {
            throw ValidationError("--count must be at least 1 and --address 0...65535")
        }
        let items = table.table.holdsBits ? count : count * valueType.registerCount
        guard items <= table.table.maxItemsPerRequest else {
            throw ValidationError("that is \(items) items; one request reads at most \(table.table.maxItemsPerRequest)")
        }
        if table.table.holdsBits, valueType != .bool, type != "u16" {
            throw ValidationError("coils and discrete inputs are bits: use --type bool")
        }
    }

    func run() throws {
        if let profile { return try readProfile(profile) }
        let valueType = table.table.holdsBits ? ValueType.bool : ValueType(type)!
        let wordOrder = WordOrder(rawValue: order)!
        let width = table.table.holdsBits ? 1 : valueType.registerCount
        let connection = try bus.connect(defaultTimeoutMs: 1000)
        defer { connection.disconnect() }
        let registers: [UInt16]
        do {
            registers = try connection.read(table.table, unit: unit, address: address, count: count * width)
        } catch {
            StandardStreams.error("railgate modbus read: \(error)")
            if case .exception = error.kind { throw Exit.badData }
            throw error.kind == .badReply || error.kind == .crc ? Exit.badData : Exit.unavailable
        }
        var values: [(address: Int, value: PointValue)] = []
        for index in 0..<count {
            let slice = registers[(index * width)..<((index + 1) * width)]
            let point = PointDefinition(
                name: "v", table: table.table, address: address + index * width, type: valueType, order: wordOrder)
            values.append((point.address, point.decode(slice)))
        }
        if json {
            StandardStreams.out(
                JSON.object([
                    ("unit", .integer(Int64(unit))), ("table", .string(table.table.rawValue)),
                    ("address", .integer(Int64(address))),
                    ("type", .string(valueType.description)), ("order", .string(wordOrder.rawValue)),
                    ("registers", .array(registers.map { .unsigned(UInt64($0)) })),
                    (
                        "values",
                        .array(
                            values.map {
                                .object([("address", .integer(Int64($0.address))), ("value", $0.value.jsonValue)])
                            })
                    ),
                ]).serialized)
            return
        }
        for line in ModbusReadText.render(
            unit: unit, endpoint: "\(bus.endpoint)", table: table.table, type: valueType,
            order: valueType.isMultiRegisterNumber ? wordOrder : nil, registers: registers, width: width,
            values: values)
        {
            StandardStreams.out(line)
        }
    }
}

struct ModbusScanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Probe unit ids and list those that answer (an exception reply counts as an answer).",
        usage: """
            railgate modbus scan (--tcp HOST[:PORT] | --rtu DEVICE |
                                  --rtu-over-tcp HOST[:PORT] | --ascii DEVICE |
                                  --ascii-over-tcp HOST[:PORT])
                                 [--baud N] [--parity P] [--units A-B]
                                 [--address A] [--timeout-ms MS] [--json]
            """,
        discussion: """
            Each unit id is asked for one holding register; a unit that answers with an exception is \
            there too (it answered). A silent line costs --timeout-ms (200 ms by default) per unit.

            Examples:
              railgate modbus scan --rtu /dev/ttyS1 --baud 19200 --parity even --units 1-32
              railgate modbus scan --ascii-over-tcp 192.0.2.21:4002 --units 1-32 --json
            """)

    @OptionGroup var bus: BusOptions

    @Option(help: "Unit ids to probe, A-B.")
    var units: String = "1-247"

    @Option(help: "0-based holding register to probe with.")
    var address: Int = 0

    @Flag(help: "Print one JSON document.")
    var json = false

    /// The unit ids of `--units`, nil if it is not `A-B` within the bus's unit ids.
    var unitRange: ClosedRange<Int>? {
        let bounds = units.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
        guard bounds.count == 2, let low = bounds[0], let high = bounds[1], low >= 0, low <= high,
            high <= (bus.isLineFraming ? 247 : 255)
        else { return nil }
        return low...high
    }

    func validate() throws {
        guard unitRange != nil else {
            throw ValidationError("--units wants A-B with 0 <= A <= B <= \(bus.isLineFraming ? 247 : 255)")
        }
    }

    func run() throws {
        let range = unitRange!
        let connection = try bus.connect(defaultTimeoutMs: 200)
        defer { connection.disconnect() }
        var found: [(unit: Int, answer: String)] = []
        for unit in range {
            do {
                _ = try connection.read(.holding, unit: unit, address: address, count: 1)
                found.append((unit, "ok"))
            } catch {
                switch error.kind {
                case .exception(let code) where code != 0x0A && code != 0x0B:
                    found.append((unit, "exception:\(code)"))
                case .connection, .setup:
                    StandardStreams.error("railgate modbus scan: \(error)")
                    throw Exit.unavailable
                default:
                    continue
                }
            }
        }
        if json {
            StandardStreams.out(
                JSON.object([
                    (
                        "units",
                        .array(
                            found.map { .object([("unit", .integer(Int64($0.unit))), ("answer", .string($0.answer))]) })
                    )
                ]).serialized)
            return
        }
        StandardStreams.out(
            "scanned units \(HumanFormat.range(range.lowerBound, range.upperBound)) on \(bus.endpoint): "
                + (found.count == 1 ? "1 unit answered" : "\(found.count) units answered"))
        guard !found.isEmpty else { return }
        for line in HumanFormat.columns(
            [["unit", "answer"]] + found.map { ["\($0.unit)", $0.answer] }, rightAligned: [0])
        {
            StandardStreams.out(line)
        }
    }
}

/// The human text of `modbus read`: a heading saying what was read where, then one aligned row
/// per value with its 0-based address and the registers it came from (hex).
enum ModbusReadText {
    static func render(
        unit: Int, endpoint: String, table: RegisterTable, type: ValueType, order: WordOrder?, registers: [UInt16],
        width: Int, values: [(address: Int, value: PointValue)]
    ) -> [String] {
        let first = values.first?.address ?? 0
        let last = first + registers.count - 1
        let tableName: String =
            switch table {
            case .coil: "coil"
            case .discrete: "discrete input"
            case .input: "input register"
            case .holding: "holding register"
            }
        let items = table.holdsBits ? values.count : registers.count
        var heading =
            "unit \(unit) on \(endpoint): \(items == 1 ? tableName : tableName + "s") \(HumanFormat.range(first, last))"
        if !table.holdsBits { heading += " as \(type)" + (order.map { " \($0.rawValue)" } ?? "") }
        var rows: [[String]] = table.holdsBits ? [["address", "value"]] : [["address", "registers", "value"]]
        for (index, entry) in values.enumerated() {
            if table.holdsBits {
                rows.append(["\(entry.address)", "\(entry.value)"])
            } else {
                let words = registers[(index * width)..<((index + 1) * width)].map(Self.hex)
                rows.append(["\(entry.address)", words.joined(separator: " "), "\(entry.value)"])
            }
        }
        let numeric = values.allSatisfy {
            switch $0.value {
            case .integer, .unsigned, .number: true
            case .bool, .text: false
            }
        }
        let valueColumn = table.holdsBits ? 1 : 2
        return [heading] + HumanFormat.columns(rows, rightAligned: numeric ? [0, valueColumn] : [0])
    }

    /// Registers in hex, at most four: longer ones (text) end in `... (N)`.
    static func words(_ registers: [UInt16]) -> String {
        guard registers.count > 4 else { return registers.map(hex).joined(separator: " ") }
        return registers.prefix(3).map(hex).joined(separator: " ") + " ... (\(registers.count))"
    }

    static func hex(_ word: UInt16) -> String {
        let digits = String(word, radix: 16, uppercase: true)
        return "0x" + String(repeating: "0", count: 4 - digits.count) + digits
    }
}

extension ModbusReadCommand {
    /// `--profile`: every point of the profile, read in as few requests as its limits allow,
    /// each printed with its name, where it lives, its registers and its value with its unit (or
    /// why it has none: `timeout`, `exception:N`, `invalid`, ... as in a sample's `errors`).
    func readProfile(_ reference: String) throws {
        let definition: DeviceProfile
        do {
            definition = try ProfileLocator(files: LocalFiles(), searchPath: profilePath, besideFile: nil).load(
                reference)
        } catch {
            for problem in error.problems { StandardStreams.error(problem.description) }
            throw Exit.config
        }
        let limits = RequestLimits(
            registers: definition.maxRegistersPerRequest ?? RequestLimits.protocolMaximum.registers,
            bits: definition.maxBitsPerRequest ?? RequestLimits.protocolMaximum.bits)
        let requests = ReadPlanner.plan(definition.points, maxGap: 0, limits: limits)
        let connection = try bus.connect(defaultTimeoutMs: 1000)
        defer { connection.disconnect() }
        var registers: [Int: [UInt16]] = [:]
        var results: [Int: Result<PointValue, ReadFailure>] = [:]
        var requestsFailed = 0
        for request in requests {
            do {
                let words = try connection.read(
                    request.table, unit: unit, address: request.address, count: request.count)
                for index in request.pointIndices {
                    let point = definition.points[index]
                    let slice = Array(
                        words[(point.address - request.address)..<(point.address - request.address + point.count)])
                    registers[index] = slice
                    results[index] = point.reading(slice)
                }
            } catch {
                if case .connection = error.kind {
                    StandardStreams.error("railgate modbus read: \(error)")
                    throw Exit.unavailable
                }
                requestsFailed += 1
                for index in request.pointIndices { results[index] = .failure(error.readFailure) }
            }
        }
        let points = definition.points.indices
        if json {
            StandardStreams.out(
                JSON.object([
                    ("unit", .integer(Int64(unit))), ("profile", .string(definition.file)),
                    ("model", .string(definition.model)),
                    (
                        "points",
                        .array(
                            points.map { index in
                                let point = definition.points[index]
                                var fields: [(String, JSON)] = [
                                    ("name", .string(point.name)), ("table", .string(point.table.rawValue)),
                                    ("address", .integer(Int64(point.address))),
                                    ("registers", .array((registers[index] ?? []).map { .unsigned(UInt64($0)) })),
                                ]
                                switch results[index] {
                                case .success(let value)?: fields.append(("value", value.jsonValue))
                                case .failure(let failure)?: fields.append(("error", .string(failure.description)))
                                case nil: fields.append(("error", .string("io")))
                                }
                                fields.append(("unit", point.unit.map(JSON.string) ?? .null))
                                return .object(fields)
                            })
                    ),
                ]).serialized)
            return
        }
        let failed = points.filter { if case .success = results[$0] { false } else { true } }.count
        StandardStreams.out(
            "unit \(unit) on \(bus.endpoint): \(definition.model), "
                + "\(HumanFormat.count(points.count, "point")) in \(HumanFormat.count(requests.count, "request"))"
                + (failed > 0 ? ", \(failed) failed" : ""))
        var rows = [["point", "table", "address", "registers", "value"]]
        for index in points {
            let point = definition.points[index]
            let value: String
            switch results[index] {
            case .success(let reading)?: value = HumanFormat.quantity("\(reading)", unit: point.unit)
            case .failure(let failure)?: value = "FAILED \(failure)"
            case nil: value = "FAILED io"
            }
            rows.append([
                point.name, point.table.rawValue, "\(point.address)",
                point.table.holdsBits ? "" : ModbusReadText.words(registers[index] ?? []),
                value,
            ])
        }
        for line in HumanFormat.columns(rows, rightAligned: [2]) { StandardStreams.out(line) }
        if requestsFailed > 0 { throw Exit.unavailable }
    }
}
