import ArgumentParser
import RailgateCore
import RailgateGPIO
import RailgateSystem

/// `railgate`: the gateway daemon (`run`) and the technician's tools.
@main
struct Railgate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "railgate",
        abstract: "Telemetry gateway for wagons and border gates: Modbus and GPIO in, MQTT out.",
        discussion: """
            Examples:
              railgate check --config /etc/railgate/railgate.toml
              railgate run --config /etc/railgate/railgate.toml --once
              railgate status
              railgate doctor --config /etc/railgate/railgate.toml
              railgate modbus read --tcp 192.0.2.10 --unit 7 --input --count 4 --type i16
              railgate buffer stats --state-dir /var/lib/railgate

            Exit codes (sysexits): 0 success, 64 usage, 65 bad data, 69 unavailable, 74 I/O error, \
            78 configuration error; run adds 70 and 71. The --json forms are the machine-readable \
            interface (CONTRACT.md); the text forms are for people and may change.
            """,
        version: "\(RailgateVersion.current), GPIO: \(LibgpiodBackend.summary)",
        subcommands: [
            RunCommand.self, CheckCommand.self, StatusCommand.self, TopCommand.self, EventsCommand.self,
            ModbusCommand.self, GPIOCommand.self,
            BufferCommand.self,
            DoctorCommand.self,
        ])
}

/// The sysexits codes the contract promises.
enum Exit {
    static let usage = ExitCode(64)
    static let badData = ExitCode(65)
    static let unavailable = ExitCode(69)
    static let ioError = ExitCode(74)
    static let config = ExitCode(78)
}

/// Loads a configuration for a command, printing every problem as `FILE:LINE: message` on
/// standard error (and, with `json`, as one document on standard output) and exiting 78 if
/// there is any.
func loadConfig(_ path: String, json: Bool = false) throws -> GatewayConfig {
    do {
        return try ConfigLoader(files: LocalFiles()).load(path)
    } catch {
        for problem in error.problems { StandardStreams.error(problem.description) }
        if json {
            let problems: [JSON] = error.problems.map { problem in
                .object([
                    ("file", .string(problem.file)), ("line", problem.line.map { .integer(Int64($0)) } ?? .null),
                    ("message", .string(problem.message)),
                ])
            }
            StandardStreams.out(JSON.object([("ok", .bool(false)), ("problems", .array(problems))]).serialized)
        }
        throw Exit.config
    }
}
