import ArgumentParser
import Glibc
import RailgateCore
import RailgateSystem

/// How a command finds the running daemon: its control socket by path (`--socket`), or the
/// `control_socket` of its configuration (`--config`), or the default path.
struct DaemonOptions: ParsableArguments {
    static let defaultSocket = "/run/railgate/control.sock"

    @Option(help: "The daemon's control socket (default: the config's control_socket, else \(Self.defaultSocket)).")
    var socket: String?

    @Option(help: "The daemon's configuration: its control_socket is the socket to use.")
    var config: String?

    func validate() throws {
        if socket != nil, config != nil { throw ValidationError("give --socket or --config, not both") }
    }

    /// The control socket path; loads `--config` (exit 78 with its problems if it is invalid).
    func socketPath() throws -> String {
        if let socket { return socket }
        if let config { return try loadConfig(config).gateway.controlSocket }
        return Self.defaultSocket
    }
}

extension ControlClient {
    /// Sends `command` and calls `line` with each line the daemon streams back, until the daemon
    /// closes the stream (returns) or `line` returns false (returns at once). `idle` is called
    /// whenever nothing arrived for `idleMs` and may also end the stream by returning false.
    /// - Throws: `Failure` if the socket cannot be reached.
    static func stream(
        _ command: String, socket path: String, idleMs: Int32 = 1000, idle: () -> Bool = { true },
        line: (String) -> Bool
    ) throws {
        let fd = try connect(sending: command, socket: path)
        defer { close(fd) }
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, idleMs)
            if ready < 0, errno == EINTR { continue }
            if ready == 0 {
                guard idle() else { return }
                continue
            }
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { return }
            pending += chunk[0..<count]
            while let newline = pending.firstIndex(of: 10) {
                let text = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                guard line(text) else { return }
            }
        }
    }
}
