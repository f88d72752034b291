/// The log levels an operator may choose, as swift-log names them.
public enum LogLevelName: String, Sendable, CaseIterable {
    case trace, debug, info, notice, warning, error
}

/// What the buffer does when `max_bytes` is reached.
public enum FullBufferPolicy: String, Sendable, CaseIterable {
    /// Halve the resolution of the oldest normal samples before evicting anything.
    case thin
    /// Evict the oldest normal records at once.
    case dropOldest = "drop_oldest"
}

/// Where batches go: an MQTT broker, or nowhere (buffer only).
public enum UpstreamEndpoint: Sendable, Equatable {
    case none
    case mqtt(host: String, port: Int, tls: Bool)

    /// Parses `mqtt://HOST[:PORT]`, `mqtts://HOST[:PORT]` or `none`.
    public init?(url: String) {
        if url == "none" {
            self = .none
            return
        }
        let tls: Bool
        let rest: Substring
        if url.hasPrefix("mqtt://") {
            tls = false
            rest = url.dropFirst(7)
        } else if url.hasPrefix("mqtts://") {
            tls = true
            rest = url.dropFirst(8)
        } else {
            return nil
        }
        guard let (host, port) = HostPort.split(String(rest), defaultPort: tls ? 8883 : 1883), port > 0 else {
            return nil
        }
        self = .mqtt(host: host, port: port, tls: tls)
    }
}

/// Splits `HOST[:PORT]` (and `[v6]:PORT`); port 0 is allowed (a listener's "any port").
public enum HostPort {
    public static func split(_ text: String, defaultPort: Int) -> (String, Int)? {
        var host = Substring(text)
        var port = defaultPort
        if host.hasPrefix("["), let close = host.firstIndex(of: "]") {
            let after = host[host.index(after: close)...]
            let inner = host[host.index(after: host.startIndex)..<close]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()) else { return nil }
                port = p
            } else if !after.isEmpty {
                return nil
            }
            host = inner
        } else if let colon = host.lastIndex(of: ":") {
            guard let p = Int(host[host.index(after: colon)...]) else { return nil }
            port = p
            host = host[..<colon]
        }
        guard !host.isEmpty, !host.contains("/"), (0...65535).contains(port) else { return nil }
        return (String(host), port)
    }
}

/// `[gateway]`: identity and local paths.
public struct GatewaySettings: Sendable, Equatable {
    public var id: String
    public var stateDir: String
    public var controlSocket: String
    public var logLevel: LogLevelName
    public var profilePath: [String]
}

/// `[buffer]`: the durable buffer's bounds.
public struct BufferSettings: Sendable, Equatable {
    public var maxBytes: Int
    public var syncIntervalMs: Int
    public var whenFull: FullBufferPolicy

    public init(maxBytes: Int = 64 << 20, syncIntervalMs: Int = 1000, whenFull: FullBufferPolicy = .thin) {
        self.maxBytes = maxBytes
        self.syncIntervalMs = syncIntervalMs
        self.whenFull = whenFull
    }
}

/// `[upstream]`: the MQTT link.
public struct UpstreamSettings: Sendable, Equatable {
    public var endpoint: UpstreamEndpoint
    public var clientID: String
    public var topicPrefix: String
    public var qos: Int
    public var batchMaxRecords: Int
    public var batchMaxBytes: Int
    public var batchIntervalMs: Int
    public var gzip: Bool
    public var maxBytesPerSecond: Int
    public var keepaliveSeconds: Int
    public var username: String?
    public var passwordFile: String?
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    /// `retain_status`: the birth message and the will are published retained (false for
    /// brokers with `retain_available false`, which drop a client that sends a retained message).
    public var retainStatus: Bool = true
    /// `protocol`: 3 (MQTT 3.1.1) or 5 (MQTT 5: the broker's reasons and maximum packet size).
    public var protocolVersion: Int = 3
    /// `payload = "compact"` (the default): batches in the lossless `compact/1` format
    /// (`CompactBatchEncoder`), a fraction of the bytes per value on paid links (issue 10);
    /// `"records"` (`"plain"` is its deprecated synonym): the record objects as stored.
    public var compactPayload: Bool = true
    /// `reconnect_min_ms`: the first wait before a reconnect, doubled per failed attempt...
    public var reconnectMinMs: Int = 1000
    /// ...up to `reconnect_max_ms`; each wait is up to 20 % shorter at random.
    public var reconnectMaxMs: Int = 5000
}

