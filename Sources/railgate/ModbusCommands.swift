import ArgumentParser
import RailgateCore
import RailgateModbus
import RailgateSystem

struct ModbusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "modbus", abstract: "One-off Modbus reads and bus scans, like mbpoll.",
        subcommands: [ModbusReadCommand.self, ModbusScanCommand.self])
}

/// How to reach the bus: `--tcp HOST[:PORT]` or `--rtu DEVICE` with its line settings.
struct BusOptions: ParsableArguments {
    @Option(help: "Modbus TCP slave or gateway, HOST[:PORT] (port 502 by default).")
    var tcp: String?

    @Option(help: "Serial device of an RS-485 line, e.g. /dev/ttyS1.")
    var rtu: String?

    @Option(help: "RTU baud rate.")
    var baud: Int = 19200

    @Option(help: "RTU parity: none, even or odd.")
    var parity: BusTransport.Parity = .even

    @Option(name: .customLong("data-bits"), help: "RTU data bits.")
    var dataBits: Int = 8

    @Option(name: .customLong("stop-bits"), help: "RTU stop bits: 1 or 2.")
    var stopBits: Int = 1

    @Option(name: .customLong("timeout-ms"), help: "Response timeout in milliseconds.")
    var timeoutMs: Int?

    func validate() throws {
        guard (tcp == nil) != (rtu == nil) else {
            throw ValidationError("give exactly one of --tcp HOST[:PORT] or --rtu DEVICE")
        }
        if let tcp, HostPort.split(tcp, defaultPort: 502) == nil {
            throw ValidationError("--tcp wants HOST[:PORT], got '\(tcp)'")
        }
        guard [1, 2].contains(stopBits) else { throw ValidationError("--stop-bits must be 1 or 2") }
        guard (5...8).contains(dataBits) else { throw ValidationError("--data-bits must be 5...8") }
    }

    var endpoint: ModbusEndpoint {
        if let tcp {
            let (host, port) = HostPort.split(tcp, defaultPort: 502)!
            return .tcp(host: host, port: port)
        }
        return .rtu(device: rtu!, baud: baud, parity: parity, dataBits: dataBits, stopBits: stopBits)
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
        discussion: "Addresses are 0-based, as in profiles (mbpoll's -r is 1-based: -r 1 is address 0).")

    @OptionGroup var bus: BusOptions

    @Option(help: "Unit id (slave address).")
    var unit: Int = 1

    @Flag(help: "Which table to read.")
    var table: TableFlag = .holding

    @Option(help: "First 0-based address.")
    var address: Int = 0

    @Option(help: "How many values (of --type) to read.")
    var count: Int = 1

    @Option(help: "Decode as: bool u16 i16 u32 i32 u64 i64 f32 f64 string:N.")
    var type: String = "u16"

    @Option(help: "Word order of multi-register values: ABCD CDAB BADC DCBA.")
    var order: String = "ABCD"

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
        guard let valueType = ValueType(type) else {
            throw ValidationError("--type '\(type)' is not one of bool u16 i16 u32 i32 u64 i64 f32 f64 string:N")
        }
        guard WordOrder(rawValue: order) != nil else {
            throw ValidationError("--order must be ABCD, CDAB, BADC or DCBA")
        }
        guard (0...255).contains(unit) else { throw ValidationError("--unit must be 0...255") }
        if bus.rtu != nil, unit > 247 {
            throw ValidationError("--unit \(unit): an RTU slave address is 0...247 (0 is broadcast, nothing answers)")
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
        StandardStreams.out(
            "-- unit \(unit) on \(bus.endpoint), \(table.table.rawValue) \(valueType)\(valueType.isMultiRegisterNumber ? " \(wordOrder.rawValue)" : "")"
        )
        for (valueAddress, value) in values { StandardStreams.out("[\(valueAddress)]: \t\(value)") }
    }
}

struct ModbusScanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scan",
        abstract: "Probe unit ids and list those that answer (an exception reply counts as an answer).")

    @OptionGroup var bus: BusOptions

    @Option(help: "Unit ids to probe, A-B.")
    var units: String = "1-247"

    @Option(help: "0-based holding register to probe with.")
    var address: Int = 0

    @Flag(help: "Print one JSON document.")
    var json = false

    func run() throws {
        let bounds = units.split(separator: "-").compactMap { Int($0) }
        let highest = bus.rtu == nil ? 255 : 247
        guard bounds.count == 2, bounds[0] <= bounds[1], bounds[0] >= 0, bounds[1] <= highest else {
            throw ValidationError("--units wants A-B with 0 <= A <= B <= \(highest)")
        }
        let connection = try bus.connect(defaultTimeoutMs: 200)
        defer { connection.disconnect() }
        var found: [(unit: Int, answer: String)] = []
        for unit in bounds[0]...bounds[1] {
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
        StandardStreams.out("-- scanned units \(bounds[0])-\(bounds[1]) on \(bus.endpoint): \(found.count) answered")
        for (unit, answer) in found { StandardStreams.out("unit \(unit): \(answer)") }
    }
}
