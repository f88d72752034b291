import ArgumentParser
import Glibc
import RailgateBuffer
import RailgateCore
import RailgateGPIO
import RailgateSystem

/// `railgate doctor`: what a technician at a siding or a border gate would check, one line
/// each, `ok`, `warn` or `fail`, with what was seen and what to do about it. Exit 0 when nothing
/// failed (a `warn` is not a failure), 69 when something did, 78 when the configuration itself
/// is wrong. The checks, their order and their output are described in CONTRACT.md ("doctor").
struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check everything a technician would check, each line ok/warn/fail with a remedy.",
        discussion: """
            Checks the configuration and profiles, the clock, the state directory and buffer, the \
            daemon and its watchdog, the broker (reachable, TLS certificates, credentials), every \
            Modbus bus and device (latency; for a silent line a scan of baud rates and parities; for \
            a silent device a scan of unit ids), and every GPIO chip and line (and who holds it). \
            Scans run only when something is silent and each is bounded by --scan-seconds.

            Examples:
              railgate doctor --config /etc/railgate/railgate.toml
              railgate doctor --config /etc/railgate/railgate.toml --json | jq '.checks[] | select(.status != "ok")'
            """)

    @Option(help: "The gateway configuration (TOML).")
    var config: String

    @Flag(help: "Print one JSON document: {\"ok\": BOOL, \"checks\": [{status, subject, seen, remedy, message}]}.")
    var json = false

    @Option(
        name: .customLong("scan-seconds"),
        help: "The longest one scan (baud rates, unit ids) may take, in seconds; 0 turns scans off.")
    var scanSeconds: Int = 20

    func validate() throws {
        guard (0...600).contains(scanSeconds) else { throw ValidationError("--scan-seconds is 0...600") }
    }

    func run() throws {
        let report = DoctorReport(json: json)
        let loaded: GatewayConfig
        do {
            loaded = try ConfigLoader(files: LocalFiles()).load(config)
        } catch {
            for problem in error.problems {
                report.note(
                    .fail, "config", problem.description,
                    remedy: "fix it, then `railgate check --config \(config)`")
            }
            report.finish()
            throw Exit.config
        }
        let profiles = Set(loaded.devices.map(\.profileName)).sorted()
        report.note(
            .ok, "config",
            "\(config) is valid: \(DoctorText.plural(loaded.buses.count, "bus", "buses")), \(DoctorText.plural(loaded.devices.count, "device")), "
                + "\(DoctorText.plural(loaded.gates.count, "gate")), \(DoctorText.plural(loaded.inputs.count, "input"))"
                + (profiles.isEmpty ? "" : "; profiles \(profiles.joined(separator: ", ")) found"))

        DoctorSystem.checkClock(report)
        let daemon = checkDaemon(loaded, report)
        DoctorSystem.checkStateDirectory(loaded, daemon: daemon?.status, report)
        DoctorUpstream.check(loaded, daemon: daemon?.status, report)
        DoctorModbus(config: loaded, daemon: daemon, scanSeconds: scanSeconds, report: report).checkBuses()
        DoctorGPIO.checkGates(loaded, daemon: daemon?.status, report)
        DoctorGPIO.checkInputs(loaded, daemon: daemon?.status, report)
        report.finish()
        if report.failed { throw Exit.unavailable }
    }

    /// The running daemon: its status document and who it runs as, or nil when none answers.
    private func checkDaemon(_ config: GatewayConfig, _ report: DoctorReport) -> RunningDaemon? {
        let status: JSON
        do {
            let reply = try ControlClient.request("status", socket: config.gateway.controlSocket, timeoutSeconds: 3)
            status = try JSONReader.parse(reply)
            guard status["gateway"] != nil else {
                throw ControlClient.Failure(description: "answered \(reply.prefix(80))")
            }
        } catch {
            report.note(
                .warn, "daemon", "not running (no answer on \(config.gateway.controlSocket): \(error))",
                remedy: "start it: systemctl start railgate; the checks below probe the devices themselves")
            return nil
        }
        let uptime = Int(status["uptime_s"]?.doubleValue ?? 0)
        let process = DaemonProcess.owning(socket: config.gateway.controlSocket)
        let who = process.map { " (pid \($0.pid), user \(DoctorSystem.userName($0.uid)))" } ?? ""
        report.note(
            .ok, "daemon",
            "running for \(DoctorText.duration(seconds: uptime)) as gateway \(status["gateway"]?.plainText ?? "?")\(who)"
        )
        if let overdue = status["watchdog"]?["overdue"]?.arrayValue, !overdue.isEmpty {
            report.note(
                .fail, "watchdog",
                "stalled: \(overdue.compactMap(\.stringValue).joined(separator: ", ")); the daemon withholds its watchdog pings",
                remedy: "systemd restarts it (WatchdogSec); if it recurs, journalctl -u railgate shows the stalled loop"
            )
        } else if let process, let watchdog = DaemonProcess.watchdogSeconds(pid: process.pid) {
            report.note(
                .ok, "watchdog",
                "systemd watchdog every \(watchdog) s; no service loop is overdue (the daemon answered its control socket)"
            )
        }
        return RunningDaemon(status: status, process: process)
    }
}

