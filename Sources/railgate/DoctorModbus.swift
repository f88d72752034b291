import Glibc
import RailgateCore
import RailgateGateway
import RailgateModbus
import RailgateSystem

/// The Modbus checks: each bus's serial device present and openable by the service user, or its
/// TCP host reachable; each device answering, with its latency and error rate. A line where no
/// device answers gets a scan of other baud rates and parities; a device that stays silent on a
/// line that works gets a scan of unit ids. Scans run only then, each bounded by `scanSeconds`,
/// and say how long they took. A failing bus names every device it strands.
///
/// Blocking: every probe is a blocking libmodbus/serial call on the calling (main) thread.
struct DoctorModbus {
    let config: GatewayConfig
    let daemon: RunningDaemon?
    let scanSeconds: Int
    let report: DoctorReport

    /// Baud rates tried on a silent line, the most common first.
    static let scanBauds = [9600, 19200, 38400, 57600, 115200, 4800, 2400, 1200]
    /// Response timeout of one scan request, in milliseconds: a slave answers a short read within
    /// tens of milliseconds at 9600 baud.
    static let scanTimeoutMs = 150
    /// Unit ids tried first (where installers leave them), before the rest of 1...247.
    static let likelyUnits = Array(1...32) + [247, 100, 99, 64, 50]

    func checkBuses() {
        let user = ServiceUser.find(daemon: daemon?.process)
        for bus in config.buses {
            checkBus(bus, user: user)
        }
    }

    private func stranded(_ devices: [DeviceConfig]) -> String {
        devices.isEmpty
            ? "no device is configured on it"
            : "strands \(devices.map { "\($0.name) (unit \($0.unit))" }.joined(separator: ", "))"
    }

    private func checkBus(_ bus: BusConfig, user: ServiceUser) {
        let devices = config.devices(on: bus.name)
        let subject = "bus \(bus.name)"
        let endpoint = ModbusEndpoint(bus.transport)
        switch bus.transport {
        case .rtu(let device, _, _, _, _), .ascii(let device, _, _, _, _):
            var info = stat()
            guard stat(device, &info) == 0 else {
                report.note(
                    .fail, subject, "\(device) does not exist; \(stranded(devices))",
                    remedy:
                        "check the RS-485 adapter is plugged in (dmesg | grep tty) and the device name in the config")
                return
            }
            guard user.mayReadWrite(info) else {
                let group = DoctorSystem.groupName(info.st_gid)
                report.note(
                    .fail, subject,
                    "\(device) (owner \(DoctorSystem.userName(info.st_uid)), group \(group), mode \(String(info.st_mode & 0o777, radix: 8))) "
                        + "cannot be opened by \(user.name) (\(user.source)); \(stranded(devices))",
                    remedy:
                        "usermod -aG \(group) \(user.name) (the packaged unit adds SupplementaryGroups=dialout), then restart railgate"
                )
                return
            }
            if daemon != nil {
                // The daemon owns the line: probing it now would collide with its requests.
                report.note(.ok, subject, "\(device) present, openable by \(user.name); the daemon polls it")
                reportFromDaemon(bus, devices, subject)
                return
            }
        case .tcp, .rtuOverTCP, .asciiOverTCP:
            // A TCP slave takes a second client beside the daemon: probe it either way.
            break
        }
        probe(bus, devices, endpoint: endpoint, subject: subject)
    }

    // MARK: With the daemon