/// How a bus reaches its slaves.
public enum BusTransport: Sendable, Equatable {
    case rtu(device: String, baud: Int, parity: Parity, dataBits: Int, stopBits: Int)
    case tcp(host: String, port: Int)
    /// RTU frames (slave address, CRC-16) inside a TCP stream: a serial device server in
    /// transparent mode (`transport = "rtu-over-tcp"`).
    case rtuOverTCP(host: String, port: Int)
    /// Modbus ASCII on a serial line (`transport = "ascii"`).
    case ascii(device: String, baud: Int, parity: Parity, dataBits: Int, stopBits: Int)
    /// Modbus ASCII frames inside a TCP stream (`transport = "ascii-over-tcp"`).
    case asciiOverTCP(host: String, port: Int)

    /// Whether frames carry a slave address and no transaction id (RTU and ASCII, on a line or in
    /// TCP): unit ids 1...247, one request at a time.
    public var isLineFraming: Bool {
        switch self {
        case .tcp: false
        default: true
        }
    }

    /// Serial parity.
    public enum Parity: String, Sendable, CaseIterable { case none, even, odd }
}

/// `[[bus]]`: one Modbus line or TCP endpoint, polled by one poller.
public struct BusConfig: Sendable, Equatable {
    public var name: String
    public var transport: BusTransport
    public var timeoutMs: Int
    public var retries: Int
    public var maxGap: Int
    public var interRequestDelayMs: Int
    /// The longest a device that answers nothing waits between attempts (the back-off's cap).
    public var maxBackoffMs: Int
    /// The pause after each (re)connect before the first request, for devices that ignore the
    /// first requests of a connection (`connect_delay_ms`).
    public var connectDelayMs: Int
    /// How often a request answered with exception 6 (slave device busy) or 5 (acknowledge) is
    /// asked again before it counts as failed with reason `busy` (`busy_retries`).
    public var busyRetries: Int = 3
    /// The wait before asking a busy device again, in milliseconds (`busy_retry_ms`).
    public var busyRetryMs: Int = 200
}

/// `[[device]]`: a slave on a bus, read per its profile.
public struct DeviceConfig: Sendable, Equatable {
    public var name: String
    public var bus: String
    public var unit: Int
    public var profileName: String
    public var profile: DeviceProfile
    public var pollIntervalMs: Int
    /// `max_registers_per_request` of this device; overrides the profile's.
    public var maxRegistersPerRequest: Int?
    /// `max_bits_per_request` of this device; overrides the profile's.
    public var maxBitsPerRequest: Int?
    /// The unit id a TCP gateway answers with whatever unit was asked (`reply_unit`, often 0 or
    /// 255); nil when the reply carries the device's own unit id.
    public var replyUnit: Int?

    public init(
        name: String, bus: String, unit: Int, profileName: String, profile: DeviceProfile, pollIntervalMs: Int,
        maxRegistersPerRequest: Int? = nil, maxBitsPerRequest: Int? = nil, replyUnit: Int? = nil
    ) {
        self.name = name
        self.bus = bus
        self.unit = unit
        self.profileName = profileName
        self.profile = profile
        self.pollIntervalMs = pollIntervalMs
        self.maxRegistersPerRequest = maxRegistersPerRequest
        self.maxBitsPerRequest = maxBitsPerRequest
        self.replyUnit = replyUnit
    }

    /// The limits the read planner keeps to: the device's, else its profile's, else the protocol's.
    public var requestLimits: RequestLimits {
        RequestLimits(
            registers: maxRegistersPerRequest ?? profile.maxRegistersPerRequest
                ?? RequestLimits.protocolMaximum.registers,
            bits: maxBitsPerRequest ?? profile.maxBitsPerRequest ?? RequestLimits.protocolMaximum.bits)
    }
}