/// The daemon doctor found: its status document and, when the kernel names it, its process.
struct RunningDaemon {
    var status: JSON
    var process: DaemonProcess?
}

/// The findings of one doctor run, printed as they come (human) or as one document (`--json`).
final class DoctorReport {
    enum Verdict: String { case ok, warn, fail }

    struct Finding {
        var verdict: Verdict
        var subject: String
        /// What was seen: "unit 7 does not answer within 500 ms".
        var seen: String
        /// What to do about it, when there is something to do.
        var remedy: String?

        /// The human line: `fail device axlebox-1: unit 7 does not answer ...; fix: check ...`.
        var line: String {
            "\(verdict.rawValue.padding(to: 4)) \(subject): \(seen)" + (remedy.map { "; fix: \($0)" } ?? "")
        }
    }

    let json: Bool
    private(set) var findings: [Finding] = []

    init(json: Bool) { self.json = json }

    var failed: Bool { findings.contains { $0.verdict == .fail } }

    func note(_ verdict: Verdict, _ subject: String, _ seen: String, remedy: String? = nil) {
        let finding = Finding(verdict: verdict, subject: subject, seen: seen, remedy: remedy)
        findings.append(finding)
        if !json { StandardStreams.out(finding.line) }
    }

    /// With `--json`, prints the document; the human lines went out as they were found.
    func finish() {
        guard json else { return }
        StandardStreams.out(
            JSON.object([
                ("ok", .bool(!failed)),
                (
                    "checks",
                    .array(
                        findings.map {
                            .object([
                                ("status", .string($0.verdict.rawValue)), ("subject", .string($0.subject)),
                                ("seen", .string($0.seen)), ("remedy", $0.remedy.map(JSON.string) ?? .null),
                                ("message", .string($0.seen + ($0.remedy.map { "; fix: \($0)" } ?? ""))),
                            ])
                        })
                ),
            ]).serialized)
    }
}

/// How doctor words counts, durations and sizes.
enum DoctorText {
    /// "1 bus", "3 buses", "0 devices".
    static func plural(_ count: Int, _ one: String, _ many: String? = nil) -> String {
        "\(count) \(count == 1 ? one : many ?? one + "s")"
    }

    /// Durations as a technician reads them: `850 ms`, `4.2 s`, `3m05s`, `1h02m`, `3d04h`.
    static func duration(seconds: Int) -> String {
        if seconds < 60 { return "\(seconds) s" }
        if seconds < 3600 { return "\(seconds / 60)m\(twoDigits(seconds % 60))s" }
        if seconds < 86400 { return "\(seconds / 3600)h\(twoDigits(seconds / 60 % 60))m" }
        return "\(seconds / 86400)d\(twoDigits(seconds / 3600 % 24))h"
    }

    static func duration(milliseconds: Int64) -> String {
        if milliseconds < 1000 { return "\(milliseconds) ms" }
        if milliseconds < 60_000 { return "\(milliseconds / 1000).\(milliseconds % 1000 / 100) s" }
        return duration(seconds: Int(milliseconds / 1000))
    }

    /// Bytes as B, KiB, MiB or GiB.
    static func bytes(_ count: Int) -> String {
        if count < 1024 { return "\(count) B" }
        if count < 1 << 20 { return "\(count >> 10) KiB" }
        if count < 1 << 30 { return "\(count >> 20) MiB" }
        let tenths = count * 10 / (1 << 30)
        return "\(tenths / 10).\(tenths % 10) GiB"
    }

    private static func twoDigits(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
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
