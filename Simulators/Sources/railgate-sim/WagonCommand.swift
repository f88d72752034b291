import ArgumentParser
import Glibc
import RailgateCore
import RailgateModbus
import RailgateSystem

extension BusTransport.Parity: ExpressibleByArgument {}

/// `railgate-sim wagon`: serves a device profile as one or more Modbus slaves with realistic,
/// changing values.
struct WagonCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wagon",
        abstract: "Serve a device profile as a Modbus slave with realistic, changing values.",
        discussion: """
            Prints one line "railgate-sim: serving ... on HOST:PORT" on stdout once it is ready \
            (with --tcp HOST:0 the port is the one the kernel chose).

            Examples:
              railgate-sim wagon --profile axle-bearing-sensor --tcp 127.0.0.1:1502 \\
                  --units 1-3 --seed 7
              railgate-sim wagon --profile brake-load-sensor --tcp 127.0.0.1:0 \\
                  --unit 3 --set load=61.5
              railgate-sim wagon --profile axle-bearing-sensor --rtu /tmp/ttySIM --baud 19200 --parity even \\
                  --units 1-3 --scenario Simulators/scenarios/dead-unit.toml --trace
            """)

    @Option(help: "Profile name (looked up on --profile-path) or file.")
    var profile: String

    @Option(name: .customLong("profile-path"), help: "Directory to look profile names up in (repeatable).")
    var profilePath: [String] = ["Firmware-config/profiles", "/etc/railgate/profiles", "/usr/share/railgate/profiles"]

    @Option(help: "Serve Modbus TCP on HOST:PORT.")
    var tcp: String?

    @Option(help: "Serve Modbus RTU on this serial or pty device.")
    var rtu: String?

    @Option(
        name: .customLong("rtu-over-tcp"),
        help: "Serve Modbus RTU frames over TCP on HOST:PORT, as a serial device server in transparent mode.")
    var rtuOverTCP: String?

    @Option(help: "Serve Modbus ASCII on this serial or pty device.")
    var ascii: String?

    @Option(name: .customLong("ascii-over-tcp"), help: "Serve Modbus ASCII frames over TCP on HOST:PORT.")
    var asciiOverTCP: String?

    @Option(name: .customLong("data-bits"), help: "Serial data bits (8 for RTU, 7 for ASCII by default).")
    var dataBits: Int?

    @Option(help: "RTU baud rate.")
    var baud: Int = 19200

    @Option(help: "RTU parity: none, even or odd.")
    var parity: BusTransport.Parity = .even

    @Option(help: "Unit id to serve.")
    var unit: Int?

    @Option(help: "Range of unit ids to serve, A-B.")
    var units: String?

    @Option(help: "Seed for the value generators (same seed, same values).")
    var seed: UInt64 = 1

    @Option(name: .customLong("set"), help: "Pin a point to a value: NAME=VALUE (repeatable).")
    var pins: [String] = []

    @Option(
        name: .customLong("raw"),
        help: """
            Pin raw registers, written after the points' values: TABLE:ADDRESS=WORD[,WORD...] \
            (repeatable; words decimal or 0x hex), e.g. holding:10=0x5841,0xFFFF for text a device \
            sends low byte first and pads with 0xFF, or input:0=0x7FFF for a "no sensor" sentinel.
            """)
    var rawPins: [String] = []

    @Option(help: "Fault scenario file (see Simulators/scenarios).")
    var scenario: String?

    @Option(
        name: .customLong("tick-ms"),
        help: "Move the values on every this many milliseconds (a large fleet: longer, so serving stays cheap).")
    var tickMs: Int = 100

    @Flag(help: "Print every request received, one line each (\"request unit=1 fc=3 address=0 count=10\").")
    var trace = false

    func validate() throws {
        guard [tcp, rtu, rtuOverTCP, ascii, asciiOverTCP].compactMap({ $0 }).count == 1 else {
            throw ValidationError(
                "give exactly one of --tcp, --rtu-over-tcp, --ascii-over-tcp HOST:PORT or --rtu, --ascii DEVICE")
        }
        guard (unit == nil) != (units == nil) else {
            throw ValidationError("give exactly one of --unit N or --units A-B")
        }
        _ = try unitIDs()
        guard (1...60_000).contains(tickMs) else { throw ValidationError("--tick-ms must be 1...60000") }
        for (flag, value) in [("--tcp", tcp), ("--rtu-over-tcp", rtuOverTCP), ("--ascii-over-tcp", asciiOverTCP)] {
            if let value, HostPort.split(value, defaultPort: 502) == nil {
                throw ValidationError("\(flag) wants HOST:PORT, got '\(value)'")
            }
        }
    }

    func unitIDs() throws -> ClosedRange<Int> {
        if let unit {
            guard (0...255).contains(unit) else { throw ValidationError("--unit must be 0...255") }
            return unit...unit
        }
        let bounds = (units ?? "").split(separator: "-").compactMap { Int($0) }
        guard bounds.count == 2, bounds[0] <= bounds[1], bounds[0] >= 0, bounds[1] <= 255 else {
            throw ValidationError("--units wants A-B with 0 <= A <= B <= 255")
        }
        return bounds[0]...bounds[1]
    }

    func run() throws {
        let definition: DeviceProfile
        do {
            definition = try ProfileLocator(files: LocalFiles(), searchPath: profilePath, besideFile: nil).load(profile)
        } catch {
            printError(error.description)
            throw ExitCode(78)
        }
        var pinned: [String: PointValue] = [:]
        for pin in pins {
            let parts = pin.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let point = definition.points.first(where: { $0.name == parts[0] }) else {
                printError("--set \(pin): expected NAME=VALUE with a point of \(definition.file)")
                throw ExitCode(64)
            }
            pinned[point.name] = Self.parsePinned(parts[1], for: point)
        }
        var faults = FaultScenario()
        if let scenario {
            guard let text = LocalFiles().read(scenario) else {
                printError("cannot read the scenario \(scenario)")
                throw ExitCode(66)
            }
            do {
                faults = try FaultScenario.parse(text, file: scenario)
            } catch {
                printError(error.description)
                throw ExitCode(78)
            }
        }
        var raw: [RawPin] = []
        for text in rawPins {
            guard let pin = RawPin(text) else {
                printError("--raw \(text): expected TABLE:ADDRESS=WORD[,WORD...], e.g. holding:10=0x4142,0xFFFF")
                throw ExitCode(64)
            }
            raw.append(pin)
        }
        var wagon = try SimulatedWagon(
            profile: definition, units: try unitIDs(), seed: seed, pinned: pinned, raw: raw)
        let start = MonotonicClock.seconds()
        var last = start
        let ramps = faults.ramps
        let tickSeconds = Double(tickMs) / 1000
        let tick = {
            let now = MonotonicClock.seconds()
            // serve() calls this after every poll(2) wake-up: values move once a tick, not per request.
            guard now - last >= tickSeconds * 0.99 else { return }
            wagon.advance(t: now - start, dt: now - last, ramps: ramps)
            last = now
        }
        let trace = self.trace
        let respond = { (request: ModbusIndication) -> ModbusResponse in
            if trace {
                StandardStreams.out(
                    "request unit=\(request.unit) fc=\(request.functionCode) address=\(request.address) count=\(request.count)"
                )
            }
            guard let bank = wagon.banks[request.unit] else { return .silence }
            switch faults.fault(for: request, at: MonotonicClock.seconds() - start) {
            case nil: return .reply(bank)
            case .dead?: return .silence
            case .exception(let code)?: return .exception(code)
            case .damaged(let damage)?: return .damaged(bank, damage)
            case .slow(let milliseconds)?:
                usleep(UInt32(milliseconds) * 1000)
                return .reply(bank)
            }
        }
        if let device = rtu ?? ascii {
            let framing: ModbusFraming = ascii != nil ? .ascii : .rtu
            let slave: ModbusRTUSlave
            do {
                slave = try ModbusRTUSlave(
                    device: device, baud: baud, parity: parity, dataBits: dataBits ?? (framing == .ascii ? 7 : 8),
                    framing: framing)
            } catch {
                printError("cannot serve on \(device): \(error)")
                throw ExitCode(69)
            }
            StandardStreams.out(
                "railgate-sim: serving \(definition.model) as units \(try unitIDs()) on \(device) \(baud) baud"
                    + (framing == .ascii ? " (ASCII)" : ""))
            slave.serve(tickMs: tickMs, tick: tick, shouldStop: { false }, respond: respond)
            return
        }
        if let address = rtuOverTCP ?? asciiOverTCP {
            let framing: ModbusFraming = asciiOverTCP != nil ? .ascii : .rtu
            let (host, port) = HostPort.split(address, defaultPort: 502)!
            let slave: ModbusRTUSlave
            do {
                slave = try ModbusRTUSlave(listeningOn: host, port: port, framing: framing)
            } catch {
                printError("cannot serve on \(address): \(error)")
                throw ExitCode(69)
            }
            StandardStreams.out(
                "railgate-sim: serving \(definition.model) as units \(try unitIDs()) on \(host):\(slave.port) ("
                    + (framing == .ascii ? "ASCII" : "RTU") + " over TCP)")
            slave.serve(tickMs: tickMs, tick: tick, shouldStop: { false }, respond: respond)
            return
        }
        let (host, port) = HostPort.split(tcp!, defaultPort: 502)!
        let slave: ModbusTCPSlave
        do {
            slave = try ModbusTCPSlave(host: host, port: port)
        } catch {
            printError("cannot serve on \(tcp!): \(error)")
            throw ExitCode(69)
        }
        StandardStreams.out(
            "railgate-sim: serving \(definition.model) as units \(try unitIDs()) on \(host):\(slave.port)")
        slave.serve(tickMs: tickMs, tick: tick, shouldStop: { false }) { request in
            // A TCP gateway answers for units it does not know with exception 11 (target failed to respond).
            wagon.banks[request.unit] == nil ? .exception(0x0B) : respond(request)
        }
    }

    /// `--set NAME=VALUE`: a number (`nan`, `inf` and `-inf` too, to serve non-finite floats), a
    /// boolean or text, as the point's type reads it.
    static func parsePinned(_ text: String, for point: PointDefinition) -> PointValue {
        if point.type == .bool || point.table.holdsBits { return .bool(text == "true" || text == "1") }
        if case .bit = point.type { return .bool(text == "true" || text == "1") }
        if case .string = point.type { return .text(text) }
        if let integer = Int64(text), point.scale == 1, point.offset == 0 { return .integer(integer) }
        if let unsigned = UInt64(text), point.scale == 1, point.offset == 0 { return .unsigned(unsigned) }
        return .number(Double(text) ?? 0)
    }
}

