import Glibc
import Logging
import RailgateCore
import RailgateSystem

/// The daemon's control socket: a Unix stream socket where a client writes one command line
/// (`status`) and reads one JSON document back. Anything else gets `{"error":...}`; a client
/// that has not sent its line within a second (silent, or trickling bytes) is dropped. Served by
/// a pool of 4 threads (`ConnectionServer`), so clients that trickle hold one thread each for at
/// most a second while `status` from another client is answered at once; a stop waits for no
/// client longer than 200 ms. `follow` hands the client to `follow` (a duplicate of its socket),
/// which streams to it from a thread of its own (`RecordFeed`), so a follower holds none of the 4.
final class ControlServer: @unchecked Sendable {
    let path: String
    private let logger: Logger
    private let respond: @Sendable (String) -> JSON
    private let follow: (@Sendable (Int32) -> JSON?)?
    private var server: ConnectionServer?

    /// - Parameter follow: takes a client that sent `follow` (its own duplicate of the socket);
    ///   returns nil when it streams to it, or the error to answer.
    init(
        path: String, logger: Logger, respond: @escaping @Sendable (String) -> JSON,
        follow: (@Sendable (Int32) -> JSON?)? = nil
    ) {
        self.path = path
        self.logger = logger
        self.respond = respond
        self.follow = follow
    }

    /// Binds the socket (replacing a stale one left by a crash) and starts serving on a thread
    /// supervised by `supervisor`.
    /// - Throws: `ControlSocketError` if the socket cannot be made or bound, `ThreadError` if no
    ///   thread could be created.
    func start(supervisor: Supervisor? = nil) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError(operation: "socket", path: path, code: errno) }
        guard UnixSocket.bind(fd, to: path), listen(fd, 8) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw ControlSocketError(operation: "bind", path: path, code: code)
        }
        chmod(path, 0o660)
        let server = ConnectionServer(listener: fd, timeoutSeconds: 1)
        do {
            try server.start(name: "control socket", supervisor: supervisor) { [self] client in
                let command = readCommand(client)
                if command == "follow", let follow {
                    let copy = fcntl(client.fd, F_DUPFD_CLOEXEC, 0)
                    let refusal =
                        copy < 0
                        ? .object([("error", .string("dup: \(String(cString: strerror(errno)))"))]) : follow(copy)
                    if let refusal { ConnectedSocket.send(fd: client.fd, refusal.serialized + "\n") }
                    return
                }
                let reply =
                    command.map(respond)
                    ?? .object([("error", .string("expected one command line, e.g. \"status\""))])
                ConnectedSocket.send(fd: client.fd, reply.serialized + "\n")
            }
        } catch {
            Glibc.close(fd)
            unlink(path)
            throw error
        }
        self.server = server
    }

    func stop() {
        guard let server else { return }
        server.stop()
        unlink(path)
        self.server = nil
    }

    /// The first line the client sends (at most 1 KiB) before its deadline, or nil on silence,
    /// a trickle that does not finish the line in time, or garbage.
    private func readCommand(_ client: ClientConnection) -> String? {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 256)
        while bytes.count < 1024 {
            guard let count = chunk.withUnsafeMutableBytes({ client.receive(into: $0) }) else { return nil }
            guard count > 0 else { break }
            bytes += chunk[0..<count]
            if bytes.contains(10) { break }
        }
        guard let line = bytes.split(separator: 10, omittingEmptySubsequences: false).first, !line.isEmpty,
            line.allSatisfy({ $0 >= 0x20 && $0 < 0x7F || $0 == 0x0D })
        else { return nil }
        return String(decoding: line, as: UTF8.self).trimmingSpaces
    }
}

/// The control socket could not be set up.
struct ControlSocketError: Error, CustomStringConvertible {
    var operation: String
    var path: String
    var code: Int32

    var description: String { "\(operation) \(path): \(String(cString: strerror(code)))" }
}

extension String {
    var trimmingSpaces: String {
        var text = Substring(self)
        while let first = text.first, first == " " || first == "\r" || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\r" || last == "\t" { text = text.dropLast() }
        return String(text)
    }
}
