import ArgumentParser
import Glibc
import RailgateBuffer
import RailgateCore
import RailgateGPIO
import RailgateModbus
import RailgateSystem

/// `railgate doctor`: what a technician at a siding or a border gate would check, one line
/// each, `ok`, `warn` or `fail`, with what to do about it. Exit 0 when nothing failed, 69
/// when something did, 78 when the configuration itself is wrong.
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check everything a technician would check, each line ok/warn/fail with a remedy.")

    @Option(help: "The gateway configuration (TOML).")
    var config: String

    @Flag(help: "Print one JSON document.")
    var json = false

    enum Verdict: String { case ok, warn, fail }

    struct Finding {
        var verdict: Verdict
        var subject: String
        var message: String
    }

    func run() throws {
        var findings: [Finding] = []
        func note(_ verdict: Verdict, _ subject: String, _ message: String) {
            findings.append(Finding(verdict: verdict, subject: subject, message: message))
            if !json { StandardStreams.out("\(verdict.rawValue.padding(4)) \(subject): \(message)") }
        }
        let loaded: GatewayConfig
        do {
            loaded = try ConfigLoader(files: LocalFiles()).load(config)
        } catch {
            for problem in error.problems {
                note(.fail, "config", "\(problem); fix it, then `railgate check --config \(config)`")
            }
            finish(findings)
            throw Exit.config
        }
        note(
            .ok, "config",
            "\(config) is valid: \(loaded.buses.count) buses, \(loaded.devices.count) devices, \(loaded.gates.count) gates"
        )

        checkStateDirectory(loaded, note)
        let daemon = checkDaemon(loaded, note)
        checkUpstream(loaded, daemon: daemon, note)
        checkBuses(loaded, daemon: daemon, note)
        checkGates(loaded, daemon: daemon, note)
        checkInputs(loaded, daemon: daemon, note)
        finish(findings)
        if findings.contains(where: { $0.verdict == .fail }) { throw Exit.unavailable }
    }

    private func finish(_ findings: [Finding]) {
        guard json else { return }
        StandardStreams.out(
            JSON.object([
                ("ok", .bool(!findings.contains { $0.verdict == .fail })),
                (
                    "checks",
                    .array(
                        findings.map {
                            .object([
                                ("status", .string($0.verdict.rawValue)), ("subject", .string($0.subject)),
                                ("message", .string($0.message)),
                            ])
                        })
                ),
            ]).serialized)
    }

    // MARK: Checks

    private func checkStateDirectory(_ config: GatewayConfig, _ note: (Verdict, String, String) -> Void) {
        let directory = config.gateway.stateDir
        var info = stat()
        guard stat(directory, &info) == 0 else {
            note(
                .warn, "state_dir",
                "\(directory) does not exist yet; the daemon creates it (systemd: StateDirectory=railgate)")
            return
        }
        guard access(directory, W_OK) == 0 else {
            note(.fail, "state_dir", "\(directory) is not writable by this user; chown it to the railgate user")
            return
        }
        var filesystem = statvfs()
        if statvfs(directory, &filesystem) == 0 {
            let free = Int(filesystem.f_bavail) * Int(filesystem.f_frsize)
            var buffered: DiskBuffer?
            do {
                buffered = try DiskBuffer(stateDirectory: directory, settings: config.buffer, readOnly: true)
            } catch {
                note(.warn, "buffer", "cannot be read: \(error); check the files under \(directory)/buffer")
            }
            let used = buffered?.stats().bytes ?? 0
            if free + used < config.buffer.maxBytes {
                note(
                    .warn, "state_dir",
                    "\(free / 1_048_576) MiB free: the buffer cannot reach max_bytes (\(config.buffer.maxBytes / 1_048_576) MiB); free space or lower max_bytes"
                )
            } else {
                note(.ok, "state_dir", "\(directory) writable, \(free / 1_048_576) MiB free")
            }
            if let buffer = buffered {
                let stats = buffer.stats()
                buffer.close()
                if let error = stats.diskError {
                    note(.fail, "buffer", "disk error: \(error); check the flash card (dmesg), free space")
                } else if stats.corruptBytesSkipped > 0 {
                    note(
                        .warn, "buffer",
                        "\(stats.corruptBytesSkipped) corrupt bytes skipped (power cuts or a worn card); intact records are kept"
                    )
                } else {
                    note(
                        .ok, "buffer",
                        "\(stats.records) records waiting, \(stats.bytes / 1024) KiB of \(stats.maxBytes / 1024) KiB, \(stats.dropped) dropped"
                    )
                }
                if stats.dropped > 0 {
                    note(
                        .warn, "buffer",
                        "\(stats.droppedNormal) normal and \(stats.droppedAlarm) alarm records were dropped when full; a longer outage than max_bytes holds"
                    )
                }
            }
        }
    }

    /// The daemon's status document if it is running.
    private func checkDaemon(_ config: GatewayConfig, _ note: (Verdict, String, String) -> Void) -> JSON? {
        let status: JSON
        do {
            let reply = try ControlClient.request("status", socket: config.gateway.controlSocket, timeoutSeconds: 3)
            status = try JSONReader.parse(reply)
            guard status["gateway"] != nil else {
                throw ControlClient.Failure(description: "answered \(reply.prefix(80))")
            }
        } catch {
            note(
                .warn, "daemon",
                "not running (no answer on \(config.gateway.controlSocket): \(error)); start it: systemctl start railgate"
            )
            return nil
        }
        let uptime = Int(status["uptime_s"]?.doubleValue ?? 0)
        note(
            .ok, "daemon",
            "running for \(uptime / 3600)h\(uptime / 60 % 60)m as gateway \(status["gateway"]?.plainText ?? "?")")
        return status
    }

    private func checkUpstream(_ config: GatewayConfig, daemon: JSON?, _ note: (Verdict, String, String) -> Void) {
        guard case .mqtt(let host, let port, let tls) = config.upstream.endpoint else {
            note(.ok, "upstream", "url = \"none\": buffering only")
            return
        }
        let subject = "upstream \(tls ? "mqtts" : "mqtt")://\(host):\(port)"
        for (key, file) in [
            ("password_file", config.upstream.passwordFile), ("ca_file", config.upstream.caFile),
            ("cert_file", config.upstream.certFile), ("key_file", config.upstream.keyFile),
        ] {
            if let file, access(file, R_OK) != 0 {
                note(
                    .fail, subject,
                    "\(key) \(file) cannot be read: \(String(cString: strerror(errno))); install it readable by the railgate user"
                )
            }
        }
        if let state = daemon?["upstream"]?["state"]?.stringValue {
            let lastError = daemon?["upstream"]?["last_error"]?.stringValue
            if state == "connected" {
                note(
                    .ok, subject,
                    "the daemon is connected, acknowledged through seq \(daemon?["upstream"]?["acked_seq"]?.plainText ?? "?")"
                )
                // A standing problem of the link: a client id taken over, records set aside.
                if let lastError { note(.warn, subject, lastError) }
            } else if state == "refused" {
                // The broker answered and said no: retrying will not mend it.
                note(.fail, subject, "\(lastError ?? "the broker refused the connection"); records stay buffered")
            } else {
                let error = lastError.map { " (\($0))" } ?? ""
                note(.warn, subject, "the daemon is \(state)\(error); records stay buffered until it connects")
            }
            if let count = daemon?["upstream"]?["undeliverable"]?.intValue, count > 0 {
                note(
                    .warn, subject,
                    "\(count) records were set aside as undeliverable (larger than the broker accepts); raise the broker's max_packet_size"
                )
            }
        }
        switch TCPProbe.connect(host: host, port: port, timeoutMs: 3000) {
        case nil: note(.ok, subject, "the broker accepts TCP connections")
        case let reason?:
            note(
                .fail, subject, "cannot reach the broker: \(reason); check the modem/APN, DNS, the firewall and the url"
            )
        }
    }

    private func checkBuses(_ config: GatewayConfig, daemon: JSON?, _ note: (Verdict, String, String) -> Void) {
        for bus in config.buses {
            let devices = config.devices(on: bus.name)
            let subject = "bus \(bus.name)"
            let serialDevice: String? =
                switch bus.transport {
                case .rtu(let device, _, _, _, _), .ascii(let device, _, _, _, _): device
                case .tcp, .rtuOverTCP, .asciiOverTCP: nil
                }
            if let device = serialDevice {
                guard access(device, F_OK) == 0 else {
                    note(
                        .fail, subject,
                        "\(device) does not exist; check the RS-485 adapter is plugged in (dmesg | grep tty) and the device name"
                    )
                    continue
                }
                guard access(device, R_OK | W_OK) == 0 else {
                    note(.fail, subject, "\(device): permission denied; add the railgate user to the dialout group")
                    continue
                }
                if let daemon {
                    // The daemon owns the line: probing it now would collide with its requests.
                    note(.ok, subject, "\(device) present; the daemon is polling it, see below")
                    for device in devices { reportFromDaemon(device.name, daemon, note) }
                    continue
                }
            }
            let connection: ModbusConnection
            do {
                connection = try ModbusConnection(bus: bus, devices: devices)
                try connection.connect()
            } catch {
                note(.fail, subject, "\(error); check the address or device and the line settings")
                continue
            }
            note(.ok, subject, "\(ModbusEndpoint(bus.transport)) open")
            for device in devices {
                guard
                    let request = ReadPlanner.plan(
                        device.profile.points, maxGap: bus.maxGap, limits: device.requestLimits
                    ).first
                else { continue }
                do {
                    _ = try connection.read(
                        request.table, unit: device.unit, address: request.address, count: request.count)
                    note(
                        .ok, "device \(device.name)",
                        "unit \(device.unit) answers (\(request.table.rawValue) \(request.address), \(request.count) items)"
                    )
                } catch {
                    let remedy: String
                    switch error.kind {
                    case .timeout:
                        remedy = "no answer: check wiring (A/B swapped?), termination, the unit id and baud/parity"
                    case .crc: remedy = "garbled replies: check baud/parity/stop bits, termination and cable shielding"
                    case .badReply:
                        remedy =
                            "\(error); a TCP gateway answering with a fixed unit id needs reply_unit, else check the unit id"
                    case .exception(let code):
                        remedy =
                            "the device refuses (exception \(code)): check the profile's addresses against its manual"
                    default: remedy = "\(error)"
                    }
                    note(.fail, "device \(device.name)", "unit \(device.unit): \(remedy)")
                }
            }
            connection.disconnect()
        }
    }

    private func reportFromDaemon(_ name: String, _ daemon: JSON, _ note: (Verdict, String, String) -> Void) {
        guard let device = daemon["devices"]?.arrayValue?.first(where: { $0["name"] == .string(name) }) else { return }
        if device["answering"] == .bool(false) {
            note(
                .fail, "device \(name)",
                "not answering: \(device["last_error"]?.plainText ?? "?"); check wiring, unit id, baud/parity")
        } else {
            note(
                .ok, "device \(name)",
                "answering; \(device["polls"]?.plainText ?? "0") polls, \(device["errors"]?.plainText ?? "0") with errors"
            )
        }
    }

    private func checkInputs(_ config: GatewayConfig, daemon: JSON?, _ note: (Verdict, String, String) -> Void) {
        for input in config.inputs {
            let subject = "input \(input.name)"
            if let status = daemon?["inputs"]?.arrayValue?.first(where: { $0["name"] == .string(input.name) }),
                let state = status["state"]?.stringValue
            {
                if let error = status["error"]?.stringValue {
                    note(.fail, subject, error)
                } else {
                    note(.ok, subject, "watched by the daemon, \(state)")
                }
                continue
            }
            do {
                let chip = try GPIOChips.open(input.chip)
                let watch = try chip.watch(lines: [input.line], activeLow: input.activeLow, consumer: "railgate-doctor")
                defer { watch.release() }
                let active = try watch.levels()[input.line] ?? false
                note(.ok, subject, "\(input.chip) line \(input.line) free; reads \(active ? "active" : "inactive")")
            } catch {
                note(.fail, subject, error.description)
            }
        }
    }

    private func checkGates(_ config: GatewayConfig, daemon: JSON?, _ note: (Verdict, String, String) -> Void) {
        for gate in config.gates {
            let subject = "gate \(gate.name)"
            if let status = daemon?["gates"]?.arrayValue?.first(where: { $0["name"] == .string(gate.name) }),
                let state = status["state"]?.stringValue
            {
                if let error = status["error"]?.stringValue {
                    note(.fail, subject, error)
                } else if state == "fault" {
                    note(
                        .warn, subject,
                        "barrier in fault (\(status["fault"]?.plainText ?? "?")): check the barrier and its limit switches"
                    )
                } else {
                    note(.ok, subject, "watched by the daemon, barrier \(state)")
                }
                continue
            }
            do {
                let (watch, open, closed) = try GPIOChips.requestLimitSwitches(of: gate, consumer: "railgate-doctor")
                watch.release()
                let reading =
                    open && closed
                    ? "both switches active: a broken wire or a misadjusted switch"
                    : open ? "open" : closed ? "closed" : "between limits"
                note(
                    open && closed ? .warn : .ok, subject,
                    "\(gate.chip) lines \(gate.openLine)/\(gate.closedLine) free; barrier reads \(reading)")
            } catch {
                note(.fail, subject, error.description)
            }
        }
    }
}

extension String {
    fileprivate func padding(_ width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }
}

/// A TCP reachability probe with a timeout (non-blocking connect, then poll).
enum TCPProbe {
    /// nil when `host:port` accepts a connection within `timeoutMs`, else why not.
    static func connect(host: String, port: Int, timeoutMs: Int) -> String? {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let resolved = getaddrinfo(host, String(port), &hints, &result)
        guard resolved == 0, let info = result else {
            return "cannot resolve \(host): \(String(cString: gai_strerror(resolved)))"
        }
        defer { freeaddrinfo(result) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return String(cString: strerror(errno)) }
        defer { close(fd) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return nil }
        guard errno == EINPROGRESS else { return String(cString: strerror(errno)) }
        var descriptor = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&descriptor, 1, Int32(timeoutMs)) == 1 else { return "no answer within \(timeoutMs) ms" }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        return error == 0 ? nil : String(cString: strerror(error))
    }
}
