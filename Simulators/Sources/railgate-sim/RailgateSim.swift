import ArgumentParser
import RailgateCore

/// `railgate-sim`: simulators that stand in for wagon and gate hardware over the real boundary.
@main
struct RailgateSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "railgate-sim",
        abstract: "Simulated railgate hardware: Modbus wagon sensors and GPIO gate barriers.",
        version: RailgateVersion.current,
        subcommands: [WagonCommand.self, GateCommand.self, GateSetCommand.self, RecordsCommand.self])
}