    private func reportFromDaemon(_ bus: BusConfig, _ devices: [DeviceConfig], _ subject: String) {
        let statuses = daemon?.status["devices"]?.arrayValue ?? []
        var silent: [DeviceConfig] = []
        for device in devices {
            guard let status = statuses.first(where: { $0["name"] == .string(device.name) }) else { continue }
            let polls = status["polls"]?.intValue ?? 0
            let errors = status["errors"]?.intValue ?? 0
            let rate = polls > 0 ? " (\(errors * 100 / polls)%)" : ""
            let figures = Self.recentFigures(status)
            if status["answering"] == .bool(false) {
                silent.append(device)
                report.note(
                    .fail, "device \(device.name)",
                    "unit \(device.unit) not answering: \(status["last_error"]?.plainText ?? "?"); \(polls) polls since start, \(errors) with errors\(rate)\(figures.text)",
                    remedy:
                        "check wiring (A/B), termination, the unit id and baud/parity; to scan them, stop the daemon "
                        + "(systemctl stop railgate) and run doctor again")
            } else {
                // The recent error rate where the daemon gives it (last 20 polls), else the one since start.
                let failing = figures.errorRate.map { $0 > 0.1 } ?? (polls > 0 && errors * 10 > polls)
                let verdict: DoctorReport.Verdict = failing ? .warn : .ok
                report.note(
                    verdict, "device \(device.name)",
                    "unit \(device.unit) answering; \(polls) polls since start, \(errors) with errors\(rate)\(figures.text)",
                    remedy: verdict == .warn
                        ? "more than 1 poll in 10 fails: check termination, cable shielding and the line's load" : nil)
            }
        }
        if !devices.isEmpty, silent.count == devices.count {
            report.note(
                .fail, subject, "no device on it answers; \(stranded(devices))",
                remedy: "check the line: power, A/B, termination, baud/parity")
        }
    }

    /// "; the daemon: 120 polls, 3 with errors (2%)" when a daemon runs and polls `device`.
    private func daemonFigures(_ device: DeviceConfig) -> String {
        guard
            let status = daemon?.status["devices"]?.arrayValue?.first(where: { $0["name"] == .string(device.name) })
        else { return "" }
        let polls = status["polls"]?.intValue ?? 0
        let errors = status["errors"]?.intValue ?? 0
        return "; the daemon: \(DoctorText.plural(polls, "poll")) since start, \(errors) with errors"
            + (polls > 0 ? " (\(errors * 100 / polls)%)" : "") + Self.recentFigures(status).text
    }

    /// The daemon's recent figures where its status has them (`error_rate` over the last 20
    /// polls, `latency_ms` of the last poll): ", 5% of the last 20 polls failed, last poll 12 ms".
    static func recentFigures(_ status: JSON) -> (text: String, errorRate: Double?) {
        var text = ""
        let rate = status["error_rate"]?.doubleValue
        if let rate { text += ", \(Int((rate * 100).rounded()))% of the last 20 polls failed" }
        if let latency = status["latency_ms"]?.doubleValue { text += ", last poll \(Int(latency.rounded())) ms" }
        return (text, rate)
    }

    // MARK: Probing

    /// The first planned request of `device`'s profile: what a scan sends.
    private func firstRequest(_ device: DeviceConfig, _ bus: BusConfig) -> ReadRequest? {
        ReadPlanner.plan(device.profile.points, maxGap: bus.maxGap, limits: device.requestLimits).first
    }

    private func probe(_ bus: BusConfig, _ devices: [DeviceConfig], endpoint: ModbusEndpoint, subject: String) {
        let connection: ModbusConnection
        do {
            connection = try ModbusConnection(bus: bus, devices: devices)
            try connection.connect()
        } catch {
            var seen = error
            seen.remedy = nil
            report.note(
                .fail, subject, "\(seen); \(stranded(devices))",
                remedy: error.remedy ?? "check the address or device and the line settings")
            return
        }
        defer { connection.disconnect() }
        report.note(.ok, subject, "\(endpoint) open")
        var silent: [(DeviceConfig, ModbusError)] = []
        var answered = 0
        for device in devices {
            guard let request = firstRequest(device, bus) else { continue }
            let started = MonotonicInstant.now()
            do {
                _ = try connection.read(
                    request.table, unit: device.unit, address: request.address, count: request.count)
                answered += 1
                let latency = MonotonicInstant.now().milliseconds(since: started)
                report.note(
                    .ok, "device \(device.name)",
                    "unit \(device.unit) answers in \(latency) ms (\(request.table.rawValue) \(request.address), \(DoctorText.plural(request.count, "item")))"
                        + daemonFigures(device))
            } catch {
                if Self.isSilence(error) {
                    silent.append((device, error))
                } else {
                    answered += 1
                    report.note(.fail, "device \(device.name)", "unit \(device.unit): \(error)", remedy: remedy(error))
                }
            }
        }
        guard !silent.isEmpty else { return }
        let lineSilent = answered == 0
        if lineSilent, case .rtu = endpoint {
            if let found = scanLineSettings(bus, silent.map(\.0), subject: subject) {
                // The line works at other settings: the devices are there, the config is wrong.
                for (device, _) in silent {
                    report.note(
                        .fail, "device \(device.name)",
                        "unit \(device.unit) silent at the configured line settings; answers at \(found)",
                        remedy: "set the [[bus]] \(bus.name) line settings to \(found), or the device's to the bus's")
                }
                return
            }
        }
        for (device, error) in silent {
            report.note(
                .fail, "device \(device.name)", "unit \(device.unit) does not answer: \(error)",
                remedy: error.kind == .crc
                    ? "replies arrive garbled (CRC): wrong parity/stop bits, A/B swapped on part of the line, missing termination or noise on the cable"
                    : lineSilent && !endpoint.isNetwork
                        ? "no device on the line answers: check power, A/B (swap the two data wires), termination (120 ohm at both ends), baud/parity"
                        : "check the unit id (see the scan below), the device's power and its address")
        }
        if lineSilent && !devices.isEmpty && !endpoint.isNetwork {
            report.note(.fail, subject, "no device on it answers; \(stranded(devices))")
        }
        scanUnits(bus, connection, silent.map(\.0))
    }