/// `[[gate]]`: a barrier's two limit switches on GPIO lines.
public struct GateConfig: Sendable, Equatable {
    public var name: String
    public var chip: String
    public var openLine: Int
    public var closedLine: Int
    public var activeLow: Bool
    public var debounceMs: Int
    public var travelTimeoutMs: Int
}

/// `[[input]]`: a plain digital input on a GPIO line (a door contact, a tamper switch): an
/// event record on each debounced change, with the input's priority.
public struct InputConfig: Sendable, Equatable {
    public var name: String
    public var chip: String
    public var line: Int
    public var activeLow: Bool
    public var debounceMs: Int
    public var priority: Priority
}

/// A whole gateway configuration, validated, with every device's profile loaded.
public struct GatewayConfig: Sendable, Equatable {
    public var file: String
    public var gateway: GatewaySettings
    public var buffer: BufferSettings
    public var upstream: UpstreamSettings
    public var buses: [BusConfig]
    public var devices: [DeviceConfig]
    public var gates: [GateConfig]
    public var inputs: [InputConfig] = []
    /// `[metrics] listen`: where Prometheus text is served, if anywhere.
    public var metricsListen: String?

    /// Devices of one bus, in config order.
    public func devices(on bus: String) -> [DeviceConfig] { devices.filter { $0.bus == bus } }
}

/// Reads files for the loader; injected so that loading stays testable without a disk.
public protocol ConfigFileSource {
    /// The text of the file at `path`, or nil if it cannot be read.
    func read(_ path: String) -> String?
    /// The bytes of the file at `path` as stored (invalid UTF-8 kept, for the TOML reader to
    /// refuse with its line), or nil. Defaults to the UTF-8 of `read(_:)`.
    func readBytes(_ path: String) -> [UInt8]?
    /// Why `path` cannot be read ("No such file or directory", "is a directory"), for the
    /// message; nil when unknown. Defaults to nil.
    func unreadableReason(_ path: String) -> String?
}

extension ConfigFileSource {
    public func readBytes(_ path: String) -> [UInt8]? { read(path).map { Array($0.utf8) } }
    public func unreadableReason(_ path: String) -> String? { nil }
}

/// Parses and validates a gateway configuration and the profiles it names.
public struct ConfigLoader {
    let files: any ConfigFileSource

    public init(files: any ConfigFileSource) { self.files = files }

    /// Loads `path`; throws `ConfigErrors` with every problem found, in file order.
    public func load(_ path: String) throws(ConfigErrors) -> GatewayConfig {
        guard let bytes = files.readBytes(path) else {
            let reason = files.unreadableReason(path).map { ": \($0)" } ?? ""
            throw ConfigErrors([
                ConfigProblem(file: path, line: nil, message: "cannot read the configuration file\(reason)")
            ])
        }
        return try decode(TOMLParser.parse(bytes: bytes, file: path), file: path)
    }

    /// Parses configuration `text` as if read from `file`.
    public func parse(_ text: String, file: String) throws(ConfigErrors) -> GatewayConfig {
        try decode(TOMLParser.parse(text, file: file), file: file)
    }

