import ArgumentParser
import RailgateCore

/// `railgate-sim`: simulators that stand in for wagon and gate hardware over the real boundary.
@main
struct RailgateSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "railgate-sim",
        abstract: "Simulated railgate hardware: Modbus wagon sensors and GPIO gate barriers.",
        discussion: """
            Examples:
              railgate-sim wagon --profile axle-bearing-sensor --tcp 127.0.0.1:1502 --units 1-3
              railgate-sim gate --socket /tmp/gate.sock --scenario Simulators/scenarios/gate-cycle.toml
              mosquitto_sub -t 'railgate/#' -F '%t %p' | railgate-sim records
            """,
        version: RailgateVersion.current,
        subcommands: [
            WagonCommand.self, FleetConfigCommand.self, GateCommand.self, GateSetCommand.self, RecordsCommand.self,
        ])
}