    /// No answer from the unit: a timeout, a garbled frame, or a TCP gateway saying its target
    /// did not answer (exceptions 10 and 11).
    static func isSilence(_ error: ModbusError) -> Bool {
        switch error.kind {
        case .timeout, .crc, .badReply, .exception(10), .exception(11): true
        default: false
        }
    }

    private func remedy(_ error: ModbusError) -> String {
        switch error.kind {
        case .exception(let code):
            "the device refuses (exception \(code)): check the profile's addresses and max_registers against its manual"
        case .connection, .setup: error.remedy ?? "check the address or device and the line settings"
        default: "check the device and its settings"
        }
    }

    // MARK: Scans

    /// Tries every baud rate and parity (the configured parity first) with the silent devices'
    /// first requests; returns the settings one answers at ("9600 8E1"), after a line saying so,
    /// or nil after a line with the hints.
    private func scanLineSettings(_ bus: BusConfig, _ devices: [DeviceConfig], subject: String) -> String? {
        guard case .rtu(let path, let baud, let parity, let dataBits, let stopBits) = bus.transport else { return nil }
        guard scanSeconds > 0 else { return nil }
        let started = MonotonicInstant.now()
        let deadline = started.adding(milliseconds: scanSeconds * 1000)
        let parities = [parity] + BusTransport.Parity.allCases.filter { $0 != parity }
        let total = parities.count * Self.scanBauds.count - (Self.scanBauds.contains(baud) ? 1 : 0)
        var tried = 0
        var complete = true
        scan: for tryParity in parities {
            for tryBaud in Self.scanBauds where !(tryBaud == baud && tryParity == parity) {
                if MonotonicInstant.now() >= deadline {
                    complete = false
                    break scan
                }
                tried += 1
                let endpoint = ModbusEndpoint.rtu(
                    device: path, baud: tryBaud, parity: tryParity, dataBits: dataBits, stopBits: stopBits)
                for device in devices {
                    // Many silent devices make one setting long: the deadline holds between them too.
                    if MonotonicInstant.now() >= deadline {
                        complete = false
                        break scan
                    }
                    guard let request = firstRequest(device, bus),
                        answers(endpoint, unit: device.unit, request)
                    else { continue }
                    let took = DoctorText.duration(milliseconds: MonotonicInstant.now().milliseconds(since: started))
                    let settings = "\(tryBaud) \(dataBits)\(tryParity.rawValue.first!.uppercased())\(stopBits)"
                    report.note(
                        .fail, subject,
                        "silent at \(baud) \(dataBits)\(parity.rawValue.first!.uppercased())\(stopBits); "
                            + "\(device.name) (unit \(device.unit)) answers at \(settings) (scan of \(DoctorText.plural(tried, "setting")) took \(took)); "
                            + stranded(devices),
                        remedy:
                            "set baud = \(tryBaud), parity = \"\(tryParity.rawValue)\" in [[bus]] \(bus.name), or change the devices' settings to the bus's"
                    )
                    return settings
                }
            }
        }
        let took = DoctorText.duration(milliseconds: MonotonicInstant.now().milliseconds(since: started))
        report.note(
            .fail, subject,
            "no answer at \(complete ? "any" : "the first \(tried)") of \(DoctorText.plural(total, "other baud rate/parity", "other baud rates/parities")) (scan took \(took)"
                + (complete ? ")" : ", stopped at --scan-seconds \(scanSeconds))") + "; \(stranded(devices))",
            remedy:
                "the line itself: swap A/B (the two data wires), check termination (120 ohm at both ends only) and bias, the devices' power; then the unit ids (scan below)"
        )
        return nil
    }

