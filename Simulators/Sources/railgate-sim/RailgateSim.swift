import ArgumentParser

/// `railgate-sim`: simulators that stand in for wagon and gate hardware over the real boundary.
@main
struct RailgateSim: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "railgate-sim",
        abstract: "Simulated railgate hardware: Modbus wagon sensors and GPIO gate barriers.",
        subcommands: [WagonCommand.self, FleetConfigCommand.self, GateCommand.self, GateSetCommand.self])
}
