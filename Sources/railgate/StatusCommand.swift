import ArgumentParser
import Glibc
import RailgateCore
import RailgateSystem

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Ask the running daemon for its state (through its control socket).",
        discussion: """
            Examples:
              railgate status
              railgate status --socket /tmp/railgate-demo/control.sock --json
            """)

    @OptionGroup var daemon: DaemonOptions

    @Flag(help: "Print the daemon's JSON document.")
    var json = false

    func run() throws {
        let socket = try daemon.socketPath()
        let reply: String
        do {
            reply = try ControlClient.request("status", socket: socket)
        } catch {
            StandardStreams.error(
                "railgate status: cannot reach the daemon at \(socket): \(error). Is railgate running (systemctl status railgate)?"
            )
            throw Exit.unavailable
        }
        if json {
            StandardStreams.out(reply)
            return
        }
        StandardStreams.out(StatusText.render(reply))
    }
}