    private func decode(_ root: TOMLTable, file: String) throws(ConfigErrors) -> GatewayConfig {
        let log = ProblemLog(file: file)
        var profileProblems: [ConfigProblem] = []
        var top = TableReader(root, context: "the configuration", log: log)
        let gatewayTable = top.table("gateway")
        let bufferTable = top.table("buffer")
        let upstreamTable = top.table("upstream")
        let busTables = top.tables("bus")
        let deviceTables = top.tables("device")
        let gateTables = top.tables("gate")
        let inputTables = top.tables("input")
        let metricsTable = top.table("metrics")
        top.finish()

        if gatewayTable == nil { log.report(nil, "the [gateway] table is missing (it needs at least id)") }
        if upstreamTable == nil {
            log.report(
                nil,
                "the [upstream] table is missing: add it with url = \"mqtt://HOST:PORT\" (or url = \"none\" to keep records in the buffer only)"
            )
        }
        let gateway = parseGateway(gatewayTable ?? TOMLTable(line: 0), log: log)
        let buffer = parseBuffer(bufferTable, log: log)
        let upstream = parseUpstream(upstreamTable, gatewayID: gateway.id, log: log)
        var names: [String: (kind: String, line: Int)] = [:]
        func claim(_ name: String, kind: String, line: Int) {
            if let first = names[name] {
                log.report(line, "\(kind) name '\(name)' is already used by the \(first.kind) on line \(first.line)")
            } else {
                names[name] = (kind, line)
            }
        }
        // Names of every declared bus, valid or not, so that a device on a bus with a mistake
        // of its own is not also reported as naming an undefined bus.
        let declaredBuses = Set(
            busTables.compactMap { table -> String? in
                if case .string(let name) = table["name"]?.kind { return name }
                return nil
            })
        var buses: [BusConfig] = []
        for table in busTables {
            guard let bus = parseBus(table, log: log) else { continue }
            claim(bus.name, kind: "bus", line: table.line)
            buses.append(bus)
        }
        var devices: [DeviceConfig] = []
        var profileCache: [String: DeviceProfile?] = [:]
        var unitsInUse: [String: Int] = [:]
        for table in deviceTables {
            var reader = TableReader(table, context: "[[device]]", log: log)
            let name = reader.string("name", required: true)
            let busName = reader.string("bus", required: true)
            let unit = reader.integer("unit", in: 0...255, required: true, as: Int.self)
            let profileName = reader.string("profile", required: true)
            let interval = reader.integer("poll_interval_ms", in: 10...86_400_000, as: Int.self) ?? 1000
            let maxRegisters = reader.integer(
                "max_registers_per_request", in: 1...RegisterTable.holding.maxItemsPerRequest, as: Int.self)
            let maxBits = reader.integer(
                "max_bits_per_request", in: 1...RegisterTable.coil.maxItemsPerRequest, as: Int.self)
            let replyUnit = reader.integer("reply_unit", in: 0...255, as: Int.self)
            reader.finish()
            if let name {
                if Names.isValid(name) {
                    claim(name, kind: "device", line: table.line)
                } else {
                    log.report(reader.line(of: "name"), "device name '\(name)' must match [A-Za-z0-9._-]{1,64}")
                }
            }
            let bus = busName.flatMap { busName in buses.first { $0.name == busName } }
            if let busName, bus == nil, !declaredBuses.contains(busName) {
                let known = buses.map(\.name).joined(separator: ", ")
                log.report(
                    reader.line(of: "bus"),
                    "device '\(name ?? "?")' names bus '\(busName)', which is not defined (buses: \(known.isEmpty ? "none" : known))"
                )
            }
            if let bus, let unit {
                if bus.transport.isLineFraming, unit == 0 {
                    log.report(
                        reader.line(of: "unit"),
                        "unit = 0 is the RTU broadcast address: slaves act on it without answering, so it cannot be polled"
                    )
                } else if bus.transport.isLineFraming, unit > 247 {
                    log.report(
                        reader.line(of: "unit"),
                        "unit = \(unit): an RTU slave address is 1...247 (248-255 are reserved)")
                }
                if bus.transport.isLineFraming, replyUnit != nil {
                    log.report(
                        reader.line(of: "reply_unit"),
                        "reply_unit is for TCP gateways that answer with a fixed unit id; on RTU the slave address is checked"
                    )
                }
                let key = "\(bus.name)#\(unit)"
                if let firstLine = unitsInUse[key] {
                    log.report(
                        reader.line(of: "unit"),
                        "unit \(unit) on bus '\(bus.name)' is already polled by the device on line \(firstLine)")
                } else {
                    unitsInUse[key] = table.line
                }
            }
            var profile: DeviceProfile?
            if let profileName {
                if let cached = profileCache[profileName] {
                    profile = cached
                } else {
                    let locator = ProfileLocator(files: files, searchPath: gateway.profilePath, besideFile: file)
                    switch locator.locate(profileName) {
                    case .notFound(let tried):
                        log.report(
                            reader.line(of: "profile"),
                            "profile '\(profileName)' not found (looked in: \(tried.joined(separator: ", ")))")
                        profile = nil
                    case .found(let path, let bytes):
                        do throws(ConfigErrors) {
                            profile = try DeviceProfile.parse(bytes: bytes, file: path)
                        } catch {
                            log.report(
                                reader.line(of: "profile"),
                                "profile '\(profileName)' (\(path)) has \(HumanFormat.count(error.problems.count, "problem")), listed below"
                            )
                            profileProblems += error.problems
                            profile = nil
                        }
                    }
                    profileCache[profileName] = .some(profile)
                }
            }
            if let maxRegisters, let profile, let point = profile.largestPoint(holdingBits: false),
                point.count > maxRegisters
            {
                log.report(
                    reader.line(of: "max_registers_per_request"),
                    "max_registers_per_request = \(maxRegisters) is less than point '\(point.name)' of profile '\(profileName ?? "?")' needs (\(point.type): \(point.count) registers in one read)"
                )
            }
            if let name, let busName, let unit, let profileName, let profile, bus != nil {
                devices.append(
                    DeviceConfig(
                        name: name, bus: busName, unit: unit, profileName: profileName, profile: profile,
                        pollIntervalMs: interval, maxRegistersPerRequest: maxRegisters, maxBitsPerRequest: maxBits,
                        replyUnit: replyUnit))
            }
        }
        var gates: [GateConfig] = []
        for table in gateTables {
            guard let gate = parseGate(table, log: log) else { continue }
            claim(gate.name, kind: "gate", line: table.line)
            gates.append(gate)
        }
        var inputs: [InputConfig] = []
        for table in inputTables {
            guard let input = parseInput(table, log: log) else { continue }
            claim(input.name, kind: "input", line: table.line)
            inputs.append(input)
        }
        var metricsListen: String?
        if let metricsTable {
            var reader = TableReader(metricsTable, context: "[metrics]", log: log)
            metricsListen = reader.string("listen")
            reader.finish()
            if let listen = metricsListen, HostPort.split(listen, defaultPort: 0) == nil {
                log.report(reader.line(of: "listen"), "listen = \"\(listen)\" must be HOST:PORT")
            }
        }
        if devices.isEmpty, gates.isEmpty, inputs.isEmpty, deviceTables.isEmpty, gateTables.isEmpty,
            inputTables.isEmpty
        {
            log.report(nil, "no [[device]], no [[gate]] and no [[input]]: the gateway would have nothing to read")
        }
        let problems = log.problems.sorted { ($0.line ?? 0) < ($1.line ?? 0) } + profileProblems
        if !problems.isEmpty { throw ConfigErrors(problems) }
        return GatewayConfig(
            file: file, gateway: gateway, buffer: buffer, upstream: upstream, buses: buses, devices: devices,
            gates: gates, inputs: inputs, metricsListen: metricsListen)
    }