/// `--raw TABLE:ADDRESS=WORD[,WORD...]`: registers served as given, whatever the points say.
struct RawPin {
    var table: RegisterTable
    var address: Int
    var words: [UInt16]

    init?(_ text: String) {
        let sides = text.split(separator: "=", maxSplits: 1)
        let place = sides.first?.split(separator: ":") ?? []
        guard sides.count == 2, place.count == 2, let table = RegisterTable(rawValue: String(place[0])),
            let address = Int(place[1]), (0...65535).contains(address)
        else { return nil }
        var words: [UInt16] = []
        for item in sides[1].split(separator: ",") {
            let word = item.hasPrefix("0x") ? UInt16(item.dropFirst(2), radix: 16) : UInt16(item)
            guard let word else { return nil }
            words.append(word)
        }
        guard !words.isEmpty, address + words.count <= 65536 else { return nil }
        self.table = table
        self.address = address
        self.words = words
    }
}

/// The simulated slaves of one `wagon` invocation: one data bank and point state per unit id.
struct SimulatedWagon {
    let banks: [Int: ModbusDataBank]
    private var points: [Int: [SimulatedPoint]]
    private var random: SplitMix64
    private let raw: [RawPin]

    init(
        profile: DeviceProfile, units: ClosedRange<Int>, seed: UInt64, pinned: [String: PointValue],
        raw: [RawPin] = []
    ) throws {
        var generator = SplitMix64(seed: seed)
        var banks: [Int: ModbusDataBank] = [:]
        var points: [Int: [SimulatedPoint]] = [:]
        for unit in units {
            banks[unit] = try ModbusDataBank()
            points[unit] = profile.points.map {
                SimulatedPoint($0, unit: unit, pinned: pinned[$0.name], random: &generator)
            }
        }
        self.banks = banks
        self.points = points
        self.raw = raw
        random = generator
        write()
    }

