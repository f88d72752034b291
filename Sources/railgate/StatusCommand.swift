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

/// A client for the daemon's control socket: one command line out, one JSON document back.
enum ControlClient {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func request(_ command: String, socket path: String, timeoutSeconds: Int = 5) throws -> String {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: String(cString: strerror(errno))) }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        guard UnixSocket.connect(fd, to: path) else { throw Failure(description: String(cString: strerror(errno))) }
        StandardStreams.write(fd: fd, command + "\n")
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else {
                if count < 0 { throw Failure(description: "no answer: \(String(cString: strerror(errno)))") }
                break
            }
            reply += chunk[0..<count]
        }
        while reply.last == 10 { reply.removeLast() }
        return String(decoding: reply, as: UTF8.self)
    }
}