    // MARK: Sections

    private func parseGateway(_ table: TOMLTable, log: ProblemLog) -> GatewaySettings {
        var reader = TableReader(table, context: "[gateway]", log: log)
        let id = reader.string("id", required: table.line > 0) ?? ""
        if !id.isEmpty, !Names.isValid(id) {
            log.report(reader.line(of: "id"), "id = \"\(id)\" must match [A-Za-z0-9._-]{1,64}")
        }
        let settings = GatewaySettings(
            id: id,
            stateDir: reader.string("state_dir") ?? "/var/lib/railgate",
            controlSocket: reader.string("control_socket") ?? "/run/railgate/control.sock",
            logLevel: reader.choice("log_level", LogLevelName.allCases.map(\.rawValue)).flatMap(LogLevelName.init)
                ?? .info,
            profilePath: reader.stringArray("profile_path") ?? [
                "/etc/railgate/profiles", "/usr/share/railgate/profiles",
            ])
        reader.finish()
        if settings.controlSocket.utf8.count > 107 {
            log.report(
                reader.line(of: "control_socket"), "control_socket is longer than a Unix socket path may be (107 bytes)"
            )
        }
        return settings
    }

    private func parseBuffer(_ table: TOMLTable?, log: ProblemLog) -> BufferSettings {
        guard let table else { return BufferSettings() }
        var reader = TableReader(table, context: "[buffer]", log: log)
        let defaults = BufferSettings()
        let settings = BufferSettings(
            maxBytes: reader.integer("max_bytes", in: 65_536...(1 << 40), as: Int.self) ?? defaults.maxBytes,
            syncIntervalMs: reader.integer("sync_interval_ms", in: 0...3_600_000, as: Int.self)
                ?? defaults.syncIntervalMs,
            whenFull: reader.choice("when_full", FullBufferPolicy.allCases.map(\.rawValue)).flatMap(
                FullBufferPolicy.init)
                ?? defaults.whenFull)
        reader.finish()
        return settings
    }