    /// Whether `unit` answers `request` at `endpoint` (an answer or any Modbus exception but a
    /// gateway's 10/11 proves a slave is there), on a connection of its own.
    private func answers(_ endpoint: ModbusEndpoint, unit: Int, _ request: ReadRequest) -> Bool {
        guard let connection = try? ModbusConnection(endpoint: endpoint, responseTimeoutMs: Self.scanTimeoutMs) else {
            return false
        }
        defer { connection.disconnect() }
        do {
            _ = try connection.read(request.table, unit: unit, address: request.address, count: request.count)
            return true
        } catch {
            return !Self.isSilence(error) && error.kind != .connection && error.kind != .setup
        }
    }

    /// Asks every unit id (the likely ones first) for the silent devices' first request, on the
    /// configured line settings, and names the units that answer and are not configured on the bus.
    private func scanUnits(_ bus: BusConfig, _ connection: ModbusConnection, _ silent: [DeviceConfig]) {
        guard scanSeconds > 0, let device = silent.first, let request = firstRequest(device, bus) else { return }
        connection.disconnect()
        let endpoint = ModbusEndpoint(bus.transport)
        let configured = Set(config.devices(on: bus.name).map(\.unit))
        let order = Self.likelyUnits + (1...247).filter { !Self.likelyUnits.contains($0) }
        let started = MonotonicInstant.now()
        let deadline = started.adding(milliseconds: scanSeconds * 1000)
        var found: [Int] = []
        var tried = 0
        var scanner: ModbusConnection?
        for unit in order where !configured.contains(unit) {
            if MonotonicInstant.now() >= deadline { break }
            tried += 1
            if scanner == nil {
                scanner = try? ModbusConnection(endpoint: endpoint, responseTimeoutMs: Self.scanTimeoutMs)
            }
            guard let scanning = scanner else { break }
            do {
                _ = try scanning.read(request.table, unit: unit, address: request.address, count: request.count)
                found.append(unit)
            } catch {
                if !Self.isSilence(error) && error.kind != .connection && error.kind != .setup {
                    found.append(unit)
                } else if Self.isSilence(error) && !endpoint.isNetwork {
                    // A fresh connection: no drain of the silence behind the next unit's question.
                    scanning.disconnect()
                    scanner = nil
                }
            }
            if !found.isEmpty && silent.count == found.count { break }
        }
        scanner?.disconnect()
        let took = DoctorText.duration(milliseconds: MonotonicInstant.now().milliseconds(since: started))
        let scope =
            tried == order.count - configured.count
            ? "all \(tried) other unit ids" : "\(tried) of \(order.count - configured.count) unit ids"
        if found.isEmpty {
            report.note(
                .fail, "bus \(bus.name)",
                "unit id scan: no other unit answers (\(scope) in \(took)\(tried < order.count - configured.count ? ", stopped at --scan-seconds \(scanSeconds)" : ""))",
                remedy: "the devices are silent at every unit id: check power, wiring and the line settings")
        } else {
            let names = silent.map { "\($0.name) (unit \($0.unit))" }.joined(separator: ", ")
            report.note(
                .fail, "bus \(bus.name)",
                "unit id scan: unit\(found.count == 1 ? "" : "s") \(found.map(String.init).joined(separator: ", ")) answer\(found.count == 1 ? "s" : "") "
                    + "and \(found.count == 1 ? "is" : "are") not configured (\(scope) in \(took)); silent: \(names)",
                remedy: found.count == 1 && silent.count == 1
                    ? "the unit id of \(silent[0].name) changed from \(silent[0].unit) to \(found[0]): set unit = \(found[0]) in its [[device]], or set the device back to \(silent[0].unit)"
                    : "a device's unit id changed: set unit in each [[device]] to the id its device now answers at")
        }
    }
}