    /// Values where each ramp started, by unit and point.
    private var rampStarts: [Int: [String: Double]] = [:]

    mutating func advance(t: Double, dt: Double, ramps: [FaultScenario.Ramp]) {
        for unit in points.keys.sorted() {
            for index in points[unit]!.indices { points[unit]![index].advance(t: t, dt: dt, random: &random) }
            for ramp in ramps where t >= ramp.afterSeconds && (ramp.units?.contains(unit) ?? true) {
                guard let index = points[unit]!.firstIndex(where: { $0.definition.name == ramp.point }) else {
                    continue
                }
                let key = "\(ramp.point)@\(ramp.afterSeconds)"
                let from = rampStarts[unit, default: [:]][key] ?? points[unit]![index].current.numeric ?? ramp.target
                rampStarts[unit, default: [:]][key] = from
                let progress = min(1, (t - ramp.afterSeconds) / ramp.overSeconds)
                // A ramp from or to NaN or an infinity jumps (a sensor that drops out or comes back).
                let jumps = progress >= 1 || !from.isFinite || !ramp.target.isFinite
                points[unit]![index].pinned = .number(jumps ? ramp.target : from + (ramp.target - from) * progress)
            }
        }
        write()
    }

    private func write() {
        for (unit, unitPoints) in points {
            for point in unitPoints {
                let definition = point.definition
                var words = definition.encode(point.current)
                if let mask = definition.type.registerMask, !definition.table.holdsBits {
                    // A flag or byte shares its register with the register's other points.
                    let register = banks[unit]!.get(definition.table, address: definition.address, count: 1)[0]
                    words = [register & ~mask | words[0] & mask]
                }
                banks[unit]!.set(definition.table, address: definition.address, words)
            }
            for pin in raw { banks[unit]!.set(pin.table, address: pin.address, pin.words) }
        }
    }
}

/// Seconds on the monotonic clock.
enum MonotonicClock {
    static func seconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}

func printError(_ message: String) {
    StandardStreams.error("railgate-sim: \(message)")
}