    private func parseUpstream(_ table: TOMLTable?, gatewayID: String, log: ProblemLog) -> UpstreamSettings {
        var reader = TableReader(table ?? TOMLTable(line: 0), context: "[upstream]", log: log)
        var endpoint = UpstreamEndpoint.none
        if let url = reader.string("url", required: table != nil) {
            if let parsed = UpstreamEndpoint(url: url) {
                endpoint = parsed
            } else {
                log.report(
                    reader.line(of: "url"),
                    "url = \"\(url)\" must be mqtt://HOST[:PORT], mqtts://HOST[:PORT] or \"none\"")
            }
        }
        let settings = UpstreamSettings(
            endpoint: endpoint,
            clientID: reader.string("client_id") ?? "railgate-\(gatewayID)",
            topicPrefix: reader.string("topic_prefix") ?? "railgate",
            qos: reader.integer("qos", in: 0...1, as: Int.self) ?? 1,
            batchMaxRecords: reader.integer("batch_max_records", in: 1...100_000, as: Int.self) ?? 500,
            batchMaxBytes: reader.integer("batch_max_bytes", in: 1024...268_435_455, as: Int.self) ?? 262_144,
            batchIntervalMs: reader.integer("batch_interval_ms", in: 0...3_600_000, as: Int.self) ?? 2000,
            gzip: (reader.choice("compression", ["none", "gzip"]) ?? "none") == "gzip",
            maxBytesPerSecond: reader.integer("max_bytes_per_s", in: 0...(1 << 40), as: Int.self) ?? 0,
            keepaliveSeconds: reader.integer("keepalive_s", in: 5...65535, as: Int.self) ?? 30,
            username: reader.string("username"),
            passwordFile: reader.string("password_file"),
            caFile: reader.string("ca_file"),
            certFile: reader.string("cert_file"),
            keyFile: reader.string("key_file"),
            retainStatus: reader.bool("retain_status") ?? true,
            protocolVersion: reader.integer("protocol", in: 3...5, as: Int.self) ?? 3,
            compactPayload: (reader.choice("payload", ["compact", "records", "plain"]) ?? "compact") == "compact",
            reconnectMinMs: reader.integer("reconnect_min_ms", in: 10...600_000, as: Int.self) ?? 1000,
            reconnectMaxMs: reader.integer("reconnect_max_ms", in: 10...3_600_000, as: Int.self) ?? 5000)
        reader.finish()
        if reader.has("reconnect_min_ms") || reader.has("reconnect_max_ms"),
            settings.reconnectMaxMs < settings.reconnectMinMs
        {
            log.report(
                reader.line(of: reader.has("reconnect_max_ms") ? "reconnect_max_ms" : "reconnect_min_ms"),
                "reconnect_max_ms (\(settings.reconnectMaxMs)) must not be below reconnect_min_ms "
                    + "(\(settings.reconnectMinMs))")
        }
        if settings.topicPrefix.isEmpty || settings.topicPrefix.contains(where: { "+#".contains($0) }) {
            log.report(
                reader.line(of: "topic_prefix"), "topic_prefix must be non-empty and free of MQTT wildcards (+, #)")
        }
        if (settings.certFile == nil) != (settings.keyFile == nil) {
            log.report(
                reader.line(of: settings.certFile == nil ? "key_file" : "cert_file"),
                "cert_file and key_file go together")
        }
        if settings.protocolVersion == 4 {
            log.report(reader.line(of: "protocol"), "protocol must be 3 (MQTT 3.1.1) or 5 (MQTT 5)")
        }
        if settings.passwordFile != nil, settings.username == nil {
            log.report(reader.line(of: "password_file"), "password_file needs a username")
        }
        return settings
    }

