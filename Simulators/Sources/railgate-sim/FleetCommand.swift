import ArgumentParser
import Glibc
import RailgateCore
import RailgateSystem

/// `railgate-sim fleet-config`: a gateway configuration for a fleet of simulated devices, N
/// devices of M f32 points each spread over K Modbus TCP buses, and the profile they share.
/// Serve the fleet with `railgate-sim wagon --profile DIR/profiles/f32-block-M.toml --units 1-N`.
struct FleetConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet-config",
        abstract: "Write a gateway configuration for N simulated devices of M f32 points on K TCP buses.",
        discussion: """
            Writes DIR/railgate.toml and DIR/profiles/f32-block-M.toml (M f32 holding-register points, \
            no deadband: every value goes up every poll). Devices get unit ids FIRST...FIRST+N-1 and go \
            round-robin onto the buses; bus i connects to the i-th --port (wrapping), so one simulator \
            serves K buses on one port or several simulators one port each. Prints the two paths.
            """)

    @Option(help: "Directory to write railgate.toml and profiles/ into (created if missing).")
    var out: String

    @Option(help: "Number of devices (N).")
    var devices: Int = 100

    @Option(help: "f32 points per device (M).")
    var points: Int = 100

    @Option(help: "Number of Modbus TCP buses (K).")
    var buses: Int = 1

    @Option(name: .customLong("first-unit"), help: "Unit id of the first device.")
    var firstUnit: Int = 1

    @Option(name: .customLong("poll-interval-ms"), help: "Poll interval of every device, milliseconds.")
    var pollIntervalMs: Int = 1000

    @Option(help: "Host the simulator serves on.")
    var host: String = "127.0.0.1"

    @Option(help: "Simulator port(s), comma-separated; bus i uses the i-th (wrapping).")
    var port: String

    @Option(help: "The broker's URL, or \"none\".")
    var upstream: String = "mqtt://127.0.0.1:1883"

    @Option(name: .customLong("state-dir"), help: "The gateway's state_dir (default DIR/state).")
    var stateDir: String?

    @Option(name: .customLong("metrics-listen"), help: "Serve Prometheus metrics on HOST:PORT.")
    var metricsListen: String?

    @Option(name: .customLong("gateway-id"), help: "gateway.id.")
    var gatewayID: String = "KZ-FLEET-00001"

    @Option(name: .customLong("batch-interval-ms"), help: "upstream.batch_interval_ms.")
    var batchIntervalMs: Int = 1000

    @Option(name: .customLong("buffer-max-bytes"), help: "buffer.max_bytes.")
    var bufferMaxBytes: Int = 64 << 20

    func ports() -> [Int] { port.split(separator: ",").compactMap { Int($0) } }

    func validate() throws {
        guard devices >= 1, points >= 1, points <= 4000, buses >= 1, buses <= devices else {
            throw ValidationError("want 1 <= devices, 1 <= points <= 4000, 1 <= buses <= devices")
        }
        guard firstUnit >= 1, firstUnit + devices - 1 <= 247 else {
            throw ValidationError("unit ids FIRST...FIRST+N-1 must lie in 1...247")
        }
        guard pollIntervalMs >= 1 else { throw ValidationError("--poll-interval-ms must be positive") }
        let ports = ports()
        guard !ports.isEmpty, ports.count == port.split(separator: ",").count,
            ports.allSatisfy({ (1...65535).contains($0) })
        else { throw ValidationError("--port wants PORT[,PORT...], each 1...65535, got '\(port)'") }
    }

    /// The fleet's own control socket beside its configuration (two fleets, or a fleet beside an
    /// installed daemon, would otherwise share /run/railgate/control.sock); a comment where the
    /// path would pass the 107 bytes a Unix socket path may have.
    func controlSocketLine(_ out: String) -> String {
        let path = out + "/control.sock"
        return path.utf8.count <= 107
            ? "control_socket = \"\(path)\""
            : "## control_socket: the default (\(path) is longer than a Unix socket path may be)"
    }

    func run() throws {
        let profileName = "f32-block-\(points)"
        _ = mkdir(out, 0o755)
        _ = mkdir(out + "/profiles", 0o755)
        let profilePath = out + "/profiles/\(profileName).toml"
        let configPath = out + "/railgate.toml"
        for (path, text) in [
            (profilePath, Self.profile(points: points)),
            (configPath, config(profileName: profileName)),
        ] {
            guard let file = fopen(path, "w") else {
                printError("cannot write \(path): \(String(cString: strerror(errno)))")
                throw ExitCode(73)
            }
            let bytes = Array(text.utf8)
            let written = fwrite(bytes, 1, bytes.count, file)
            guard fclose(file) == 0, written == bytes.count else {
                printError("cannot write \(path): \(String(cString: strerror(errno)))")
                throw ExitCode(73)
            }
        }
        StandardStreams.out(configPath)
        StandardStreams.out(profilePath)
    }

    /// M f32 points in consecutive holding registers from 0, no deadband.
    static func profile(points: Int) -> String {
        var text = """
            ## \(points) f32 values in holding registers 0...\(2 * points - 1) (ABCD), no deadband: a
            ## block of analogue values as a PLC or a data concentrator serves them. Written by
            ## `railgate-sim fleet-config` for the scale benchmark.

            model = "f32 block of \(points)"

            """
        for index in 0..<points {
            text += "\n[[point]]\nname = \"v\(index)\"\ntable = \"holding\"\naddress = \(2 * index)\ntype = \"f32\"\n"
        }
        return text
    }

    func config(profileName: String) -> String {
        let ports = ports()
        let state = stateDir ?? out + "/state"
        var text = """
            ## A fleet of \(devices) devices x \(points) f32 points on \(buses) Modbus TCP bus(es), polled every \
            \(pollIntervalMs) ms
            ## (\(devices * points * 1000 / pollIntervalMs) points/s). Written by `railgate-sim fleet-config`.

            [gateway]
            id = "\(gatewayID)"
            state_dir = "\(state)"
            log_level = "notice"
            profile_path = ["\(out)/profiles"]
            \(controlSocketLine(out))

            [buffer]
            max_bytes = \(bufferMaxBytes)
            sync_interval_ms = 1000

            [upstream]
            url = "\(upstream)"
            topic_prefix = "railgate"
            qos = 1
            batch_max_records = 500
            batch_max_bytes = 262144
            batch_interval_ms = \(batchIntervalMs)

            """
        if let metricsListen { text += "\n[metrics]\nlisten = \"\(metricsListen)\"\n" }
        for bus in 0..<buses {
            text += """

                [[bus]]
                name = "fleet-\(bus + 1)"
                transport = "tcp"
                host = "\(host)"
                port = \(ports[bus % ports.count])
                timeout_ms = 1000
                retries = 1

                """
        }
        for index in 0..<devices {
            text += """

                [[device]]
                name = "dev-\(firstUnit + index)"
                bus = "fleet-\(index % buses + 1)"
                unit = \(firstUnit + index)
                profile = "\(profileName)"
                poll_interval_ms = \(pollIntervalMs)

                """
        }
        return text
    }
}