    private func parseBus(_ table: TOMLTable, log: ProblemLog) -> BusConfig? {
        var reader = TableReader(table, context: "[[bus]]", log: log)
        let before = log.problems.count
        let name = reader.string("name", required: true)
        let transportName = reader.choice(
            "transport", ["rtu", "tcp", "rtu-over-tcp", "ascii", "ascii-over-tcp"], required: true)
        var transport: BusTransport?
        switch transportName {
        case "rtu", "ascii":
            let device = reader.string("device", required: true)
            let baud = reader.integer("baud", in: 50...4_000_000, as: Int.self) ?? 19200
            let parity =
                reader.choice("parity", BusTransport.Parity.allCases.map(\.rawValue)).flatMap(BusTransport.Parity.init)
                ?? .even
            // Modbus ASCII is specified with 7 data bits; RTU with 8.
            let dataBits = reader.integer("data_bits", in: 5...8, as: Int.self) ?? (transportName == "ascii" ? 7 : 8)
            let stopBits = reader.integer("stop_bits", in: 1...2, as: Int.self) ?? 1
            for key in ["host", "port"] where reader.has(key) {
                log.report(reader.line(of: key), "\(key) belongs to a tcp bus; this bus is \(transportName!)")
            }
            if let device {
                transport =
                    transportName == "ascii"
                    ? .ascii(device: device, baud: baud, parity: parity, dataBits: dataBits, stopBits: stopBits)
                    : .rtu(device: device, baud: baud, parity: parity, dataBits: dataBits, stopBits: stopBits)
            }
        case "tcp", "rtu-over-tcp", "ascii-over-tcp":
            let host = reader.string("host", required: true)
            let port = reader.integer("port", in: 1...65535, as: Int.self) ?? 502
            for key in ["device", "baud", "parity", "data_bits", "stop_bits"] where reader.has(key) {
                log.report(reader.line(of: key), "\(key) belongs to a serial bus; this bus is \(transportName!)")
            }
            if let host {
                switch transportName {
                case "tcp": transport = .tcp(host: host, port: port)
                case "rtu-over-tcp": transport = .rtuOverTCP(host: host, port: port)
                default: transport = .asciiOverTCP(host: host, port: port)
                }
            }
        default:
            break
        }
        let timeout = reader.integer("timeout_ms", in: 10...60_000, as: Int.self) ?? 500
        let retries = reader.integer("retries", in: 0...10, as: Int.self) ?? 2
        let maxGap = reader.integer("max_gap", in: 0...124, as: Int.self) ?? 8
        let delay = reader.integer("inter_request_delay_ms", in: 0...10_000, as: Int.self) ?? 0
        let maxBackoff = reader.integer("max_backoff_ms", in: 100...3_600_000, as: Int.self) ?? 30_000
        let connectDelay = reader.integer("connect_delay_ms", in: 0...60_000, as: Int.self) ?? 0
        let busyRetries = reader.integer("busy_retries", in: 0...100, as: Int.self) ?? 3
        let busyRetryMs = reader.integer("busy_retry_ms", in: 1...60_000, as: Int.self) ?? 200
        reader.finish()
        if let name, !Names.isValid(name) {
            log.report(reader.line(of: "name"), "bus name '\(name)' must match [A-Za-z0-9._-]{1,64}")
        }
        guard log.problems.count == before, let name, let transport else { return nil }
        return BusConfig(
            name: name, transport: transport, timeoutMs: timeout, retries: retries, maxGap: maxGap,
            interRequestDelayMs: delay, maxBackoffMs: maxBackoff, connectDelayMs: connectDelay,
            busyRetries: busyRetries, busyRetryMs: busyRetryMs)
    }

    private func parseGate(_ table: TOMLTable, log: ProblemLog) -> GateConfig? {
        var reader = TableReader(table, context: "[[gate]]", log: log)
        let before = log.problems.count
        let name = reader.string("name", required: true)
        let chip = reader.string("chip", required: true)
        let openLine = reader.integer("open_line", in: 0...1023, required: true, as: Int.self)
        let closedLine = reader.integer("closed_line", in: 0...1023, required: true, as: Int.self)
        let activeLow = reader.bool("active_low") ?? false
        let debounce = reader.integer("debounce_ms", in: 0...10_000, as: Int.self) ?? 20
        let travel = reader.integer("travel_timeout_ms", in: 100...600_000, as: Int.self) ?? 8000
        reader.finish()
        if let name, !Names.isValid(name) {
            log.report(reader.line(of: "name"), "gate name '\(name)' must match [A-Za-z0-9._-]{1,64}")
        }
        if let openLine, openLine == closedLine {
            log.report(reader.line(of: "closed_line"), "open_line and closed_line must be different lines")
        }
        guard log.problems.count == before, let name, let chip, let openLine, let closedLine else { return nil }
        return GateConfig(
            name: name, chip: chip, openLine: openLine, closedLine: closedLine, activeLow: activeLow,
            debounceMs: debounce, travelTimeoutMs: travel)
    }

    private func parseInput(_ table: TOMLTable, log: ProblemLog) -> InputConfig? {
        var reader = TableReader(table, context: "[[input]]", log: log)
        let before = log.problems.count
        let name = reader.string("name", required: true)
        let chip = reader.string("chip", required: true)
        let line = reader.integer("line", in: 0...1023, required: true, as: Int.self)
        let activeLow = reader.bool("active_low") ?? false
        let debounce = reader.integer("debounce_ms", in: 0...10_000, as: Int.self) ?? 20
        let priority: Priority = reader.choice("priority", ["normal", "alarm"]) == "alarm" ? .alarm : .normal
        reader.finish()
        if let name, !Names.isValid(name) {
            log.report(reader.line(of: "name"), "input name '\(name)' must match [A-Za-z0-9._-]{1,64}")
        }
        guard log.problems.count == before, let name, let chip, let line else { return nil }
        return InputConfig(
            name: name, chip: chip, line: line, activeLow: activeLow, debounceMs: debounce, priority: priority)
    }
}

/// Finds profile files: a reference with a '/' or ending in `.toml` is a path; anything else is
/// a name looked up as `NAME.toml` in each search directory. Relative paths are tried as given
/// (against the working directory), then against `baseDirectory` (the configuration's).
public struct ProfileLocator {
    /// The outcome of a lookup.
    public enum Lookup {
        case found(path: String, bytes: [UInt8])
        case notFound(tried: [String])
    }

    let files: any ConfigFileSource
    let searchPath: [String]
    let baseDirectory: String?

    public init(files: any ConfigFileSource, searchPath: [String], besideFile: String?) {
        self.files = files
        self.searchPath = searchPath
        baseDirectory = besideFile.flatMap { file in
            file.contains("/") ? String(file[..<file.lastIndex(of: "/")!]) : nil
        }
    }

    public func locate(_ reference: String) -> Lookup {
        let candidates: [String]
        if reference.contains("/") || reference.hasSuffix(".toml") {
            candidates = anchored(reference)
        } else {
            candidates = searchPath.flatMap { anchored($0 + "/" + reference + ".toml") }
        }
        for candidate in candidates {
            if let bytes = files.readBytes(candidate) { return .found(path: candidate, bytes: bytes) }
        }
        return .notFound(tried: candidates)
    }

    /// Locates and parses a profile, reporting problems as `ConfigErrors`.
    public func load(_ reference: String) throws(ConfigErrors) -> DeviceProfile {
        switch locate(reference) {
        case .notFound(let tried):
            throw ConfigErrors([
                ConfigProblem(
                    file: reference, line: nil,
                    message: "profile not found (looked in: \(tried.joined(separator: ", ")))")
            ])
        case .found(let path, let bytes):
            return try DeviceProfile.parse(bytes: bytes, file: path)
        }
    }

    private func anchored(_ path: String) -> [String] {
        guard !path.hasPrefix("/"), let baseDirectory else { return [path] }
        return [path, baseDirectory + "/" + path]
    }
}
